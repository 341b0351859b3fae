// Decoding weight rows into the interleaved tiles of the tiled matmul kernels (AVX2 and AVX-512):
// every 4 consecutive values of 8 rows side by side in one 32-byte "group" register, plus a float
// scale d and offset m per row and sub-block (value = d * level + m). Include only inside the AVX2
// guard; internal to src/cpu.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/matmul_impl.h"
#include "cpu/simd_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

// Unsigned: levels 0..qmax with value = d * level + m. Signed: Q8_0's bytes as they are (value =
// d * byte), multiplied through the signs (|w| times the activation with w's sign). Float: f32.
enum class Family { Unsigned, Signed, Float };

// How a weight type sits in a tile.
struct Layout {
    Family family;
    int sub;    // values per (scale, offset) pair: 16 or 32
    int run;    // 4-value groups whose int16 maddubs sums can be added before they overflow
    bool mins;  // whether values have an offset m (every type but Q8_0)
};

inline bool layout_of(DType t, Layout& l) {
    switch (t) {
        // run: each int16 lane adds 2 products per group, |product| <= qmax * 127 <= 32767 / (2 * run).
        case DType::Q4_K: case DType::Q4_0: case DType::Q4_1: l = {Family::Unsigned, 32, 8, true}; return true;
        case DType::Q5_K: case DType::Q5_0: case DType::Q5_1: l = {Family::Unsigned, 32, 4, true}; return true;
        case DType::Q2_K: case DType::Q3_K: l = {Family::Unsigned, 16, 4, true}; return true;
        case DType::Q6_K: l = {Family::Unsigned, 16, 2, true}; return true;
        case DType::Q8_0: l = {Family::Signed, 32, 1, false}; return true;
        case DType::F32: case DType::F16: case DType::BF16: l = {Family::Float, 1, 1, false}; return true;
        default: return false;
    }
}

// ---- decoding one weight block into levels q (bytes) and per-sub-block d, m ----

inline void store32(uint8_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

inline void decode_q2_k(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const BlockQ2_K& b = *reinterpret_cast<const BlockQ2_K*>(blk);
    for (int h = 0; h < 2; h++) {
        const __m256i qs = loadu(b.qs + 32 * h);
        for (int k = 0; k < 4; k++)
            store32(q + 128 * h + 32 * k, _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), _mm256_set1_epi8(3)));
    }
    const float sd = fp16_to_f32(b.d), smin = fp16_to_f32(b.dmin);
    for (int j = 0; j < 16; j++) {
        d[j] = sd * float(b.scales[j] & 0x0F);
        m[j] = -smin * float(b.scales[j] >> 4);
    }
}

inline void decode_q3_k(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const BlockQ3_K& b = *reinterpret_cast<const BlockQ3_K*>(blk);
    const __m256i hm = loadu(b.hmask);
    for (int h = 0; h < 2; h++) {
        const __m256i qs = loadu(b.qs + 32 * h);
        for (int k = 0; k < 4; k++) {
            const __m256i low = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), _mm256_set1_epi8(3));
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), _mm256_set1_epi8(1));
            store32(q + 128 * h + 32 * k, _mm256_or_si256(low, _mm256_slli_epi16(high, 2)));
        }
    }
    int8_t sc[16];
    q3k_scales(b.scales, sc);
    const float sd = fp16_to_f32(b.d);
    for (int j = 0; j < 16; j++) {
        d[j] = sd * float(sc[j]);
        m[j] = -4 * d[j];
    }
}

template <class Block, bool kBits5>
inline void decode_q45_k(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const Block& b = *reinterpret_cast<const Block*>(blk);
    const __m256i nib = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kBits5) qh = loadu(b.qh);
    for (int c = 0; c < 4; c++) {
        const __m256i raw = loadu(b.qs + 32 * c);
        __m256i lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
        if constexpr (kBits5) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
        }
        store32(q + 64 * c, lo);
        store32(q + 64 * c + 32, hi);
    }
    const float sd = fp16_to_f32(b.d), smin = fp16_to_f32(b.dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, mn;
        k4_scale_min(b.scales, j, sc, mn);
        d[j] = sd * float(sc);
        m[j] = -smin * float(mn);
    }
}

inline void decode_q6_k(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const BlockQ6_K& b = *reinterpret_cast<const BlockQ6_K*>(blk);
    const __m256i nib = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = loadu(b.ql + 64 * h), ql1 = loadu(b.ql + 64 * h + 32), qh = loadu(b.qh + 32 * h);
        const __m256i low[4] = {_mm256_and_si256(ql0, nib), _mm256_and_si256(ql1, nib),
                                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), nib),
                                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), nib)};
        for (int k = 0; k < 4; k++) {
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), low2);
            store32(q + 128 * h + 32 * k, _mm256_or_si256(low[k], _mm256_slli_epi16(high, 4)));
        }
    }
    const float sd = fp16_to_f32(b.d);
    for (int j = 0; j < 16; j++) {
        d[j] = sd * float(b.scales[j]);
        m[j] = -32 * d[j];
    }
}

