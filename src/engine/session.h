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
#include "engine/pass_outputs.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tensor/backend.h"

namespace lumen {

// Candidates per output row a sampler gets from the graph (Graph::top_k): enough for llama.cpp's
// default top-k of 40 and the common 50 and 64.
constexpr int kSampleCandidates = 64;

struct SessionOptions {
    int n_ctx = 0;        // 0: the model's training context, capped at 4096
    int n_batch = 512;    // tokens per forward pass when reading a prompt
    int n_threads = 0;    // CPU threads; 0: all cores
    DType cache_type = DType::F16;
    int n_top = kSampleCandidates;  // candidates per output row for the sampler; 0: none
};

class Session final : public OutputRows {
public:
    Session(const Model& m, std::unique_ptr<Backend> backend, const SessionOptions& o);
    // Feeds tokens after the ones already in the cache. Its outputs — for the last token, or for
    // every token when all_outputs — stay on the backend until asked for: logits(i) reads the rows'
    // full logits, candidates(i) only their n_top largest (a few hundred bytes instead of the
    // vocabulary, which is what a GPU should hand back per token).
    void decode(const std::vector<int32_t>& tokens, bool all_outputs = false);
    const float* logits(int row) override;
    Candidates candidates(int row) override;  // k = 0 when the session keeps none
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
    ForwardGraph& run_chunk(const std::vector<int32_t>& tokens, int start, int len, int n_out);
    PassOutputs& chunk_of(int& row);  // the chunk holding output row `row`; row becomes its index there
    const Model& m_;
    std::unique_ptr<Backend> be_;
    KVCache kv_;
    SessionOptions opt_;
    int n_ctx_ = 0;
    int n_past_ = 0;
    std::map<std::pair<int, int>, std::unique_ptr<ForwardGraph>> graphs_;
    // The last decode()'s outputs, one PassOutputs per chunk of n_batch tokens (earlier chunks read
    // at once, as their graph may run again; the last one when asked for).
    std::vector<PassOutputs> chunks_;  // the first n_chunks_ hold the last decode()'s
    int n_chunks_ = 0;
    int chunk_rows_ = 0;  // rows per chunk but the last
    std::vector<float> logits_;  // eval()'s rows
};

// The model's context length capped at 4096 when the user gives none.
int default_context(const Model& m);

}  // namespace lumen
