// The K-quant formats (256 values per super-block): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the Q8_K
// activation format.
//
// Element order (e = index inside the 256-value block):
//   Q2_K, Q3_K  e = 128*h + 32*j + l (h < 2, j < 4, l < 32): 2 low bits at bit 2*j of qs[32*h + l];
//               Q3_K's 3rd bit at bit 4*h + j of hmask[l] (a clear bit means "minus 4").
//               Sub-block (scale) e / 16.
//   Q4_K, Q5_K  e = 64*c + l (l < 32): low nibble of qs[32*c + l]; e = 64*c + 32 + l: high nibble.
//               Q5_K's 5th bit at bit 2*c (low half) / 2*c + 1 (high half) of qh[l]. Sub-block e / 32.
//   Q6_K        e = 128*h + 32*k + l: 4 low bits in ql[64*h + l + 32*(k&1)] (low nibble for k < 2,
//               high nibble otherwise), 2 high bits at bit 2*k of qh[32*h + l]. Sub-block e / 16.
//
// Quantizers (our own, simpler than ggml's importance-weighted search; they read no imatrix):
// each sub-block tries 19 scales around the plain range/levels guess, refits scale (and min) by
// least squares to the rounded levels, and keeps the fit with the lowest squared error. The
// sub-block scales are then quantized against the super-block scale, and every value is rounded
// again with the scale it will really be decoded with.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/half.h"
#include "tensor/quant_impl.h"

namespace lumen {

void q3k_scales(const uint8_t packed[12], int8_t out[16]) {
    for (int i = 0; i < 16; i++) {
        const int low = i < 8 ? packed[i] & 0x0F : packed[i - 8] >> 4;
        const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = int8_t((low | (high << 4)) - 32);
    }
}

namespace quant {

namespace {

constexpr int kSearchSteps = 9;  // scales tried: levels + 0.1*s for s in [-9, 9]

// x ~ scale * L - min with L in [0, nmax], scale >= 0 and min >= 0 (the formats subtract a
// non-negative min, so a block of positive values gets min 0).
struct AffineFit { float scale = 0, min = 0; };

AffineFit fit_affine(const float* x, int n, int nmax) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
    }
    lo = std::min(lo, 0.0f);
    if (!(hi > lo)) return {0.0f, -lo};  // constant block (or nan)

    AffineFit best{(hi - lo) / float(nmax), -lo};
    double best_err = INFINITY;
    for (int step = -kSearchSteps; step <= kSearchSteps; step++) {
        const float iscale = (float(nmax) + 0.1f * float(step)) / (hi - lo);
        double sl = 0, sll = 0, sx = 0, slx = 0;
        for (int i = 0; i < n; i++) {
            const int l = std::clamp(nearest_int((x[i] - lo) * iscale), 0, nmax);
            sl += l; sll += double(l) * l; sx += x[i]; slx += double(l) * x[i];
        }
        // Least squares for x ~ a*l + b, with b <= 0.
        const double det = n * sll - sl * sl;
        if (det <= 0) continue;
        double a = (n * slx - sl * sx) / det, b = (sx - a * sl) / n;
        if (b > 0) { b = 0; a = slx / sll; }
        if (a <= 0) continue;
        double err = 0;
        for (int i = 0; i < n; i++) {
            const int l = std::clamp(nearest_int(float((x[i] - b) / a)), 0, nmax);
            const double e = a * l + b - x[i];
            err += e * e;
        }
        if (err < best_err) { best_err = err; best = {float(a), float(-b)}; }
    }
    return best;
}

// x ~ scale * L with L in [-nneg, nneg - 1]; the value of largest magnitude goes to the -nneg end
// (scale is negative when that value is positive).
float fit_symmetric(const float* x, int n, int nneg) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
    if (amax == 0) return 0.0f;
    float best = -max / float(nneg);
    double best_gain = -1;  // error = sum(x^2) - slx^2/sll, so maximise slx^2/sll
    for (int step = -kSearchSteps; step <= kSearchSteps; step++) {
        const float iscale = -(float(nneg) + 0.1f * float(step)) / max;
        double sll = 0, slx = 0;
        for (int i = 0; i < n; i++) {
            const int l = std::clamp(nearest_int(x[i] * iscale), -nneg, nneg - 1);
            sll += double(l) * l; slx += double(l) * x[i];
        }
        if (sll == 0) continue;
        const double gain = slx * slx / sll;
        if (gain > best_gain) { best_gain = gain; best = float(slx / sll); }
    }
    return best;
}

// Quantizes non-negative sub-block scales to [0, levels] against one fp16 super-scale. Returns the
// super-scale as stored.
uint16_t quantize_unsigned_scales(const float* s, int n, int levels, uint8_t* out) {
    float mx = 0;
    for (int j = 0; j < n; j++) mx = std::max(mx, s[j]);
    const uint16_t d16 = f32_to_fp16(mx / float(levels));
    const float d = fp16_to_f32(d16);
    for (int j = 0; j < n; j++) out[j] = d > 0 ? uint8_t(std::clamp(nearest_int(s[j] / d), 0, levels)) : 0;
    return d16;
}

