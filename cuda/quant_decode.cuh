// Device-side decoding of GGUF weight blocks, 32 consecutive elements at a time ("a chunk"):
// one block of the 32-element formats, or one eighth of a 256-element K-quant super-block.
// The kernels that read weights kept in GGUF's rows go through decode_chunk (packed weights have
// their own decoder, decode32 in matvec.cuh), so a new quant type is one case here plus its CPU
// twin in src/tensor/quant*.cpp. Host-compilable (simt.cuh), so the emulator runs these too.
#pragma once
#include <cstdint>

#include "repack.h"  // the type ids
#include "simt.cuh"

namespace lumen::cuda {

LUMEN_DEV float h2f(const uint8_t* p) { return simt::h2f(*reinterpret_cast<const uint16_t*>(p)); }
LUMEN_DEV float bf2f(uint16_t b) { return simt::bits_float(uint32_t(b) << 16); }

// Q4_K / Q5_K: 8 six-bit (scale, min) pairs packed in 12 bytes.
LUMEN_DEV void k4_scale_min(int j, const uint8_t* q, float& sc, float& m) {
    if (j < 4) {
        sc = float(q[j] & 63);
        m = float(q[j + 4] & 63);
    } else {
        sc = float((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = float((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q3_K: sixteen 6-bit scales (stored minus 32) packed in 12 bytes.
LUMEN_DEV int k3_scale(const uint8_t* s, int idx) {
    const int low = idx < 8 ? (s[idx] & 0xF) : (s[idx - 8] >> 4);
    const int high = (s[8 + (idx & 3)] >> (2 * (idx >> 2))) & 3;
    return (low | (high << 4)) - 32;
}

// Bytes of one row-chunk unit: the block that holds chunk c, and the chunk's index inside it.
template <int T> struct Layout;
template <> struct Layout<T_F32>  { static constexpr int block = 32, bytes = 128; };
template <> struct Layout<T_F16>  { static constexpr int block = 32, bytes = 64; };
template <> struct Layout<T_BF16> { static constexpr int block = 32, bytes = 64; };
template <> struct Layout<T_Q4_0> { static constexpr int block = 32, bytes = 18; };
template <> struct Layout<T_Q4_1> { static constexpr int block = 32, bytes = 20; };
template <> struct Layout<T_Q5_0> { static constexpr int block = 32, bytes = 22; };
template <> struct Layout<T_Q5_1> { static constexpr int block = 32, bytes = 24; };
template <> struct Layout<T_Q8_0> { static constexpr int block = 32, bytes = 34; };
template <> struct Layout<T_Q2_K> { static constexpr int block = 256, bytes = 84; };
template <> struct Layout<T_Q3_K> { static constexpr int block = 256, bytes = 110; };
template <> struct Layout<T_Q4_K> { static constexpr int block = 256, bytes = 144; };
template <> struct Layout<T_Q5_K> { static constexpr int block = 256, bytes = 176; };
template <> struct Layout<T_Q6_K> { static constexpr int block = 256, bytes = 210; };

// Decodes elements [32c, 32c + 32) of a row into y.
template <int T>
LUMEN_DEV void decode_chunk(const uint8_t* row, int c, float* y) {
    constexpr int B = Layout<T>::block, S = Layout<T>::bytes;
    const uint8_t* b = row + size_t(c / (B / 32)) * S;
    const int sub = c % (B / 32);
    if constexpr (T == T_F32) {
        const float* p = reinterpret_cast<const float*>(b);
        for (int i = 0; i < 32; i++) y[i] = p[i];
    } else if constexpr (T == T_F16) {
        const uint16_t* p = reinterpret_cast<const uint16_t*>(b);
        for (int i = 0; i < 32; i++) y[i] = simt::h2f(p[i]);
    } else if constexpr (T == T_BF16) {
        const uint16_t* p = reinterpret_cast<const uint16_t*>(b);
        for (int i = 0; i < 32; i++) y[i] = bf2f(p[i]);
    } else if constexpr (T == T_Q4_0 || T == T_Q4_1) {
        const float d = h2f(b), m = T == T_Q4_1 ? h2f(b + 2) : -8.0f * d;
        const uint8_t* qs = b + (T == T_Q4_1 ? 4 : 2);
        for (int i = 0; i < 16; i++) {
            y[i] = d * float(qs[i] & 0xF) + m;
            y[i + 16] = d * float(qs[i] >> 4) + m;
        }
    } else if constexpr (T == T_Q5_0 || T == T_Q5_1) {
        const float d = h2f(b), m = T == T_Q5_1 ? h2f(b + 2) : -16.0f * d;
        const uint8_t* hp = b + (T == T_Q5_1 ? 4 : 2);
        const uint32_t qh = uint32_t(hp[0]) | uint32_t(hp[1]) << 8 | uint32_t(hp[2]) << 16 | uint32_t(hp[3]) << 24;
        const uint8_t* qs = hp + 4;
        for (int i = 0; i < 16; i++) {
            y[i] = d * float((qs[i] & 0xF) | (((qh >> i) & 1) << 4)) + m;
            y[i + 16] = d * float((qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4)) + m;
        }
    } else if constexpr (T == T_Q8_0) {
        const float d = h2f(b);
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
        for (int i = 0; i < 32; i++) y[i] = d * float(qs[i]);
    } else if constexpr (T == T_Q2_K) {
        const uint8_t* scales = b;
        const uint8_t* qs = b + 16 + 32 * (sub / 4);
        const float d = h2f(b + 80), dmin = h2f(b + 82);
        const int shift = 2 * (sub % 4);
        for (int h = 0; h < 2; h++) {
            const uint8_t sc = scales[8 * (sub / 4) + 2 * (sub % 4) + h];
            const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
            for (int i = 0; i < 16; i++) y[16 * h + i] = dl * float((qs[16 * h + i] >> shift) & 3) - ml;
        }
    } else if constexpr (T == T_Q3_K) {
        const uint8_t* hm = b;
        const uint8_t* qs = b + 32 + 32 * (sub / 4);
        const uint8_t* sc = b + 96;
        const float d = h2f(b + 108);
        const int shift = 2 * (sub % 4);
        const uint8_t mbit = uint8_t(1u << sub);
        for (int h = 0; h < 2; h++) {
            const float dl = d * float(k3_scale(sc, 8 * (sub / 4) + 2 * (sub % 4) + h));
            for (int i = 0; i < 16; i++) {
                const int e = 16 * h + i;
                y[e] = dl * float(int((qs[e] >> shift) & 3) - ((hm[e] & mbit) ? 0 : 4));
            }
        }
    } else if constexpr (T == T_Q4_K || T == T_Q5_K) {
        const float d = h2f(b), dmin = h2f(b + 2);
        float sc, m;
        k4_scale_min(sub, b + 4, sc, m);
        const float dl = d * sc, ml = dmin * m;
        const uint8_t* qh = b + 16;
        const uint8_t* qs = b + (T == T_Q5_K ? 48 : 16) + 32 * (sub / 2);
        const int shift = 4 * (sub % 2);
        for (int i = 0; i < 32; i++) {
            int q = (qs[i] >> shift) & 0xF;
            if constexpr (T == T_Q5_K) q |= ((qh[i] >> sub) & 1) << 4;
            y[i] = dl * float(q) - ml;
        }
    } else if constexpr (T == T_Q6_K) {
        const int g = sub / 4, k = sub % 4;
        const uint8_t* ql = b + 64 * g + (k & 1) * 32;
        const uint8_t* qh = b + 128 + 32 * g;
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * g;
        const float d = h2f(b + 208);
        const int lshift = (k >> 1) * 4, hshift = 2 * k;
        for (int i = 0; i < 32; i++) {
            const int q = (((ql[i] >> lshift) & 0xF) | (((qh[i] >> hshift) & 3) << 4)) - 32;
            y[i] = d * float(sc[i / 16 + 2 * k]) * float(q);
        }
    }
}

// Decodes elements [e, e + 4) of a row (e a multiple of 4) into y: the matrix-vector kernel gives
// each lane four consecutive elements so that the warp's reads of the activations are coalesced.
template <int T>
LUMEN_DEV void decode4(const uint8_t* row, int e, float* y) {
    constexpr int B = Layout<T>::block, S = Layout<T>::bytes;
    const uint8_t* b = row + size_t(e / B) * S;
    const int idx = e % B;  // index of y[0] inside its block
    if constexpr (T == T_F32) {
        const simt::f32x4 v = *reinterpret_cast<const simt::f32x4*>(row + size_t(e) * 4);
        y[0] = v.x; y[1] = v.y; y[2] = v.z; y[3] = v.w;
    } else if constexpr (T == T_F16) {
        const uint32_t* p = reinterpret_cast<const uint32_t*>(row + size_t(e) * 2);  // two halves a word
        y[0] = simt::h2_lo(p[0]); y[1] = simt::h2_hi(p[0]); y[2] = simt::h2_lo(p[1]); y[3] = simt::h2_hi(p[1]);
    } else if constexpr (T == T_BF16) {
        const uint16_t* p = reinterpret_cast<const uint16_t*>(row + size_t(e) * 2);
        for (int i = 0; i < 4; i++) y[i] = bf2f(p[i]);
    } else if constexpr (T == T_Q4_0 || T == T_Q4_1 || T == T_Q5_0 || T == T_Q5_1) {
        constexpr bool has_min = T == T_Q4_1 || T == T_Q5_1, five = T == T_Q5_0 || T == T_Q5_1;
        const float d = h2f(b);
        const float m = has_min ? h2f(b + 2) : (five ? -16.0f : -8.0f) * d;
        const uint8_t* qs = b + (has_min ? 4 : 2) + (five ? 4 : 0);
        const int shift = idx < 16 ? 0 : 4, base = idx % 16;
        uint32_t qh = 0;
        if constexpr (five) {
            const uint8_t* hp = b + (has_min ? 4 : 2);
            qh = uint32_t(hp[0]) | uint32_t(hp[1]) << 8 | uint32_t(hp[2]) << 16 | uint32_t(hp[3]) << 24;
        }
        LUMEN_UNROLL
        for (int i = 0; i < 4; i++) {
            int q = (qs[base + i] >> shift) & 0xF;
            if constexpr (five) q |= ((qh >> (idx + i)) & 1) << 4;
            y[i] = d * float(q) + m;
        }
    } else if constexpr (T == T_Q8_0) {
        const float d = h2f(b);
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2) + idx;
        LUMEN_UNROLL
        for (int i = 0; i < 4; i++) y[i] = d * float(qs[i]);
    } else {
        // K-quants: the four elements share one 16-element scale group.
        const int sub = idx / 32, i0 = idx % 32;
        if constexpr (T == T_Q2_K) {
            const uint8_t sc = b[8 * (sub / 4) + 2 * (sub % 4) + i0 / 16];
            const float dl = h2f(b + 80) * float(sc & 0xF), ml = h2f(b + 82) * float(sc >> 4);
            const uint8_t* qs = b + 16 + 32 * (sub / 4) + i0;
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) y[i] = dl * float((qs[i] >> (2 * (sub % 4))) & 3) - ml;
        } else if constexpr (T == T_Q3_K) {
            const float dl = h2f(b + 108) * float(k3_scale(b + 96, 8 * (sub / 4) + 2 * (sub % 4) + i0 / 16));
            const uint8_t* qs = b + 32 + 32 * (sub / 4) + i0;
            const uint8_t* hm = b + i0;
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++)
                y[i] = dl * float(int((qs[i] >> (2 * (sub % 4))) & 3) - ((hm[i] >> sub) & 1 ? 0 : 4));
        } else if constexpr (T == T_Q4_K || T == T_Q5_K) {
            float sc, mn;
            k4_scale_min(sub, b + 4, sc, mn);
            const float dl = h2f(b) * sc, ml = h2f(b + 2) * mn;
            const uint8_t* qs = b + (T == T_Q5_K ? 48 : 16) + 32 * (sub / 2) + i0;
            const int shift = 4 * (sub % 2);
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                int q = (qs[i] >> shift) & 0xF;
                if constexpr (T == T_Q5_K) q |= ((b[16 + i0 + i] >> sub) & 1) << 4;
                y[i] = dl * float(q) - ml;
            }
        } else if constexpr (T == T_Q6_K) {
            const int g = sub / 4, k = sub % 4;
            const uint8_t* ql = b + 64 * g + (k & 1) * 32 + i0;
            const uint8_t* qh = b + 128 + 32 * g + i0;
            const float dl = h2f(b + 208) * float(reinterpret_cast<const int8_t*>(b + 192)[8 * g + i0 / 16 + 2 * k]);
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                const int q = (((ql[i] >> ((k >> 1) * 4)) & 0xF) | (((qh[i] >> (2 * k)) & 3) << 4)) - 32;
                y[i] = dl * float(q);
            }
        }
    }
}

}  // namespace lumen::cuda
