// matmul_rows: argument checks, then the SIMD kernels (matmul_few_avx2.cpp for up to
// kMaxFewTokens tokens of an integer format, matmul_tile_avx512.cpp / matmul_tile_avx2.cpp for
// more, and for float weights) or a loop of dot products.
//
// Every batch size adds up each output the same way, so a token's result does not depend on how
// many tokens share its forward pass: a prompt read in one batch or in pieces (chat's KV reuse,
// speculative verification) gives bit-identical logits. A faster kernel for few tokens must add up
// each output exactly as the kernel for many does (matmul_few_avx2.cpp follows the tiles' order).
#include "cpu/matmul.h"

#include "cpu/matmul_impl.h"
#include "cpu/vec_dot.h"
#include "cpu/vec_dot_impl.h"
#include "tensor/quant.h"
#include "util/error.h"

namespace lumen::cpu {

namespace {

VecDotFn checked_kernel(DType wt, VecDotFn f, int64_t K) {
    const DTypeInfo* info = dtype_info(uint32_t(wt));
    if (!f) fail("matrix multiply: weight type ", info ? info->name : "(unknown)", " is not supported");
    if (K <= 0 || K % info->block_size != 0)
        fail("matrix multiply: row length ", K, " is not a multiple of ", info->name, "'s block size ", info->block_size);
    return f;
}

void dot_loop(VecDotFn dot, const MatmulArgs& a) {
    for (int64_t n = a.n_begin; n < a.n_end; n++) {
        const uint8_t* w = a.W + size_t(n) * a.w_stride;
        for (int64_t m = 0; m < a.M; m++) a.Y[m * a.ldy + n] = dot(a.K, w, a.X + size_t(m) * a.x_stride);
    }
}

}  // namespace

void quantize_activations(DType vec_type, const float* x, void* dst, int64_t K) {
    if (avx2::quantize_activations(vec_type, x, dst, K)) return;
    quantize_row(vec_type, x, dst, K);
}

void matmul_rows(DType wt, const void* W, size_t w_row_stride_bytes, const void* Xq, size_t x_row_stride_bytes,
                 float* Y, int64_t ldy, int64_t K, int64_t n_rows_begin, int64_t n_rows_end, int64_t M) {
    const VecDotFn dot = checked_kernel(wt, best_vec_dot(wt), K);
    if (n_rows_begin >= n_rows_end || M <= 0) return;
    const MatmulArgs a{wt, static_cast<const uint8_t*>(W), w_row_stride_bytes, static_cast<const uint8_t*>(Xq),
                       x_row_stride_bytes, Y, ldy, K, n_rows_begin, n_rows_end, M};
    if (avx2::matmul_few(a) || avx512::matmul_tiled(a) || avx2::matmul_tiled(a)) return;
    dot_loop(dot, a);
}

const char* matmul_isa() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX2__) && \
    defined(__FMA__) && defined(__F16C__)
    return "avx512-vnni tiles + avx2";
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return "avx2";
#else
    return "scalar";
#endif
}

void matmul_rows_reference(DType wt, const void* W, size_t w_row_stride_bytes, const void* Xq,
                           size_t x_row_stride_bytes, float* Y, int64_t ldy, int64_t K, int64_t n_rows_begin,
                           int64_t n_rows_end, int64_t M) {
    const VecDotFn dot = checked_kernel(wt, scalar::kernel(wt), K);
    dot_loop(dot, {wt, static_cast<const uint8_t*>(W), w_row_stride_bytes, static_cast<const uint8_t*>(Xq),
                   x_row_stride_bytes, Y, ldy, K, n_rows_begin, n_rows_end, M});
}

}  // namespace lumen::cpu
