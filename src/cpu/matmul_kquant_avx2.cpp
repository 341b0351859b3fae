// The K-quant product for few tokens (decode, short speculative steps). The tiled kernel
// (matmul_tile_avx2.cpp) first decodes 8 weight rows into an interleaved scratch tile, which pays
// off when many tokens pass over the tile; for one token the decoding costs more than the product.
// This kernel reads every weight block where it lies, once, and multiplies it with up to
// kMaxTokens tokens straight from the bytes.
//
// It adds up every output exactly as the tiled kernel does, so a token's result has the same bits
// whichever kernel computes it (batch invariance: decode, speculative verification and prompt
// chunks agree). Per row and token: for each sub-block s in order, the exact integer sum
// isum_s = sum(level * activation quant), then
//     acc = fma(float(isum_s), d_s * da_s, acc);   acc = fma(m_s, sa_s, acc)
// with d_s = D * float(sc_s) and m_s = Dm * float(mn_s) (the tiled kernel's per-sub-block scale and
// offset), da_s, sa_s the activation sub-block's scale and scale * sum of quants (act_scales_avx2.h).
//
// Layout of the work: 8 weight rows at once, one per float lane, so the float chain above runs for
// 8 rows in one register. The integer sums are formed per row (vpmaddubsw + vpmaddwd over 32
// values) and folded across the 8 rows with horizontal adds, which leaves lane r = row r.
#include "cpu/matmul_impl.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "cpu/act_scales_avx2.h"
#include "cpu/simd_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

namespace {

constexpr int kRows = 8;

// ---- the formats ----
// Each format gives levels(block, c), the unsigned levels of 32-value chunk c = 0..7, and its
// sub-block scales as bytes, so that value = D * sc_s * level + m_s with
//   m_s = Dm * mn_s                 (kMinFactor == 0: Q2_K, Q4_K, Q5_K: unsigned 4- or 6-bit mins)
//   m_s = kMinFactor * D * sc_s     (Q3_K: -4, Q6_K: -32: levels are offset by 4 or 32)
// exactly the tiled decoders' d_s and m_s (a power-of-two factor scales a float exactly).
// scale_bytes writes 8 bytes per word, sub-block s in byte s % 8 of word s / 8.

inline __m256i nibbles(__m256i raw, int c) {
    return _mm256_and_si256(c & 1 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0F));
}

// Bits shift.. of each byte of v under mask.
inline __m256i bits_at(__m256i v, int shift, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(char(mask)));
}

// Q4_K and Q5_K share the 12-byte packing of eight 6-bit scales and eight 6-bit mins: scales 0-3
// and mins 0-3 in the low 6 bits of bytes 0-3 and 4-7; scales and mins 4-7 have their low 4 bits
// in the nibbles of bytes 8-11 and their top 2 bits in the top bits of bytes 0-3 and 4-7.
inline void k4_scale_bytes(const uint8_t* s, uint64_t* sc, uint64_t* mn) {
    uint32_t w[3];
    std::memcpy(w, s, 12);
    const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
    const uint32_t sc_hi = (w[2] & low4) | (((w[0] >> 6) & low2) << 4);
    const uint32_t mn_hi = ((w[2] >> 4) & low4) | (((w[1] >> 6) & low2) << 4);
    sc[0] = uint64_t(w[0] & low6) | uint64_t(sc_hi) << 32;
    mn[0] = uint64_t(w[1] & low6) | uint64_t(mn_hi) << 32;
}

struct Q4K {
    using Block = BlockQ4_K;
    static constexpr int kSub = 32, kMinFactor = 0;
    static constexpr bool kSigned = false;
    static __m256i levels(const Block& b, int c) { return nibbles(loadu(b.qs + 32 * (c / 2)), c); }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) { k4_scale_bytes(b.scales, sc, mn); }
    static float D(const Block& b) { return fp16_to_f32(b.d); }
    static float Dm(const Block& b) { return -fp16_to_f32(b.dmin); }
};

struct Q5K : Q4K {
    using Block = BlockQ5_K;
    static __m256i levels(const Block& b, int c) {
        return _mm256_or_si256(nibbles(loadu(b.qs + 32 * (c / 2)), c), _mm256_slli_epi16(bits_at(loadu(b.qh), c, 1), 4));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) { k4_scale_bytes(b.scales, sc, mn); }
    static float D(const Block& b) { return fp16_to_f32(b.d); }
    static float Dm(const Block& b) { return -fp16_to_f32(b.dmin); }
};

// The 16-value formats: chunk c = 4h + k holds sub-blocks 2c and 2c + 1.
struct Q2K {
    using Block = BlockQ2_K;
    static constexpr int kSub = 16, kMinFactor = 0;
    static constexpr bool kSigned = false;
    static __m256i levels(const Block& b, int c) { return bits_at(loadu(b.qs + 32 * (c / 4)), 2 * (c % 4), 3); }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) {
        uint64_t v[2];
        std::memcpy(v, b.scales, 16);
        for (int i = 0; i < 2; i++) {
            sc[i] = v[i] & 0x0f0f0f0f0f0f0f0full;
            mn[i] = (v[i] >> 4) & 0x0f0f0f0f0f0f0f0full;
        }
    }
    static float D(const Block& b) { return fp16_to_f32(b.d); }
    static float Dm(const Block& b) { return -fp16_to_f32(b.dmin); }
};

