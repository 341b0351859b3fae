// The integer formats' product for few tokens (decode, short speculative steps). The tiled kernel
// (matmul_tile_avx2.cpp) first decodes 8 weight rows into an interleaved scratch tile, which pays
// off when many tokens pass over the tile; for one token the decoding costs more than the product.
// This kernel reads every weight block where it lies, once, and multiplies it with up to
// kMaxFewTokens tokens straight from the bytes.
//
// It adds up every output exactly as the tiled kernel does, so a token's result has the same bits
// whichever kernel computes it (batch invariance: decode, speculative verification and prompt
// chunks agree). Per row and token: for each sub-block s in order, the exact integer sum
// isum_s = sum(level * activation quant), then
//     acc = fma(float(isum_s), d_s * da_s, acc);   acc = fma(m_s, sa_s, acc)  (the latter if m exists)
// with d_s and m_s the tiled decoders' per-sub-block scale and offset, da_s and sa_s the activation
// sub-block's scale and scale * sum of quants (act_scales_avx2.h).
//
// Layout of the work: 8 weight rows at once, one per float lane, so the float chain above runs for
// 8 rows in one register. Rows are walked in units of 256 values (a K-quant super-block, or 8
// legacy blocks), 8 chunks of 32 values each. The integer sums are formed per row (vpmaddubsw +
// vpmaddwd over 32 values) and folded across the 8 rows with horizontal adds, which leaves lane r =
// row r.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cstddef>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/few_formats_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

using few::kRows;

// Sums of 4 neighbouring level x activation products, 8 x int32. Signed weights (Q8_0) multiply
// |w| with the activation carrying w's sign, as vpmaddubsw needs one unsigned operand.
template <bool kSigned>
inline __m256i dot4(__m256i q, __m256i a) {
    if constexpr (kSigned) return dot_u8_i8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q));
    else return dot_u8_i8(q, a);
}

// NT tokens x 8 rows [n0, n0 + rows) (missing rows repeat row n0; their results are dropped).
template <class F, int NT>
void kernel(const MatmulArgs& a, int64_t n0, int rows, int64_t m0, const ActScale* const* as) {
    constexpr int kNsub = F::kNsub;
    const int64_t nunits = (a.K + 255) / 256;
    const uint8_t* wrow[kRows];
    for (int r = 0; r < kRows; r++) wrow[r] = a.W + size_t(n0 + (r < rows ? r : 0)) * a.w_stride;
    const uint8_t* x[NT];
    for (int t = 0; t < NT; t++) x[t] = a.X + size_t(m0 + t) * a.x_stride;

    __m256 acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    // The 8 rows are 8 short streams (a row is a few hundred bytes to a few KiB), too short for the
    // hardware prefetcher to pick up; so each unit fetches its share of the next 8 rows, which
    // follow these in memory.
    const char* next = reinterpret_cast<const char*>(a.W + size_t(n0 + kRows) * a.w_stride);
    for (int64_t u = 0; u < nunits; u++) {
        const size_t ahead = size_t(kRows) * F::kUnitBytes;
        for (size_t off = 0; off < ahead; off += 64) _mm_prefetch(next + size_t(u) * ahead + off, _MM_HINT_T0);
        const int nc = int(std::min<int64_t>(8, (a.K - 256 * u) / 32));  // chunks in this unit
        const uint8_t* unit[kRows];
        for (int r = 0; r < kRows; r++) unit[r] = wrow[r] + size_t(u) * F::kUnitBytes;
        __m256 dm[2 * kNsub];
        F::row_scales(unit, nc, dm);
        auto chunk = [&](int c) {
            __m256i av[NT];
            for (int t = 0; t < NT; t++) av[t] = loadu(F::act(x[t], u, c));
            // Pairs of rows folded by horizontal adds: h[p] holds rows 2p, 2p+1 (4-value sums halved
            // twice more below), so that after three folds lane r is row r's sum.
            __m256i h[4][NT];
            for (int p = 0; p < 4; p++) {
                const __m256i q0 = F::levels(unit[2 * p], c), q1 = F::levels(unit[2 * p + 1], c);
                for (int t = 0; t < NT; t++)
                    h[p][t] = _mm256_hadd_epi32(dot4<F::kSigned>(q0, av[t]), dot4<F::kSigned>(q1, av[t]));
            }
            for (int t = 0; t < NT; t++) {
                // [rows 0-3 | rows 0-3] and [rows 4-7 | rows 4-7]: the low 128 bits sum values 0-15 of
                // the chunk, the high 128 bits values 16-31.
                const __m256i r03 = _mm256_hadd_epi32(h[0][t], h[1][t]), r47 = _mm256_hadd_epi32(h[2][t], h[3][t]);
                const __m256i first = _mm256_permute2x128_si256(r03, r47, 0x20);
                const __m256i second = _mm256_permute2x128_si256(r03, r47, 0x31);
                const ActScale* s = as[t] + u * kNsub;
                auto step = [&](__m256i isum, int sub) {
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dm[sub], _mm256_set1_ps(s[sub].d)), acc[t]);
                    if constexpr (F::kMins) acc[t] = _mm256_fmadd_ps(dm[kNsub + sub], _mm256_set1_ps(s[sub].s), acc[t]);
                };
                if constexpr (F::kSub == 32) {
                    step(_mm256_add_epi32(first, second), c);
                } else {
                    step(first, 2 * c);
                    step(second, 2 * c + 1);
                }
            }
        };
        if (nc == 8) {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) chunk(c);
        } else {
            for (int c = 0; c < nc; c++) chunk(c);
        }
    }
    for (int t = 0; t < NT; t++) {
        alignas(32) float out[kRows];
        _mm256_store_ps(out, acc[t]);
        std::copy(out, out + rows, a.Y + (m0 + t) * a.ldy + n0);
    }
}

template <class F>
void run(const MatmulArgs& a) {
    const DType vt = vec_dot_type(a.wt);
    const int64_t nsub = a.K / F::kSub;
    thread_local std::vector<ActScale> act;
    act.resize(size_t(a.M * nsub));
    const ActScale* as[kMaxFewTokens];
    for (int64_t m = 0; m < a.M; m++) {
        act_scales(vt, a.X + size_t(m) * a.x_stride, a.K, F::kSub, act.data() + m * nsub);
        as[m] = act.data() + m * nsub;
    }
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kRows) {
        const int rows = int(std::min<int64_t>(kRows, a.n_end - n0));
        for (int64_t m0 = 0; m0 < a.M; m0 += 2) {
            if (a.M - m0 >= 2) kernel<F, 2>(a, n0, rows, m0, as + m0);
            else kernel<F, 1>(a, n0, rows, m0, as + m0);
        }
    }
}

}  // namespace

bool matmul_few(const MatmulArgs& a) {
    if (a.M > kMaxFewTokens) return false;
    switch (a.wt) {
        case DType::Q2_K: run<few::Q2K>(a); return true;
        case DType::Q3_K: run<few::Q3K>(a); return true;
        case DType::Q4_K: run<few::Q4K>(a); return true;
        case DType::Q5_K: run<few::Q5K>(a); return true;
        case DType::Q6_K: run<few::Q6K>(a); return true;
        case DType::Q4_0: run<few::Q4_0>(a); return true;
        case DType::Q4_1: run<few::Q4_1>(a); return true;
        case DType::Q5_0: run<few::Q5_0>(a); return true;
        case DType::Q5_1: run<few::Q5_1>(a); return true;
        case DType::Q8_0: run<few::Q8_0>(a); return true;
        default: return false;
    }
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_few(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
