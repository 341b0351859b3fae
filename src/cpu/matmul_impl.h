// Internal interface between matmul.cpp and the tiled SIMD kernels.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "tensor/dtype.h"

namespace lumen::cpu {

struct MatmulArgs {
    DType wt;
    const uint8_t* W;
    size_t w_stride;
    const uint8_t* X;
    size_t x_stride;
    float* Y;
    int64_t ldy, K, n_begin, n_end, M;
};

// Calls body(std::integral_constant<int, T>()) with T = min(4, left): the kernels take the number of
// tokens they multiply at once as a compile-time constant.
template <class Body>
void with_token_count(int64_t left, const Body& body) {
    if (left >= 4) body(std::integral_constant<int, 4>());
    else if (left == 3) body(std::integral_constant<int, 3>());
    else if (left == 2) body(std::integral_constant<int, 2>());
    else body(std::integral_constant<int, 1>());
}

// At most this many tokens go through the integer formats' kernel for few tokens
// (matmul_few_avx2.cpp); more go through the tiles, which add up each output the same way.
constexpr int kMaxFewTokens = 4;

namespace avx2 {
// The integer formats read in place, for at most kMaxFewTokens tokens; false for other types or
// more tokens.
bool matmul_few(const MatmulArgs& a);
// Runs the product with the tiled kernels, for any number of tokens; false if this build or type
// has none (the caller then loops over vec_dot).
bool matmul_tiled(const MatmulArgs& a);
// Vectorised activation quantizers; false if none for vec_type in this build.
bool quantize_activations(DType vec_type, const float* x, void* dst, int64_t K);
}  // namespace avx2

namespace avx512 {
// The tiled kernels with AVX-512 VNNI for the integer formats; false if not compiled in or float.
bool matmul_tiled(const MatmulArgs& a);
}  // namespace avx512

}  // namespace lumen::cpu
