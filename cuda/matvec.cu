// Decode-time matrix x vector(s). Packed weights (repack.h: Q4_0, Q8_0, Q4_K, Q6_K, F16) run the
// kernel bodies of matvec.cuh; weights in GGUF's rows (the other types, or every type under
// LUMEN_NO_REPACK) run the row-staging kernels below: each warp owns one row, stages it in shared
// memory and decodes it a few elements at a time.
#include <cuda_fp16.h>

#include "kernels.h"
#include "launch.cuh"
#include "matvec.cuh"
#include "quant_decode.cuh"

namespace lumen::cuda {

namespace {

constexpr int kMaxCols = 8;
constexpr int kWarps = 4;

// ---- weights in GGUF's rows ----------------------------------------------------------------------

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

// Where a launch writes: Y[m * ldy + row], plus R[m * ldr + row] when R is set (an add fused into
// the product; ldr = 0 broadcasts one row).
struct Out {
    float* y;
    int64_t ldy;
    const float* r;
    int64_t ldr;
};

// Sums each column's partial dot products across the warp and writes Y[m][row] (+ R[m][row]).
__device__ __forceinline__ void store_rows(const float* acc, int M, const Out& o, int row, int lane) {
    #pragma unroll
    for (int m = 0; m < kMaxCols; m++) {
        if (m >= M) break;
        float s = acc[m];
        for (int d = 16; d > 0; d >>= 1) s += __shfl_xor_sync(0xffffffff, s, d);
        if (o.r) s += o.r[size_t(m) * o.ldr + row];
        if (lane == 0) o.y[size_t(m) * o.ldy + row] = s;
    }
}

// The warp first copies its row segment to shared memory with 16-byte loads (all issued before any
// is used, so many bytes are in flight), then decodes 32-element chunks from there.
template <int T>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSM) matvec_kernel(const uint8_t* __restrict__ W, size_t w_stride,
                                                             const float* __restrict__ X, size_t x_stride,
                                                             const Out o, int K, int N, int M) {
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
    store_rows(acc, M, o, row, lane);
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
                                                                const ActBlock* __restrict__ xa, const Out o, int K,
                                                                int N, int M) {
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
                acc[m] += xa[size_t(m) * (K / 32) + blk].d * t;
            }
        }
    }
    store_rows(acc, M, o, row, lane);
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

template <int T> struct Tag {};
template <int T> constexpr int type_of(Tag<T>) { return T; }

// Calls f(Tag<T>()) for the runtime type id (type_of(tag) gives T back as a constant); false if
// the type has no kernels.
template <class F>
bool dispatch(int type, F&& f) {
    switch (type) {
        case T_F32: f(Tag<T_F32>()); return true;
        case T_F16: f(Tag<T_F16>()); return true;
        case T_BF16: f(Tag<T_BF16>()); return true;
        case T_Q4_0: f(Tag<T_Q4_0>()); return true;
        case T_Q4_1: f(Tag<T_Q4_1>()); return true;
        case T_Q5_0: f(Tag<T_Q5_0>()); return true;
        case T_Q5_1: f(Tag<T_Q5_1>()); return true;
        case T_Q8_0: f(Tag<T_Q8_0>()); return true;
        case T_Q2_K: f(Tag<T_Q2_K>()); return true;
        case T_Q3_K: f(Tag<T_Q3_K>()); return true;
        case T_Q4_K: f(Tag<T_Q4_K>()); return true;
        case T_Q5_K: f(Tag<T_Q5_K>()); return true;
        case T_Q6_K: f(Tag<T_Q6_K>()); return true;
        default: return false;
    }
}

// ---- packed weights (matvec.cuh) ------------------------------------------------------------------

// Blocks per SM the register budget is sized for: 8 (64 registers) at one column, where ~60 are
// needed (Q6_K's four planes need a few more: 7); fewer for more columns' accumulators.
constexpr int min_blocks(int T, int MC) { return MC == 1 ? (T == T_Q6_K ? 7 : 8) : MC == 2 ? 5 : 4; }

template <int T, int R, int MC>
__global__ void __launch_bounds__(kMatvecThreads, min_blocks(T, MC)) packed_matvec_kernel(const MatvecArgs a) {
    __shared__ __align__(16) char red[kMatvecSmem];
    simt::Gpu c{red};
    matvec_body<T, R, MC>(c, a);
}

