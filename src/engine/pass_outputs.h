// One forward pass's output rows, left on the backend until asked for: every row's logits on the first
// logits() call, every row's candidates (the graph's TopK) on the first candidates() call. A GPU then
// hands back a few hundred bytes per sampled token instead of the whole vocabulary's logits.
#pragma once
#include <vector>

#include "model/forward.h"
#include "sampling/sampler.h"
#include "tensor/backend.h"

namespace lumen {

class PassOutputs final : public OutputRows {
public:
    // After be.compute(fg.g): fg's n_out rows. Valid until fg runs again (fetch() first if it will).
    void reset(Backend& be, const ForwardGraph& fg, int n_vocab);
    void fetch();  // reads everything now
    int rows() const { return rows_; }
    Candidates candidates(int row) override;
    const float* logits(int row) override;
    const std::vector<float>& all_logits() { logits(0); return logits_; }  // rows x n_vocab

private:
    void check_row(int row) const;
    Backend* be_ = nullptr;
    const ForwardGraph* fg_ = nullptr;
    int rows_ = 0, n_vocab_ = 0, k_ = 0;
    bool have_logits_ = false, have_top_ = false;
    std::vector<float> logits_, top_logits_;
    std::vector<int32_t> top_ids_, top_raw_;  // (kept between passes: no allocation per token)
};

}  // namespace lumen