struct Q3K {
    using Block = BlockQ3_K;
    static constexpr int kSub = 16, kMinFactor = -4;
    static constexpr bool kSigned = true;
    static __m256i levels(const Block& b, int c) {
        const __m256i low = bits_at(loadu(b.qs + 32 * (c / 4)), 2 * (c % 4), 3);
        return _mm256_or_si256(low, _mm256_slli_epi16(bits_at(loadu(b.hmask), c, 1), 2));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t*) {
        int8_t s[16];
        q3k_scales(b.scales, s);
        std::memcpy(sc, s, 16);
    }
    static float D(const Block& b) { return fp16_to_f32(b.d); }
    static float Dm(const Block&) { return 0; }
};

struct Q6K {
    using Block = BlockQ6_K;
    static constexpr int kSub = 16, kMinFactor = -32;
    static constexpr bool kSigned = true;
    static __m256i levels(const Block& b, int c) {
        const int h = c / 4, k = c % 4;
        const __m256i low = nibbles(loadu(b.ql + 64 * h + 32 * (k % 2)), k / 2);
        return _mm256_or_si256(low, _mm256_slli_epi16(bits_at(loadu(b.qh + 32 * h), 2 * k, 3), 4));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t*) { std::memcpy(sc, b.scales, 16); }
    static float D(const Block& b) { return fp16_to_f32(b.d); }
    static float Dm(const Block&) { return 0; }
};

// ---- the kernel ----

// An 8 x 8 byte matrix, row r in rows[r] -> col[i] holds columns 2i (low 8 bytes) and 2i + 1
// (high 8 bytes), each with rows 0..7 in order.
inline void transpose_bytes8x8(const uint64_t* rows, __m128i col[4]) {
    __m128i r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm_cvtsi64_si128(int64_t(rows[i]));
    const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpacklo_epi8(r[2], r[3]);
    const __m128i t2 = _mm_unpacklo_epi8(r[4], r[5]), t3 = _mm_unpacklo_epi8(r[6], r[7]);
    const __m128i u0 = _mm_unpacklo_epi16(t0, t1), u1 = _mm_unpackhi_epi16(t0, t1);
    const __m128i u2 = _mm_unpacklo_epi16(t2, t3), u3 = _mm_unpackhi_epi16(t2, t3);
    col[0] = _mm_unpacklo_epi32(u0, u2);
    col[1] = _mm_unpackhi_epi32(u0, u2);
    col[2] = _mm_unpacklo_epi32(u1, u3);
    col[3] = _mm_unpackhi_epi32(u1, u3);
}

// Bytes -> 8 floats, times D (lane r = row r).
template <bool kSigned>
inline __m256 scaled(__m128i bytes, __m256 D) {
    return _mm256_mul_ps(D, _mm256_cvtepi32_ps(kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes)));
}

// The per-sub-block d_s and m_s of one super-block for 8 rows, lane r = row r: dm[s] = d_s and
// dm[nsub + s] = m_s.
template <class F>
void row_scales(const typename F::Block* const* blk, __m256* dm) {
    constexpr int kNsub = 256 / F::kSub, kWords = kNsub / 8;
    uint64_t sc[kWords][kRows], mn[kWords][kRows];
    alignas(32) float D[kRows], Dm[kRows];
    for (int r = 0; r < kRows; r++) {
        uint64_t s[kWords], m[kWords];
        F::scale_bytes(*blk[r], s, m);
        for (int i = 0; i < kWords; i++) {
            sc[i][r] = s[i];
            mn[i][r] = m[i];
        }
        D[r] = F::D(*blk[r]);
        Dm[r] = F::Dm(*blk[r]);
    }
    const __m256 vD = _mm256_load_ps(D), vDm = _mm256_load_ps(Dm);
    for (int i = 0; i < kWords; i++) {
        __m128i col[4];
        transpose_bytes8x8(sc[i], col);
        for (int j = 0; j < 4; j++) {
            dm[8 * i + 2 * j] = scaled<F::kSigned>(col[j], vD);
            dm[8 * i + 2 * j + 1] = scaled<F::kSigned>(_mm_unpackhi_epi64(col[j], col[j]), vD);
        }
        if constexpr (F::kMinFactor == 0) {
            transpose_bytes8x8(mn[i], col);
            for (int j = 0; j < 4; j++) {
                dm[kNsub + 8 * i + 2 * j] = scaled<false>(col[j], vDm);
                dm[kNsub + 8 * i + 2 * j + 1] = scaled<false>(_mm_unpackhi_epi64(col[j], col[j]), vDm);
            }
        } else {
            for (int s = 0; s < 8; s++)
                dm[kNsub + 8 * i + s] = _mm256_mul_ps(dm[8 * i + s], _mm256_set1_ps(float(F::kMinFactor)));
        }
    }
}

// Sums of 4 neighbouring level x activation products, 8 x int32.
inline __m256i dot4(__m256i q, __m256i a) { return _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1)); }

