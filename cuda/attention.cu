// KV-cache writes and attention on the GPU. Cache rows hold head_dim * n_head_kv elements (F16, F32
// or Q8_0); a sequence's positions are found through its block table (paged attention). The attention
// kernel body is in attention_decode.cuh (one block per KV head, run of tokens and split of the
// positions; K/V staged with cp.async, tensor cores); this file launches it and merges the splits.
#include <algorithm>

#include "attention_decode.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "quant_decode.cuh"

namespace lumen::cuda {

static_assert(int(decode::kF32) == int(T_F32) && int(decode::kF16) == int(T_F16) && int(decode::kQ8_0) == int(T_Q8_0));

namespace {

template <int CT, int D, int NS>
struct AttentionDecode : KernelDefaults {
    static constexpr int kThreads = decode::kThreads;
    template <class C> LUMEN_DEV static void run(C& c, const decode::Args& a) { decode::attention_decode<CT, D, NS>(c, a); }
};

// One block per (head, token), head_dim threads.
struct Combine : KernelDefaults {
    static constexpr int kThreads = 256;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* partial, float* out, size_t out_nb1, int n_head, int D, int splits) {
        decode::attention_combine(c, partial, out, out_nb1, n_head, D, splits);
    }
};

// The attention kernel chosen for a cache type and head size on this GPU, and the number of its
// blocks the GPU holds at once (SMs x blocks per SM).
struct Variant {
    void (*run)(dim3 grid, cudaStream_t s, const decode::Args& a);
    int resident;
};

template <int CT, int D, int NS> void run_decode(dim3 grid, cudaStream_t s, const decode::Args& a) {
    launch<AttentionDecode<CT, D, NS>>(grid, decode::kThreads, decode::kSmemBytes<D, NS>, s, a);
}

template <int CT, int D, int NS> Variant setup() {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const int per_sm = blocks_per_sm<AttentionDecode<CT, D, NS>, decode::Args>(decode::kThreads, decode::kSmemBytes<D, NS>);
    return {&run_decode<CT, D, NS>, std::max(1, sms) * std::max(1, per_sm)};
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

// Rows of keys (or values) into the cache: one thread per element, one warp per 32 (a Q8_0 block,
// whose scale the warp shares). Grid: (width / 128, tokens).
struct KvWrite : KernelDefaults {
    static constexpr int kThreads = 128;
    template <class C>
    LUMEN_DEV static void run(C& c, int ct, uint8_t* cache, size_t row_bytes, const float* k, const int32_t* rows,
                              int width) {
        const int t = c.block().y;
        const int e = c.block().x * c.threads() + c.thread();
        // Whole warps stay (the Q8_0 path's shuffles need all 32 lanes); width is a multiple of 32.
        if (e >= width) return;
        const float x = k[size_t(t) * width + e];
        uint8_t* row = cache + size_t(rows[t]) * row_bytes;
        if (ct == T_F16) {
            reinterpret_cast<uint16_t*>(row)[e] = simt::f2h(x);
        } else if (ct == T_F32) {
            reinterpret_cast<float*>(row)[e] = x;
        } else {
            float amax = fabsf(x);
            for (int o = 16; o > 0; o >>= 1) amax = simt::fmax2(amax, c.shfl_xor(amax, o));
            const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            uint8_t* b = row + (e / 32) * 34;
            if (e % 32 == 0) *reinterpret_cast<uint16_t*>(b) = simt::f2h(d);
            reinterpret_cast<int8_t*>(b + 2)[e % 32] = int8_t(roundf(x * id));
        }
    }
};

}  // namespace

void kv_write(int ct, void* cache, size_t row_bytes, const float* k, const int32_t* rows, int64_t width, int64_t T,
              cudaStream_t s) {
    dim3 grid(unsigned((width + 127) / 128), unsigned(T));
    launch<KvWrite>(grid, KvWrite::kThreads, 0, s, ct, static_cast<uint8_t*>(cache), row_bytes, k, rows, int(width));
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
    v.run(grid, s, a);
    if (splits > 1)
        launch<Combine>(dim3{unsigned(n_head), unsigned(T)}, unsigned(D), 0, s, partial, out, out_nb1, int(n_head), int(D),
                        splits);
}

}  // namespace lumen::cuda
