// KV-cache writes and attention on the GPU. Cache rows hold head_dim * n_head_kv elements (F16, F32
// or Q8_0); a sequence's positions are found through its block table (paged attention). Attention: one block per (head, token), four warps splitting the
// cached positions, each keeping an online softmax; the warps' partial results are merged at the end.
#include <cuda_fp16.h>

#include "kernels.h"
#include "quant_decode.cuh"

#include <algorithm>

namespace lumen::cuda {

namespace {

constexpr int kWarps = 4;

// Element e of a cache row (lane-strided access keeps reads coalesced).
template <int CT>
__device__ __forceinline__ float cache_at(const uint8_t* row, int e) {
    if constexpr (CT == T_F16) return __half2float(reinterpret_cast<const __half*>(row)[e]);
    else if constexpr (CT == T_F32) return reinterpret_cast<const float*>(row)[e];
    else {  // Q8_0
        const uint8_t* b = row + (e / 32) * 34;
        return h2f(b) * float(reinterpret_cast<const int8_t*>(b + 2)[e % 32]);
    }
}

template <int CT>
__device__ __forceinline__ size_t head_offset(int hk, int D) {
    if constexpr (CT == T_F16) return size_t(hk) * D * 2;
    else if constexpr (CT == T_F32) return size_t(hk) * D * 4;
    else return size_t(hk) * (D / 32) * 34;
}

// Split-KV ("flash decoding"): with few query tokens the heads alone cannot fill the GPU, so the
// cached positions are cut into gridDim.z slices of `chunk` positions, each block writes a partial
// (max, sum, unnormalised output) and combine_kernel merges them.
template <int CT, int EPL>  // EPL: elements per lane = head_dim / 32
__global__ void attention_kernel(const float* __restrict__ q, size_t q_nb1, size_t q_nb2, const uint8_t* __restrict__ kc,
                                 const uint8_t* __restrict__ vc, size_t row_bytes, const int32_t* __restrict__ pos,
                                 PagedKV paged, float* __restrict__ out, size_t out_nb1, int n_head, int group, float scale,
                                 int window, float softcap, int chunk, float* __restrict__ partial) {
    constexpr int D = EPL * 32;
    const int h = blockIdx.x, t = blockIdx.y, hk = h / group, split = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float* qr = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(q) + t * q_nb2 + h * q_nb1);
    float qv[EPL], acc[EPL];
    #pragma unroll
    for (int i = 0; i < EPL; i++) {
        qv[i] = qr[i * 32 + lane] * scale;
        acc[i] = 0.0f;
    }
    const int last = min(pos[t], (split + 1) * chunk - 1);
    const int first = max(window > 0 ? max(0, pos[t] - window + 1) : 0, split * chunk);
    const size_t hoff = head_offset<CT>(hk, D);
    const int32_t* blocks = paged.table + size_t(paged.seq[t]) * paged.max_blocks;
    const int bs = paged.block_size;
    float m = -INFINITY, l = 0.0f;
    for (int j = first + warp; j <= last; j += kWarps) {
        const size_t row = size_t(blocks[j / bs]) * bs + j % bs;
        const uint8_t* krow = kc + row * row_bytes + hoff;
        float s = 0.0f;
        #pragma unroll
        for (int i = 0; i < EPL; i++) s += qv[i] * cache_at<CT>(krow, i * 32 + lane);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new), p = __expf(s - m_new);
        l = l * corr + p;
        const uint8_t* vrow = vc + row * row_bytes + hoff;
        #pragma unroll
        for (int i = 0; i < EPL; i++) acc[i] = acc[i] * corr + p * cache_at<CT>(vrow, i * 32 + lane);
        m = m_new;
    }
    // Merge the warps: rescale each to the common maximum.
    __shared__ float sm[kWarps], sl[kWarps], sacc[kWarps][D];
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
    #pragma unroll
    for (int i = 0; i < EPL; i++) sacc[warp][i * 32 + lane] = acc[i];
    __syncthreads();
    if (warp != 0) return;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; w++) mx = fmaxf(mx, sm[w]);
    float denom = 0.0f, f[kWarps];
    for (int w = 0; w < kWarps; w++) {
        f[w] = sm[w] == -INFINITY ? 0.0f : __expf(sm[w] - mx);
        denom += sl[w] * f[w];
    }
    if (partial) {  // one slice of several: leave (max, sum, unnormalised output) for the combine
        float* p = partial + ((size_t(t) * n_head + h) * gridDim.z + split) * (D + 2);
        if (lane == 0) { p[0] = mx; p[1] = denom; }
        #pragma unroll
        for (int i = 0; i < EPL; i++) {
            float v = 0.0f;
            for (int w = 0; w < kWarps; w++) v += sacc[w][i * 32 + lane] * f[w];
            p[2 + i * 32 + lane] = v;
        }
        return;
    }
    float* o = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out) + t * out_nb1) + h * D;
    #pragma unroll
    for (int i = 0; i < EPL; i++) {
        float v = 0.0f;
        for (int w = 0; w < kWarps; w++) v += sacc[w][i * 32 + lane] * f[w];
        o[i * 32 + lane] = v / denom;
    }
}

