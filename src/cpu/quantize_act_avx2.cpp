// Vectorised activation quantizers (one row per token before each matmul). Q8_0/Q8_1 produce the
// bytes of ggml's x86 quantizers (scale by 127/max, halves to even), which differ in the last bit
// now and then from the portable reference quantizers in src/tensor (1/d, halves away from zero);
// Q8_K produces the reference bytes, as ggml's x86 build does.
#include "cpu/matmul_impl.h"

#include <cstring>

#include "tensor/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cmath>

#include "cpu/simd_avx2.h"
#include "tensor/half.h"

namespace lumen::cpu::avx2 {

namespace {

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// Four vectors of 8 int32 (each in -127..127) -> 32 int8 in order.
inline __m256i pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    // The packs work per 128-bit lane; put the 32-bit pieces back in element order.
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// One block of 32: writes the int8 quants and returns d; *sum gets the quants' sum.
inline float quant32(const float* x, int8_t* qs, int* sum) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, abs_ps(v[k]));
    }
    // As ggml's x86 quantizer (not its portable reference): scale by 127 / max, round halves to even.
    const float max = hmax(amax), d = max / 127;
    const __m256 id = _mm256_set1_ps(max != 0 ? 127.0f / max : 0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (sum) *sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), pack_i8(q[0], q[1], q[2], q[3]));
    return d;
}

void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) y[i].d = f32_to_fp16(quant32(x + kQK * i, y[i].qs, nullptr));
}

void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        int sum;
        const float d = quant32(x + kQK * i, y[i].qs, &sum);
        y[i].d = f32_to_fp16(d);
        y[i].s = f32_to_fp16(d * float(sum));
    }
}

void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int k = 0; k < kQK_K; k += 8) vmax = _mm256_max_ps(vmax, abs_ps(_mm256_loadu_ps(x + k)));
        const float amax = hmax(vmax);
        if (!(amax > 0)) {
            std::memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = amax;  // the first value of largest magnitude, with its sign
        for (int k = 0; k < kQK_K; k++)
            if (std::fabs(x[k]) == amax) { max = x[k]; break; }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int k = 0; k < kQK_K; k += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                // cvtps rounds to nearest even in the default rounding mode; the cap is as ggml's.
                const __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * j), vs));
                q[j] = _mm256_min_epi32(r, _mm256_set1_epi32(127));
            }
            // Group sums of 16: q[0]+q[1] and q[2]+q[3].
            y[i].bsums[k / 16] = int16_t(hsum_i32(_mm256_add_epi32(q[0], q[1])));
            y[i].bsums[k / 16 + 1] = int16_t(hsum_i32(_mm256_add_epi32(q[2], q[3])));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + k), pack_i8(q[0], q[1], q[2], q[3]));
        }
        y[i].d = 1.0f / iscale;
    }
}

}  // namespace

bool quantize_activations(DType vec_type, const float* x, void* dst, int64_t K) {
    switch (vec_type) {
        case DType::Q8_0:
            if (K % kQK) return false;  // quantize_row reports the error
            quant_q8_0(x, static_cast<BlockQ8_0*>(dst), K / kQK);
            return true;
        case DType::Q8_1:
            if (K % kQK) return false;
            quant_q8_1(x, static_cast<BlockQ8_1*>(dst), K / kQK);
            return true;
        case DType::Q8_K:
            if (K % kQK_K) return false;
            quant_q8_k(x, static_cast<BlockQ8_K*>(dst), K / kQK_K);
            return true;
        default:
            return false;
    }
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool quantize_activations(DType, const float*, void*, int64_t) { return false; }
}  // namespace lumen::cpu::avx2

#endif