// NT tokens x 8 rows [n0, n0 + rows) (missing rows repeat row n0; their results are dropped).
template <class F, int NT>
void kernel(const MatmulArgs& a, int64_t n0, int rows, int64_t m0, const ActScale* const* as) {
    using Block = typename F::Block;
    constexpr int kNsub = 256 / F::kSub;
    const int64_t nblk = a.K / 256;
    const uint8_t* wrow[kRows];
    for (int r = 0; r < kRows; r++) wrow[r] = a.W + size_t(n0 + (r < rows ? r : 0)) * a.w_stride;
    const BlockQ8_K* x[NT];
    for (int t = 0; t < NT; t++) x[t] = reinterpret_cast<const BlockQ8_K*>(a.X + size_t(m0 + t) * a.x_stride);

    __m256 acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    // The 8 rows are 8 short streams (a row is a few blocks), too short for the hardware prefetcher
    // to pick up; so each step fetches its share of the next 8 rows, which follow these in memory.
    const char* next = reinterpret_cast<const char*>(a.W + size_t(n0 + kRows) * a.w_stride);
    const size_t ahead = kRows * sizeof(Block);
    for (int64_t b = 0; b < nblk; b++) {
        for (size_t off = 0; off < ahead; off += 64) _mm_prefetch(next + size_t(b) * ahead + off, _MM_HINT_T0);
        const Block* blk[kRows];
        for (int r = 0; r < kRows; r++) blk[r] = reinterpret_cast<const Block*>(wrow[r]) + b;
        __m256 dm[2 * kNsub];
        row_scales<F>(blk, dm);
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            __m256i av[NT];
            for (int t = 0; t < NT; t++) av[t] = loadu(x[t][b].qs + 32 * c);
            // Pairs of rows folded by horizontal adds: h[p] holds rows 2p, 2p+1 (4-value sums halved
            // twice more below), so that after three folds lane r is row r's sum.
            __m256i h[4][NT];
            for (int p = 0; p < 4; p++) {
                const __m256i q0 = F::levels(*blk[2 * p], c), q1 = F::levels(*blk[2 * p + 1], c);
                for (int t = 0; t < NT; t++) h[p][t] = _mm256_hadd_epi32(dot4(q0, av[t]), dot4(q1, av[t]));
            }
            for (int t = 0; t < NT; t++) {
                // [rows 0-3 | rows 0-3] and [rows 4-7 | rows 4-7]: the low 128 bits sum values 0-15 of
                // the chunk, the high 128 bits values 16-31.
                const __m256i r03 = _mm256_hadd_epi32(h[0][t], h[1][t]), r47 = _mm256_hadd_epi32(h[2][t], h[3][t]);
                const __m256i first = _mm256_permute2x128_si256(r03, r47, 0x20);
                const __m256i second = _mm256_permute2x128_si256(r03, r47, 0x31);
                const ActScale* s = as[t] + b * kNsub;
                auto step = [&](__m256i isum, int sub) {
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dm[sub], _mm256_set1_ps(s[sub].d)), acc[t]);
                    acc[t] = _mm256_fmadd_ps(dm[kNsub + sub], _mm256_set1_ps(s[sub].s), acc[t]);
                };
                if constexpr (F::kSub == 32) {
                    step(_mm256_add_epi32(first, second), c);
                } else {
                    step(first, 2 * c);
                    step(second, 2 * c + 1);
                }
            }
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
    constexpr int kNsub = 256 / F::kSub;
    const int64_t nsub = a.K / F::kSub;
    thread_local std::vector<ActScale> act;
    act.resize(size_t(a.M * nsub));
    const ActScale* as[kMaxKQuantTokens];
    for (int64_t m = 0; m < a.M; m++) {
        act_scales(DType::Q8_K, a.X + size_t(m) * a.x_stride, a.K, F::kSub, act.data() + m * nsub);
        as[m] = act.data() + m * nsub;
    }
    static_assert(kNsub * F::kSub == 256);
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kRows) {
        const int rows = int(std::min<int64_t>(kRows, a.n_end - n0));
        for (int64_t m0 = 0; m0 < a.M; m0 += 2) {
            if (a.M - m0 >= 2) kernel<F, 2>(a, n0, rows, m0, as + m0);
            else kernel<F, 1>(a, n0, rows, m0, as + m0);
        }
    }
}

}  // namespace

bool matmul_kquant_few(const MatmulArgs& a) {
    if (a.M > kMaxKQuantTokens || a.K % 256 != 0) return false;
    switch (a.wt) {
        case DType::Q2_K: run<Q2K>(a); return true;
        case DType::Q3_K: run<Q3K>(a); return true;
        case DType::Q4_K: run<Q4K>(a); return true;
        case DType::Q5_K: run<Q5K>(a); return true;
        case DType::Q6_K: run<Q6K>(a); return true;
        default: return false;
    }
}

}  // namespace lumen::cpu::avx2

#else

namespace lumen::cpu::avx2 {
bool matmul_kquant_few(const MatmulArgs&) { return false; }
}  // namespace lumen::cpu::avx2

#endif
