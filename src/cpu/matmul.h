// The CPU matrix-multiply kernel: Y = X * W^T for a slice of W's rows, with the activations X
// already converted to the weight type's partner format (vec_dot_type in tensor/quant.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace lumen::cpu {

// One activation row of K floats -> vec_type (Q8_0, Q8_1, Q8_K or F32), the same bytes as
// quantize_row(vec_type, ...) produces, but vectorised.
void quantize_activations(DType vec_type, const float* x, void* dst, int64_t K);

// Y[m * ldy + n] = dot(row n of W, row m of Xq) for n in [n_rows_begin, n_rows_end) and m in
// [0, M). W rows hold K elements of wt, w_row_stride_bytes apart; Xq rows hold K elements of
// vec_dot_type(wt), x_row_stride_bytes apart; rows are aligned as their blocks are (2 bytes for
// quantized weights, 4 for F32 and Q8_K), which GGUF's 32-byte tensor alignment gives. Threads call
// this on disjoint row ranges; ranges that are multiples of 16 rows keep the SIMD tiles whole.
// Unsupported types throw lumen::Error.
//
// Integer formats go through tiles of 8 weight rows (16 with AVX-512 VNNI for the K-quants)
// decoded once into an interleaved scratch copy and multiplied with 4 tokens at a time; for up to 4
// tokens (decode) the blocks are read in place instead (matmul_few_avx2.cpp), summed in the tiles'
// order. Float weights go through float tiles. Every output is summed the same way whatever M is,
// so results do not depend on the batch.
void matmul_rows(DType wt, const void* W, size_t w_row_stride_bytes, const void* Xq, size_t x_row_stride_bytes,
                 float* Y, int64_t ldy, int64_t K, int64_t n_rows_begin, int64_t n_rows_end, int64_t M);

// The kernels compiled into this build, for logs and benchmarks: "avx512-vnni tiles + avx2",
// "avx2" or "scalar".
const char* matmul_isa();

// The same product with one vec_dot_scalar per output: the reference the tests compare with.
void matmul_rows_reference(DType wt, const void* W, size_t w_row_stride_bytes, const void* Xq,
                           size_t x_row_stride_bytes, float* Y, int64_t ldy, int64_t K, int64_t n_rows_begin,
                           int64_t n_rows_end, int64_t M);

}  // namespace lumen::cpu
