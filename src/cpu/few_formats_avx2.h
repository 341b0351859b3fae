// The integer weight formats as the few-token kernel (matmul_few_avx2.cpp) reads them in place.
// A row is walked in units of 256 values: one K-quant super-block, or 8 legacy 32-value blocks.
// Each format gives:
//   levels(unit, c)   the 32 levels of chunk c (0..7) of a unit: unsigned bytes, or for Q8_0
//                     (kSigned) the signed values
//   act(x, u, c)      where the 32 activation quants of that chunk lie in an activation row
//   row_scales(unit, nc, dm)  for 8 rows' units (lane r = row r), per sub-block s of the first nc
//                     chunks: dm[s] = d_s and dm[kNsub + s] = m_s
// with d_s and m_s exactly the tiled decoders' scale and offset (tile_pack_avx2.h), so that both
// kernels add up the same floats. Include only inside the AVX2 guard; internal to src/cpu.
#pragma once
#include <cstddef>
#include <cstring>

#include "cpu/simd_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2::few {

constexpr int kRows = 8;

inline __m256i nibbles(__m256i raw, int c) {
    return _mm256_and_si256(c & 1 ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0F));
}

// Bits shift.. of each byte of v under mask.
inline __m256i bits_at(__m256i v, int shift, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(char(mask)));
}

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

// An 8 x 8 matrix of 16-bit values (row r at rows + 8r) -> col[c] holds column c, rows 0..7.
inline void transpose_u16_8x8(const uint16_t* rows, __m128i col[8]) {
    __m128i r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + 8 * i));
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm_unpacklo_epi16(r[i], r[i + 1]);
        t[i + 1] = _mm_unpackhi_epi16(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm_unpacklo_epi32(t[i], t[i + 2]);
        u[i + 1] = _mm_unpackhi_epi32(t[i], t[i + 2]);
        u[i + 2] = _mm_unpacklo_epi32(t[i + 1], t[i + 3]);
        u[i + 3] = _mm_unpackhi_epi32(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        col[2 * i] = _mm_unpacklo_epi64(u[i], u[i + 4]);
        col[2 * i + 1] = _mm_unpackhi_epi64(u[i], u[i + 4]);
    }
}

// Bytes -> 8 floats, times D (lane r = row r).
template <bool kSigned>
inline __m256 scaled(__m128i bytes, __m256 D) {
    return _mm256_mul_ps(D, _mm256_cvtepi32_ps(kSigned ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes)));
}

// ---- K-quants: one super-block per unit ----
// Sub-block scales come as bytes (8 per word, sub-block s in byte s % 8 of word s / 8), so that
// d_s = D * sc_s and
//   m_s = Dm * mn_s                 (kMinFactor == 0: Q2_K, Q4_K, Q5_K: unsigned 4- or 6-bit mins)
//   m_s = kMinFactor * d_s          (Q3_K: -4, Q6_K: -32: levels are offset by 4 or 32)
// (a power-of-two factor scales a float exactly, so this is the tiled decoders' -32 * d too).

template <class Self, class B, int kSubValues, int kMinFactorV, bool kSignedScales>
struct KQuant {
    using Block = B;
    static constexpr int kSub = kSubValues, kNsub = 256 / kSubValues, kUnitBytes = sizeof(Block);
    static constexpr bool kSigned = false, kMins = true;
    static const int8_t* act(const uint8_t* x, int64_t u, int c) {
        return reinterpret_cast<const BlockQ8_K*>(x)[u].qs + 32 * c;
    }
    static void row_scales(const uint8_t* const* unit, int, __m256* dm) {
        constexpr int kWords = kNsub / 8;
        uint64_t sc[kWords][kRows], mn[kWords][kRows];
        alignas(32) float D[kRows], Dm[kRows];
        for (int r = 0; r < kRows; r++) {
            const Block& b = *reinterpret_cast<const Block*>(unit[r]);
            uint64_t s[kWords], m[kWords];
            Self::scale_bytes(b, s, m);
            for (int i = 0; i < kWords; i++) {
                sc[i][r] = s[i];
                mn[i][r] = m[i];
            }
            D[r] = fp16_to_f32(b.d);
            if constexpr (kMinFactorV == 0) Dm[r] = -fp16_to_f32(b.dmin);
        }
        const __m256 vD = _mm256_load_ps(D);
        for (int i = 0; i < kWords; i++) {
            __m128i col[4];
            transpose_bytes8x8(sc[i], col);
            for (int j = 0; j < 4; j++) {
                dm[8 * i + 2 * j] = scaled<kSignedScales>(col[j], vD);
                dm[8 * i + 2 * j + 1] = scaled<kSignedScales>(_mm_unpackhi_epi64(col[j], col[j]), vD);
            }
            if constexpr (kMinFactorV == 0) {
                const __m256 vDm = _mm256_load_ps(Dm);
                transpose_bytes8x8(mn[i], col);
                for (int j = 0; j < 4; j++) {
                    dm[kNsub + 8 * i + 2 * j] = scaled<false>(col[j], vDm);
                    dm[kNsub + 8 * i + 2 * j + 1] = scaled<false>(_mm_unpackhi_epi64(col[j], col[j]), vDm);
                }
            } else {
                for (int s = 0; s < 8; s++)
                    dm[kNsub + 8 * i + s] = _mm256_mul_ps(dm[8 * i + s], _mm256_set1_ps(float(kMinFactorV)));
            }
        }
    }
};

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

