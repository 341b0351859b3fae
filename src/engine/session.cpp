#include "engine/session.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace lumen {

int default_context(const Model& m) {
    int n = m.hp.n_ctx_train > 0 ? m.hp.n_ctx_train : 4096;
    return std::min(n, 4096);
}

Session::Session(const Model& m, std::unique_ptr<Backend> backend, const SessionOptions& o)
    : m_(m), be_(std::move(backend)), opt_(o) {
    int n_ctx = o.n_ctx > 0 ? o.n_ctx : default_context(m);
    if (n_ctx < 8) fail("-c ", n_ctx, ": the context must hold at least 8 tokens");
    if (n_ctx > (1 << 22)) fail("-c ", n_ctx, ": context too large");
    if (opt_.n_batch < 1) fail("-b ", opt_.n_batch, ": the batch size must be at least 1");
    n_ctx_ = n_ctx;
    kv_.init(m, *be_, (n_ctx + kKVBlockSize - 1) / kKVBlockSize, kKVBlockSize, o.cache_type);
}

ForwardGraph& Session::graph_for(int n_tokens, int n_out) {
    auto key = std::make_pair(n_tokens, n_out);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) return *it->second;
    // Prompts of many lengths would each add a graph: keep the cache small.
    if (graphs_.size() >= 8) {
        be_->release(graphs_.begin()->second->g);
        graphs_.erase(graphs_.begin());
    }
    auto fg = build_forward(m_, kv_, n_tokens, n_out, 1, kv_.n_blocks, opt_.n_top);
    for (int b = 0; b < kv_.n_blocks; b++) fg->table_buf[size_t(b)] = b;  // position p is row p
    be_->prepare(fg->g);
    return *(graphs_[key] = std::move(fg));
}

void Session::decode(const std::vector<int32_t>& tokens, bool all_outputs) {
    const int n = int(tokens.size());
    if (n == 0) fail("nothing to evaluate");
    if (n_past_ + n > n_ctx_)
        fail("context overflow: ", n_past_, " tokens in the cache + ", n, " new > context size ", n_ctx_,
             " (raise -c)");
    const int V = m_.hp.n_vocab;
    for (int32_t t : tokens)
        if (t < 0 || t >= V) fail("token id ", t, " is outside the vocabulary (", V, ")");
    n_rows_ = all_outputs ? n : 1;
    logits_ready_ = top_ready_ = false;
    last_ = nullptr;
    for (int start = 0; start < n; start += opt_.n_batch) {
        const int len = std::min(opt_.n_batch, n - start);
        const int n_out = all_outputs ? len : 1;
        ForwardGraph& fg = graph_for(len, n_out);
        for (int i = 0; i < len; i++) {
            fg.tokens_buf[size_t(i)] = tokens[size_t(start + i)];
            fg.pos_buf[size_t(i)] = fg.rows_buf[size_t(i)] = n_past_ + i;
        }
        if (n_out == 1) fg.out_buf[0] = len - 1;
        else for (int i = 0; i < n_out; i++) fg.out_buf[size_t(i)] = i;
        be_->compute(fg.g);
        n_past_ += len;
        if (start + len < n) {
            // The next chunk reuses or replaces this graph: keep what later rows will be asked for.
            if (all_outputs) {
                read_logits(fg, start);
                read_top(fg, start);
            }
        } else {
            last_ = &fg;
            last_first_ = all_outputs ? start : 0;
        }
    }
}

void Session::read_logits(ForwardGraph& fg, int first_row) {
    const size_t V = size_t(m_.hp.n_vocab);
    logits_.resize(size_t(n_rows_) * V);
    be_->read(fg.logits, logits_.data() + size_t(first_row) * V, size_t(fg.n_out) * V * sizeof(float));
}

void Session::read_top(ForwardGraph& fg, int first_row) {
    if (!fg.top) return;
    const size_t k = size_t(fg.top->ne[0] / 2);
    std::vector<int32_t> raw(size_t(fg.n_out) * 2 * k);
    be_->read(fg.top, raw.data(), raw.size() * sizeof(int32_t));
    top_ids_.resize(size_t(n_rows_) * k);
    top_logits_.resize(size_t(n_rows_) * k);
    for (size_t r = 0; r < size_t(fg.n_out); r++) {
        std::memcpy(&top_ids_[(size_t(first_row) + r) * k], &raw[r * 2 * k], k * 4);
        std::memcpy(&top_logits_[(size_t(first_row) + r) * k], &raw[r * 2 * k + k], k * 4);
    }
}

const float* Session::logits(int row) {
    if (!last_) fail("session: no outputs to read (decode first)");
    if (row < 0 || row >= n_rows_) fail("session: output row ", row, " of ", n_rows_);
    if (!logits_ready_) {
        read_logits(*last_, last_first_);
        logits_ready_ = true;
    }
    return logits_.data() + size_t(row) * size_t(m_.hp.n_vocab);
}

Candidates Session::candidates(int row) {
    if (!last_) fail("session: no outputs to read (decode first)");
    if (row < 0 || row >= n_rows_) fail("session: output row ", row, " of ", n_rows_);
    if (!last_->top) return {};
    if (!top_ready_) {
        read_top(*last_, last_first_);
        top_ready_ = true;
    }
    const size_t k = size_t(last_->top->ne[0] / 2);
    return {&top_ids_[size_t(row) * k], &top_logits_[size_t(row) * k], int(k)};
}

const std::vector<float>& Session::eval(const std::vector<int32_t>& tokens, bool all_logits) {
    decode(tokens, all_logits);
    logits(0);
    return logits_;
}

void Session::truncate(int n) {
    if (n < 0 || n > n_past_) fail("cannot truncate the cache to ", n, " tokens (holds ", n_past_, ")");
    n_past_ = n;
}

}  // namespace lumen
