// Tiled AVX2 matmul for the integer formats (K-quants and the legacy 32-value formats) and float
// weights, for prompts; decode (up to kMaxFewTokens tokens) goes through matmul_few_avx2.cpp, which
// adds up each output in the same order.
//
// A tile is 8 weight rows decoded into a scratch copy where every 4 consecutive values of the 8
// rows sit side by side: one 32-byte register holds values 4g..4g+3 of rows 0..7 ("group" g).
// vpmaddubsw of that register with the token's 4 activation bytes broadcast to all lanes gives
// each row's partial dot product in its own 32-bit lane, so the 8 rows' sums come out of the
// integer pipeline without horizontal adds, and each tile load serves 4 tokens.
//
// Every integer format but Q8_0 decodes to unsigned levels q with a float scale and offset per
// sub-block of 16 or 32 values (value = d*q + m; Q4_K's d*sc*q - dmin*mn, Q6_K's d*sc*(q - 32),
// Q4_0's d*(q - 8), ...), so one kernel covers them (Q8_0: signed bytes, no offset):
// sum(value * da*qa) = d*da*sum(q*qa) + m*(da*sum(qa)), and da*sum(qa) per sub-block is read once
// from the activation blocks. Float weights use a plain FMA kernel on two such 8-row panels at once.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/simd_avx2.h"
#include "cpu/tile_pack_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

constexpr int kRows = 8;    // weight rows per tile: one per 32-bit lane
constexpr int kTokens = 4;  // tokens multiplied with a tile at once
// Values of K per tile, so that a tile stays in L1 while all tokens pass over it (longer rows are
// split and their partial sums continue in Y): 8 rows x 2048 bytes of levels + scales, and
// 16 rows x 256 floats.
constexpr int64_t kQuantChunk = 2048;
constexpr int64_t kFloatChunk = 256;

// A tile of quantized rows (32-byte aligned): q holds K/32 chunks of 8 group registers (256 bytes
// each); dm holds, per sub-block, the 8 rows' d followed by their 8 offsets m.
struct QuantTile {
    uint8_t* q;
    float* dm;
};

// Float weights, 16 rows as two panels of 8: value k of row 8p + r at tile[16(k - kb) + 8p + r]. This
// packs values [kb, ke) of the panel of rows [n0, n0 + rows) (rows <= 0: zeros) at column offset 8p.
void pack_float(const MatmulArgs& a, int64_t n0, int rows, int64_t kb, int64_t ke, float* tile, int p) {
    for (int64_t k0 = kb; k0 < ke; k0 += 8) {
        __m256 v[kRows];
        for (int r = 0; r < kRows; r++) {
            if (r >= rows) { v[r] = _mm256_setzero_ps(); continue; }
            const uint8_t* row = a.W + size_t(n0 + r) * a.w_stride;
            if (ke - k0 >= 8) {
                if (a.wt == DType::F32) v[r] = _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k0);
                else {
                    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k0));
                    v[r] = a.wt == DType::F16 ? _mm256_cvtph_ps(h)
                                              : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
                }
            } else {  // the last few values of a K that is not a multiple of 8
                alignas(32) float tmp[8] = {};
                const uint16_t* h = reinterpret_cast<const uint16_t*>(row);
                for (int64_t k = k0; k < ke; k++)
                    tmp[k - k0] = a.wt == DType::F32 ? reinterpret_cast<const float*>(row)[k]
                                  : a.wt == DType::F16 ? fp16_to_f32(h[k])
                                                       : bf16_to_f32(h[k]);
                v[r] = _mm256_load_ps(tmp);
            }
        }
        __m256i vi[kRows];
        for (int r = 0; r < kRows; r++) vi[r] = _mm256_castps_si256(v[r]);
        transpose8x8(vi);
        for (int k = 0; k < 8 && k0 + k < ke; k++)
            _mm256_store_ps(tile + 16 * (k0 - kb + k) + 8 * p, _mm256_castsi256_ps(vi[k]));
    }
}

// ---- the kernels: NT tokens x 8 rows, results in acc[t] (lane r = row r) ----

struct TokenRows {
    const uint8_t* q[kTokens];      // activation rows (quantized types) ...
    const ActScale* as[kTokens];   // ... with their per-sub-block scales
    const float* f[kTokens];        // activation rows (float weights)
};