// Quantizes signed sub-block scales to [-levels, levels - 1]; the largest-magnitude scale goes to
// -levels. Returns the super-scale as stored.
uint16_t quantize_signed_scales(const float* s, int n, int levels, int8_t* out) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (std::fabs(s[j]) > amax) { amax = std::fabs(s[j]); max = s[j]; }
    const uint16_t d16 = f32_to_fp16(-max / float(levels));
    const float d = fp16_to_f32(d16);
    for (int j = 0; j < n; j++) out[j] = d != 0 ? int8_t(std::clamp(nearest_int(s[j] / d), -levels, levels - 1)) : 0;
    return d16;
}

// Rounds a value with the scale (and min) it will be decoded with: x ~ d*L - m.
inline int requant(float x, float d, float m, int lo, int hi) {
    return d != 0 ? std::clamp(nearest_int((x + m) / d), lo, hi) : 0;  // every range holds 0
}

void pack_k4_scales(const uint8_t sc[8], const uint8_t mn[8], uint8_t out[12]) {
    for (int j = 0; j < 4; j++) {
        out[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        out[j + 4] = uint8_t((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        out[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

// Q4_K and Q5_K share everything but the number of levels and where the 5th bit goes.
void quant_q45_k(const float* x, uint16_t& d_out, uint16_t& dmin_out, uint8_t scales_out[12], uint8_t L[256],
                 int nmax) {
    float scale[8], min[8];
    for (int j = 0; j < 8; j++) {
        const AffineFit f = fit_affine(x + 32 * j, 32, nmax);
        scale[j] = f.scale;
        min[j] = f.min;
    }
    uint8_t sc[8], mn[8];
    d_out = quantize_unsigned_scales(scale, 8, 63, sc);
    dmin_out = quantize_unsigned_scales(min, 8, 63, mn);
    pack_k4_scales(sc, mn, scales_out);
    const float d = fp16_to_f32(d_out), dmin = fp16_to_f32(dmin_out);
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = uint8_t(requant(x[32 * j + i], d * sc[j], dmin * mn[j], 0, nmax));
}

}  // namespace

void dequant_q2_k(const BlockQ2_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
        for (int e = 0; e < kQK_K; e++) {
            const int h = e / 128, j = (e % 128) / 32, l = e % 32;
            const int q = (x[i].qs[32 * h + l] >> (2 * j)) & 3;
            const uint8_t s = x[i].scales[e / 16];
            y[e] = d * float(s & 0x0F) * float(q) - dmin * float(s >> 4);
        }
    }
}

void dequant_q3_k(const BlockQ3_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = fp16_to_f32(x[i].d);
        int8_t sc[16];
        q3k_scales(x[i].scales, sc);
        for (int e = 0; e < kQK_K; e++) {
            const int h = e / 128, j = (e % 128) / 32, l = e % 32;
            const int low = (x[i].qs[32 * h + l] >> (2 * j)) & 3;
            const int high = (x[i].hmask[l] >> (4 * h + j)) & 1;
            y[e] = d * float(sc[e / 16]) * float(low + 4 * high - 4);
        }
    }
}

void dequant_q4_k(const BlockQ4_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
        for (int c = 0; c < 4; c++) {
            uint8_t s0, m0, s1, m1;
            k4_scale_min(x[i].scales, 2 * c, s0, m0);
            k4_scale_min(x[i].scales, 2 * c + 1, s1, m1);
            const float d0 = d * s0, d1 = d * s1, o0 = dmin * m0, o1 = dmin * m1;
            const uint8_t* q = x[i].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d0 * float(q[l] & 0x0F) - o0;
                y[64 * c + 32 + l] = d1 * float(q[l] >> 4) - o1;
            }
        }
    }
}

void dequant_q5_k(const BlockQ5_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
        for (int c = 0; c < 4; c++) {
            uint8_t s0, m0, s1, m1;
            k4_scale_min(x[i].scales, 2 * c, s0, m0);
            k4_scale_min(x[i].scales, 2 * c + 1, s1, m1);
            const float d0 = d * s0, d1 = d * s1, o0 = dmin * m0, o1 = dmin * m1;
            const uint8_t* q = x[i].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                const int lo = (q[l] & 0x0F) | (((x[i].qh[l] >> (2 * c)) & 1) << 4);
                const int hi = (q[l] >> 4) | (((x[i].qh[l] >> (2 * c + 1)) & 1) << 4);
                y[64 * c + l] = d0 * float(lo) - o0;
                y[64 * c + 32 + l] = d1 * float(hi) - o1;
            }
        }
    }
}

void dequant_q6_k(const BlockQ6_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = fp16_to_f32(x[i].d);
        for (int e = 0; e < kQK_K; e++) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            const uint8_t ql = x[i].ql[64 * h + l + 32 * (k & 1)];
            const int low = k < 2 ? ql & 0x0F : ql >> 4;
            const int high = (x[i].qh[32 * h + l] >> (2 * k)) & 3;
            y[e] = d * float(x[i].scales[e / 16]) * float((low | (high << 4)) - 32);
        }
    }
}

