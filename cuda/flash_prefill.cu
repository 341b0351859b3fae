// The launcher of FlashAttention-2 prefill (the body is in flash_prefill.cuh). F32 and Q8_0 caches
// stay on the split-KV kernel (attention.cu): converting them while staging would need a register
// pass instead of cp.async, for caches that are rare on the GPU.
#include "flash_prefill.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "quant_decode.cuh"

namespace lumen::cuda {

namespace {

// Fewer query tokens than this go to the old kernel, whose split-KV keeps a small batch's few
// blocks busy over a long context (this kernel gives each block one run's whole range).
constexpr int64_t kMinTokens = 32;

template <int D>
struct FlashPrefill : KernelDefaults {
    static constexpr int kThreads = flash::kThreads;
    template <class C> LUMEN_DEV static void run(C& c, const flash::Args& a) { flash::prefill_body<D>(c, a); }
};

template <int D>
void run_flash(const flash::Args& a, int n_head_kv, int n_seqs, cudaStream_t s) {
    const simt::Dim g = flash::grid(a.T, n_head_kv, a.group, n_seqs);
    launch<FlashPrefill<D>>(dim3(unsigned(g.x), unsigned(g.y), unsigned(g.z)), flash::kThreads, flash::smem_bytes<D>(),
                            s, a);
}

}  // namespace

bool flash_prefill_supported(int cache_type, int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t T) {
    if (cache_type != T_F16 || T < kMinTokens) return false;
    if (head_dim != 64 && head_dim != 128 && head_dim != 256) return false;
    if (n_head_kv <= 0 || n_head % n_head_kv != 0 || n_head / n_head_kv > flash::kRows) return false;
    const int64_t per_chunk = flash::tokens_per_chunk(int(n_head / n_head_kv));
    return (T + per_chunk - 1) / per_chunk <= 65535;  // chunks are grid y
}

void flash_prefill(const float* q, size_t q_nb1, size_t q_nb2, const void* kc, const void* vc, size_t row_bytes,
                   const int32_t* pos, const PagedKV& paged, float* out, size_t out_nb1, int64_t D, int64_t n_head,
                   int64_t n_head_kv, int64_t T, float scale, int window, float softcap, cudaStream_t s) {
    const flash::Args a{q,           q_nb1, q_nb2, static_cast<const uint16_t*>(kc), static_cast<const uint16_t*>(vc),
                        row_bytes,   pos,   paged.seq, paged.table, paged.max_blocks, paged.block_size, out, out_nb1,
                        int(T),      int(n_head / n_head_kv), window, scale, softcap};
    switch (D) {
        case 64: run_flash<64>(a, int(n_head_kv), paged.n_seqs, s); return;
        case 128: run_flash<128>(a, int(n_head_kv), paged.n_seqs, s); return;
        case 256: run_flash<256>(a, int(n_head_kv), paged.n_seqs, s); return;
        default: return;
    }
}

}  // namespace lumen::cuda
