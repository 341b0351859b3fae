// CPU implementations of the graph ops. Every op is called on all threads of the pool at once
// and does its own share (ith of nth); ops needing two phases call ctx.barrier() in between.
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace lumen::cpu {

struct OpCtx {
    int ith = 0, nth = 1;
    uint8_t* arena = nullptr;
    uint8_t* work = nullptr;   // shared scratch, sized by work_size()
    size_t work_per_thread = 0; // part of `work` that is private to each thread (after the shared part)
    size_t work_shared = 0;
    void (*barrier_fn)(void*) = nullptr;
    void* barrier_arg = nullptr;

    void barrier() const { if (barrier_fn) barrier_fn(barrier_arg); }
    // Address of a tensor's first byte, following views to their storage.
    uint8_t* ptr(const Tensor* t) const;
    uint8_t* thread_work() const { return work + work_shared + size_t(ith) * work_per_thread; }
    // Split [0, n) in nth contiguous parts; this thread's part.
    void range(int64_t n, int64_t& begin, int64_t& end) const {
        int64_t per = (n + nth - 1) / nth;
        begin = std::min<int64_t>(n, per * ith);
        end = std::min<int64_t>(n, begin + per);
    }
};

// Scratch bytes an op needs: shared by all threads, and per thread.
void work_size(const Tensor* t, int n_threads, size_t& shared, size_t& per_thread);

void op_get_rows(const OpCtx& c, Tensor* t);
void op_mul_mat(const OpCtx& c, Tensor* t);
void op_binary(const OpCtx& c, Tensor* t);   // Add, Mul
void op_unary(const OpCtx& c, Tensor* t);    // Scale, SwiGLU, GeGLU
void op_rms_norm(const OpCtx& c, Tensor* t);
void op_rope(const OpCtx& c, Tensor* t);
void op_kv_write(const OpCtx& c, Tensor* t);
void op_attention(const OpCtx& c, Tensor* t);
void op_top_k(const OpCtx& c, Tensor* t);

}  // namespace lumen::cpu
