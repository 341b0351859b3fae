// Block formats: fp16/bf16 conversions, every type's decoder against blocks assembled byte by byte
// here from the GGUF layout rules (so a layout mistake in the decoder cannot hide behind the same
// mistake in our encoder), quantize -> dequantize error bounds, and bad-input errors.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "test_quant_util.h"
#include "util/error.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

using namespace lumen;
using namespace lumen::testq;

namespace {

// ---- byte-level block builders ----

void put_f16(uint8_t* p, float v) {
    const uint16_t h = f32_to_fp16_scalar(v);
    p[0] = uint8_t(h & 0xFF);
    p[1] = uint8_t(h >> 8);
}

void put_f32(uint8_t* p, float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++) p[i] = uint8_t(u >> (8 * i));
}

// Scales used below are small multiples of 1/16, so every expected value is exact in float.
float pick_scale(std::mt19937& rng) { return float(1 + rng() % 7) / 16.0f * (rng() & 1 ? -1.0f : 1.0f); }

struct Built {
    std::vector<uint8_t> bytes;
    std::vector<float> expect;
};

// Builds `nblocks` blocks of 256 / 32 values with `fill(block, rng, expect)`.
Built build(DType t, int nblocks, const std::function<void(uint8_t*, std::mt19937&, float*)>& fill) {
    const DTypeInfo& info = dtype_info(t);
    Built b;
    b.bytes.assign(size_t(nblocks) * info.block_bytes, 0);
    b.expect.assign(size_t(nblocks) * info.block_size, 0.0f);
    std::mt19937 rng(1234 + uint32_t(t));
    for (int i = 0; i < nblocks; i++)
        fill(b.bytes.data() + size_t(i) * info.block_bytes, rng, b.expect.data() + size_t(i) * info.block_size);
    return b;
}

void check_decoder(DType t, const Built& b) {
    const std::string type_name = dtype_name(t);
        CAPTURE(type_name);
    const auto got = dequantized(t, b.bytes.data(), int64_t(b.expect.size()));
    int bad = 0;
    for (size_t i = 0; i < got.size(); i++)
        if (got[i] != b.expect[i] && bad++ < 5) FAIL_CHECK("element " << i << ": " << got[i] << " != " << b.expect[i]);
    CHECK(bad == 0);
}

// Legacy 4/5-bit blocks: value j (< 16) in the low nibble of byte j, value j + 16 in its high nibble,
// the 5th bit of value j in bit j of the little-endian 32-bit qh.
void put_nibbles(uint8_t* qs, const int* L) {
    for (int j = 0; j < 16; j++) qs[j] = uint8_t((L[j] & 15) | ((L[j + 16] & 15) << 4));
}
void put_qh(uint8_t* qh, const int* L) {
    uint32_t bits = 0;
    for (int j = 0; j < 32; j++) bits |= uint32_t(L[j] >> 4) << j;
    for (int i = 0; i < 4; i++) qh[i] = uint8_t(bits >> (8 * i));
}

}  // namespace

