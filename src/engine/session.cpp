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
    n_chunks_ = 0;
    chunk_rows_ = all_outputs ? opt_.n_batch : 0;
    for (int start = 0; start < n; start += opt_.n_batch) {
        const int len = std::min(opt_.n_batch, n - start);
        const bool last = start + len == n;
        if (!all_outputs && !last) {  // only the last token's outputs are wanted
            run_chunk(tokens, start, len, 1);
            continue;
        }
        ForwardGraph& fg = run_chunk(tokens, start, len, all_outputs ? len : 1);
        if (size_t(n_chunks_) == chunks_.size()) chunks_.emplace_back();  // reused: buffers keep their size
        PassOutputs& out = chunks_[size_t(n_chunks_++)];
        out.reset(*be_, fg, V);
        if (!last) out.fetch();  // the next chunk may run the same graph
    }
}

ForwardGraph& Session::run_chunk(const std::vector<int32_t>& tokens, int start, int len, int n_out) {
    ForwardGraph& fg = graph_for(len, n_out);
    for (int i = 0; i < len; i++) {
        fg.tokens_buf[size_t(i)] = tokens[size_t(start + i)];
        fg.pos_buf[size_t(i)] = fg.rows_buf[size_t(i)] = n_past_ + i;
    }
    if (n_out == 1) fg.out_buf[0] = len - 1;
    else for (int i = 0; i < n_out; i++) fg.out_buf[size_t(i)] = i;
    be_->compute(fg.g);
    n_past_ += len;
    return fg;
}

PassOutputs& Session::chunk_of(int& row) {
    if (n_chunks_ == 0) fail("session: no outputs to read (decode first)");
    const size_t c = chunk_rows_ > 0 ? size_t(std::max(row, 0) / chunk_rows_) : 0;
    if (c >= size_t(n_chunks_)) fail("session: output row ", row, " out of range");
    row -= int(c) * chunk_rows_;
    return chunks_[c];
}

const float* Session::logits(int row) { return chunk_of(row).logits(row); }

Candidates Session::candidates(int row) { return chunk_of(row).candidates(row); }

const std::vector<float>& Session::eval(const std::vector<int32_t>& tokens, bool all_logits) {
    decode(tokens, all_logits);
    if (n_chunks_ == 1) return chunks_[0].all_logits();
    logits_.clear();
    for (int c = 0; c < n_chunks_; c++) {
        const std::vector<float>& rows = chunks_[size_t(c)].all_logits();
        logits_.insert(logits_.end(), rows.begin(), rows.end());
    }
    return logits_;
}

void Session::truncate(int n) {
    if (n < 0 || n > n_past_) fail("cannot truncate the cache to ", n, " tokens (holds ", n_past_, ")");
    n_past_ = n;
}

}  // namespace lumen
