// Decode-time matrix x vector(s): each warp owns one weight row, stages it in shared memory, and its
// lanes decode it a few elements at a time, reusing each decoded weight for up to kMaxCols
// activation rows.
#include <cuda_fp16.h>

#include "kernels.h"
#include "quant_decode.cuh"

namespace lumen::cuda {

namespace {

constexpr int kMaxCols = 8;
constexpr int kWarps = 4;

// Each warp stages up to 6 KiB of its row in shared memory (a whole row of 4096 4-bit weights),
// so a warp has its row in flight at once; 8 blocks of four warps fit an SM (24.6 KiB each, at
// most 64 registers per thread).
constexpr int kSegBytes = 6144 + 16;
constexpr int kBlocksPerSM = 8;
// Elements per staged segment for type T: as many as fit, a multiple of 256 (whole super-blocks).
template <int T>
__host__ __device__ constexpr int seg_elems() {
    return (kSegBytes - 16) / Layout<T>::bytes * Layout<T>::block / 256 * 256;
}

// Copies bytes [b0, b1) of row w into the warp's shared memory with 16-byte loads, all issued
// before any is used; returns where byte b0 landed (the copy starts at a 16-byte boundary).
__device__ __forceinline__ int stage_row(const uint8_t* w, size_t b0, size_t b1, uint8_t* sm, int lane) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(w + b0), aligned = start & ~uintptr_t(15);
    const int lead = int(start - aligned);
    const int n16 = int((lead + (b1 - b0) + 15) / 16);
    const uint4* src = reinterpret_cast<const uint4*>(aligned);
    __syncwarp();
    for (int i = lane; i < n16; i += 32) reinterpret_cast<uint4*>(sm)[i] = __ldg(src + i);
    __syncwarp();
    return lead;
}

// Sums each column's partial dot products across the warp and writes Y[m][row].
__device__ __forceinline__ void store_rows(const float* acc, int M, float* Y, int64_t ldy, int row, int lane) {
    #pragma unroll
    for (int m = 0; m < kMaxCols; m++) {
        if (m >= M) break;
        float s = acc[m];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
        if (lane == 0) Y[size_t(m) * ldy + row] = s;
    }
}

// The warp first copies its row segment to shared memory with 16-byte loads (all issued before any
// is used, so many bytes are in flight), then decodes 32-element chunks from there.
template <int T>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSM) matvec_kernel(const uint8_t* __restrict__ W, size_t w_stride,
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
    float y[4];
    constexpr int kSegElems = seg_elems<T>();
    for (int e0 = 0; e0 < K; e0 += kSegElems) {
        const int n_el = min(kSegElems, K - e0);
        const size_t b0 = size_t(e0 / B) * S, b1 = size_t((e0 + n_el) / B) * S;
        const int lead = stage_row(w, b0, b1, sm, lane);
        // Lane l takes elements 4l..4l+3 of each 128: the activation reads are coalesced float4s.
        for (int e = 4 * lane; e < n_el; e += 128) {
            decode4<T>(sm + lead, e, y);
            #pragma unroll
            for (int m = 0; m < kMaxCols; m++) {
                if (m >= M) break;
                const float4 v = *reinterpret_cast<const float4*>(X + size_t(m) * x_stride + size_t(e0) + size_t(e));
                acc[m] += y[0] * v.x + y[1] * v.y + y[2] * v.z + y[3] * v.w;
            }
        }
    }
    store_rows(acc, M, Y, ldy, row, lane);
}

// Activations as int8 for the integer path: per 32 elements a float scale d and q = round(x / d).
__global__ void quantize_x_kernel(const float* __restrict__ X, size_t x_stride, int8_t* __restrict__ xq,
                                  float* __restrict__ xd, int K) {
    const int m = blockIdx.y;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;  // one warp per 32-element block
    if (e >= K) return;
    const float x = X[size_t(m) * x_stride + e];
    float amax = fabsf(x);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
    const float d = amax / 127.0f;
    xq[size_t(m) * K + e] = int8_t(__float2int_rn(d != 0.0f ? x / d : 0.0f));
    if (e % 32 == 0) xd[size_t(m) * (K / 32) + e / 32] = d;
}

__device__ __forceinline__ uint32_t load_u32_2aligned(const uint8_t* p) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
    return uint32_t(h[0]) | uint32_t(h[1]) << 16;
}

// Spreads 4 bits into bit 4 of 4 bytes (the fifth bit of Q5 quants).
__device__ __forceinline__ uint32_t spread4(uint32_t x) { return ((x * 0x00204081u) & 0x01010101u) << 4; }