TEST_SUITE("quant") {

TEST_CASE("fp16 conversion: known values and rounding") {
    CHECK(fp16_to_f32_scalar(0x3C00) == 1.0f);
    CHECK(fp16_to_f32_scalar(0xC000) == -2.0f);
    CHECK(fp16_to_f32_scalar(0x7BFF) == 65504.0f);
    CHECK(fp16_to_f32_scalar(0x0400) == std::ldexp(1.0f, -14));
    CHECK(fp16_to_f32_scalar(0x0001) == std::ldexp(1.0f, -24));
    CHECK(fp16_to_f32_scalar(0x03FF) == std::ldexp(1023.0f, -24));
    CHECK(std::signbit(fp16_to_f32_scalar(0x8000)));
    CHECK(std::isinf(fp16_to_f32_scalar(0xFC00)));
    CHECK(std::isnan(fp16_to_f32_scalar(0x7E00)));

    CHECK(f32_to_fp16_scalar(1.0f) == 0x3C00);
    CHECK(f32_to_fp16_scalar(-2.0f) == 0xC000);
    CHECK(f32_to_fp16_scalar(65504.0f) == 0x7BFF);
    CHECK(f32_to_fp16_scalar(65519.0f) == 0x7BFF);  // rounds down to the largest half
    CHECK(f32_to_fp16_scalar(65520.0f) == 0x7C00);  // the tie rounds up to infinity
    CHECK(f32_to_fp16_scalar(1e9f) == 0x7C00);
    CHECK(f32_to_fp16_scalar(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);      // tie -> even
    CHECK(f32_to_fp16_scalar(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie -> even (up)
    CHECK(f32_to_fp16_scalar(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(f32_to_fp16_scalar(std::ldexp(1.0f, -25)) == 0x0000);      // tie between 0 and 1 -> 0
    CHECK(f32_to_fp16_scalar(std::ldexp(3.0f, -25)) == 0x0002);      // tie between 1 and 2 -> 2
    CHECK(f32_to_fp16_scalar(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(f32_to_fp16_scalar(std::ldexp(1023.5f, -24)) == 0x0400);   // rounds up into the normals
    CHECK(f32_to_fp16_scalar(-0.0f) == 0x8000);
    const uint16_t nan = f32_to_fp16_scalar(std::numeric_limits<float>::quiet_NaN());
    CHECK((nan & 0x7C00) == 0x7C00);
    CHECK((nan & 0x03FF) != 0);

    // Every non-nan half survives the round trip.
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;
        if (f32_to_fp16_scalar(fp16_to_f32_scalar(uint16_t(h))) != h) FAIL("round trip of half " << h);
    }
}

#if defined(__F16C__)
TEST_CASE("fp16 conversion: scalar code agrees with the F16C instructions") {
    for (uint32_t h = 0; h < 0x10000; h++)
        if (f32_bits(fp16_to_f32_scalar(uint16_t(h))) != f32_bits(_cvtsh_ss(uint16_t(h))))
            FAIL("half " << h);
    std::mt19937 rng(7);
    for (int i = 0; i < 2000000; i++) {
        // Random bit patterns, biased towards the exponent range of halves.
        uint32_t u = rng();
        if (i & 1) u = (u & 0x807FFFFF) | ((100 + rng() % 45) << 23);
        const float f = f32_from_bits(u);
        const uint16_t want = uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
        if (f32_to_fp16_scalar(f) != want) FAIL("float bits " << u);
    }
}
#endif

TEST_CASE("bf16 conversion") {
    CHECK(f32_to_bf16(1.0f) == 0x3F80);
    CHECK(bf16_to_f32(0x3F80) == 1.0f);
    CHECK(bf16_to_f32(0xC040) == -3.0f);
    CHECK(f32_to_bf16(f32_from_bits(0x3F808000)) == 0x3F80);  // tie -> even
    CHECK(f32_to_bf16(f32_from_bits(0x3F818000)) == 0x3F82);  // tie -> even (up)
    CHECK(f32_to_bf16(f32_from_bits(0x3F808001)) == 0x3F81);
    CHECK(f32_to_bf16(f32_from_bits(0x7F7FFFFF)) == 0x7F80);  // overflow to infinity
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(f32_from_bits(0x7F800001)))));  // a nan, not infinity
}

TEST_CASE("decoders: legacy blocks built byte by byte") {
    check_decoder(DType::Q4_0, build(DType::Q4_0, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        int L[32];
        for (int& l : L) l = int(rng() % 16);
        put_f16(p, d);
        put_nibbles(p + 2, L);
        for (int e = 0; e < 32; e++) y[e] = float(L[e] - 8) * d;
    }));
    check_decoder(DType::Q4_1, build(DType::Q4_1, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng), m = pick_scale(rng) * 4;
        int L[32];
        for (int& l : L) l = int(rng() % 16);
        put_f16(p, d);
        put_f16(p + 2, m);
        put_nibbles(p + 4, L);
        for (int e = 0; e < 32; e++) y[e] = float(L[e]) * d + m;
    }));
    check_decoder(DType::Q5_0, build(DType::Q5_0, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        int L[32];
        for (int& l : L) l = int(rng() % 32);
        put_f16(p, d);
        put_qh(p + 2, L);
        put_nibbles(p + 6, L);
        for (int e = 0; e < 32; e++) y[e] = float(L[e] - 16) * d;
    }));
    check_decoder(DType::Q5_1, build(DType::Q5_1, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng), m = pick_scale(rng) * 4;
        int L[32];
        for (int& l : L) l = int(rng() % 32);
        put_f16(p, d);
        put_f16(p + 2, m);
        put_qh(p + 4, L);
        put_nibbles(p + 8, L);
        for (int e = 0; e < 32; e++) y[e] = float(L[e]) * d + m;
    }));
    check_decoder(DType::Q8_0, build(DType::Q8_0, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        put_f16(p, d);
        for (int e = 0; e < 32; e++) {
            const int q = int(rng() % 256) - 128;
            p[2 + e] = uint8_t(q);
            y[e] = float(q) * d;
        }
    }));
    check_decoder(DType::Q8_1, build(DType::Q8_1, 3, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        put_f16(p, d);
        put_f16(p + 2, 123.0f);  // the sum field plays no part in the values
        for (int e = 0; e < 32; e++) {
            const int q = int(rng() % 255) - 127;
            p[4 + e] = uint8_t(q);
            y[e] = float(q) * d;
        }
    }));
}

