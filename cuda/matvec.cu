// Decode-time matrix x vector(s): each warp owns one weight row, its lanes stride over the row's
// 32-element chunks, decode them once and reuse them for up to kMaxCols activation rows.
#include <cuda_fp16.h>

#include "kernels.h"
#include "quant_decode.cuh"

namespace lumen::cuda {

namespace {

constexpr int kMaxCols = 8;
constexpr int kWarps = 4;

// Elements of a row segment staged in shared memory per warp: 2048 elements are at most 8 KiB
// (F32), so four warps fit the default 48 KiB with room to spare.
constexpr int kSegElems = 2048;
constexpr int kSegBytes = kSegElems * 4 + 16;

// The warp first copies its row segment to shared memory with 16-byte loads (all issued before any
// is used, so many bytes are in flight), then decodes 32-element chunks from there.
template <int T>
__global__ void __launch_bounds__(kWarps * 32) matvec_kernel(const uint8_t* __restrict__ W, size_t w_stride,
                                                             const float* __restrict__ X, size_t x_stride,
                                                             float* __restrict__ Y, int64_t ldy, int K, int N, int M) {
    constexpr int B = Layout<T>::block, S = Layout<T>::bytes;
    __shared__ __align__(16) uint8_t stage[kWarps][kSegBytes];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * kWarps + warp;
    if (row >= N) return;
    const uint8_t* w = W + size_t(row) * w_stride;
    uint8_t* sm = stage[warp];
    float acc[kMaxCols] = {0};
    float y[32];
    for (int e0 = 0; e0 < K; e0 += kSegElems) {
        const int n_el = min(kSegElems, K - e0);
        const size_t b0 = size_t(e0 / B) * S, b1 = size_t((e0 + n_el) / B) * S;
        const uintptr_t start = reinterpret_cast<uintptr_t>(w + b0), aligned = start & ~uintptr_t(15);
        const int lead = int(start - aligned);
        const int n16 = int((lead + (b1 - b0) + 15) / 16);
        const uint4* src = reinterpret_cast<const uint4*>(aligned);
        __syncwarp();
        for (int i = lane; i < n16; i += 32) reinterpret_cast<uint4*>(sm)[i] = __ldg(src + i);
        __syncwarp();
        for (int c = lane; c < n_el / 32; c += 32) {
            decode_chunk<T>(sm + lead, c, y);
            #pragma unroll
            for (int m = 0; m < kMaxCols; m++) {
                if (m >= M) break;
                const float4* x = reinterpret_cast<const float4*>(X + size_t(m) * x_stride + size_t(e0) + size_t(c) * 32);
                float s = 0;
                #pragma unroll
                for (int i = 0; i < 8; i++) {
                    const float4 v = x[i];
                    s += y[4 * i] * v.x + y[4 * i + 1] * v.y + y[4 * i + 2] * v.z + y[4 * i + 3] * v.w;
                }
                acc[m] += s;
            }
        }
    }
    #pragma unroll
    for (int m = 0; m < kMaxCols; m++) {
        if (m >= M) break;
        float s = acc[m];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
        if (lane == 0) Y[size_t(m) * ldy + row] = s;
    }
}

template <int T>
__global__ void dequant_f16_kernel(const uint8_t* __restrict__ W, size_t w_stride, __half* __restrict__ out, int K,
                                   int N) {
    const int64_t chunk = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int per_row = K / 32;
    if (chunk >= int64_t(per_row) * N) return;
    const int row = int(chunk / per_row), c = int(chunk % per_row);
    float y[32];
    decode_chunk<T>(W + size_t(row) * w_stride, c, y);
    __half* o = out + size_t(row) * K + size_t(c) * 32;
    #pragma unroll
    for (int i = 0; i < 32; i += 2) reinterpret_cast<__half2*>(o)[i / 2] = __floats2half2_rn(y[i], y[i + 1]);
}

template <int T>
__global__ void get_rows_kernel(const uint8_t* __restrict__ table, size_t stride, const int32_t* __restrict__ ids,
                                float* __restrict__ out, size_t out_stride, int K) {
    const int r = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= K / 32) return;
    float y[32];
    decode_chunk<T>(table + size_t(ids[r]) * stride, c, y);
    float* o = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out) + size_t(r) * out_stride) + size_t(c) * 32;
    for (int i = 0; i < 32; i++) o[i] = y[i];
}

// Calls f.template operator()<T>() for the runtime type id; false if the type has no kernels.
template <class F>
bool dispatch(int type, F&& f) {
    switch (type) {
        case T_F32: f.template operator()<T_F32>(); return true;
        case T_F16: f.template operator()<T_F16>(); return true;
        case T_BF16: f.template operator()<T_BF16>(); return true;
        case T_Q4_0: f.template operator()<T_Q4_0>(); return true;
        case T_Q4_1: f.template operator()<T_Q4_1>(); return true;
        case T_Q5_0: f.template operator()<T_Q5_0>(); return true;
        case T_Q5_1: f.template operator()<T_Q5_1>(); return true;
        case T_Q8_0: f.template operator()<T_Q8_0>(); return true;
        case T_Q2_K: f.template operator()<T_Q2_K>(); return true;
        case T_Q3_K: f.template operator()<T_Q3_K>(); return true;
        case T_Q4_K: f.template operator()<T_Q4_K>(); return true;
        case T_Q5_K: f.template operator()<T_Q5_K>(); return true;
        case T_Q6_K: f.template operator()<T_Q6_K>(); return true;
        default: return false;
    }
}

}  // namespace

bool matvec_supported(int type) {
    switch (type) {
        case T_F32: case T_F16: case T_BF16: case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0:
        case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K: return true;
        default: return false;
    }
}

void matvec(int type, const void* W, size_t w_stride, const float* X, size_t x_stride, float* Y, int64_t ldy,
            int64_t K, int64_t N, int64_t M, cudaStream_t s) {
    for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
        const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
        dispatch(type, [&] <int T>() {
            matvec_kernel<T><<<unsigned((N + kWarps - 1) / kWarps), kWarps * 32, 0, s>>>(
                static_cast<const uint8_t*>(W), w_stride, X + m0 * x_stride, x_stride, Y + m0 * ldy, ldy, int(K),
                int(N), cols);
        });
    }
}

void dequant_rows_f16(int type, const void* W, size_t w_stride, void* out, int64_t K, int64_t N, cudaStream_t s) {
    const int64_t chunks = K / 32 * N;
    dispatch(type, [&] <int T>() {
        dequant_f16_kernel<T><<<unsigned((chunks + 255) / 256), 256, 0, s>>>(
            static_cast<const uint8_t*>(W), w_stride, static_cast<__half*>(out), int(K), int(N));
    });
}

void get_rows_f32(int type, const void* table, size_t stride, const int32_t* ids, float* out, size_t out_stride,
                  int64_t K, int64_t n_ids, cudaStream_t s) {
    dim3 grid(unsigned((K / 32 + 63) / 64), unsigned(n_ids));
    dispatch(type, [&] <int T>() {
        get_rows_kernel<T><<<grid, 64, 0, s>>>(static_cast<const uint8_t*>(table), stride, ids, out, out_stride,
                                               int(K));
    });
}

}  // namespace lumen::cuda
