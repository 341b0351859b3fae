// A session runs one sequence through a model: it owns the backend's KV cache, feeds tokens in
// batches, and hands back logits. Graphs are built once per batch shape and reused. The cache is
// the paged one of the batch scheduler with a single sequence whose blocks are all its own, in order.
#pragma once
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tensor/backend.h"

namespace lumen {

struct SessionOptions {
    int n_ctx = 0;        // 0: the model's training context, capped at 4096
    int n_batch = 512;    // tokens per forward pass when reading a prompt
    int n_threads = 0;    // CPU threads; 0: all cores
    DType cache_type = DType::F16;
    int n_top = 64;       // candidates per output row for the sampler (see Candidates); 0: none
};

class Session {
public:
    Session(const Model& m, std::unique_ptr<Backend> backend, const SessionOptions& o);
    // Feeds tokens after the ones already in the cache. Its outputs — for the last token, or for
    // every token when all_outputs — stay on the backend until asked for: logits(i) reads the rows'
    // full logits, candidates(i) only their n_top largest (a few hundred bytes instead of the
    // vocabulary, which is what a GPU should hand back per token).
    void decode(const std::vector<int32_t>& tokens, bool all_outputs = false);
    const float* logits(int row);
    Candidates candidates(int row);  // k = 0 when the session keeps none
    // decode() and every row's logits (n_tokens x n_vocab, row-major, or one row).
    const std::vector<float>& eval(const std::vector<int32_t>& tokens, bool all_logits = false);
    int n_past() const { return n_past_; }
    int n_ctx() const { return n_ctx_; }
    // Forgets cached positions >= n (the next eval starts at position n).
    void truncate(int n);
    const Model& model() const { return m_; }
    Backend& backend() { return *be_; }

private:
    ForwardGraph& graph_for(int n_tokens, int n_out);
    const Model& m_;
    std::unique_ptr<Backend> be_;
    KVCache kv_;
    SessionOptions opt_;
    int n_ctx_ = 0;
    int n_past_ = 0;
    std::map<std::pair<int, int>, std::unique_ptr<ForwardGraph>> graphs_;
    // Outputs of the last decode(): rows before last_first_ were read while decoding (earlier
    // chunks); the last chunk's rows are read from last_ when first asked for.
    void read_logits(ForwardGraph& fg, int first_row);
    void read_top(ForwardGraph& fg, int first_row);
    ForwardGraph* last_ = nullptr;
    int last_first_ = 0, n_rows_ = 0;
    bool logits_ready_ = false, top_ready_ = false;
    std::vector<float> logits_, top_logits_;
    std::vector<int32_t> top_ids_;
};

// The model's context length capped at 4096 when the user gives none.
int default_context(const Model& m);

}  // namespace lumen