// Merges the slices of split-KV attention: one block per (head, token), one thread per element.
__global__ void combine_kernel(const float* __restrict__ partial, float* __restrict__ out, size_t out_nb1, int n_head,
                               int D, int splits) {
    const int h = blockIdx.x, t = blockIdx.y;
    const float* p = partial + (size_t(t) * n_head + h) * splits * (D + 2);
    float mx = -INFINITY;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, p[s * (D + 2)]);
    float denom = 0.0f, v = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float* ps = p + s * (D + 2);
        if (ps[0] == -INFINITY) continue;
        const float f = __expf(ps[0] - mx);
        denom += ps[1] * f;
        v += ps[2 + threadIdx.x] * f;
    }
    float* o = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out) + t * out_nb1) + h * D;
    o[threadIdx.x] = v / denom;
}

// One warp per 32 elements of a row.
__global__ void kv_write_kernel(int ct, uint8_t* cache, size_t row_bytes, const float* k, const int32_t* rows, int width) {
    const int t = blockIdx.y;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= width) return;
    const float x = k[size_t(t) * width + e];
    uint8_t* row = cache + size_t(rows[t]) * row_bytes;
    if (ct == T_F16) {
        reinterpret_cast<__half*>(row)[e] = __float2half(x);
    } else if (ct == T_F32) {
        reinterpret_cast<float*>(row)[e] = x;
    } else {  // Q8_0: the warp shares one block's scale
        float amax = fabsf(x);
        for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t* b = row + (e / 32) * 34;
        if (e % 32 == 0) *reinterpret_cast<__half*>(b) = __float2half(d);
        reinterpret_cast<int8_t*>(b + 2)[e % 32] = int8_t(roundf(x * id));
    }
}

}  // namespace

void kv_write(int ct, void* cache, size_t row_bytes, const float* k, const int32_t* rows, int64_t width, int64_t T,
              cudaStream_t s) {
    dim3 grid(unsigned((width + 127) / 128), unsigned(T));
    kv_write_kernel<<<grid, 128, 0, s>>>(ct, static_cast<uint8_t*>(cache), row_bytes, k, rows, int(width));
}

int attention_splits(int64_t n_head, int64_t T, int64_t n_ctx) {
    // Enough blocks to fill the GPU several times over, slices of at least 256 positions.
    if (n_head * T >= 264) return 1;
    const int64_t by_ctx = (n_ctx + 255) / 256, by_blocks = (528 + n_head * T - 1) / (n_head * T);
    return int(std::max<int64_t>(1, std::min<int64_t>(by_ctx, std::min<int64_t>(by_blocks, 64))));
}

void attention(int ct, const float* q, size_t q_nb1, size_t q_nb2, const void* kc, const void* vc, size_t row_bytes,
               const int32_t* pos, const PagedKV& paged, float* out, size_t out_nb1, int64_t D, int64_t n_head,
               int64_t n_head_kv, int64_t T, int64_t n_ctx, float scale, int window, float softcap, float* partial,
               cudaStream_t s) {
    if (flash_prefill_supported(ct, D, n_head, n_head_kv, T)) {  // many query tokens: tensor cores (flash_prefill.cu)
        flash_prefill(q, q_nb1, q_nb2, kc, vc, row_bytes, pos, paged, out, out_nb1, D, n_head, n_head_kv, T, scale,
                      window, softcap, s);
        return;
    }
    const int splits = attention_splits(n_head, T, n_ctx);
    const int chunk = int((n_ctx + splits - 1) / splits);
    const dim3 grid{unsigned(n_head), unsigned(T), unsigned(splits)};
    const int group = int(n_head / n_head_kv);
    float* part = splits > 1 ? partial : nullptr;
    auto launch = [&](auto kernel) {
        kernel<<<grid, kWarps * 32, 0, s>>>(q, q_nb1, q_nb2, static_cast<const uint8_t*>(kc),
                                            static_cast<const uint8_t*>(vc), row_bytes, pos, paged, out, out_nb1, int(n_head),
                                            group, scale, window, softcap, chunk, part);
        if (part)
            combine_kernel<<<dim3{unsigned(n_head), unsigned(T)}, unsigned(D), 0, s>>>(part, out, out_nb1, int(n_head),
                                                                                      int(D), splits);
    };
#define LUMEN_ATT(CT)                                                   \
    switch (D) {                                                        \
        case 64: launch(attention_kernel<CT, 2>); return;               \
        case 128: launch(attention_kernel<CT, 4>); return;              \
        case 256: launch(attention_kernel<CT, 8>); return;              \
        default: return;                                                \
    }
    if (ct == T_F16) { LUMEN_ATT(T_F16) }
    else if (ct == T_F32) { LUMEN_ATT(T_F32) }
    else { LUMEN_ATT(T_Q8_0) }
#undef LUMEN_ATT
}

}  // namespace lumen::cuda
