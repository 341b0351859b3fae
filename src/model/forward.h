// Builds the forward graph of a llama-family model (llama, qwen2, gemma3) for one batch shape:
// n_tokens new tokens at given positions, logits for n_out of them.
#pragma once
#include <memory>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "tensor/graph.h"

namespace lumen {

struct ForwardGraph {
    Graph g;
    int n_tokens = 0, n_out = 0;
    Tensor* tokens = nullptr;   // I32 {T}
    Tensor* pos = nullptr;      // I32 {T}
    Tensor* out_ids = nullptr;  // I32 {n_out}: which batch rows produce logits
    Tensor* logits = nullptr;   // F32 {n_vocab, n_out}
    std::vector<int32_t> tokens_buf, pos_buf, out_buf;
};

std::unique_ptr<ForwardGraph> build_forward(const Model& m, KVCache& kv, int n_tokens, int n_out);

}  // namespace lumen