__global__ void quantize_act_kernel(const float* __restrict__ X, size_t x_stride, int64_t K, int8_t* __restrict__ xq,
                                    ActBlock* __restrict__ xa) {
    simt::Gpu c{nullptr};
    quantize_act_body(c, X, x_stride, K, xq, xa);
}

template <int T>
__global__ void packed_dequant_f16_kernel(const uint8_t* __restrict__ w, const WeightLayout L, uint16_t* __restrict__ out) {
    simt::Gpu c{nullptr};
    dequant_f16_body<T>(c, w, L, out);
}

template <int T>
__global__ void packed_get_rows_kernel(const uint8_t* __restrict__ w, const WeightLayout L, const int32_t* __restrict__ ids,
                                       float* __restrict__ out, size_t out_stride) {
    simt::Gpu c{nullptr};
    get_rows_body<T>(c, w, L, ids, out, out_stride);
}

template <int T, int R>
void launch_packed_r(const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    const dim3 blocks(unsigned(t.blocks));
    switch (t.cols) {
        case 1: launch(packed_matvec_kernel<T, R, 1>, blocks, kMatvecThreads, 0, s, a); break;
        case 2: launch(packed_matvec_kernel<T, R, 2>, blocks, kMatvecThreads, 0, s, a); break;
        case 4: launch(packed_matvec_kernel<T, R, 4>, blocks, kMatvecThreads, 0, s, a); break;
        default: launch(packed_matvec_kernel<T, R, 8>, blocks, kMatvecThreads, 0, s, a); break;
    }
}

template <int T>
void launch_packed_t(const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    switch (t.rows) {
        case 1: launch_packed_r<T, 1>(a, t, s); break;
        case 2: launch_packed_r<T, 2>(a, t, s); break;
        default: launch_packed_r<T, 4>(a, t, s); break;
    }
}

void launch_packed(int type, const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    switch (type) {
        case T_Q4_0: launch_packed_t<T_Q4_0>(a, t, s); break;
        case T_Q8_0: launch_packed_t<T_Q8_0>(a, t, s); break;
        case T_Q4_K: launch_packed_t<T_Q4_K>(a, t, s); break;
        case T_Q6_K: launch_packed_t<T_Q6_K>(a, t, s); break;
        case T_F16: launch_packed_t<T_F16>(a, t, s); break;
    }
}

// dispatch for the packed types.
template <class F>
void dispatch_packed(int type, F&& f) {
    switch (type) {
        case T_Q4_0: f(Tag<T_Q4_0>()); break;
        case T_Q8_0: f(Tag<T_Q8_0>()); break;
        case T_Q4_K: f(Tag<T_Q4_K>()); break;
        case T_Q6_K: f(Tag<T_Q6_K>()); break;
        case T_F16: f(Tag<T_F16>()); break;
    }
}

int sm_count() {
    static const int n = [] {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
        return v > 0 ? v : 132;
    }();
    return n;
}

}  // namespace

bool matvec_supported(int type) {
    switch (type) {
        case T_F32: case T_F16: case T_BF16: case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0:
        case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K: return true;
        default: return false;
    }
}

bool matvec_int8(const WeightLayout& L) {
    if (L.packed) return L.type != T_F16;
    const int t = L.type;
    return t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0 || t == T_Q5_1 || t == T_Q8_0;
}

// The int8 activations in the scratch: xq (M x K) then, 16-byte aligned, the blocks (M x K / 32).
ActScratch act_scratch(const void* scratch, int64_t K, int64_t M) {
    int8_t* xq = static_cast<int8_t*>(const_cast<void*>(scratch));
    return {xq, reinterpret_cast<ActBlock*>(xq + ((size_t(K) * size_t(M) + 15) & ~size_t(15)))};
}

size_t matvec_scratch_bytes(int64_t K, int64_t M) {
    return ((size_t(K) * size_t(M) + 15) & ~size_t(15)) + size_t(K / 32) * size_t(M) * sizeof(ActBlock) + 16;
}

void quantize_activations(const float* X, size_t x_stride, int64_t K, int64_t M, void* scratch, cudaStream_t s) {
    const int threads = 256;
    const dim3 grid(unsigned((K / 32 * 8 + threads - 1) / threads), unsigned(M));
    const ActScratch a = act_scratch(scratch, K, M);
    launch(quantize_act_kernel, grid, threads, 0, s, X, x_stride, K, a.xq, a.xa);
}

bool matvec_can_share(const WeightLayout& a, const WeightLayout& b) {
    return a.packed && b.packed && a.type == b.type && a.K == b.K;
}

