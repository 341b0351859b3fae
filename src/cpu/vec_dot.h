// Dot products of one weight row with one activation row, the activations already converted to the
// weight type's partner format (vec_dot_type in tensor/quant.h). Integer formats multiply in
// integers inside each block and apply the scales once per block, like ggml.
#pragma once
#include <cstdint>

#include "tensor/dtype.h"

namespace lumen::cpu {

// n elements of weight type w against n elements of vec_dot_type(w). n must be a multiple of
// the block size; unsupported types throw lumen::Error.
float vec_dot(DType w, int64_t n, const void* w_row, const void* act_row);

// The portable version, always compiled; vec_dot uses it where no SIMD kernel exists, and the
// tests compare the SIMD kernels with it.
float vec_dot_scalar(DType w, int64_t n, const void* w_row, const void* act_row);

// The instruction set the vec_dot kernels were compiled for: "avx512", "avx2" or "scalar".
const char* vec_dot_isa();

}  // namespace lumen::cpu
