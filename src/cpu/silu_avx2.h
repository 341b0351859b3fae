// exp and SiLU on 8 floats, computed as ggml's AVX2 build computes them (its vector expf: a
// rounding-to-integer split x = n ln2 + b, a degree-5 polynomial for e^b - 1, and 2^n from the
// exponent bits), so SwiGLU gives llama.cpp's bits. Include only inside the AVX2+FMA guard.
#pragma once
#include <immintrin.h>

namespace lumen::cpu::avx2 {

inline __m256 exp8(__m256 x) {
    const __m256 shifter = _mm256_set1_ps(0x1.8p23f);  // adding it rounds to an integer in the low bits
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shifter);  // x / ln2 + shifter
    const __m256 n = _mm256_sub_ps(z, shifter);
    // b = x - n ln2, with ln2 split in a high and a low part
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    // e^b - 1 = b (c1 + c2 b + (c3 + c4 b + (c5 + c6 b) b^2) b^2), evaluated in this order
    const __m256 b2 = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 mid = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 em1 = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, b2, mid), b2, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    // 2^n from the integer in z's low mantissa bits
    const __m256i ebits = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 scale = _mm256_castsi256_ps(_mm256_add_epi32(ebits, _mm256_set1_epi32(0x3f800000)));
    const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126), _CMP_GT_OQ);
    const __m256 normal = _mm256_fmadd_ps(scale, em1, scale);
    if (!_mm256_movemask_ps(big)) return normal;
    // |n| > 126: 2^n does not fit one float exponent; scale in two steps (overflow to inf, underflow to 0
    // past |n| > 192).
    const __m256i neg = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                         _mm256_set1_epi32(int(0x82000000u)));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(neg, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(ebits, neg));
    const __m256 huge = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 two_step = _mm256_mul_ps(_mm256_fmadd_ps(s2, em1, s2), s1);
    const __m256 r = _mm256_blendv_ps(normal, two_step, big);
    return _mm256_blendv_ps(r, _mm256_mul_ps(s1, s1), huge);
}

// x / (1 + e^-x)
inline __m256 silu8(__m256 x) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

}  // namespace lumen::cpu::avx2
