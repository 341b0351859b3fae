// See attention_math.h. Each AVX2 function below mirrors the portable one above it operation for
// operation; where a vector instruction fixes an order (the horizontal sum of a dot product), the
// portable code spells that order out.
#include "cpu/attention_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#if defined(LUMEN_ATTN_AVX2)
#include <immintrin.h>
#endif

namespace lumen::cpu::attn {

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();
// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in two parts (ln 2's high part has 9
// significant bits, so n * kLn2Hi is exact), |r| <= 0.347, exp(r) by its Taylor series to r^7
// (truncation 5e-9; Horner's rounding adds about 1e-7).
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr float kExpMin = -87.0f;      // below: 0 (2^n stays a normal float above)
constexpr float kC[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};

// The dot products of q with 8 keys, each summed in 8 lanes (element i in lane i % 8, FMA in order
// of i), the lanes added as ((0+1)+(2+3)) + ((4+5)+(6+7)): the order of the AVX2 hadd tree.
void scores8(const float* q, const float* k, int64_t dp, float* s) {
    for (int key = 0; key < 8; key++) {
        float l[8] = {};
        for (int64_t i = 0; i < dp; i += 8)
            for (int j = 0; j < 8; j++) l[j] = std::fma(q[i + j], k[key * dp + i + j], l[j]);
        s[key] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}
}  // namespace

float exp1(float x) {
    if (!(x >= kExpMin)) return 0.0f;
    const float n = std::fma(x, kLog2e, kRound) - kRound;
    float r = std::fma(n, -kLn2Hi, x);
    r = std::fma(n, -kLn2Lo, r);
    float p = kC[7];
    for (int i = 6; i >= 0; i--) p = std::fma(p, r, kC[i]);
    uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
    float two_n;
    std::memcpy(&two_n, &bits, 4);
    return p * two_n;
}

float sum8(const float* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

// --- portable ----------------------------------------------------------------------------------

namespace portable {

void exp8(const float* x, float* y) {
    for (int i = 0; i < 8; i++) y[i] = exp1(x[i]);
}

void row_block(const float* q, const float* k, const float* v, int64_t dp, int ra, int re, float scale,
               float softcap, RowState& st, float* acc, float* p) {
    const int g0 = ra / 8, g1 = re / 8;
    float m = -kInf;
    for (int g = g0; g <= g1; g++) {
        float* s = p + 8 * g;
        scores8(q, k + 8 * g * dp, dp, s);
        for (int j = 0; j < 8; j++) {
            s[j] = softcap > 0 ? softcap * std::tanh(s[j] * (scale / softcap)) : s[j] * scale;
            if (8 * g + j < ra || 8 * g + j > re) s[j] = -kInf;
            m = std::max(m, s[j]);
        }
    }
    const float mn = std::max(st.m, m);
    if (mn > st.m) {
        if (st.m != -kInf) {  // else acc and sv are still zero
            const float a = exp1(st.m - mn);
            for (int64_t i = 0; i < dp; i++) acc[i] *= a;
            for (float& x : st.sv) x *= a;
        }
        st.m = mn;
    }
    for (int g = g0; g <= g1; g++)
        for (int j = 0; j < 8; j++) {
            float& x = p[8 * g + j];
            x = exp1(x - mn);
            st.sv[j] += x;
        }
    for (int64_t i = 0; i < dp; i++) {
        float a = acc[i];
        for (int j = ra; j <= re; j++) a = std::fma(p[j], v[j * dp + i], a);
        acc[i] = a;
    }
}

void fold(float& M, float& S, float* acc, float m, float s, const float* a, int64_t dp) {
    if (m == -kInf) return;
    if (M == -kInf) {
        M = m;
        S = s;
        std::copy(a, a + dp, acc);
        return;
    }
    const float mn = std::max(M, m), al = exp1(M - mn), be = exp1(m - mn);
    S = std::fma(s, be, S * al);
    for (int64_t i = 0; i < dp; i++) acc[i] = std::fma(a[i], be, acc[i] * al);
    M = mn;
}

}  // namespace portable

// --- AVX2 --------------------------------------------------------------------------------------

#if defined(LUMEN_ATTN_AVX2)
namespace avx2 {
namespace {

inline __m256 exp_v(__m256 x) {
    const __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(kRound)),
                                   _mm256_set1_ps(kRound));
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
    __m256 p = _mm256_set1_ps(kC[7]);
    for (int i = 6; i >= 0; i--) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[i]));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_and_ps(y, _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_GE_OQ));  // -inf, NaN: 0
}

// 8 dot products; lane j of the result is key j (see the portable scores8).
inline __m256 scores8(const float* q, const float* k, int64_t dp) {
    __m256 a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dp; i += 8) {
        const __m256 qi = _mm256_loadu_ps(q + i);
        for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(k + j * dp + i), a[j]);
    }
    // hadd(x, y) = x0+x1, x2+x3, y0+y1, y2+y3 per 128-bit half: twice gives each key's
    // (0+1)+(2+3) in the low half and (4+5)+(6+7) in the high half.
    const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