inline __m256i bcast4(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// kSigned: the tile holds Q8_0's signed bytes; vpmaddubsw then takes |w| and the activation with
// w's sign. kMins: add the offset term m * sa (every type but Q8_0).
template <int NT, int SUB, int RUN, bool kSigned, bool kMins>
void kernel_int(QuantTile tile, const size_t* off, int64_t nsub, const TokenRows& x, __m256 out[NT]) {
    constexpr int kGroups = SUB / 4;
    __m256 acc[NT];  // locals stay in registers; `out` may alias the tile as far as the compiler knows
    for (int t = 0; t < NT; t++) acc[t] = out[t];
    const __m256i ones16 = _mm256_set1_epi16(1);
    const uint8_t* wq = tile.q;
    const float* dm = tile.dm;
    for (int64_t s = 0; s < nsub; s++, wq += 32 * kGroups, dm += 16) {
        __m256i isum[NT];
        for (int t = 0; t < NT; t++) isum[t] = _mm256_setzero_si256();
        for (int g0 = 0; g0 < kGroups; g0 += RUN) {
            __m256i s16[NT];
            for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
            for (int g = g0; g < g0 + RUN; g++) {
                const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 32 * g));
                if constexpr (kSigned) {
                    const __m256i wabs = _mm256_sign_epi8(w, w);
                    for (int t = 0; t < NT; t++)
                        s16[t] = _mm256_add_epi16(
                            s16[t], _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(bcast4(x.q[t] + off[s] + 4 * g), w)));
                } else {
                    for (int t = 0; t < NT; t++)
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(w, bcast4(x.q[t] + off[s] + 4 * g)));
                }
            }
            for (int t = 0; t < NT; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], ones16));
        }
        const __m256 dw = _mm256_load_ps(dm), mw = _mm256_load_ps(dm + 8);
        for (int t = 0; t < NT; t++) {
            const ActScale as = x.as[t][s];
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dw, _mm256_set1_ps(as.d)), acc[t]);
            if constexpr (kMins) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(as.s), acc[t]);
        }
    }
    for (int t = 0; t < NT; t++) out[t] = acc[t];
}

// Two panels of 8 rows per step, so 2 * NT independent FMA chains hide the FMA latency.
template <int NT>
void kernel_float(const float* tile, int64_t K, const TokenRows& x, __m256 out[2 * NT]) {
    // Local accumulators (two small arrays: GCC keeps those in registers, a single array of 8 it
    // does not); `out` may alias the tile as far as the compiler knows.
    __m256 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; t++) {
        acc0[t] = out[t];
        acc1[t] = out[NT + t];
    }
    for (int64_t k = 0; k < K; k++) {
        const __m256 w0 = _mm256_load_ps(tile + 16 * k), w1 = _mm256_load_ps(tile + 16 * k + 8);
        for (int t = 0; t < NT; t++) {
            const __m256 xv = _mm256_broadcast_ss(x.f[t] + k);
            acc0[t] = _mm256_fmadd_ps(w0, xv, acc0[t]);
            acc1[t] = _mm256_fmadd_ps(w1, xv, acc1[t]);
        }
    }
    for (int t = 0; t < NT; t++) {
        out[t] = acc0[t];
        out[NT + t] = acc1[t];
    }
}

// Runs a kernel for NT tokens and P panels of 8 rows, called as kernel(acc) with acc[p * NT + t]
// holding rows n0 + 8p .. n0 + 8p + 7 of token m0 + t; stores the first `rows` rows. With
// `accumulate` the sums continue from what Y holds (the K range is split in chunks).
template <int NT, int P, class Kernel>
void run_tokens(const Kernel& kernel, float* Y, int64_t ldy, int64_t m0, int64_t n0, int rows, bool accumulate) {
    __m256 acc[P * NT];
    for (int p = 0; p < P; p++) {
        const int prow = std::max(0, std::min(kRows, rows - kRows * p));
        for (int t = 0; t < NT; t++) {
            alignas(32) float tmp[kRows] = {};
            if (accumulate) std::copy_n(Y + (m0 + t) * ldy + n0 + kRows * p, prow, tmp);
            acc[p * NT + t] = _mm256_load_ps(tmp);
        }
    }
    kernel(acc);
    for (int p = 0; p < P; p++) {
        const int prow = std::min(kRows, rows - kRows * p);
        for (int t = 0; t < NT && prow > 0; t++) {
            float* y = Y + (m0 + t) * ldy + n0 + kRows * p;
            if (prow == kRows) {
                _mm256_storeu_ps(y, acc[p * NT + t]);
            } else {
                alignas(32) float tmp[kRows];
                _mm256_store_ps(tmp, acc[p * NT + t]);
                std::copy(tmp, tmp + prow, y);
            }
        }
    }
}

