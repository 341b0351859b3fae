// The paged KV cache: per layer, one K and one V tensor holding a pool of rows in blocks of
// block_size positions, resident on the backend that runs the model. Which blocks belong to which
// sequence is the caller's business (a block table per sequence, see kv_blocks.h).
#pragma once
#include <vector>

#include "model/model.h"
#include "tensor/backend.h"

namespace lumen {

// Tokens per block. Small blocks waste little at the end of each sequence and share more of a
// prefix that does not end on a block boundary (64 sequences with a 1024-token prefix and short
// suffixes stay near the memory of one prefix plus the suffixes).
constexpr int kKVBlockSize = 8;

struct KVCache {
    DType type = DType::F16;
    int block_size = kKVBlockSize;
    int n_blocks = 0;
    std::vector<Tensor> k, v;  // one per layer, {kv_dim, n_blocks * block_size}

    void init(const Model& m, Backend& be, int n_blocks, int block_size, DType type);
    int64_t n_rows() const { return int64_t(n_blocks) * block_size; }
    size_t bytes() const;
    size_t bytes_per_block() const;  // all layers, K and V
};

}  // namespace lumen