TEST_CASE("decoders: K-quant blocks built byte by byte") {
    // Q2_K: scales[16] @0 (scale low nibble, min high), qs[64] @16, d @80, dmin @82. Value e:
    // 2 bits at bit 2*((e%128)/32) of qs[32*(e/128) + e%32]; sub-block e/16.
    check_decoder(DType::Q2_K, build(DType::Q2_K, 2, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng), dmin = pick_scale(rng);
        int sc[16], mn[16];
        for (int j = 0; j < 16; j++) {
            sc[j] = int(rng() % 16);
            mn[j] = int(rng() % 16);
            p[j] = uint8_t(sc[j] | (mn[j] << 4));
        }
        put_f16(p + 80, d);
        put_f16(p + 82, dmin);
        for (int e = 0; e < 256; e++) {
            const int L = int(rng() % 4);
            p[16 + 32 * (e / 128) + e % 32] |= uint8_t(L << (2 * ((e % 128) / 32)));
            y[e] = d * float(sc[e / 16]) * float(L) - dmin * float(mn[e / 16]);
        }
    }));
    // Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Scale j (6 bits, minus 32): low
    // nibble in byte j%8 (low half for j < 8, high half otherwise), top 2 bits at bit 2*(j/4) of
    // byte 8 + j%4. Value e: 2 low bits as Q2_K, 3rd bit at bit e/32 of hmask[e%32]; level - 4.
    check_decoder(DType::Q3_K, build(DType::Q3_K, 2, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        int sc[16];
        uint8_t* scales = p + 96;
        for (int j = 0; j < 16; j++) {
            sc[j] = int(rng() % 64) - 32;
            const int u = sc[j] + 32;
            scales[j % 8] |= uint8_t((u & 15) << (j < 8 ? 0 : 4));
            scales[8 + j % 4] |= uint8_t((u >> 4) << (2 * (j / 4)));
        }
        put_f16(p + 108, d);
        for (int e = 0; e < 256; e++) {
            const int L = int(rng() % 8);
            p[32 + 32 * (e / 128) + e % 32] |= uint8_t((L & 3) << (2 * ((e % 128) / 32)));
            p[e % 32] |= uint8_t((L >> 2) << (e / 32));
            y[e] = d * float(sc[e / 16]) * float(L - 4);
        }
    }));
    // Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16. Scales/mins j < 4: low 6 bits of bytes j
    // and 4+j; j >= 4: low/high nibble of byte 8+(j-4), top 2 bits in bits 6-7 of bytes j-4 / j.
    // Value e = 64c + i: qs[32c + i%32], low nibble for i < 32; sub-block e/32.
    auto put_k4_scales = [](uint8_t* s, const int* sc, const int* mn) {
        for (int j = 0; j < 8; j++) {
            if (j < 4) {
                s[j] |= uint8_t(sc[j]);
                s[4 + j] |= uint8_t(mn[j]);
            } else {
                s[8 + j - 4] |= uint8_t((sc[j] & 15) | ((mn[j] & 15) << 4));
                s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
                s[j] |= uint8_t((mn[j] >> 4) << 6);
            }
        }
    };
    check_decoder(DType::Q4_K, build(DType::Q4_K, 2, [&](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng), dmin = pick_scale(rng);
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++) { sc[j] = int(rng() % 64); mn[j] = int(rng() % 64); }
        put_f16(p, d);
        put_f16(p + 2, dmin);
        put_k4_scales(p + 4, sc, mn);
        for (int e = 0; e < 256; e++) {
            const int L = int(rng() % 16), c = e / 64, i = e % 64;
            p[16 + 32 * c + i % 32] |= uint8_t(L << (i < 32 ? 0 : 4));
            y[e] = d * float(sc[e / 32]) * float(L) - dmin * float(mn[e / 32]);
        }
    }));
    // Q5_K: as Q4_K with qh[32] @16 and qs @48; the 5th bit of e = 64c + i at bit 2c + (i >= 32)
    // of qh[i%32].
    check_decoder(DType::Q5_K, build(DType::Q5_K, 2, [&](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng), dmin = pick_scale(rng);
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++) { sc[j] = int(rng() % 64); mn[j] = int(rng() % 64); }
        put_f16(p, d);
        put_f16(p + 2, dmin);
        put_k4_scales(p + 4, sc, mn);
        for (int e = 0; e < 256; e++) {
            const int L = int(rng() % 32), c = e / 64, i = e % 64;
            p[48 + 32 * c + i % 32] |= uint8_t((L & 15) << (i < 32 ? 0 : 4));
            p[16 + i % 32] |= uint8_t((L >> 4) << (2 * c + (i >= 32)));
            y[e] = d * float(sc[e / 32]) * float(L) - dmin * float(mn[e / 32]);
        }
    }));
    // Q6_K: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208. Value e = 128h + 32k + l:
    // low 4 bits in ql[64h + l + 32*(k&1)] (low nibble for k < 2), high 2 bits at bit 2k of
    // qh[32h + l]; level - 32; sub-block e/16.
    check_decoder(DType::Q6_K, build(DType::Q6_K, 2, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        int sc[16];
        for (int j = 0; j < 16; j++) {
            sc[j] = int(rng() % 256) - 128;
            p[192 + j] = uint8_t(sc[j]);
        }
        put_f16(p + 208, d);
        for (int e = 0; e < 256; e++) {
            const int L = int(rng() % 64), h = e / 128, k = (e % 128) / 32, l = e % 32;
            p[64 * h + l + 32 * (k & 1)] |= uint8_t((L & 15) << (k < 2 ? 0 : 4));
            p[128 + 32 * h + l] |= uint8_t((L >> 4) << (2 * k));
            y[e] = d * float(sc[e / 16]) * float(L - 32);
        }
    }));
    // Q8_K: float d @0, qs[256] @4, bsums (not part of the values) @260.
    check_decoder(DType::Q8_K, build(DType::Q8_K, 2, [](uint8_t* p, std::mt19937& rng, float* y) {
        const float d = pick_scale(rng);
        put_f32(p, d);
        for (int e = 0; e < 256; e++) {
            const int q = int(rng() % 255) - 127;
            p[4 + e] = uint8_t(q);
            y[e] = d * float(q);
        }
    }));
}

