// The generation loop shared by `complete` and `chat`: sample a token from the session's logits,
// hand it out, feed it back, until an end-of-generation token, a token budget, a stop flag or a full
// context. With a drafter it decodes speculatively: each step feeds the pending token together with
// the drafter's guesses in one forward pass (logits for every position), keeps the guesses the
// acceptance rule accepts plus one token sampled from the target (a replacement or a bonus), and
// rolls the KV cache back past the first rejected guess. Greedy text is identical with and without a
// drafter (the batch-invariant kernels give each token the same logits in a batch as alone);
// sampled text has the same distribution (see speculative.h).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/session.h"
#include "engine/speculative.h"
#include "sampling/sampler.h"

namespace lumen {

struct GenerateOptions {
    int n_predict = -1;                       // most tokens to hand out; <= 0: no limit
    bool ignore_eos = false;                  // end-of-generation tokens are handed out like any other
    const std::atomic<bool>* stop = nullptr;  // checked after every token handed out
};

enum class GenerateEnd { EndOfGeneration, Length, Interrupted, ContextFull };

struct GenerateStats {
    int generated = 0;     // tokens handed out
    int target_evals = 0;  // target forward passes (each reads one pending token and its guesses)
    int rounds = 0;        // of those, the ones that carried guesses
    int drafted = 0;       // guesses verified
    int accepted = 0;      // guesses kept
    double seconds = 0;    // wall time of the loop
    double draft_seconds = 0;
    double acceptance() const { return drafted > 0 ? double(accepted) / drafted : 0.0; }
    double mean_accepted() const { return rounds > 0 ? double(accepted) / rounds : 0.0; }
    double tokens_per_second() const { return seconds > 0 ? generated / seconds : 0.0; }
};

class Generator {
public:
    using IsEog = std::function<bool(int32_t)>;
    using TokenSink = std::function<void(int32_t)>;
    // Called when the cache is full and the last token handed out still has to be read. `context`
    // (what the cache should hold, that token included) may be shortened in front; the hook makes
    // the session hold exactly the new context and returns the outputs whose row 0 follows its last
    // token, or returns nullptr, leaving everything as it was, when it cannot make room.
    using MakeRoom = std::function<OutputRows*(std::vector<int32_t>& context)>;

    Generator(Session& target, Sampler& sampler, IsEog is_eog);
    // Guesses come from `drafter` (nullptr: plain decoding). The drafter must outlive run().
    void set_drafter(Drafter* drafter, const SpeculativeParams& p);

    // `context`: the tokens the session's cache holds (n_past() of them, the prompt's accepted by the
    // sampler already); row 0 of `first`: the outputs after its last token (usually the session's
    // own, after decode()). Hands each new token to on_token. On return `context` is again what the
    // cache holds: the prompt and the tokens handed out, except possibly the last one.
    GenerateEnd run(std::vector<int32_t>& context, OutputRows& first, const GenerateOptions& o,
                    const TokenSink& on_token, const MakeRoom& make_room = nullptr);
    const GenerateStats& stats() const { return stats_; }

private:
    Session& s_;
    Sampler& sampler_;
    IsEog is_eog_;
    Drafter* drafter_ = nullptr;
    SpeculativeParams sp_;
    DraftVerifier verifier_;
    GenerateStats stats_;
    Draft draft_;
    std::vector<int32_t> batch_, scratch_;
};

}  // namespace lumen
