// Row-wise kernels: conversions, add/mul with broadcast, scale, GLU activations, RMSNorm, RoPE. Each mirrors its CPU twin in src/cpu/ops_basic.cpp / ops_rope.cpp.
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

__global__ void glu_kernel(bool gelu, const float* g, const float* u, float* y, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = g[i];
    float act;
    if (gelu) act = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    else act = x / (1.0f + expf(-x));
    y[i] = act * u[i];
}

__device__ float block_sum(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[w] = v;
    __syncthreads();
    v = lane < int(blockDim.x / 32) ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __syncthreads();
    return v;
}

__global__ void rms_norm_kernel(const float* x, size_t xs, float* y, size_t ys, int n, float eps) {
    const float* xr = x + size_t(blockIdx.x) * xs;
    float* yr = y + size_t(blockIdx.x) * ys;
    float s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += xr[i] * xr[i];
    s = block_sum(s);
    const float k = rsqrtf(s / float(n) + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * k;
}

__device__ float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return n_dims * logf(n_ctx_orig / (n_rot * 2.0f * 3.14159265358979f)) / (2.0f * logf(base));
}

// One thread per rotated pair; blockIdx.y = head, blockIdx.z = token.
__global__ void rope_kernel(const float* x, float* y, const int32_t* pos, const float* factors, int head_dim,
                            size_t x_nb1, size_t x_nb2, RopeArgs a) {
    const int h = blockIdx.y, t = blockIdx.z;
    const float* xr = x + t * x_nb2 + h * x_nb1;
    float* yr = y + (size_t(t) * gridDim.y + h) * head_dim;
    for (int p = threadIdx.x; p < head_dim / 2; p += blockDim.x) {
        const int i0 = 2 * p;
        if (i0 >= a.n_rot) {
            yr[i0] = xr[i0];
            yr[i0 + 1] = xr[i0 + 1];
            continue;
        }
        const float theta_e = float(pos[t]) * powf(a.base, -float(i0) / float(a.n_rot)) / (factors ? factors[p] : 1.0f);
        float theta = a.freq_scale * theta_e, mscale = a.attn_factor;
        if (a.ext_factor != 0.0f) {
            const float lo = fmaxf(0.0f, floorf(yarn_corr_dim(a.n_rot, a.orig_ctx, a.beta_fast, a.base)));
            const float hi = fminf(float(a.n_rot - 1), ceilf(yarn_corr_dim(a.n_rot, a.orig_ctx, a.beta_slow, a.base)));
            const float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, (p - lo) / fmaxf(0.001f, hi - lo)));
            const float mix = ramp * a.ext_factor;
            theta = theta * (1 - mix) + theta_e * mix;
            mscale *= 1.0f + 0.1f * logf(1.0f / a.freq_scale);
        }
        float sn, cs;
        sincosf(theta, &sn, &cs);
        cs *= mscale;
        sn *= mscale;
        const int ia = a.neox ? p : i0, ib = a.neox ? p + a.n_rot / 2 : i0 + 1;
        const float x0 = xr[ia], x1 = xr[ib];
        yr[ia] = x0 * cs - x1 * sn;
        yr[ib] = x0 * sn + x1 * cs;
    }
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

void glu(bool gelu, const float* g, const float* u, float* y, int64_t n, cudaStream_t s) {
    glu_kernel<<<blocks(n, 256), 256, 0, s>>>(gelu, g, u, y, n);
}

void rms_norm(const float* x, size_t xs, float* y, size_t ys, int64_t n, int64_t rows, float eps, cudaStream_t s) {
    rms_norm_kernel<<<unsigned(rows), n >= 1024 ? 1024 : 256, 0, s>>>(x, xs / 4, y, ys / 4, int(n), eps);
}

void rope(const float* x, float* y, const int32_t* pos, const float* factors, int64_t head_dim, int64_t n_head,
          int64_t T, size_t x_nb1, size_t x_nb2, const RopeArgs& a, cudaStream_t s) {
    dim3 grid(1, unsigned(n_head), unsigned(T));
    rope_kernel<<<grid, 64, 0, s>>>(x, y, pos, factors, int(head_dim), x_nb1 / 4, x_nb2 / 4, a);
}

}  // namespace lumen::cuda