TEST_CASE("decoders: float rows") {
    const std::vector<float> x = {1.0f, -2.5f, 0.0f, 65504.0f, 3.0e-5f, -1.0e-8f, 7.0f};
    std::vector<uint8_t> h(x.size() * 2), b(x.size() * 2);
    for (size_t i = 0; i < x.size(); i++) {
        put_f16(&h[2 * i], x[i]);
        const uint16_t bf = uint16_t(f32_bits(x[i]) >> 16);
        b[2 * i] = uint8_t(bf & 0xFF);
        b[2 * i + 1] = uint8_t(bf >> 8);
    }
    const auto fh = dequantized(DType::F16, h.data(), int64_t(x.size()));
    const auto fb = dequantized(DType::BF16, b.data(), int64_t(x.size()));
    const auto ff = dequantized(DType::F32, x.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); i++) {
        CHECK(fh[i] == fp16_to_f32_scalar(f32_to_fp16_scalar(x[i])));
        CHECK(fb[i] == f32_from_bits(f32_bits(x[i]) & 0xFFFF0000));
        CHECK(ff[i] == x[i]);
    }
    // 16+ values take the vectorised conversion path.
    const auto g = gaussian(37, 3);
    const auto r = dequantized(DType::F16, quantized_row(DType::F16, g).data(), 37);
    for (size_t i = 0; i < g.size(); i++) CHECK(r[i] == fp16_to_f32_scalar(f32_to_fp16_scalar(g[i])));
}

