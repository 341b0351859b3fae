// Speculative decoding's halves that do not depend on a model: the drafter interfaces (something
// that guesses the next tokens cheaply, for one sequence or for a batch of them), the acceptance rule
// that keeps the output distribution the target's own, and the small steps of the verify loop that
// the single-sequence Generator and the batch Scheduler share (so both apply one rule).
//
// The rule (Leviathan et al. 2023, Chen et al. 2023): a drafted token x drawn from q is kept with
// probability min(1, p(x) / q(x)), p being the target's distribution after the whole sampling chain;
// on rejection the replacement is drawn from max(0, p - q), renormalised. The kept-or-replaced token
// is then distributed exactly as p. A drafter that picks its tokens deterministically (prompt lookup,
// a greedy draft model) is a point mass, q(x) = 1: keep x with probability p(x), else draw from p
// without x.
#pragma once
#include <cstdint>
#include <vector>

#include "sampling/sampler.h"

namespace lumen {

// What a drafter proposes: tokens to follow the context, and for each the distribution it was drawn
// from (empty `dists`: every token was chosen deterministically, a point mass).
struct Draft {
    std::vector<int32_t> tokens;
    std::vector<TokenDist> dists;
    void clear() { tokens.clear(); dists.clear(); }
};

class Drafter {
public:
    virtual ~Drafter() = default;
    // Proposes up to n_max (>= 1) tokens to follow `context` (every token so far: prompt and
    // generated). May propose none.
    virtual void draft(const std::vector<int32_t>& context, int n_max, Draft& out) = 0;
    virtual const char* name() const = 0;
};

// Drafts for several sequences at once, each known by the slot it runs in (the batch scheduler's).
// One call per step covers every sequence that wants guesses, so a draft model can read them all in
// shared forward passes.
struct DraftJob {
    int slot;
    const std::vector<int32_t>* context;  // every token so far, the one guesses follow last
    int n_max;                            // >= 1
    Draft* out;                           // cleared, then filled
};

class BatchDrafter {
public:
    virtual ~BatchDrafter() = default;
    // A new sequence takes `slot`, sampled with `sampling` (a drafter that samples follows it).
    virtual void start(int /*slot*/, const SamplingParams& /*sampling*/) {}
    virtual void draft(const std::vector<DraftJob>& jobs) = 0;
    // The sequence in `slot` ended.
    virtual void finish(int /*slot*/) {}
    virtual const char* name() const = 0;
};

// A drafter that keeps nothing between calls (prompt lookup) serving every slot in turn.
class EachDrafter : public BatchDrafter {
public:
    explicit EachDrafter(Drafter& d) : d_(d) {}
    void draft(const std::vector<DraftJob>& jobs) override {
        for (const DraftJob& j : jobs) d_.draft(*j.context, j.n_max, *j.out);
    }
    const char* name() const override { return d_.name(); }

private:
    Drafter& d_;
};

enum class AcceptRule {
    Exact,          // the rule above
    // Test only: on rejection draws the replacement from p itself instead of the residual. Biased
    // (it favours the drafted token); the statistical test must detect it.
    BrokenResample,
};

struct SpeculativeParams {
    int draft_max = 16;   // most tokens guessed per step
    int draft_min = 0;    // guesses shorter than this are not verified (plain step instead)
    // Adapt the guess length to recent acceptance: after a rejection guess one more token than were
    // accepted, after a full acceptance twice as many (up to draft_max).
    bool adaptive = true;
    AcceptRule rule = AcceptRule::Exact;  // tests only change it
};

// lumen::Error naming the flag unless 1 <= draft_max and 0 <= draft_min <= draft_max.
void check_speculative_params(const SpeculativeParams& p);

// Keeps the front of a draft that can be verified: at most n_max tokens, ids inside the vocabulary,
// one distribution per token when it has any; nothing when fewer than draft_min remain.
void fit_draft(Draft& d, int n_max, int draft_min, int n_vocab);

// The guess length after a step that verified `drafted` guesses and kept `accepted` of them.
int next_draft_length(const SpeculativeParams& p, int n_draft, int drafted, int accepted);

struct Verdict {
    bool accepted;
    int32_t token;  // x when accepted, else the replacement
};

// Applies the rule with uniform numbers from `rng` (the target's sampler). Keeps a scratch array of
// n_vocab floats, so make one per generation loop.
class DraftVerifier {
public:
    explicit DraftVerifier(int n_vocab, AcceptRule rule = AcceptRule::Exact);
    // p: the target's distribution at this position; x: the drafted token; q: the distribution x was
    // drawn from, or nullptr for a point mass.
    Verdict verify(const TokenDist& p, int32_t x, const TokenDist* q, Sampler& rng);

private:
    AcceptRule rule_;
    std::vector<float> q_;  // dense copy of q while verifying (zero elsewhere)
};

// Verifies guess j of `d` against the target's logits at its position with the sequence's own sampler:
// greedy samplers keep it when it is their choice, others apply the rule.
Verdict check_guess(OutputRows& out, int row, const Draft& d, size_t j, Sampler& sampler, DraftVerifier& v);

}  // namespace lumen
