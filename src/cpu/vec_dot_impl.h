// The per-format dot-product kernels behind vec_dot(), one table per instruction set. Internal to
// src/cpu (vec_dot.cpp and matmul*.cpp pick from these tables).
#pragma once
#include <cstdint>

#include "tensor/dtype.h"

namespace lumen::cpu {

// n elements of the weight row w against the activation row a (in the weight's vec_dot_type).
using VecDotFn = float (*)(int64_t n, const void* w, const void* a);

namespace scalar { VecDotFn kernel(DType w); }  // every supported weight type
namespace avx2 { VecDotFn kernel(DType w); }    // nullptr where none (or not compiled for AVX2)

// The best kernel compiled into this build for w, or nullptr if w is not a weight type.
VecDotFn best_vec_dot(DType w);

}  // namespace lumen::cpu