// The legacy 32-value blocks: one sub-block each. Q4_0 and Q5_0 are offset by 8 and 16 levels;
// Q4_1 and Q5_1 carry their offset m; Q8_0's bytes are signed values.
template <class Block, int kBias, bool kFifth, bool kMin>
inline void decode_legacy(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const Block& b = *reinterpret_cast<const Block*>(blk);
    __m256i v = unpack_nibbles16(b.qs);
    if constexpr (kFifth) v = _mm256_or_si256(v, _mm256_and_si256(fifth_bits(b.qh), _mm256_set1_epi8(0x10)));
    store32(q, v);
    d[0] = fp16_to_f32(b.d);
    if constexpr (kMin) m[0] = fp16_to_f32(b.m);
    else m[0] = float(-kBias) * d[0];
}

inline void decode_q8_0(const uint8_t* blk, uint8_t* q, float* d, float* m) {
    const BlockQ8_0& b = *reinterpret_cast<const BlockQ8_0*>(blk);
    store32(q, loadu(b.qs));
    d[0] = fp16_to_f32(b.d);
    m[0] = 0;
}

using DecodeFn = void (*)(const uint8_t* blk, uint8_t* q, float* d, float* m);

inline DecodeFn decoder_of(DType t) {
    switch (t) {
        case DType::Q2_K: return decode_q2_k;
        case DType::Q3_K: return decode_q3_k;
        case DType::Q4_K: return decode_q45_k<BlockQ4_K, false>;
        case DType::Q5_K: return decode_q45_k<BlockQ5_K, true>;
        case DType::Q6_K: return decode_q6_k;
        case DType::Q4_0: return decode_legacy<BlockQ4_0, 8, false, false>;
        case DType::Q4_1: return decode_legacy<BlockQ4_1, 0, false, true>;
        case DType::Q5_0: return decode_legacy<BlockQ5_0, 16, true, false>;
        case DType::Q5_1: return decode_legacy<BlockQ5_1, 0, true, true>;
        case DType::Q8_0: return decode_q8_0;
        default: return nullptr;
    }
}

// Rows r[0..7] of 8 dwords each -> r[g] = dword g of rows 0..7.
inline void transpose8x8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);      // columns 0 | 4
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);  // 1 | 5
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);  // 2 | 6
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);  // 3 | 7
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

// Where pack_rows8 writes: group g of 32-value chunk c of the 8 rows goes to
// q + (c * 8 + g) * group_stride; the d (m) of sub-block s and row r to
// dm[s * dm_stride + lane + r] (dm[s * dm_stride + dm_stride / 2 + lane + r]). An 8-row tile uses
// strides 32 and 16 with lane 0; a 16-row tile packs two halves with strides 64 and 32, lanes 0 and 8.
struct PackDest {
    uint8_t* q;
    size_t group_stride;
    float* dm;
    int dm_stride;
    int lane;
};

// Packs weight blocks [blk0, blk1) of rows [n0, n0 + rows), rows <= 8 (missing rows multiply as
// zeros).
inline void pack_rows8(const MatmulArgs& a, DecodeFn decode, const Layout& l, int64_t n0, int rows, int64_t blk0,
                       int64_t blk1, const PackDest& out) {
    rows = std::clamp(rows, 0, 8);
    const DTypeInfo& info = dtype_info(a.wt);
    const int bs = int(info.block_size), nsub = bs / l.sub, nchunk = bs / 32;
    alignas(32) uint8_t q[8][256];
    float d[8][16], m[8][16];
    for (int r = rows; r < 8; r++) {
        std::memset(q[r], 0, sizeof q[r]);
        std::fill(d[r], d[r] + 16, 0.0f);
        std::fill(m[r], m[r] + 16, 0.0f);
    }
    for (int64_t blk = blk0; blk < blk1; blk++) {
        for (int r = 0; r < rows; r++) {
            decode(a.W + size_t(n0 + r) * a.w_stride + size_t(blk) * info.block_bytes, q[r], d[r], m[r]);
        }
        for (int c = 0; c < nchunk; c++) {
            __m256i v[8];
            for (int r = 0; r < 8; r++) v[r] = loadu(q[r] + 32 * c);
            transpose8x8(v);
            uint8_t* dst = out.q + size_t((blk - blk0) * nchunk + c) * 8 * out.group_stride;
            for (int g = 0; g < 8; g++) store32(dst + out.group_stride * size_t(g), v[g]);
        }
        for (int s = 0; s < nsub; s++) {
            float* dm = out.dm + size_t((blk - blk0) * nsub + s) * size_t(out.dm_stride) + out.lane;
            for (int r = 0; r < 8; r++) {
                dm[r] = d[r][s];
                dm[out.dm_stride / 2 + r] = m[r][s];
            }
        }
    }
}

// A float vector whose storage starts on a 64-byte boundary (over-allocated instead of an aligned
// allocator); grows to the largest size asked for and is then reused.
template <class T>
T* aligned_data(std::vector<T>& v, size_t n) {
    v.resize(n + 64 / sizeof(T));
    const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
    return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

}  // namespace lumen::cpu::avx2
