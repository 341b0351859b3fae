// AVX2 matmul for one to three tokens (generation) with the legacy 32-value formats, where reading
// the weights once is the whole cost. Four weight rows go through each activation block together:
// the block is loaded once, its scale and sum were converted to float once per call, and each
// weight block costs a nibble unpack, one vpmaddubsw and two FMAs. Q4_0/Q5_0 run as unsigned
// levels with the offset folded into a min (m = -8d / -16d), which skips the sign trick.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

constexpr int kRowsPerPass = 4;

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
inline const int8_t* act_qs(const uint8_t* row, int64_t b) {
    return reinterpret_cast<const AB*>(row)[b].qs;
}

// Rows [n0, n0 + rows) against one token; unused row slots repeat row n0 and are not stored.
template <class WB, class AB>
void pass_unsigned(const MatmulArgs& a, int64_t n0, int rows, const uint8_t* x, const ActScale* as, float* y) {
    const int64_t nb = a.K / kQK;
    const WB* w[kRowsPerPass];
    for (int r = 0; r < kRowsPerPass; r++)
        w[r] = reinterpret_cast<const WB*>(a.W + size_t(n0 + (r < rows ? r : 0)) * a.w_stride);
    __m256 acc[kRowsPerPass];
    float mins[kRowsPerPass] = {};
    for (int r = 0; r < kRowsPerPass; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i xq = loadu(act_qs<AB>(x, b));
        const ActScale s = as[b];
        for (int r = 0; r < kRowsPerPass; r++) {
            const Levels l = levels(w[r][b]);
            const __m256 p = _mm256_cvtepi32_ps(dot_u8_i8(l.q, xq));
            acc[r] = _mm256_fmadd_ps(p, _mm256_set1_ps(l.d * s.d), acc[r]);
            mins[r] += l.m * s.s;
        }
    }
    for (int r = 0; r < rows; r++) y[n0 + r] = hsum(acc[r]) + mins[r];
}

void pass_q8_0(const MatmulArgs& a, int64_t n0, int rows, const uint8_t* x, const ActScale* as, float* y) {
    const int64_t nb = a.K / kQK;
    const BlockQ8_0* w[kRowsPerPass];
    for (int r = 0; r < kRowsPerPass; r++)
        w[r] = reinterpret_cast<const BlockQ8_0*>(a.W + size_t(n0 + (r < rows ? r : 0)) * a.w_stride);
    __m256 acc[kRowsPerPass];
    for (int r = 0; r < kRowsPerPass; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i xq = loadu(act_qs<BlockQ8_0>(x, b));
        const float da = as[b].d;
        for (int r = 0; r < kRowsPerPass; r++) {
            const __m256 p = _mm256_cvtepi32_ps(dot_i8_i8(loadu(w[r][b].qs), xq));
            acc[r] = _mm256_fmadd_ps(p, _mm256_set1_ps(load_f16(&w[r][b].d) * da), acc[r]);
        }
    }
    for (int r = 0; r < rows; r++) y[n0 + r] = hsum(acc[r]);
}

using PassFn = void (*)(const MatmulArgs&, int64_t, int, const uint8_t*, const ActScale*, float*);

PassFn pass_of(DType t) {
    switch (t) {
        case DType::Q4_0: return pass_unsigned<BlockQ4_0, BlockQ8_0>;
        case DType::Q4_1: return pass_unsigned<BlockQ4_1, BlockQ8_1>;
        case DType::Q5_0: return pass_unsigned<BlockQ5_0, BlockQ8_0>;
        case DType::Q5_1: return pass_unsigned<BlockQ5_1, BlockQ8_1>;
        case DType::Q8_0: return pass_q8_0;
        default: return nullptr;
    }
}

}  // namespace

bool matmul_few_tokens(const MatmulArgs& a) {
    const PassFn pass = pass_of(a.wt);
    if (!pass) return false;
    const DType vt = vec_dot_type(a.wt);
    const int64_t nb = a.K / kQK;
    thread_local std::vector<ActScale> scales;
    scales.resize(size_t(a.M * nb));
    for (int64_t m = 0; m < a.M; m++) act_scales(vt, a.X + size_t(m) * a.x_stride, a.K, kQK, scales.data() + m * nb);
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kRowsPerPass) {
        const int rows = int(std::min<int64_t>(kRowsPerPass, a.n_end - n0));
        for (int64_t m = 0; m < a.M; m++)
            pass(a, n0, rows, a.X + size_t(m) * a.x_stride, scales.data() + m * nb, a.Y + m * a.ldy);
    }
    return true;
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_few_tokens(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
