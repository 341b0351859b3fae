// Builds the forward graph of a llama-family model (llama, qwen2, gemma3) for one batch shape:
// n_tokens new tokens, each of one of n_seqs sequences at some position, written to the paged KV
// cache, and logits for n_out of them.
#pragma once
#include <memory>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "tensor/graph.h"

namespace lumen {

struct ForwardGraph {
    Graph g;
    int n_tokens = 0, n_out = 0, n_seqs = 0, max_blocks = 0;
    Tensor* tokens = nullptr;       // I32 {T}
    Tensor* pos = nullptr;          // I32 {T}: position in its sequence
    Tensor* seq = nullptr;          // I32 {T}: which sequence (column of the block table)
    Tensor* rows = nullptr;         // I32 {T}: the cache row its K/V go to
    Tensor* block_table = nullptr;  // I32 {max_blocks, n_seqs}
    Tensor* out_ids = nullptr;      // I32 {n_out}: which batch rows produce logits
    Tensor* logits = nullptr;       // F32 {n_vocab, n_out}
    Tensor* top = nullptr;          // I32 {2 n_top, n_out}: each row's n_top largest logits (Graph::top_k)
    std::vector<int32_t> tokens_buf, pos_buf, seq_buf, rows_buf, table_buf, out_buf;
};

// n_top > 0 adds `top`, so a sampler can read n_top candidates per row instead of the whole row.
std::unique_ptr<ForwardGraph> build_forward(const Model& m, KVCache& kv, int n_tokens, int n_out, int n_seqs,
                                            int max_blocks, int n_top = 0);

}  // namespace lumen