struct Q4K : KQuant<Q4K, BlockQ4_K, 32, 0, false> {
    static __m256i levels(const uint8_t* u, int c) {
        return nibbles(loadu(reinterpret_cast<const Block*>(u)->qs + 32 * (c / 2)), c);
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) { k4_scale_bytes(b.scales, sc, mn); }
};

struct Q5K : KQuant<Q5K, BlockQ5_K, 32, 0, false> {
    static __m256i levels(const uint8_t* u, int c) {
        const Block& b = *reinterpret_cast<const Block*>(u);
        return _mm256_or_si256(nibbles(loadu(b.qs + 32 * (c / 2)), c), _mm256_slli_epi16(bits_at(loadu(b.qh), c, 1), 4));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) { k4_scale_bytes(b.scales, sc, mn); }
};

// The 16-value formats: chunk c = 4h + k holds sub-blocks 2c and 2c + 1.
struct Q2K : KQuant<Q2K, BlockQ2_K, 16, 0, false> {
    static __m256i levels(const uint8_t* u, int c) {
        return bits_at(loadu(reinterpret_cast<const Block*>(u)->qs + 32 * (c / 4)), 2 * (c % 4), 3);
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t* mn) {
        uint64_t v[2];
        std::memcpy(v, b.scales, 16);
        for (int i = 0; i < 2; i++) {
            sc[i] = v[i] & 0x0f0f0f0f0f0f0f0full;
            mn[i] = (v[i] >> 4) & 0x0f0f0f0f0f0f0f0full;
        }
    }
};

struct Q3K : KQuant<Q3K, BlockQ3_K, 16, -4, true> {
    static __m256i levels(const uint8_t* u, int c) {
        const Block& b = *reinterpret_cast<const Block*>(u);
        const __m256i low = bits_at(loadu(b.qs + 32 * (c / 4)), 2 * (c % 4), 3);
        return _mm256_or_si256(low, _mm256_slli_epi16(bits_at(loadu(b.hmask), c, 1), 2));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t*) {
        int8_t s[16];
        q3k_scales(b.scales, s);
        std::memcpy(sc, s, 16);
    }
};

struct Q6K : KQuant<Q6K, BlockQ6_K, 16, -32, true> {
    static __m256i levels(const uint8_t* u, int c) {
        const Block& b = *reinterpret_cast<const Block*>(u);
        const int h = c / 4, k = c % 4;
        const __m256i low = nibbles(loadu(b.ql + 64 * h + 32 * (k % 2)), k / 2);
        return _mm256_or_si256(low, _mm256_slli_epi16(bits_at(loadu(b.qh + 32 * h), 2 * k, 3), 4));
    }
    static void scale_bytes(const Block& b, uint64_t* sc, uint64_t*) { std::memcpy(sc, b.scales, 16); }
};

// ---- legacy formats: 8 blocks of 32 values per unit (the last unit of a row may have fewer) ----
// d_s is the block's f16 scale; m_s is its f16 offset (Q4_1, Q5_1) or -kBias * d_s (Q4_0: 8,
// Q5_0: 16); Q8_0 has none.

template <class B, class A, int kBias, bool kFifth, bool kOffset>
struct Legacy {
    using Block = B;
    static constexpr int kSub = 32, kNsub = 8, kUnitBytes = 8 * sizeof(Block);
    static constexpr bool kSigned = false, kMins = true;
    static __m256i levels(const uint8_t* u, int c) {
        const Block& b = reinterpret_cast<const Block*>(u)[c];
        __m256i v = unpack_nibbles16(b.qs);
        if constexpr (kFifth) v = _mm256_or_si256(v, _mm256_and_si256(fifth_bits(b.qh), _mm256_set1_epi8(0x10)));
        return v;
    }
    static const int8_t* act(const uint8_t* x, int64_t u, int c) { return reinterpret_cast<const A*>(x)[8 * u + c].qs; }
    static void row_scales(const uint8_t* const* unit, int nc, __m256* dm) {
        alignas(16) uint16_t d[kRows][8] = {}, m[kRows][8] = {};
        for (int r = 0; r < kRows; r++)
            for (int c = 0; c < nc; c++) {
                const Block& b = reinterpret_cast<const Block*>(unit[r])[c];
                d[r][c] = b.d;
                if constexpr (kOffset) m[r][c] = b.m;
            }
        __m128i col[8];
        transpose_u16_8x8(&d[0][0], col);
        for (int c = 0; c < nc; c++) {
            dm[c] = _mm256_cvtph_ps(col[c]);
            if constexpr (!kOffset) dm[kNsub + c] = _mm256_mul_ps(dm[c], _mm256_set1_ps(float(-kBias)));
        }
        if constexpr (kOffset) {
            transpose_u16_8x8(&m[0][0], col);
            for (int c = 0; c < nc; c++) dm[kNsub + c] = _mm256_cvtph_ps(col[c]);
        }
    }
};

using Q4_0 = Legacy<BlockQ4_0, BlockQ8_0, 8, false, false>;
using Q4_1 = Legacy<BlockQ4_1, BlockQ8_1, 0, false, true>;
using Q5_0 = Legacy<BlockQ5_0, BlockQ8_0, 16, true, false>;
using Q5_1 = Legacy<BlockQ5_1, BlockQ8_1, 0, true, true>;

struct Q8_0 : Legacy<BlockQ8_0, BlockQ8_0, 0, false, false> {
    static constexpr bool kSigned = true, kMins = false;
    static __m256i levels(const uint8_t* u, int c) { return loadu(reinterpret_cast<const Block*>(u)[c].qs); }
};

}  // namespace lumen::cpu::avx2::few
