// The legacy 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) for vec_dot_avx2.cpp, which sums
// them in ggml's order: each block's values as bytes for vpmaddubsw and its 8 integer lane sums with
// an activation block. (Matrix products go through matmul_few_avx2.cpp and the tiles instead.) Include only inside the AVX2+FMA+F16C guard.
#pragma once
#include <immintrin.h>

#include "cpu/simd_avx2.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2::legacy {

// A weight format: its block, its activation block, and the block's values as bytes for vpmaddubsw
// (unsigned levels when kOffset, signed values otherwise), with d and m.
struct Q4_0 {
    using W = BlockQ4_0;
    using A = BlockQ8_0;
    static constexpr bool kOffset = false;
    static __m256i levels(const W& b) { return _mm256_sub_epi8(unpack_nibbles16(b.qs), _mm256_set1_epi8(8)); }
};

struct Q5_0 {
    using W = BlockQ5_0;
    using A = BlockQ8_0;
    static constexpr bool kOffset = false;
    // nibble | 0xF0 is nibble - 16 as a signed byte: the value when the 5th bit is clear.
    static __m256i levels(const W& b) {
        return _mm256_or_si256(unpack_nibbles16(b.qs), _mm256_andnot_si256(fifth_bits(b.qh), _mm256_set1_epi8(int8_t(0xF0))));
    }
};

struct Q8_0 {
    using W = BlockQ8_0;
    using A = BlockQ8_0;
    static constexpr bool kOffset = false;
    static __m256i levels(const W& b) { return loadu(b.qs); }
};

struct Q4_1 {
    using W = BlockQ4_1;
    using A = BlockQ8_1;
    static constexpr bool kOffset = true;
    static __m256i levels(const W& b) { return unpack_nibbles16(b.qs); }
};

struct Q5_1 {
    using W = BlockQ5_1;
    using A = BlockQ8_1;
    static constexpr bool kOffset = true;
    static __m256i levels(const W& b) {
        return _mm256_or_si256(unpack_nibbles16(b.qs), _mm256_and_si256(fifth_bits(b.qh), _mm256_set1_epi8(0x10)));
    }
};

template <class F>
float block_offset(const typename F::W& b) {
    if constexpr (F::kOffset) return load_f16(&b.m);
    else return 0.0f;
}

// Integer lane sums of one weight block (prepared by prep) with one activation block.
template <class F>
struct Lanes {
    __m256i u;  // unsigned operand of vpmaddubsw: the levels, or |values| for signed formats
    __m256i w;  // signed formats: the values (their signs go onto the activations)
    void prep(const typename F::W& b) {
        w = F::levels(b);
        u = F::kOffset ? w : _mm256_sign_epi8(w, w);
    }
    __m256 dot(const void* a) const {
        const __m256i x = loadu(a);
        return _mm256_cvtepi32_ps(dot_u8_i8(u, F::kOffset ? x : _mm256_sign_epi8(x, w)));
    }
};

}  // namespace lumen::cpu::avx2::legacy
