// Speculative decoding's two halves that do not depend on a model: the drafter interface (something
// that guesses the next tokens cheaply) and the acceptance rule that keeps the output distribution
// the target's own.
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

enum class AcceptRule {
    Exact,          // the rule above
    // Test only: on rejection draws the replacement from p itself instead of the residual. Biased
    // (it favours the drafted token); the statistical test must detect it.
    BrokenResample,
};

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

}  // namespace lumen
