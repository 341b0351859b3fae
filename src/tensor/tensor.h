// A tensor node of the compute graph: type, shape, strides, and the op that produces it.
// Shapes follow ggml's convention: ne[0] is the contiguous dimension (a row), so a matrix of
// N rows of K elements has ne = {K, N}, and a batch of T token vectors of width D is {D, T}.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "tensor/dtype.h"

namespace lumen {

enum class Op : uint8_t {
    None,       // a leaf: weight (data in the model file) or graph input (filled per call)
    View,       // reinterprets src[0]'s memory with another shape/strides and an offset
    GetRows,    // rows of src[0] picked by the I32 ids in src[1]
    MulMat,     // src[0] {K, N} (weights, any type) x src[1] {K, M} (F32) -> {N, M}
    Add,        // src[0] + src[1], src[1] broadcast over rows when it is a single row
    Mul,        // src[0] * src[1], same broadcast rule
    Scale,      // src[0] * f[0]
    RmsNorm,    // each row / rms(row), eps f[0]
    Rope,       // rotates {head_dim, n_head, T} by positions src[1] (I32 {T}); params below
    SwiGLU,     // silu(src[0]) * src[1]
    GeGLU,      // gelu(src[0]) * src[1] (tanh approximation)
    KVWrite,    // writes src[1] {head_dim*n_kv_head, T} into cache src[0] at rows src[2] (I32 physical rows)
    Attention,  // softmax(q k^T * f[0] + causal mask) v over the paged cache; see graph.h
    TopK,       // the ip[0] largest of each row, largest first, ties to the lower index ->
                // I32 {2k, rows}: k indices, then the k values' float bits
};
const char* op_name(Op op);

struct Tensor {
    DType type = DType::F32;
    int64_t ne[4] = {1, 1, 1, 1};
    size_t nb[4] = {0, 0, 0, 0};  // byte strides
    Op op = Op::None;
    Tensor* src[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    int32_t ip[8] = {0};          // integer op parameters
    float fp[8] = {0};            // float op parameters
    std::string name;

    // Where the bytes live. Weights: `data` points into the mapped file (a GPU backend keeps its
    // own copy, found by this pointer). Inputs: `data` is the host buffer the caller fills.
    // States: `data` is memory of the backend that allocated them (alloc_state).
    // Intermediates: `offset` into the backend's activation arena, set by the planner.
    // Views: memory of `view_src` (resolved to a non-view) plus `view_offset`.
    void* data = nullptr;
    size_t offset = 0;
    Tensor* view_src = nullptr;
    size_t view_offset = 0;
    bool is_input = false;   // filled by the caller before each compute
    bool is_weight = false;  // lives in the model; uploaded once by GPU backends
    bool is_output = false;  // read back after compute: the planner never reuses its memory
    bool is_state = false;   // persistent across calls (KV cache): owned by the caller, not the arena

    int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
    size_t row_size() const { return lumen::row_bytes(type, ne[0]); }
    size_t nbytes() const;  // bytes spanned, strides included
    bool contiguous() const;
};

}  // namespace lumen
