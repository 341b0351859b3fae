// KV-cache writes and attention on the GPU. Cache rows hold head_dim * n_head_kv elements (F16, F32
// or Q8_0); a sequence's positions are found through its block table (paged attention). The attention
// kernel body is in attention_decode.cuh (one block per KV head, run of tokens and split of the
// positions; K/V staged with cp.async, tensor cores); this file launches it and merges the splits.
#include <cuda_fp16.h>

#include <algorithm>

#include "attention_decode.cuh"
#include "kernels.h"
#include "quant_decode.cuh"

namespace lumen::cuda {

static_assert(int(decode::kF32) == int(T_F32) && int(decode::kF16) == int(T_F16) && int(decode::kQ8_0) == int(T_Q8_0));

namespace {

template <int CT, int D, int NS>
__global__ void __launch_bounds__(decode::kThreads) attention_decode_kernel(const decode::Args a) {
    extern __shared__ __align__(16) char smem[];
    simt::Gpu c{smem};
    decode::attention_decode<CT, D, NS>(c, a);
}

__global__ void combine_kernel(const float* partial, float* out, size_t out_nb1, int n_head, int D, int splits) {
    simt::Gpu c{nullptr};
    decode::attention_combine(c, partial, out, out_nb1, n_head, D, splits);
}

// The attention kernel chosen for a cache type and head size on this GPU, with its shared memory and
// the number of its blocks the GPU holds at once (SMs x blocks per SM).
struct Variant {
    void (*kernel)(decode::Args);
    size_t smem;
    int resident;
};

template <int CT, int D, int NS> Variant setup() {
    const auto kernel = attention_decode_kernel<CT, D, NS>;
    const size_t smem = decode::kSmemBytes<D, NS>;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    int dev = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, decode::kThreads, smem);
    return {kernel, smem, std::max(1, sms) * std::max(1, per_sm)};
}

// The most stages that fit in a block's shared memory (an H100 takes kMaxStages; 99 KB GPUs fewer).
template <int CT, int D, int NS> Variant pick(size_t limit) {
    if constexpr (NS == 1) return setup<CT, D, 1>();
    else return decode::kSmemBytes<D, NS> <= limit ? setup<CT, D, NS>() : pick<CT, D, NS - 1>(limit);
}

// Set up once, on first use (attention_splits, before any graph capture).
template <int CT, int D> const Variant& variant() {
    static const Variant v = [] {
        int dev = 0, limit = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        return pick<CT, D, CT == T_F16 ? decode::kMaxStages<D> : 1>(size_t(limit));
    }();
    return v;
}

template <int CT> const Variant& variant(int64_t D) {
    return D == 64 ? variant<CT, 64>() : D == 128 ? variant<CT, 128>() : variant<CT, 256>();
}
const Variant& variant(int ct, int64_t D) {
    return ct == T_F16 ? variant<T_F16>(D) : ct == T_F32 ? variant<T_F32>(D) : variant<T_Q8_0>(D);
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

int attention_splits(int ct, int64_t D, int64_t n_head, int64_t n_head_kv, int64_t T, int64_t n_ctx) {
    return decode::splits_for(n_head, n_head_kv, T, n_ctx, variant(ct, D).resident);
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
    if (D != 64 && D != 128 && D != 256) return;  // the backend refuses other sizes up front
    const Variant& v = variant(ct, D);
    const int splits = decode::splits_for(n_head, n_head_kv, T, n_ctx, v.resident);
    const decode::Args a{q, q_nb1, q_nb2, static_cast<const uint8_t*>(kc), static_cast<const uint8_t*>(vc), row_bytes,
                         pos, paged.seq, paged.table, paged.max_blocks, paged.block_size, out, out_nb1, int(n_head),
                         int(n_head_kv), int(T), window, scale, softcap, splits > 1 ? partial : nullptr};
    const int64_t G = n_head / n_head_kv;
    const dim3 grid{unsigned(n_head_kv * ((G + decode::kRows - 1) / decode::kRows)), unsigned(T), unsigned(splits)};
    v.kernel<<<grid, decode::kThreads, v.smem, s>>>(a);
    if (splits > 1)
        combine_kernel<<<dim3{unsigned(n_head), unsigned(T)}, unsigned(D), 0, s>>>(partial, out, out_nb1, int(n_head),
                                                                                  int(D), splits);
}

}  // namespace lumen::cuda
