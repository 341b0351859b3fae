// Small AVX2 building blocks shared by the dot-product and matmul kernels. Include only inside
// `#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)`.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lumen::cpu::avx2 {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

inline __m256i loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 16 bytes of nibble pairs -> 32 bytes 0..15: the low nibbles first, then the high ones
// (the element order of the legacy 4-bit blocks).
inline __m256i unpack_nibbles16(const uint8_t* qs) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Bit j of a 32-bit mask -> byte j: 0xFF where the bit is set, 0 elsewhere.
inline __m256i bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(bits)), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// The 5th bits of a Q5_0 / Q5_1 block (4 bytes, bit j for element j) as bytes: 0xFF where set.
inline __m256i fifth_bits(const uint8_t qh[4]) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    return bits_to_bytes(bits);
}

// 8 x int32: sums of 4 neighbouring products of unsigned u (0..255) and signed s bytes. The int16
// pair sums saturate only if u > 128 meets s = -128, which the formats here never produce.
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline float load_f16(const void* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

}  // namespace lumen::cpu::avx2