// Per-thread scratch, grown to the largest matrix seen and then reused.
struct Scratch {
    std::vector<uint8_t> q;
    std::vector<float> dm, f;
    std::vector<ActScale> act;
    std::vector<size_t> off;
};

}  // namespace

bool matmul_tiled(const MatmulArgs& a) {
    Layout l;
    if (!layout_of(a.wt, l)) return false;
    thread_local Scratch sc;

    if (l.family == Family::Float) {
        float* tile = aligned_data(sc.f, size_t(kFloatChunk) * 2 * kRows);
        for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += 2 * kRows) {
            const int rows = int(std::min<int64_t>(2 * kRows, a.n_end - n0));
            for (int64_t kb = 0; kb < a.K; kb += kFloatChunk) {
                const int64_t ke = std::min(a.K, kb + kFloatChunk);
                pack_float(a, n0, rows, kb, ke, tile, 0);
                pack_float(a, n0 + kRows, rows - kRows, kb, ke, tile, 1);
                for (int64_t m0 = 0; m0 < a.M; m0 += kTokens) {
                    TokenRows x{};
                    for (int t = 0; t < kTokens && m0 + t < a.M; t++)
                        x.f[t] = reinterpret_cast<const float*>(a.X + size_t(m0 + t) * a.x_stride) + kb;
                    with_token_count(a.M - m0, [&](auto nt) {
                        constexpr int NT = decltype(nt)::value;
                        run_tokens<NT, 2>([&](__m256* acc) { kernel_float<NT>(tile, ke - kb, x, acc); }, a.Y,
                                          a.ldy, m0, n0, rows, kb > 0);
                    });
                }
            }
        }
        return true;
    }

    const DType vt = vec_dot_type(a.wt);
    const DecodeFn decode = decoder_of(a.wt);
    const int64_t bs = dtype_info(a.wt).block_size, nblk = a.K / bs, nsub = a.K / l.sub;
    const int64_t chunk_blocks = std::max<int64_t>(1, kQuantChunk / bs), sub_per_block = bs / l.sub;

    sc.act.resize(size_t(a.M * nsub));
    for (int64_t m = 0; m < a.M; m++) act_scales(vt, a.X + size_t(m) * a.x_stride, a.K, l.sub, sc.act.data() + m * nsub);
    sc.off.resize(size_t(nsub));
    for (int64_t s = 0; s < nsub; s++) sc.off[size_t(s)] = act_offset(vt, s * l.sub);

    const int64_t tile_subs = chunk_blocks * sub_per_block;
    const QuantTile tile{aligned_data(sc.q, size_t(tile_subs * l.sub) * kRows), aligned_data(sc.dm, size_t(tile_subs) * 16)};

    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kRows) {
        const int rows = int(std::min<int64_t>(kRows, a.n_end - n0));
        for (int64_t b0 = 0; b0 < nblk; b0 += chunk_blocks) {
            const int64_t b1 = std::min(nblk, b0 + chunk_blocks);
            const int64_t s0 = b0 * sub_per_block, ns = (b1 - b0) * sub_per_block;
            pack_rows8(a, decode, l, n0, rows, b0, b1, {tile.q, 32, tile.dm, 16, 0});
            const size_t* off = sc.off.data() + s0;
            for (int64_t m0 = 0; m0 < a.M; m0 += kTokens) {
                TokenRows x{};
                for (int t = 0; t < kTokens && m0 + t < a.M; t++) {
                    x.q[t] = a.X + size_t(m0 + t) * a.x_stride;
                    x.as[t] = sc.act.data() + (m0 + t) * nsub + s0;
                }
                with_token_count(a.M - m0, [&](auto nt) {
                    constexpr int NT = decltype(nt)::value;
                    run_tokens<NT, 1>(
                        [&](__m256* acc) {
                            if (l.family == Family::Signed) kernel_int<NT, 32, 1, true, false>(tile, off, ns, x, acc);
                            else if (l.sub == 32 && l.run == 8) kernel_int<NT, 32, 8, false, true>(tile, off, ns, x, acc);
                            else if (l.sub == 32) kernel_int<NT, 32, 4, false, true>(tile, off, ns, x, acc);
                            else if (l.run == 4) kernel_int<NT, 16, 4, false, true>(tile, off, ns, x, acc);
                            else kernel_int<NT, 16, 2, false, true>(tile, off, ns, x, acc);
                        },
                        a.Y, a.ldy, m0, n0, rows, b0 > 0);
                });
            }
        }
    }
    return true;
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_tiled(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