TEST_CASE("quantize -> dequantize error on gaussian data") {
    struct Bound { DType t; double max_rel_rms; };
    // Relative RMS error bounds, about 1.2x what ggml's reference quantizers reach on N(0, 1) data
    // (measured: Q8_0 0.0052, Q8_K 0.0071, Q6_K 0.0176, Q5_0 0.042, Q5_K 0.036, Q4_0 0.085, Q4_1 0.077,
    // Q4_K 0.071, Q3_K 0.151, Q2_K 0.296); ours land within 2% of those.
    const Bound bounds[] = {
        {DType::F32, 0.0},     {DType::F16, 5e-4},    {DType::BF16, 4e-3},   {DType::Q8_0, 0.0063},
        {DType::Q8_1, 0.0063}, {DType::Q8_K, 0.0085}, {DType::Q6_K, 0.021},  {DType::Q5_0, 0.05},
        {DType::Q5_1, 0.05},   {DType::Q5_K, 0.044},  {DType::Q4_0, 0.10},   {DType::Q4_1, 0.093},
        {DType::Q4_K, 0.085},  {DType::Q3_K, 0.18},   {DType::Q2_K, 0.35},
    };
    const int64_t n = 8192;
    const auto x = gaussian(size_t(n), 99);
    for (const Bound& b : bounds) {
        const std::string type_name = dtype_name(b.t);
        CAPTURE(type_name);
        const auto y = dequantized(b.t, quantized_row(b.t, x).data(), n);
        double err = 0, ref = 0;
        for (int64_t i = 0; i < n; i++) {
            err += double(y[size_t(i)] - x[size_t(i)]) * (y[size_t(i)] - x[size_t(i)]);
            ref += double(x[size_t(i)]) * x[size_t(i)];
        }
        const double rel = std::sqrt(err / ref);
        MESSAGE(type_name << " relative rms error " << rel);
        CHECK(rel <= b.max_rel_rms);
    }
}

TEST_CASE("quantize: zero, constant and one-sided rows stay finite and exact where they can") {
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q8_1, DType::Q2_K,
                    DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K}) {
        const std::string type_name = dtype_name(t);
        CAPTURE(type_name);
        const std::vector<float> zeros(256, 0.0f);
        for (float v : dequantized(t, quantized_row(t, zeros).data(), 256)) CHECK(v == 0.0f);
        std::vector<float> pos = gaussian(256, 5);
        for (float& v : pos) v = std::fabs(v) + 0.5f;
        double err = 0, ref = 0;
        const auto y = dequantized(t, quantized_row(t, pos).data(), 256);
        for (size_t i = 0; i < y.size(); i++) {
            CHECK(std::isfinite(y[i]));
            err += double(y[i] - pos[i]) * (y[i] - pos[i]);
            ref += double(pos[i]) * pos[i];
        }
        CHECK(std::sqrt(err / ref) < 0.25);
    }
}

TEST_CASE("bad input is a lumen::Error") {
    std::vector<uint8_t> buf(4096);
    std::vector<float> f(1024);
    CHECK_THROWS_AS(dequantize_row(DType::Q4_0, buf.data(), f.data(), 33), Error);
    CHECK_THROWS_AS(dequantize_row(DType::Q4_K, buf.data(), f.data(), 128), Error);
    CHECK_THROWS_AS(quantize_row(DType::Q8_0, f.data(), buf.data(), 48), Error);
    CHECK_THROWS_AS(dequantize_row(DType::IQ2_XS, buf.data(), f.data(), 256), Error);
    CHECK_THROWS_AS(quantize_row(DType::IQ4_NL, f.data(), buf.data(), 32), Error);
    CHECK_THROWS_AS(dequantize_row(DType(77), buf.data(), f.data(), 32), Error);
    CHECK_THROWS_AS(vec_dot_type(DType::IQ2_XXS), Error);
    CHECK_THROWS_AS(vec_dot_type(DType(77)), Error);
    CHECK_FALSE(can_dequantize(DType::IQ4_XS));
    CHECK(can_quantize(DType::Q5_K));
}

TEST_CASE("vec_dot_type pairs weights with their activation formats") {
    CHECK(vec_dot_type(DType::Q4_0) == DType::Q8_0);
    CHECK(vec_dot_type(DType::Q8_0) == DType::Q8_0);
    CHECK(vec_dot_type(DType::Q4_1) == DType::Q8_1);
    CHECK(vec_dot_type(DType::Q5_1) == DType::Q8_1);
    CHECK(vec_dot_type(DType::Q6_K) == DType::Q8_K);
    CHECK(vec_dot_type(DType::F16) == DType::F32);
    for (DType t : weight_types()) CHECK(dtype_info(vec_dot_type(t)).block_size == dtype_info(t).block_size);
}

}  // TEST_SUITE("quant")
