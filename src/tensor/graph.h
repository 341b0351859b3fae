// The compute graph: tensors created in execution order by builder calls, then planned (every
// intermediate gets an offset in one activation arena, memory reused once its last reader ran).
// A backend executes `nodes()` in order; the same graph runs on the CPU and on CUDA.
#pragma once
#include <deque>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace lumen {

struct RopeParams {
    int n_rot = 0;             // rotated dimensions per head (the rest pass through)
    bool neox = false;         // pairs (i, i + n_rot/2) instead of (2i, 2i+1)
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;   // positions are multiplied by this (linear / YaRN scaling)
    // YaRN: blend of interpolated and extrapolated frequencies (ext_factor 0 turns it off).
    float ext_factor = 0.0f, attn_factor = 1.0f, beta_fast = 32.0f, beta_slow = 1.0f;
    int orig_ctx = 0;
};

class Graph {
public:
    // Leaves.
    Tensor* weight(DType t, const int64_t* ne, int n_dims, const void* data, const std::string& name);
    Tensor* input(DType t, int64_t ne0, int64_t ne1, const std::string& name);
    Tensor* state(Tensor* external);  // a persistent tensor owned by the caller (KV cache layer)

    // Shape changes without copying.
    Tensor* reshape(Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2 = 1);

    // Ops (see Op in tensor.h).
    Tensor* get_rows(Tensor* table, Tensor* ids);
    Tensor* mul_mat(Tensor* w, Tensor* x);
    Tensor* add(Tensor* a, Tensor* b);
    Tensor* mul(Tensor* a, Tensor* b);
    Tensor* scale(Tensor* a, float s);
    Tensor* rms_norm(Tensor* a, float eps);
    // freq_factors (F32 {n_rot/2}, optional) divide each frequency: Llama 3's long-context scaling.
    Tensor* rope(Tensor* a, Tensor* pos, const RopeParams& p, Tensor* freq_factors = nullptr);
    Tensor* swiglu(Tensor* gate, Tensor* up);
    Tensor* geglu(Tensor* gate, Tensor* up);
    // Writes k (F32 {kv_dim, T}) into the cache's physical rows `rows` (I32 {T}); returns the cache
    // as written.
    Tensor* kv_write(Tensor* cache, Tensor* k, Tensor* rows);
    // Paged attention. q {head_dim, n_head, T}; caches {head_dim*n_head_kv, n_rows} in blocks of
    // block_size rows; pos and seq I32 {T}: each token's position and sequence; block_table I32
    // {max_blocks, n_seqs}: a sequence's blocks in position order. Token t attends to its sequence's
    // positions 0..pos[t] (minus a sliding window when window > 0), position p being physical row
    // block_table[p / block_size][seq[t]] * block_size + p % block_size. Result {head_dim*n_head, T}.
    Tensor* attention(Tensor* q, Tensor* k_cache, Tensor* v_cache, Tensor* pos, Tensor* seq, Tensor* block_table,
                      int block_size, int n_head_kv, float scale, int window = 0, float softcap = 0.0f);
    // The k largest elements of each row of a (F32), for sampling from k candidates: I32 {2k, rows},
    // each row k indices (largest value first, equal values by lower index) then the k values as
    // float bits. 1 <= k <= min(256, row length).
    static constexpr int kTopKMax = 256;
    Tensor* top_k(Tensor* a, int k);

    void mark_output(Tensor* t) { t->is_output = true; }

    // Assigns arena offsets; returns the arena size in bytes.
    size_t plan(size_t alignment = 256);
    size_t arena_size() const { return arena_size_; }

    const std::vector<Tensor*>& nodes() const { return nodes_; }   // ops in execution order
    const std::vector<Tensor*>& leaves() const { return leaves_; } // weights, inputs, states
    // The tensor whose memory `t` uses (itself unless it is a view or a KV write).
    static Tensor* storage(Tensor* t);

private:
    Tensor* new_tensor(DType t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
    Tensor* new_op(Op op, DType t, int64_t ne0, int64_t ne1, int64_t ne2 = 1);
    Tensor* binary(Op op, Tensor* a, Tensor* b, const char* name);
    std::deque<Tensor> pool_;
    std::vector<Tensor*> nodes_, leaves_;
    size_t arena_size_ = 0;
};

}  // namespace lumen
