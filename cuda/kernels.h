// Launchers of the CUDA kernels, one group per file. All take device pointers and a stream.
#pragma once
#include <cuda_runtime.h>
#include <cstddef>
#include <cstdint>

#include "repack.h"

namespace lumen::cuda {

// matvec.cu: Y[m][n] = dot(W row n, X row m) for small M (decode), any weight type. A weight is
// its device bytes plus their layout (repack.h): packed for the decode-hot types, GGUF's rows
// otherwise; every reader below takes that pair.
struct Matrix {
    const void* data;
    WeightLayout layout;
};
bool matvec_supported(int type);
// Whether matvec(w) multiplies with int8 activations, which quantize_activations must have put in
// the scratch (matvec_scratch_bytes(K, M)) first; the others use X as f32. Products that share X
// may share one quantization.
bool matvec_int8(const WeightLayout& L);
size_t matvec_scratch_bytes(int64_t K, int64_t M);
void quantize_activations(const float* X, size_t x_stride, int64_t K, int64_t M, void* scratch, cudaStream_t s);
// n contiguous activations rounded as quantize_activations rounds them (int8 per 32), as f16: what the
// tensor-core GEMM multiplies weights of the int8 types with (n a multiple of 32).
void activations_int8_f16(const float* X, int64_t n, void* out_f16, cudaStream_t s);
// Where quantize_activations puts M columns of K int8 activations in the scratch (fused producers
// write there too): the values, then one ActBlock (matvec.cuh) per 32.
struct ActBlock;
struct ActScratch {
    int8_t* xq;
    ActBlock* xa;
};
ActScratch act_scratch(const void* scratch, int64_t K, int64_t M);
// Y[i] = w[i] X for n weights (Y[i][m * ldy[i] + row]). Several weights in one call (n up to
// kMatvecMaxWeights, each pair matvec_can_share) run as one launch. R (optional; R[i] may be null):
// Y[i] = w[i] X + R[i], R[i][m * ldr[i] + row] (an add fused into the product; ldr 0 broadcasts a row).
constexpr int kMatvecMaxWeights = 3;
bool matvec_can_share(const WeightLayout& a, const WeightLayout& b);
void matvec(const Matrix* w, int n, const float* X, size_t x_stride, float* const* Y, const int64_t* ldy, int64_t M,
            const void* scratch, cudaStream_t s, const float* const* R = nullptr, const int64_t* ldr = nullptr);
// All rows as row-major f16 (the tensor-core GEMM path), and rows ids[] as f32 (the token embedding).
void dequant_rows_f16(const Matrix& w, void* out_f16, cudaStream_t s);
void get_rows_f32(const Matrix& w, const int32_t* ids, float* out, size_t out_stride, int64_t n_ids, cudaStream_t s);

// elementwise.cu
void f32_to_f16(const float* x, void* y, int64_t n, cudaStream_t s);
void add_or_mul(bool mul, const float* a, size_t a_stride, const float* b, size_t b_stride, bool broadcast, float* y,
                size_t y_stride, int64_t n, int64_t rows, cudaStream_t s);
void scale(const float* x, float* y, float k, int64_t n, cudaStream_t s);

// fused.cu: RMSNorm, GLU and RoPE, each alone or with the ops fused_plan.h grouped with it; the
// arguments are the kernel bodies' (fused.cuh).
struct NormArgs;
struct GluArgs;
struct RopeWriteArgs;
void norm_rows(const NormArgs& a, int64_t rows, cudaStream_t s);
void glu_rows(const GluArgs& a, cudaStream_t s);
void rope_write(const RopeWriteArgs& a, int64_t T, cudaStream_t s);

// top_k.cu: the k largest of each row (see Graph::top_k for the output layout).
void top_k_rows(const float* x, size_t x_stride, int32_t* out, int64_t n, int64_t k, int64_t rows, cudaStream_t s);

// attention.cu
void kv_write(int cache_type, void* cache, size_t row_bytes, const float* k, const int32_t* rows, int64_t width,
              int64_t T, cudaStream_t s);
// Where a token's keys are: position p of sequence seq[t] is cache row
// table[seq[t] * max_blocks + p / block_size] * block_size + p % block_size.
struct PagedKV {
    const int32_t* seq;
    const int32_t* table;
    int max_blocks, block_size;
    int n_seqs = 0;  // sequences in the table (0: unknown; sizes flash_prefill's grid)
};
// Slices of the cache that attention is split into (1: no split); the caller provides `partial`
// with n_head * T * splits * (head_dim + 2) floats when it is more than 1. n_ctx: the most positions
// a sequence can have. The first call per cache type and head_dim also sets the kernel up (call it
// before capturing a graph).
int attention_splits(int cache_type, int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t T, int64_t n_ctx);
void attention(int cache_type, const float* q, size_t q_nb1, size_t q_nb2, const void* kc, const void* vc,
               size_t cache_row_bytes, const int32_t* pos, const PagedKV& paged, float* out, size_t out_nb1,
               int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t T, int64_t n_ctx, float scale, int window,
               float softcap, float* partial, cudaStream_t s);

// flash_prefill.cu: tensor-core FlashAttention-2 for batches of many query tokens, the same op as
// attention() above. Supported: f16 caches, head_dim 64 / 128 / 256, n_head a multiple of n_head_kv
// with at most 64 query heads per KV head.
bool flash_prefill_supported(int cache_type, int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t T);
void flash_prefill(const float* q, size_t q_nb1, size_t q_nb2, const void* kc, const void* vc, size_t cache_row_bytes,
                   const int32_t* pos, const PagedKV& paged, float* out, size_t out_nb1, int64_t head_dim,
                   int64_t n_head, int64_t n_head_kv, int64_t T, float scale, int window, float softcap,
                   cudaStream_t s);

}  // namespace lumen::cuda
