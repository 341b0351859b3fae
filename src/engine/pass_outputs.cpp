#include "engine/pass_outputs.h"

#include <cstring>

#include "util/error.h"

namespace lumen {

void PassOutputs::reset(Backend& be, const ForwardGraph& fg, int n_vocab) {
    be_ = &be;
    fg_ = &fg;
    rows_ = fg.n_out;
    n_vocab_ = n_vocab;
    k_ = fg.top ? int(fg.top->ne[0] / 2) : 0;
    have_logits_ = have_top_ = false;
}

void PassOutputs::fetch() {
    if (rows_ == 0) return;
    logits(0);
    candidates(0);
}

void PassOutputs::check_row(int row) const {
    if (!fg_) fail("no forward pass to read outputs from");
    if (row < 0 || row >= rows_) fail("output row ", row, " of ", rows_);
}

const float* PassOutputs::logits(int row) {
    check_row(row);
    const size_t V = size_t(n_vocab_);
    if (!have_logits_) {
        logits_.resize(size_t(rows_) * V);
        be_->read(fg_->logits, logits_.data(), logits_.size() * sizeof(float));
        have_logits_ = true;
    }
    return logits_.data() + size_t(row) * V;
}

Candidates PassOutputs::candidates(int row) {
    check_row(row);
    if (k_ == 0) return {};
    const size_t k = size_t(k_);
    if (!have_top_) {
        // The op's rows are k ids then the k values' float bits: split them into two arrays.
        std::vector<int32_t>& raw = top_raw_;
        raw.resize(size_t(rows_) * 2 * k);
        be_->read(fg_->top, raw.data(), raw.size() * sizeof(int32_t));
        top_ids_.resize(size_t(rows_) * k);
        top_logits_.resize(size_t(rows_) * k);
        for (size_t r = 0; r < size_t(rows_); r++) {
            std::memcpy(&top_ids_[r * k], &raw[r * 2 * k], k * 4);
            std::memcpy(&top_logits_[r * k], &raw[r * 2 * k + k], k * 4);
        }
        have_top_ = true;
    }
    return {&top_ids_[size_t(row) * k], &top_logits_[size_t(row) * k], k_};
}

}  // namespace lumen
