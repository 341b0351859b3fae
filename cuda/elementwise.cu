// Element-wise kernels: conversion to f16, add/mul with broadcast, scale. Each mirrors its CPU twin in
// src/cpu/ops_basic.cpp (RMSNorm, GLU and RoPE are in fused.cuh).
#include <cuda_fp16.h>

#include "kernels.h"

namespace lumen::cuda {

namespace {

__global__ void f32_to_f16_kernel(const float* x, __half* y, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half(x[i]);
}

__global__ void binary_kernel(bool mul, const float* a, size_t as, const float* b, size_t bs, bool bcast, float* y,
                              size_t ys, int n) {
    const int64_t r = blockIdx.y;
    const float* ar = a + r * as;
    const float* br = b + (bcast ? 0 : r * bs);
    float* yr = y + r * ys;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        yr[i] = mul ? ar[i] * br[i] : ar[i] + br[i];
}

__global__ void scale_kernel(const float* x, float* y, float k, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * k;
}

unsigned blocks(int64_t n, int per) { return unsigned((n + per - 1) / per); }

}  // namespace

void f32_to_f16(const float* x, void* y, int64_t n, cudaStream_t s) {
    f32_to_f16_kernel<<<blocks(n, 256), 256, 0, s>>>(x, static_cast<__half*>(y), n);
}

void add_or_mul(bool mul, const float* a, size_t as, const float* b, size_t bs, bool bcast, float* y, size_t ys,
                int64_t n, int64_t rows, cudaStream_t s) {
    dim3 grid(blocks(n, 256) < 8 ? blocks(n, 256) : 8, unsigned(rows));
    binary_kernel<<<grid, 256, 0, s>>>(mul, a, as / 4, b, bs / 4, bcast, y, ys / 4, int(n));
}

void scale(const float* x, float* y, float k, int64_t n, cudaStream_t s) {
    scale_kernel<<<blocks(n, 256), 256, 0, s>>>(x, y, k, n);
}

}  // namespace lumen::cuda
