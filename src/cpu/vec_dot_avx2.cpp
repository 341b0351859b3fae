// AVX2 + FMA dot-product kernels, one per weight type. Quants are widened to bytes, multiplied with
// the int8 activations by vpmaddubsw (unsigned x signed; signed weights pass their signs to the
// activations), summed to int32 per block or sub-block, and scaled in float once per block.
#include "cpu/vec_dot_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cmath>

#include "cpu/legacy_formats_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

inline __m256 scale_add(__m256i idot, float scale, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_set1_ps(scale), acc);
}

// Two int16 scales: one for the low 16 bytes (a sub-block of 16 values), one for the high 16.
inline __m256i scale_pair(int lo, int hi) {
    return _mm256_set_m128i(_mm_set1_epi16(int16_t(hi)), _mm_set1_epi16(int16_t(lo)));
}

// ---- legacy formats: one accumulator, blocks in order (ggml's order) ----

template <class F>
float dot_legacy(int64_t n, const void* wv, const void* av) {
    const auto* w = static_cast<const typename F::W*>(wv);
    const auto* a = static_cast<const typename F::A*>(av);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t i = 0; i < n / kQK; i++) {
        legacy::Lanes<F> l;
        l.prep(w[i]);
        const __m256 d = _mm256_mul_ps(_mm256_set1_ps(load_f16(&w[i].d)), _mm256_set1_ps(load_f16(&a[i].d)));
        acc = _mm256_fmadd_ps(d, l.dot(a[i].qs), acc);
        if constexpr (F::kOffset) mins = std::fma(legacy::block_offset<F>(w[i]), load_f16(&a[i].s), mins);
    }
    return F::kOffset ? hsum(acc) + mins : hsum(acc);
}

// ---- K-quants: one 256-value super-block per iteration ----

float dot_q2_k(int64_t n, const void* wv, const void* av) {
    const BlockQ2_K* w = static_cast<const BlockQ2_K*>(wv);
    const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t i = 0; i < n / kQK_K; i++) {
        const BlockQ2_K& b = w[i];
        const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
        const __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
        mins += a[i].d * load_f16(&b.dmin) * float(hsum_i32(_mm256_madd_epi16(mn, loadu(a[i].bsums))));
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qs = loadu(b.qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), _mm256_set1_epi8(3));
                const __m256i p = _mm256_maddubs_epi16(q, loadu(a[i].qs + 128 * h + 32 * k));
                const int j = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(b.scales[j] & 0x0F, b.scales[j + 1] & 0x0F)));
            }
        }
        acc = scale_add(isum, a[i].d * load_f16(&b.d), acc);
    }
    return hsum(acc) - mins;
}

float dot_q3_k(int64_t n, const void* wv, const void* av) {
    const BlockQ3_K* w = static_cast<const BlockQ3_K*>(wv);
    const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; i++) {
        const BlockQ3_K& b = w[i];
        int8_t sc[16];
        q3k_scales(b.scales, sc);
        const __m256i hm = loadu(b.hmask);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qs = loadu(b.qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                // 0..7 here; the -4 offset is taken out below through the activation group sums.
                const __m256i low = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), _mm256_set1_epi8(3));
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), _mm256_set1_epi8(1));
                const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
                const __m256i p = _mm256_maddubs_epi16(q, loadu(a[i].qs + 128 * h + 32 * k));
                const int j = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(sc[j], sc[j + 1])));
            }
        }
        const __m256i scv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_madd_epi16(scv, loadu(a[i].bsums)), 2));
        acc = scale_add(isum, a[i].d * load_f16(&b.d), acc);
    }
    return hsum(acc);
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins. kBits5 adds Q5_K's 5th bit.
template <class Block, bool kBits5>
float dot_q45_k(int64_t n, const void* wv, const void* av) {
    const Block* w = static_cast<const Block*>(wv);
    const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
    const __m256i nib = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t i = 0; i < n / kQK_K; i++) {
        const Block& b = w[i];
        uint8_t sc[8], mn[8];
        int msum = 0;
        for (int j = 0; j < 8; j++) {
            k4_scale_min(b.scales, j, sc[j], mn[j]);
            msum += mn[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
        }
        mins += a[i].d * load_f16(&b.dmin) * float(msum);
        __m256i isum = _mm256_setzero_si256();
        __m256i qh = _mm256_setzero_si256();
        if constexpr (kBits5) qh = loadu(b.qh);
        for (int c = 0; c < 4; c++) {
            const __m256i raw = loadu(b.qs + 32 * c);
            __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
            if constexpr (kBits5) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
            }
            const __m256i plo = _mm256_maddubs_epi16(lo, loadu(a[i].qs + 64 * c));
            const __m256i phi = _mm256_maddubs_epi16(hi, loadu(a[i].qs + 64 * c + 32));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
        }
        acc = scale_add(isum, a[i].d * load_f16(&b.d), acc);
    }
    return hsum(acc) - mins;
}