void matvec(const Matrix* w, int n, const float* X, size_t x_stride, float* const* Y, const int64_t* ldy, int64_t M,
            const void* scratch, cudaStream_t s, const float* const* R, const int64_t* ldr) {
    static_assert(kMatvecMaxWeights == kMatvecMaxParts, "kernels.h and matvec.cuh agree");
    const WeightLayout& L = w[0].layout;
    const int64_t K = L.K;
    const ActScratch act = act_scratch(scratch, K, M);
    const int8_t* xq = act.xq;
    const ActBlock* xa = act.xa;
    // Rows m0.. of weight i's output and of what is added to it.
    auto out = [&](int i, int64_t m0) {
        const float* r = R && R[i] ? R[i] + m0 * ldr[i] : nullptr;
        return Out{Y[i] + m0 * ldy[i], ldy[i], r, r ? ldr[i] : 0};
    };
    if (L.packed) {
        int64_t N = 0;
        for (int i = 0; i < n; i++) N += w[i].layout.N;
        for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
            const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
            MatvecArgs a{};
            a.xq = xq + m0 * K;
            a.xa = xa + m0 * (K / 32);
            a.xf = X + size_t(m0) * x_stride;
            a.x_stride = x_stride;
            a.M = cols;
            MatvecTiling t = matvec_tiling(L.type, K, N, cols, sm_count());
            for (int i = 0; i < n; i++) {
                const Out o = out(i, m0);
                t.blocks = matvec_add_part(a, t, static_cast<const uint8_t*>(w[i].data), w[i].layout, o.y, o.ldy, o.r, o.ldr);
            }
            launch_packed(L.type, a, t, s);
        }
        return;
    }
    for (int i = 0; i < n; i++) {  // GGUF rows: one launch per weight and 8 columns
        const WeightLayout& Li = w[i].layout;
        const uint8_t* W = static_cast<const uint8_t*>(w[i].data);
        const int64_t N = Li.N;
        for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
            const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
            const Out o = out(i, m0);
            dispatch(Li.type, [&](auto tag) {
                constexpr int T = type_of(decltype(tag)());
                if constexpr (T == T_Q4_0 || T == T_Q4_1 || T == T_Q5_0 || T == T_Q5_1 || T == T_Q8_0)
                    matvec_q8_kernel<T><<<unsigned((N + kWarps - 1) / kWarps), kWarps * 32, 0, s>>>(
                        W, Li.stride[0], xq + m0 * K, xa + m0 * (K / 32), o, int(K), int(N), cols);
                else
                    matvec_kernel<T><<<unsigned((N + kWarps - 1) / kWarps), kWarps * 32, 0, s>>>(
                        W, Li.stride[0], X + m0 * x_stride, x_stride, o, int(K), int(N), cols);
            });
        }
    }
}

void dequant_rows_f16(const Matrix& w, void* out, cudaStream_t s) {
    const WeightLayout& L = w.layout;
    const int64_t chunks = L.K / 32 * L.N;
    const unsigned blocks = unsigned((chunks + 255) / 256);
    const uint8_t* W = static_cast<const uint8_t*>(w.data);
    if (L.packed) {
        dispatch_packed(L.type, [&](auto tag) {
            packed_dequant_f16_kernel<type_of(tag)><<<blocks, 256, 0, s>>>(W, L, static_cast<uint16_t*>(out));
        });
        return;
    }
    dispatch(L.type, [&](auto tag) {
        dequant_f16_kernel<type_of(tag)><<<blocks, 256, 0, s>>>(W, L.stride[0], static_cast<__half*>(out), int(L.K), int(L.N));
    });
}

void get_rows_f32(const Matrix& w, const int32_t* ids, float* out, size_t out_stride, int64_t n_ids, cudaStream_t s) {
    const WeightLayout& L = w.layout;
    const dim3 grid(unsigned((L.K / 32 + 63) / 64), unsigned(n_ids));
    const uint8_t* W = static_cast<const uint8_t*>(w.data);
    if (L.packed) {
        dispatch_packed(L.type, [&](auto tag) {
            packed_get_rows_kernel<type_of(tag)><<<grid, 64, 0, s>>>(W, L, ids, out, out_stride);
        });
        return;
    }
    dispatch(L.type, [&](auto tag) {
        get_rows_kernel<type_of(tag)><<<grid, 64, 0, s>>>(W, L.stride[0], ids, out, out_stride, int(L.K));
    });
}

}  // namespace lumen::cuda