// acc[0 .. 8 NV) += p[j] * v[j] for j in [ra, re], in order of j.
template <int NV>
inline void accumulate(float* acc, const float* v, int64_t dp, const float* p, int ra, int re) {
    __m256 a[NV];
    for (int i = 0; i < NV; i++) a[i] = _mm256_loadu_ps(acc + 8 * i);
    for (int j = ra; j <= re; j++) {
        const __m256 pj = _mm256_broadcast_ss(p + j);
        const float* vj = v + j * dp;
        for (int i = 0; i < NV; i++) a[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * i), a[i]);
    }
    for (int i = 0; i < NV; i++) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

inline void scale(float* x, float a, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), va));
}

}  // namespace

void exp8(const float* x, float* y) { _mm256_storeu_ps(y, exp_v(_mm256_loadu_ps(x))); }

void row_block(const float* q, const float* k, const float* v, int64_t dp, int ra, int re, float scale_,
               float softcap, RowState& st, float* acc, float* p) {
    const int g0 = ra / 8, g1 = re / 8;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i lo = _mm256_set1_epi32(ra - 1), hi = _mm256_set1_epi32(re + 1);
    const __m256 ninf = _mm256_set1_ps(-kInf);
    __m256 mx = ninf;
    for (int g = g0; g <= g1; g++) {
        __m256 s = scores8(q, k + 8 * g * dp, dp);
        if (softcap > 0) {
            float t[8];
            _mm256_storeu_ps(t, s);
            for (float& x : t) x = softcap * std::tanh(x * (scale_ / softcap));
            s = _mm256_loadu_ps(t);
        } else {
            s = _mm256_mul_ps(s, _mm256_set1_ps(scale_));
        }
        const __m256i key = _mm256_add_epi32(lane, _mm256_set1_epi32(8 * g));
        const __m256i in = _mm256_and_si256(_mm256_cmpgt_epi32(key, lo), _mm256_cmpgt_epi32(hi, key));
        s = _mm256_blendv_ps(ninf, s, _mm256_castsi256_ps(in));
        _mm256_storeu_ps(p + 8 * g, s);
        mx = _mm256_max_ps(mx, s);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float mn = std::max(st.m, _mm_cvtss_f32(m4));
    __m256 sv = _mm256_loadu_ps(st.sv);
    if (mn > st.m) {
        if (st.m != -kInf) {
            const float a = exp1(st.m - mn);
            scale(acc, a, dp);
            sv = _mm256_mul_ps(sv, _mm256_set1_ps(a));
        }
        st.m = mn;
    }
    const __m256 vmn = _mm256_set1_ps(mn);
    for (int g = g0; g <= g1; g++) {
        const __m256 e = exp_v(_mm256_sub_ps(_mm256_loadu_ps(p + 8 * g), vmn));
        _mm256_storeu_ps(p + 8 * g, e);
        sv = _mm256_add_ps(sv, e);
    }
    _mm256_storeu_ps(st.sv, sv);
    // Columns in slices of 64 (8 registers of accumulators), then what is left.
    int64_t c = 0;
    for (; c + 64 <= dp; c += 64) accumulate<8>(acc + c, v + c, dp, p, ra, re);
    switch ((dp - c) / 8) {
        case 0: break;
        case 1: accumulate<1>(acc + c, v + c, dp, p, ra, re); break;
        case 2: accumulate<2>(acc + c, v + c, dp, p, ra, re); break;
        case 3: accumulate<3>(acc + c, v + c, dp, p, ra, re); break;
        case 4: accumulate<4>(acc + c, v + c, dp, p, ra, re); break;
        case 5: accumulate<5>(acc + c, v + c, dp, p, ra, re); break;
        case 6: accumulate<6>(acc + c, v + c, dp, p, ra, re); break;
        case 7: accumulate<7>(acc + c, v + c, dp, p, ra, re); break;
    }
}

void fold(float& M, float& S, float* acc, float m, float s, const float* a, int64_t dp) {
    if (m == -kInf) return;
    if (M == -kInf) {
        M = m;
        S = s;
        std::copy(a, a + dp, acc);
        return;
    }
    const float mn = std::max(M, m), al = exp1(M - mn), be = exp1(m - mn);
    S = std::fma(s, be, S * al);
    const __m256 val = _mm256_set1_ps(al), vbe = _mm256_set1_ps(be);
    for (int64_t i = 0; i < dp; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(_mm256_loadu_ps(a + i), vbe, _mm256_mul_ps(_mm256_loadu_ps(acc + i), val)));
    M = mn;
}

}  // namespace avx2
#endif

}  // namespace lumen::cpu::attn
