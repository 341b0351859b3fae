// Matmul for the legacy 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), summed in the
// order of ggml's AVX2 dot products, so a model in these formats computes what llama.cpp's CPU
// backend computes (greedy text diverges on rounding otherwise: see tests/e2e/test_generate.sh).
//
// Per output, 8 float lanes: lane j takes the integer sum of products 4j..4j+3 of each block, times
// d_w * d_a, by FMA over the blocks in order; the lanes are added as hsum() does; formats with an
// offset (Q4_1, Q5_1) add m_w * s_a of every block in a separate FMA chain, added last.
// A kernel call computes R weight rows x T tokens at once (weights decoded once for T tokens,
// activations loaded once for R rows); every output is computed the same way whatever R, T and the
// batch size, so results do not depend on how many tokens share a forward pass.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "cpu/legacy_formats_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

using namespace legacy;

// The activation blocks' scales and (with offsets) stored sums as floats, for groups of 4 tokens:
// block b of group g at act[g * nblk + b], token t of the group in lane t (missing tokens: zeros).
struct Act4 { alignas(16) float d[4], s[4]; };

template <class F, int R, int T>
void kernel(const MatmulArgs& a, int64_t n0, int64_t m0, const Act4* act, int64_t nblk) {
    using W = typename F::W;
    using A = typename F::A;
    const W* w[R];
    const A* x[T];
    for (int r = 0; r < R; r++) w[r] = reinterpret_cast<const W*>(a.W + size_t(n0 + r) * a.w_stride);
    for (int t = 0; t < T; t++) x[t] = reinterpret_cast<const A*>(a.X + size_t(m0 + t) * a.x_stride);

    __m256 acc[R][T];
    __m128 mins[R];  // lane t: token t's chain of m_w * s_a
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
        mins[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nblk; b++) {
        const Act4& as = act[b];
        // The next rows' blocks: rows are short (a few hundred bytes), too short for the hardware
        // prefetcher to ramp up on.
        if constexpr (T == 1)
            for (int r = 0; r < R; r++)
                _mm_prefetch(reinterpret_cast<const char*>(&w[r][b]) + R * a.w_stride, _MM_HINT_T0);
        for (int r = 0; r < R; r++) {
            Lanes<F> l;
            l.prep(w[r][b]);
            const __m256 dw = _mm256_set1_ps(load_f16(&w[r][b].d));
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&as.d[t])), l.dot(x[t][b].qs), acc[r][t]);
            if constexpr (F::kOffset)
                mins[r] = _mm_fmadd_ps(_mm_set1_ps(block_offset<F>(w[r][b])), _mm_load_ps(as.s), mins[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        alignas(16) float m[4];
        _mm_store_ps(m, mins[r]);
        for (int t = 0; t < T; t++) {
            const float s = hsum(acc[r][t]);
            a.Y[(m0 + t) * a.ldy + n0 + r] = F::kOffset ? s + m[t] : s;
        }
    }
}

template <class F>
void run(const MatmulArgs& a) {
    using A = typename F::A;
    const int64_t nblk = a.K / 32, ngroups = (a.M + 3) / 4;
    thread_local std::vector<Act4> act;
    act.assign(size_t(ngroups * nblk), Act4{});
    for (int64_t m = 0; m < a.M; m++) {
        const A* x = reinterpret_cast<const A*>(a.X + size_t(m) * a.x_stride);
        Act4* g = act.data() + (m / 4) * nblk;
        for (int64_t b = 0; b < nblk; b++) {
            g[b].d[m % 4] = load_f16(&x[b].d);
            if constexpr (F::kOffset) g[b].s[m % 4] = load_f16(&x[b].s);
        }
    }
    // Panels of 16 rows stay in L1 while groups of 4 tokens pass over them two rows at a time
    // (4 rows at a time for a single token, which has more loads to hide).
    constexpr int64_t kPanel = 16;
    for (int64_t p0 = a.n_begin; p0 < a.n_end; p0 += kPanel) {
        const int64_t p1 = std::min(a.n_end, p0 + kPanel);
        for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
            const Act4* g = act.data() + (m0 / 4) * nblk;
            with_token_count(a.M - m0, [&](auto tc) {
                constexpr int T = decltype(tc)::value;
                constexpr int R = T == 1 ? 4 : 2;
                int64_t n = p0;
                for (; n + R <= p1; n += R) kernel<F, R, T>(a, n, m0, g, nblk);
                for (; n < p1; n++) kernel<F, 1, T>(a, n, m0, g, nblk);
            });
        }
    }
}

}  // namespace

bool matmul_legacy(const MatmulArgs& a) {
    if (a.K % 32 != 0) return false;
    switch (a.wt) {
        case DType::Q4_0: run<Q4_0>(a); return true;
        case DType::Q4_1: run<Q4_1>(a); return true;
        case DType::Q5_0: run<Q5_0>(a); return true;
        case DType::Q5_1: run<Q5_1>(a); return true;
        case DType::Q8_0: run<Q8_0>(a); return true;
        default: return false;
    }
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_legacy(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
