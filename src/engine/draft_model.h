// Speculative decoding's drafter with a second, smaller model of the same tokenizer: it keeps its own
// session in step with the context (reusing its cache by common prefix, so rolled-back drafts cost
// nothing to undo) and drafts greedily, one token at a time, while it is confident enough.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/session.h"
#include "engine/speculative.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace lumen {

struct DraftModelParams {
    // Stop drafting when the draft model's most likely token has less probability than this.
    float p_min = 0.75f;
    // false: draft the argmax (a point mass). true: draw each token from the draft model's
    // distribution under `sampling` (penalties left out), and hand that distribution to the verifier.
    bool sample = false;
    SamplingParams sampling;
};

class DraftModelDrafter : public Drafter {
public:
    DraftModelDrafter(Session& session, const DraftModelParams& p);
    void draft(const std::vector<int32_t>& context, int n_max, Draft& out) override;
    const char* name() const override { return "draft model"; }
    // Draft-model forward passes and tokens fed so far.
    int evals() const { return evals_; }

private:
    Session& s_;
    DraftModelParams p_;
    Sampler sampler_;
    std::vector<int32_t> cached_;  // what the draft session's cache holds
    int evals_ = 0;
};

// Throws lumen::Error (naming the draft file) unless the draft model's tokenizer is the target's:
// the same vocabulary size, BOS/EOS/EOT, and the same text for a spread of token ids.
void check_draft_compatible(const tokenizer::Tokenizer& target, const tokenizer::Tokenizer& draft,
                            const std::string& draft_name);

}  // namespace lumen