void dequant_q8_k(const BlockQ8_K* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K)
        for (int e = 0; e < kQK_K; e++) y[e] = x[i].d * float(x[i].qs[e]);
}

void quant_q2_k(const float* x, BlockQ2_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        float scale[16], min[16];
        for (int j = 0; j < 16; j++) {
            const AffineFit f = fit_affine(x + 16 * j, 16, 3);
            scale[j] = f.scale;
            min[j] = f.min;
        }
        uint8_t sc[16], mn[16];
        y[i].d = quantize_unsigned_scales(scale, 16, 15, sc);
        y[i].dmin = quantize_unsigned_scales(min, 16, 15, mn);
        const float d = fp16_to_f32(y[i].d), dmin = fp16_to_f32(y[i].dmin);
        for (int j = 0; j < 16; j++) y[i].scales[j] = uint8_t(sc[j] | (mn[j] << 4));
        std::memset(y[i].qs, 0, sizeof y[i].qs);
        for (int e = 0; e < kQK_K; e++) {
            const int q = requant(x[e], d * sc[e / 16], dmin * mn[e / 16], 0, 3);
            const int h = e / 128, j = (e % 128) / 32, l = e % 32;
            y[i].qs[32 * h + l] |= uint8_t(q << (2 * j));
        }
    }
}

void quant_q3_k(const float* x, BlockQ3_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        float scale[16];
        for (int j = 0; j < 16; j++) scale[j] = fit_symmetric(x + 16 * j, 16, 4);
        int8_t sc[16];
        y[i].d = quantize_signed_scales(scale, 16, 32, sc);
        const float d = fp16_to_f32(y[i].d);
        std::memset(y[i].scales, 0, sizeof y[i].scales);
        for (int j = 0; j < 16; j++) {
            const int u = sc[j] + 32;  // 0..63
            if (j < 8) y[i].scales[j] |= uint8_t(u & 0x0F);
            else y[i].scales[j - 8] |= uint8_t((u & 0x0F) << 4);
            y[i].scales[8 + j % 4] |= uint8_t((u >> 4) << (2 * (j / 4)));
        }
        std::memset(y[i].qs, 0, sizeof y[i].qs);
        std::memset(y[i].hmask, 0, sizeof y[i].hmask);
        for (int e = 0; e < kQK_K; e++) {
            const int q = requant(x[e], d * sc[e / 16], 0.0f, -4, 3) + 4;  // 0..7
            const int h = e / 128, j = (e % 128) / 32, l = e % 32;
            y[i].qs[32 * h + l] |= uint8_t((q & 3) << (2 * j));
            y[i].hmask[l] |= uint8_t((q >> 2) << (4 * h + j));
        }
    }
}

void quant_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        uint8_t L[kQK_K];
        quant_q45_k(x, y[i].d, y[i].dmin, y[i].scales, L, 15);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

void quant_q5_k(const float* x, BlockQ5_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        uint8_t L[kQK_K];
        quant_q45_k(x, y[i].d, y[i].dmin, y[i].scales, L, 31);
        std::memset(y[i].qh, 0, sizeof y[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                y[i].qs[32 * c + l] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
                y[i].qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

void quant_q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        float scale[16];
        for (int j = 0; j < 16; j++) scale[j] = fit_symmetric(x + 16 * j, 16, 32);
        y[i].d = quantize_signed_scales(scale, 16, 128, y[i].scales);
        const float d = fp16_to_f32(y[i].d);
        std::memset(y[i].ql, 0, sizeof y[i].ql);
        std::memset(y[i].qh, 0, sizeof y[i].qh);
        for (int e = 0; e < kQK_K; e++) {
            const int q = requant(x[e], d * y[i].scales[e / 16], 0.0f, -32, 31) + 32;  // 0..63
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            y[i].ql[64 * h + l + 32 * (k & 1)] |= uint8_t(k < 2 ? (q & 0x0F) : (q & 0x0F) << 4);
            y[i].qh[32 * h + l] |= uint8_t((q >> 4) << (2 * k));
        }
    }
}

void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        float amax = 0, max = 0;
        for (int e = 0; e < kQK_K; e++)
            if (std::fabs(x[e]) > amax) { amax = std::fabs(x[e]); max = x[e]; }
        if (amax == 0) {
            std::memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        // As ggml: the largest-magnitude value maps to -127 and the rest round into [-127, 127].
        const float iscale = -127.0f / max;
        for (int e = 0; e < kQK_K; e++) y[i].qs[e] = int8_t(std::min(127, nearest_int(iscale * x[e])));
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int e = 0; e < 16; e++) sum += y[i].qs[16 * j + e];
            y[i].bsums[j] = int16_t(sum);
        }
        y[i].d = 1.0f / iscale;
    }
}

}  // namespace quant
}  // namespace lumen
