// Tiled matmul for several tokens with AVX-512 VNNI (Ice Lake / Sapphire Rapids / Zen 4 and later).
// Same scheme as matmul_tile_avx2.cpp with 16 weight rows per tile (one per 32-bit lane of a zmm
// register), and vpdpbusd instead of vpmaddubsw + vpmaddwd: it multiplies unsigned weight levels
// with the broadcast signed activation bytes and adds the 4-product sums straight into int32, so
// no int16 partial sums can overflow and one instruction does 64 multiply-adds. K-quants only:
// float weights and the legacy formats are left to the AVX2 tiles.
#include "cpu/matmul_impl.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX2__) && \
    defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/tile_pack_avx2.h"

// GCC 12 warns about the deliberately undefined pass-through operand inside _mm512_cvtepi32_ps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lumen::cpu::avx512 {

namespace {

using avx2::ActScale;

constexpr int kRows = 16;   // weight rows per tile: one per 32-bit lane
constexpr int kTokens = 4;  // tokens multiplied with a tile at once
// Values of K per tile: 16 rows x 1024 bytes of levels (+ scales) stay in L1 while tokens pass.
constexpr int64_t kQuantChunk = 1024;

struct Tile {
    uint8_t* q;  // per 32-value chunk: 8 groups x 64 bytes (16 rows x 4 values)
    float* dm;   // per sub-block: 16 d, then 16 m
};

template <int NT, int SUB>
void kernel(Tile tile, const size_t* off, int64_t nsub, const uint8_t* const* xq, const ActScale* const* as,
            __m512 out[NT]) {
    constexpr int kGroups = SUB / 4;
    __m512 acc[NT];  // locals stay in registers; `out` may alias the tile as far as the compiler knows
    for (int t = 0; t < NT; t++) acc[t] = out[t];
    const uint8_t* wq = tile.q;
    const float* dm = tile.dm;
    for (int64_t s = 0; s < nsub; s++, wq += 64 * kGroups, dm += 32) {
        __m512i isum[NT];
        for (int t = 0; t < NT; t++) isum[t] = _mm512_setzero_si512();
        for (int g = 0; g < kGroups; g++) {
            const __m512i w = _mm512_load_si512(wq + 64 * g);
            for (int t = 0; t < NT; t++) {
                int32_t x4;
                std::memcpy(&x4, xq[t] + off[s] + 4 * g, 4);
                isum[t] = _mm512_dpbusd_epi32(isum[t], w, _mm512_set1_epi32(x4));
            }
        }
        const __m512 dw = _mm512_load_ps(dm), mw = _mm512_load_ps(dm + 16);
        for (int t = 0; t < NT; t++) {
            const ActScale a = as[t][s];
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(a.d)), acc[t]);
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) out[t] = acc[t];
}

// Runs the kernel for NT tokens; rows beyond `rows` are neither read from nor written to Y.
template <int NT, class Kernel>
void run_tokens(const Kernel& k, float* Y, int64_t ldy, int64_t m0, int64_t n0, int rows, bool accumulate) {
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    __m512 acc[NT];
    for (int t = 0; t < NT; t++)
        acc[t] = accumulate ? _mm512_maskz_loadu_ps(mask, Y + (m0 + t) * ldy + n0) : _mm512_setzero_ps();
    k(acc);
    for (int t = 0; t < NT; t++) _mm512_mask_storeu_ps(Y + (m0 + t) * ldy + n0, mask, acc[t]);
}

struct Scratch {
    std::vector<uint8_t> q;
    std::vector<float> dm;
    std::vector<ActScale> act;
    std::vector<size_t> off;
};

}  // namespace

bool matmul_tiled(const MatmulArgs& a) {
    avx2::Layout l;
    // The K-quants only: the legacy formats' tiles (Q8_0's signed bytes, no offsets) are the AVX2
    // kernel's, and decode goes through matmul_few_avx2.cpp, which sums as the AVX2 tiles do.
    if (!avx2::layout_of(a.wt, l) || l.family != avx2::Family::Unsigned || dtype_info(a.wt).block_size != 256)
        return false;
    thread_local Scratch sc;

    const DType vt = vec_dot_type(a.wt);
    const avx2::DecodeFn decode = avx2::decoder_of(a.wt);
    const int64_t bs = dtype_info(a.wt).block_size, nblk = a.K / bs, nsub = a.K / l.sub;
    const int64_t chunk_blocks = std::max<int64_t>(1, kQuantChunk / bs), sub_per_block = bs / l.sub;

    sc.act.resize(size_t(a.M * nsub));
    for (int64_t m = 0; m < a.M; m++)
        avx2::act_scales(vt, a.X + size_t(m) * a.x_stride, a.K, l.sub, sc.act.data() + m * nsub);
    sc.off.resize(size_t(nsub));
    for (int64_t s = 0; s < nsub; s++) sc.off[size_t(s)] = avx2::act_offset(vt, s * l.sub);

    const int64_t tile_subs = chunk_blocks * sub_per_block;
    const Tile tile{avx2::aligned_data(sc.q, size_t(tile_subs * l.sub) * kRows),
                    avx2::aligned_data(sc.dm, size_t(tile_subs) * 2 * kRows)};

    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kRows) {
        const int rows = int(std::min<int64_t>(kRows, a.n_end - n0));
        for (int64_t b0 = 0; b0 < nblk; b0 += chunk_blocks) {
            const int64_t b1 = std::min(nblk, b0 + chunk_blocks);
            const int64_t s0 = b0 * sub_per_block, ns = (b1 - b0) * sub_per_block;
            // Two 8-row halves into the low and high 32 bytes of each 64-byte group.
            avx2::pack_rows8(a, decode, l, n0, std::min(rows, 8), b0, b1, {tile.q, 64, tile.dm, 32, 0});
            avx2::pack_rows8(a, decode, l, n0 + 8, rows - 8, b0, b1, {tile.q + 32, 64, tile.dm, 32, 8});
            const size_t* off = sc.off.data() + s0;
            for (int64_t m0 = 0; m0 < a.M; m0 += kTokens) {
                const uint8_t* xq[kTokens] = {};
                const ActScale* as[kTokens] = {};
                for (int t = 0; t < kTokens && m0 + t < a.M; t++) {
                    xq[t] = a.X + size_t(m0 + t) * a.x_stride;
                    as[t] = sc.act.data() + (m0 + t) * nsub + s0;
                }
                with_token_count(a.M - m0, [&](auto nt) {
                    constexpr int NT = decltype(nt)::value;
                    run_tokens<NT>(
                        [&](__m512* acc) {
                            if (l.sub == 32) kernel<NT, 32>(tile, off, ns, xq, as, acc);
                            else kernel<NT, 16>(tile, off, ns, xq, as, acc);
                        },
                        a.Y, a.ldy, m0, n0, rows, b0 > 0);
                });
            }
        }
    }
    return true;
}

}  // namespace lumen::cpu::avx512

#else

namespace lumen::cpu::avx512 {
bool matmul_tiled(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx512

#endif
