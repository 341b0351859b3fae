// The KV cache of one sequence: per layer, one K and one V tensor of {kv_dim, n_ctx} rows,
// resident on the backend that runs the model.
#pragma once
#include <vector>

#include "model/model.h"
#include "tensor/backend.h"

namespace lumen {

struct KVCache {
    DType type = DType::F16;
    int n_ctx = 0;
    std::vector<Tensor> k, v;  // one per layer

    void init(const Model& m, Backend& be, int n_ctx, DType type);
    size_t bytes() const;
};

}  // namespace lumen
