// The 32-value block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//
// Element order: Q8 blocks store value j in qs[j]. The 4/5-bit blocks store value j (j < 16) in the
// low nibble of qs[j] and value j+16 in its high nibble; Q5 blocks keep the 5th bit of value j in
// bit j of the little-endian 32-bit qh.
//
// The quantizers follow ggml's reference ones, so files written by `lumen quantize` match
// llama-quantize's output bit for bit (apart from ties in float rounding):
//   Q4_0/Q5_0: d = (the value of largest magnitude) / -8 (/-16), q = trunc(x/d + 8.5) capped at 15
//   Q4_1/Q5_1: d = (max - min) / 15 (/31), m = min, q = trunc((x - min)/d + 0.5)
//   Q8_0/Q8_1: d = amax / 127, q = roundf(x/d)
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "tensor/half.h"
#include "tensor/quant_impl.h"

namespace lumen::quant {

namespace {

uint32_t load_qh(const uint8_t qh[4]) {
    uint32_t v;
    std::memcpy(&v, qh, 4);
    return v;
}

// The signed value of largest magnitude (the first one on ties), as ggml's Q4_0/Q5_0 use it.
float signed_absmax(const float* x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
    return max;
}

void min_max(const float* x, int n, float& mn, float& mx) {
    mn = FLT_MAX;
    mx = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        mn = std::min(mn, x[j]);
        mx = std::max(mx, x[j]);
    }
}

}  // namespace

void dequant_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = float((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + 16] = float((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequant_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = float(x[i].qs[j] & 0x0F) * d + m;
            y[j + 16] = float(x[i].qs[j] >> 4) * d + m;
        }
    }
}

void dequant_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; j++) {
            const int lo = (x[i].qs[j] & 0x0F) | int((qh >> j) & 1) << 4;
            const int hi = (x[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
            y[j] = float(lo - 16) * d;
            y[j + 16] = float(hi - 16) * d;
        }
    }
}

void dequant_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < 16; j++) {
            const int lo = (x[i].qs[j] & 0x0F) | int((qh >> j) & 1) << 4;
            const int hi = (x[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
            y[j] = float(lo) * d + m;
            y[j + 16] = float(hi) * d + m;
        }
    }
}

void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < kQK; j++) y[j] = float(x[i].qs[j]) * d;
    }
}

void dequant_q8_1(const BlockQ8_1* x, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < kQK; j++) y[j] = float(x[i].qs[j]) * d;
    }
}

void quant_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        const float d = signed_absmax(x, kQK) / -8;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < 16; j++) {
            // x/d lies in [-8, 8]; +8.5 then truncation rounds to nearest into 0..16, capped at 15.
            const int lo = std::min(15, int(x[j] * id + 8.5f));
            const int hi = std::min(15, int(x[j + 16] * id + 8.5f));
            y[i].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}

void quant_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        float mn, mx;
        min_max(x, kQK, mn, mx);
        const float d = (mx - mn) / 15;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        y[i].m = f32_to_fp16(mn);
        for (int j = 0; j < 16; j++) {
            const int lo = std::min(15, int((x[j] - mn) * id + 0.5f));
            const int hi = std::min(15, int((x[j + 16] - mn) * id + 0.5f));
            y[i].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}

void quant_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        const float d = signed_absmax(x, kQK) / -16;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = std::min(31, int(x[j] * id + 16.5f));
            const int hi = std::min(31, int(x[j + 16] * id + 16.5f));
            y[i].qs[j] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
            qh |= uint32_t(lo >> 4) << j;
            qh |= uint32_t(hi >> 4) << (j + 16);
        }
        std::memcpy(y[i].qh, &qh, 4);
    }
}

void quant_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        float mn, mx;
        min_max(x, kQK, mn, mx);
        const float d = (mx - mn) / 31;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        y[i].m = f32_to_fp16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = std::min(31, int((x[j] - mn) * id + 0.5f));
            const int hi = std::min(31, int((x[j + 16] - mn) * id + 0.5f));
            y[i].qs[j] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
            qh |= uint32_t(lo >> 4) << j;
            qh |= uint32_t(hi >> 4) << (j + 16);
        }
        std::memcpy(y[i].qh, &qh, 4);
    }
}

void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        float amax = 0;
        for (int j = 0; j < kQK; j++) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < kQK; j++) y[i].qs[j] = int8_t(std::round(x[j] * id));
    }
}

void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK) {
        float amax = 0;
        for (int j = 0; j < kQK; j++) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < kQK; j++) {
            y[i].qs[j] = int8_t(std::round(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].d = f32_to_fp16(d);
        y[i].s = f32_to_fp16(float(sum) * d);
    }
}

}  // namespace lumen::quant
