// Element-wise kernels: conversion to f16, add/mul with broadcast, scale. Each mirrors its CPU twin in
// src/cpu/ops_basic.cpp (RMSNorm, GLU and RoPE are in fused.cuh).
#include "kernels.h"
#include "launch.cuh"

namespace lumen::cuda {

namespace {

constexpr int kThreads = 256;

struct ToF16 : KernelDefaults {
    static constexpr int kThreads = cuda::kThreads;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* x, uint16_t* y, int64_t n) {
        const int64_t i = int64_t(c.block().x) * c.threads() + c.thread();
        if (i < n) y[i] = simt::f2h(x[i]);
    }
};

// Row blockIdx.y; the columns strided over the blocks of x.
struct Binary : KernelDefaults {
    static constexpr int kThreads = cuda::kThreads;
    template <class C>
    LUMEN_DEV static void run(C& c, bool mul, const float* a, size_t as, const float* b, size_t bs, bool bcast, float* y,
                              size_t ys, int n) {
        const int64_t r = c.block().y;
        const float* ar = a + r * as;
        const float* br = b + (bcast ? 0 : r * bs);
        float* yr = y + r * ys;
        for (int i = c.block().x * c.threads() + c.thread(); i < n; i += c.grid().x * c.threads())
            yr[i] = mul ? ar[i] * br[i] : ar[i] + br[i];
    }
};

struct Scale : KernelDefaults {
    static constexpr int kThreads = cuda::kThreads;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* x, float* y, float k, int64_t n) {
        const int64_t i = int64_t(c.block().x) * c.threads() + c.thread();
        if (i < n) y[i] = x[i] * k;
    }
};

unsigned blocks(int64_t n, int per) { return unsigned((n + per - 1) / per); }

}  // namespace

void f32_to_f16(const float* x, void* y, int64_t n, cudaStream_t s) {
    launch<ToF16>(blocks(n, kThreads), kThreads, 0, s, x, static_cast<uint16_t*>(y), n);
}

void add_or_mul(bool mul, const float* a, size_t as, const float* b, size_t bs, bool bcast, float* y, size_t ys,
                int64_t n, int64_t rows, cudaStream_t s) {
    const dim3 grid(blocks(n, kThreads) < 8 ? blocks(n, kThreads) : 8, unsigned(rows));
    launch<Binary>(grid, kThreads, 0, s, mul, a, as / 4, b, bs / 4, bcast, y, ys / 4, int(n));
}

void scale(const float* x, float* y, float k, int64_t n, cudaStream_t s) {
    launch<Scale>(blocks(n, kThreads), kThreads, 0, s, x, y, k, n);
}

}  // namespace lumen::cuda