// The legacy 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with int8 activations: DP4A does
// four multiply-adds per instruction. Lane l takes elements 8l..8l+7 of each 256; per block of 32
// the sum is d_w * d_x * (sum q*xq) + (offset or min) * d_x * (sum xq).
template <int T>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSM) matvec_q8_kernel(const uint8_t* __restrict__ W, size_t w_stride,
                                                                const int8_t* __restrict__ xq,
                                                                const float* __restrict__ xd, float* __restrict__ Y,
                                                                int64_t ldy, int K, int N, int M) {
    constexpr int S = Layout<T>::bytes;
    constexpr bool has_min = T == T_Q4_1 || T == T_Q5_1, five = T == T_Q5_0 || T == T_Q5_1;
    constexpr int qs_off = T == T_Q8_0 ? 2 : (has_min ? 4 : 2) + (five ? 4 : 0);
    __shared__ __align__(16) uint8_t stage[kWarps][kSegBytes];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * kWarps + warp;
    if (row >= N) return;
    const uint8_t* w = W + size_t(row) * w_stride;
    uint8_t* sm = stage[warp];
    float acc[kMaxCols] = {0};
    constexpr int kSegElems = seg_elems<T>();
    for (int e0 = 0; e0 < K; e0 += kSegElems) {
        const int n_el = min(kSegElems, K - e0);
        const size_t b0 = size_t(e0 / 32) * S, b1 = size_t((e0 + n_el) / 32) * S;
        const int lead = stage_row(w, b0, b1, sm, lane);
        for (int e = 8 * lane; e < n_el; e += 256) {
            const uint8_t* b = sm + lead + (e / 32) * S;
            const int idx = e % 32;
            const float d = h2f(b);
            float c;  // what multiplies sum(xq): the min, the -8/-16 offset, or nothing
            if constexpr (has_min) c = h2f(b + 2);
            else if constexpr (T == T_Q8_0) c = 0.0f;
            else c = (five ? -16.0f : -8.0f) * d;
            int v0, v1;
            if constexpr (T == T_Q8_0) {
                v0 = int(load_u32_2aligned(b + qs_off + idx));
                v1 = int(load_u32_2aligned(b + qs_off + idx + 4));
            } else {
                const int shift = idx < 16 ? 0 : 4, base = idx % 16;
                uint32_t w0 = (load_u32_2aligned(b + qs_off + base) >> shift) & 0x0F0F0F0Fu;
                uint32_t w1 = (load_u32_2aligned(b + qs_off + base + 4) >> shift) & 0x0F0F0F0Fu;
                if constexpr (five) {
                    const uint32_t hb = (load_u32_2aligned(b + (has_min ? 4 : 2)) >> idx) & 0xFFu;
                    w0 |= spread4(hb & 0xF);
                    w1 |= spread4(hb >> 4);
                }
                v0 = int(w0);
                v1 = int(w1);
            }
            const int blk = (e0 + e) / 32;
            #pragma unroll
            for (int m = 0; m < kMaxCols; m++) {
                if (m >= M) break;
                const int2 x = *reinterpret_cast<const int2*>(xq + size_t(m) * K + e0 + e);
                const int qx = __dp4a(v0, x.x, __dp4a(v1, x.y, 0));
                float t = d * float(qx);
                if constexpr (T != T_Q8_0) t += c * float(__dp4a(0x01010101, x.x, __dp4a(0x01010101, x.y, 0)));
                acc[m] += xd[size_t(m) * (K / 32) + blk] * t;
            }
        }
    }
    store_rows(acc, M, Y, ldy, row, lane);
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

bool matvec_int8(int type) {
    return type == T_Q4_0 || type == T_Q4_1 || type == T_Q5_0 || type == T_Q5_1 || type == T_Q8_0;
}

size_t matvec_scratch_bytes(int64_t K, int64_t M) { return size_t(K) * size_t(M) + size_t(K / 32) * size_t(M) * 4 + 16; }

void matvec(int type, const void* W, size_t w_stride, const float* X, size_t x_stride, float* Y, int64_t ldy,
            int64_t K, int64_t N, int64_t M, void* scratch, cudaStream_t s) {
    if (matvec_int8(type)) {
        int8_t* xq = static_cast<int8_t*>(scratch);
        float* xd = reinterpret_cast<float*>(xq + ((size_t(K) * size_t(M) + 15) & ~size_t(15)));
        quantize_x_kernel<<<dim3{unsigned((K + 255) / 256), unsigned(M)}, 256, 0, s>>>(X, x_stride, xq, xd, int(K));
        for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
            const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
            dispatch(type, [&] <int T>() {
                if constexpr (T == T_Q4_0 || T == T_Q4_1 || T == T_Q5_0 || T == T_Q5_1 || T == T_Q8_0)
                    matvec_q8_kernel<T><<<unsigned((N + kWarps - 1) / kWarps), kWarps * 32, 0, s>>>(
                        static_cast<const uint8_t*>(W), w_stride, xq + m0 * K, xd + m0 * (K / 32), Y + m0 * ldy, ldy,
                        int(K), int(N), cols);
            });
        }
        return;
    }
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
