// AVX2 matmul for one to three tokens (generation) with the legacy 32-value formats, where reading
// the weights once is the whole cost. Rows are read one after the other (a single ascending stream:
// interleaving 2-8 rows measured up to 2x slower on matrices streamed from DRAM); the activation
// scales and sums are converted to float once per call, so a weight block costs a nibble unpack,
// one vpmaddubsw and two FMAs. Q4_0/Q5_0 run as unsigned levels with the offset folded into a min
// (m = -8d / -16d), which skips the sign trick.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

// A block as unsigned levels 0..31 with value = d*q + m.
struct Levels {
    __m256i q;
    float d, m;
};

// The d and m fields of Q4_1 / Q5_1 blocks are adjacent: one conversion for both.
inline void load_dm(const void* p, float& d, float& m) {
    uint32_t bits;
    std::memcpy(&bits, p, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(int(bits)));
    d = _mm_cvtss_f32(dm);
    m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
}

inline __m256i fifth_bits(const uint8_t qh[4]) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    return _mm256_and_si256(bits_to_bytes(bits), _mm256_set1_epi8(0x10));
}

inline Levels levels(const BlockQ4_0& b) {
    const float d = load_f16(&b.d);
    return {unpack_nibbles16(b.qs), d, -8 * d};
}
inline Levels levels(const BlockQ4_1& b) {
    Levels l{unpack_nibbles16(b.qs), 0, 0};
    load_dm(&b.d, l.d, l.m);
    return l;
}
inline Levels levels(const BlockQ5_0& b) {
    const float d = load_f16(&b.d);
    return {_mm256_or_si256(unpack_nibbles16(b.qs), fifth_bits(b.qh)), d, -16 * d};
}
inline Levels levels(const BlockQ5_1& b) {
    Levels l{_mm256_or_si256(unpack_nibbles16(b.qs), fifth_bits(b.qh)), 0, 0};
    load_dm(&b.d, l.d, l.m);
    return l;
}

// Activation blocks are Q8_0 (qs at byte 2) or Q8_1 (qs at byte 4).
template <class AB>
inline __m256i act_qs(const uint8_t* row, int64_t b) {
    return loadu(reinterpret_cast<const AB*>(row)[b].qs);
}

// One weight block into an accumulator (the min part into `mins`).
template <class WB, class AB>
inline __m256 step_unsigned(const WB& w, const uint8_t* x, int64_t b, const ActScale& as, __m256 acc, float& mins) {
    const Levels l = levels(w);
    mins += l.m * as.s;
    const __m256 p = _mm256_cvtepi32_ps(dot_u8_i8(l.q, act_qs<AB>(x, b)));
    return _mm256_fmadd_ps(p, _mm256_set1_ps(l.d * as.d), acc);
}

// One weight row against one token; two accumulators let consecutive blocks overlap.
template <class WB, class AB>
float dot_unsigned(const uint8_t* wrow, const uint8_t* x, const ActScale* as, int64_t nb) {
    const WB* w = reinterpret_cast<const WB*>(wrow);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float mins = 0;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        acc0 = step_unsigned<WB, AB>(w[b], x, b, as[b], acc0, mins);
        acc1 = step_unsigned<WB, AB>(w[b + 1], x, b + 1, as[b + 1], acc1, mins);
    }
    if (b < nb) acc0 = step_unsigned<WB, AB>(w[b], x, b, as[b], acc0, mins);
    return hsum(_mm256_add_ps(acc0, acc1)) + mins;
}

inline __m256 step_q8_0(const BlockQ8_0& w, const uint8_t* x, int64_t b, const ActScale& as, __m256 acc) {
    const __m256 p = _mm256_cvtepi32_ps(dot_i8_i8(loadu(w.qs), act_qs<BlockQ8_0>(x, b)));
    return _mm256_fmadd_ps(p, _mm256_set1_ps(load_f16(&w.d) * as.d), acc);
}

float dot_q8_0(const uint8_t* wrow, const uint8_t* x, const ActScale* as, int64_t nb) {
    const BlockQ8_0* w = reinterpret_cast<const BlockQ8_0*>(wrow);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        acc0 = step_q8_0(w[b], x, b, as[b], acc0);
        acc1 = step_q8_0(w[b + 1], x, b + 1, as[b + 1], acc1);
    }
    if (b < nb) acc0 = step_q8_0(w[b], x, b, as[b], acc0);
    return hsum(_mm256_add_ps(acc0, acc1));
}

using RowDotFn = float (*)(const uint8_t* wrow, const uint8_t* x, const ActScale* as, int64_t nb);

RowDotFn row_dot_of(DType t) {
    switch (t) {
        case DType::Q4_0: return dot_unsigned<BlockQ4_0, BlockQ8_0>;
        case DType::Q4_1: return dot_unsigned<BlockQ4_1, BlockQ8_1>;
        case DType::Q5_0: return dot_unsigned<BlockQ5_0, BlockQ8_0>;
        case DType::Q5_1: return dot_unsigned<BlockQ5_1, BlockQ8_1>;
        case DType::Q8_0: return dot_q8_0;
        default: return nullptr;
    }
}

}  // namespace

bool matmul_few_tokens(const MatmulArgs& a) {
    const RowDotFn dot = row_dot_of(a.wt);
    if (!dot) return false;
    const DType vt = vec_dot_type(a.wt);
    const int64_t nb = a.K / kQK;
    thread_local std::vector<ActScale> scales;
    scales.resize(size_t(a.M * nb));
    for (int64_t m = 0; m < a.M; m++) act_scales(vt, a.X + size_t(m) * a.x_stride, a.K, kQK, scales.data() + m * nb);
    for (int64_t n = a.n_begin; n < a.n_end; n++) {
        const uint8_t* w = a.W + size_t(n) * a.w_stride;
        for (int64_t m = 0; m < a.M; m++)
            a.Y[m * a.ldy + n] = dot(w, a.X + size_t(m) * a.x_stride, scales.data() + m * nb, nb);
    }
    return true;
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_few_tokens(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