float dot_q6_k(int64_t n, const void* wv, const void* av) {
    const BlockQ6_K* w = static_cast<const BlockQ6_K*>(wv);
    const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
    const __m256i nib = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK_K; i++) {
        const BlockQ6_K& b = w[i];
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = loadu(b.ql + 64 * h), ql1 = loadu(b.ql + 64 * h + 32);
            const __m256i qh = loadu(b.qh + 32 * h);
            // 0..63 here; the -32 offset is taken out below through the activation group sums.
            __m256i q[4];
            q[0] = _mm256_and_si256(ql0, nib);
            q[1] = _mm256_and_si256(ql1, nib);
            q[2] = _mm256_and_si256(_mm256_srli_epi16(ql0, 4), nib);
            q[3] = _mm256_and_si256(_mm256_srli_epi16(ql1, 4), nib);
            for (int k = 0; k < 4; k++) {
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), low2);
                const __m256i v = _mm256_or_si256(q[k], _mm256_slli_epi16(high, 4));
                const __m256i p = _mm256_maddubs_epi16(v, loadu(a[i].qs + 128 * h + 32 * k));
                const int j = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(b.scales[j], b.scales[j + 1])));
            }
        }
        const __m256i scv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_madd_epi16(scv, loadu(a[i].bsums)), 5));
        acc = scale_add(isum, a[i].d * load_f16(&b.d), acc);
    }
    return hsum(acc);
}

// ---- float weights against f32 activations ----

// Eight weights widened to f32.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p, bool bf16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

template <class T, bool kBf16>
float dot_float(int64_t n, const void* wv, const void* av) {
    const T* w = static_cast<const T*>(wv);
    const float* a = static_cast<const float*>(av);
    auto wload = [](const T* p) {
        if constexpr (sizeof(T) == 4) return load8(p);
        else return load8(p, kBf16);
    };
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) acc[k] = _mm256_fmadd_ps(wload(w + i + 8 * k), _mm256_loadu_ps(a + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(wload(w + i), _mm256_loadu_ps(a + i), acc[0]);
    float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) {
        if constexpr (sizeof(T) == 4) sum += w[i] * a[i];
        else sum += (kBf16 ? bf16_to_f32(w[i]) : fp16_to_f32(w[i])) * a[i];
    }
    return sum;
}

}  // namespace

VecDotFn kernel(DType w) {
    switch (w) {
        case DType::Q4_0: return dot_legacy<legacy::Q4_0>;
        case DType::Q5_0: return dot_legacy<legacy::Q5_0>;
        case DType::Q8_0: return dot_legacy<legacy::Q8_0>;
        case DType::Q4_1: return dot_legacy<legacy::Q4_1>;
        case DType::Q5_1: return dot_legacy<legacy::Q5_1>;
        case DType::Q2_K: return dot_q2_k;
        case DType::Q3_K: return dot_q3_k;
        case DType::Q4_K: return dot_q45_k<BlockQ4_K, false>;
        case DType::Q5_K: return dot_q45_k<BlockQ5_K, true>;
        case DType::Q6_K: return dot_q6_k;
        case DType::F32: return dot_float<float, false>;
        case DType::F16: return dot_float<uint16_t, false>;
        case DType::BF16: return dot_float<uint16_t, true>;
        default: return nullptr;
    }
}

}  // namespace lumen::cpu::avx2

#else  // no AVX2: vec_dot falls back to the scalar kernels

namespace lumen::cpu::avx2 {
VecDotFn kernel(DType) { return nullptr; }
}  // namespace lumen::cpu::avx2

#endif
