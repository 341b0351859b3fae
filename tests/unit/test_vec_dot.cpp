// Dot products and the matmul kernel: every weight type's SIMD and scalar kernels against the
// float dot product of the dequantized rows, the vectorised activation quantizers against the
// reference ones, and matmul_rows against a loop of scalar dot products.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/matmul.h"
#include "cpu/vec_dot.h"
#include "test_quant_util.h"
#include "util/error.h"

using namespace lumen;
using namespace lumen::cpu;
using namespace lumen::testq;

namespace {

std::vector<uint8_t> activations(DType w, const std::vector<float>& x) {
    const DType vt = vec_dot_type(w);
    std::vector<uint8_t> row(row_bytes(vt, int64_t(x.size())));
    quantize_activations(vt, x.data(), row.data(), int64_t(x.size()));
    return row;
}

// The exact dot of the dequantized rows, and the tolerance a float kernel may be off by:
// float rounding relative to sum |w*a|, plus for Q8_1 partners the fp16 rounding of the stored
// block sums s that the min term uses (half an ulp: 2^-11 relative).
struct Expected { double dot, tol; };

Expected expected_dot(DType w, int64_t n, const void* wrow, const void* arow) {
    const auto wf = dequantized(w, wrow, n);
    const auto af = dequantized(vec_dot_type(w), arow, n);
    double dot = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        dot += double(wf[size_t(i)]) * af[size_t(i)];
        mag += std::fabs(double(wf[size_t(i)]) * af[size_t(i)]);
    }
    double tol = 2e-6 * mag + 1e-30;
    if (vec_dot_type(w) == DType::Q8_1) {
        const size_t wb = dtype_info(w).block_bytes;
        const auto* a = static_cast<const BlockQ8_1*>(arow);
        for (int64_t b = 0; b < n / 32; b++) {
            const float m = fp16_to_f32(*reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(wrow) + b * wb + 2));
            tol += std::fabs(m * fp16_to_f32(a[b].s)) * std::ldexp(1.0, -10);
        }
    }
    return {dot, tol};
}

// N weight rows of type w and M activation rows in its partner format, K values each, from
// gaussians (seed advanced per row).
struct Operands {
    size_t wstride, xstride;
    std::vector<uint8_t> W, X;
};

Operands operands(DType w, int64_t N, int64_t K, int64_t M, uint64_t& seed) {
    Operands o{row_bytes(w, K), row_bytes(vec_dot_type(w), K), {}, {}};
    o.W.resize(o.wstride * size_t(N));
    o.X.resize(o.xstride * size_t(M));
    for (int64_t n = 0; n < N; n++) {
        const auto row = quantized_row(w, gaussian(size_t(K), seed++, 0.1f));
        std::copy(row.begin(), row.end(), o.W.begin() + n * int64_t(o.wstride));
    }
    for (int64_t m = 0; m < M; m++) {
        const auto row = activations(w, gaussian(size_t(K), seed++));
        std::copy(row.begin(), row.end(), o.X.begin() + m * int64_t(o.xstride));
    }
    return o;
}

}  // namespace

TEST_SUITE("vec_dot") {

TEST_CASE("every weight type, SIMD and scalar, matches the dequantized float dot") {
    MESSAGE("kernels compiled for: " << std::string(vec_dot_isa()) << ", matmul " << std::string(matmul_isa()));
    uint64_t seed = 1;
    for (DType w : weight_types()) {
        for (int64_t n : test_lengths(w)) {
            for (int variant = 0; variant < 3; variant++) {
                const std::string type_name = dtype_name(w);
        CAPTURE(type_name);
                CAPTURE(n);
                CAPTURE(variant);  // 0: quantized gaussian weights, 1-2: random bytes
                const auto x = gaussian(size_t(n), seed++, 0.05f);
                const auto wrow = variant == 0 ? quantized_row(w, x) : random_row(w, n, seed++);
                const auto arow = activations(w, gaussian(size_t(n), seed++, 2.0f));
                const Expected e = expected_dot(w, n, wrow.data(), arow.data());
                const double simd = vec_dot(w, n, wrow.data(), arow.data());
                const double scal = vec_dot_scalar(w, n, wrow.data(), arow.data());
                CHECK(std::fabs(simd - e.dot) <= e.tol);
                CHECK(std::fabs(scal - e.dot) <= e.tol);
            }
        }
    }
}

TEST_CASE("extreme quants do not overflow the integer sums") {
    // All bits set gives every format its largest level (Q8_0: -1; the test below covers -128);
    // activations at +-127 everywhere.
    for (DType w : weight_types()) {
        if (dtype_info(w).block_size == 1) continue;
        const std::string type_name = dtype_name(w);
        CAPTURE(type_name);
        const int64_t n = dtype_info(w).block_size * 4;
        std::vector<uint8_t> wrow(row_bytes(w, n), 0xFF);
        for (size_t off = 0; off < wrow.size(); off += dtype_info(w).block_bytes)
            for (int f : fp16_fields(w)) {
                const uint16_t h = f32_to_fp16(0.01f);
                std::memcpy(wrow.data() + off + size_t(f), &h, 2);
            }
        if (w == DType::Q8_0)
            for (size_t off = 0; off < wrow.size(); off += 34) std::memset(wrow.data() + off + 2, 0x80, 32);
        for (float sign : {1.0f, -1.0f}) {
            const auto arow = activations(w, std::vector<float>(size_t(n), sign * 3.0f));
            const Expected e = expected_dot(w, n, wrow.data(), arow.data());
            CHECK(std::fabs(vec_dot(w, n, wrow.data(), arow.data()) - e.dot) <= e.tol);
            std::vector<uint8_t> xs;
            for (int m = 0; m < 8; m++) xs.insert(xs.end(), arow.begin(), arow.end());
            std::vector<float> y(8 * 8, 0.0f);
            std::vector<uint8_t> ws;
            for (int r = 0; r < 8; r++) ws.insert(ws.end(), wrow.begin(), wrow.end());
            matmul_rows(w, ws.data(), wrow.size(), xs.data(), arow.size(), y.data(), 8, n, 0, 8, 8);
            for (float v : y) CHECK(std::fabs(v - e.dot) <= e.tol);
        }
    }
}

// ggml's x86 activation quantizer for Q8_0 / Q8_1 (what the SIMD builds reproduce): scale by
// 127 / max, round halves to even; s = d * sum of the quants.
std::vector<uint8_t> ggml_x86_q8(DType vt, const std::vector<float>& x) {
    std::vector<uint8_t> out(row_bytes(vt, int64_t(x.size())));
    const size_t bb = dtype_info(vt).block_bytes;
    for (size_t b = 0; b < x.size() / 32; b++) {
        float amax = 0;
        for (size_t j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[32 * b + j]));
        const float d = amax / 127, id = amax != 0 ? 127.0f / amax : 0.0f;
        uint8_t* blk = out.data() + b * bb;
        const size_t qs = vt == DType::Q8_1 ? 4 : 2;
        int sum = 0;
        for (size_t j = 0; j < 32; j++) {
            const int q = int(std::nearbyint(x[32 * b + j] * id));
            blk[qs + j] = uint8_t(int8_t(q));
            sum += q;
        }
        const uint16_t hd = f32_to_fp16(d), hs = f32_to_fp16(d * float(sum));
        std::memcpy(blk, &hd, 2);
        if (vt == DType::Q8_1) std::memcpy(blk + 2, &hs, 2);
    }
    return out;
}

TEST_CASE("vectorised activation quantizers write ggml's bytes") {
    const bool simd = std::string(vec_dot_isa()) != "scalar";
    for (DType vt : {DType::Q8_0, DType::Q8_1, DType::Q8_K, DType::F32}) {
        const std::string type_name = dtype_name(vt);
        CAPTURE(type_name);
        for (int64_t n : {256, 512, 1536}) {
            std::vector<float> x = gaussian(size_t(n), uint64_t(n) + 5, 3.0f);
            // Exact halves: with amax = 127 the Q8_0/Q8_1 scale is 1, so these values are ties.
            x[0] = 127.0f;
            x[1] = 0.5f;
            x[2] = -2.5f;
            x[3] = 3.5f;
            x[32] = -127.0f;  // Q8_K: max = -127 gives iscale 1 as well (when it comes first)
            x[33] = 6.5f;
            x[34] = -0.5f;
            std::vector<uint8_t> ref(row_bytes(vt, n)), got(row_bytes(vt, n), 0xAB);
            quantize_row(vt, x.data(), ref.data(), n);
            if (simd && (vt == DType::Q8_0 || vt == DType::Q8_1)) ref = ggml_x86_q8(vt, x);
            quantize_activations(vt, x.data(), got.data(), n);
            CHECK(got == ref);
        }
    }
}

TEST_CASE("matmul_rows matches a loop of scalar dot products") {
    const int64_t N = 37;
    uint64_t seed = 100;
    for (DType w : weight_types()) {
        const int64_t bs = dtype_info(w).block_size;
        // The third K is longer than one tile chunk (2048 quantized values, 256 floats).
        for (int64_t K : {bs == 256 ? int64_t(512) : bs == 32 ? int64_t(96) : int64_t(37),
                          bs == 256 ? int64_t(256) : bs == 32 ? int64_t(576) : int64_t(64),
                          bs == 256 ? int64_t(2304) : bs == 32 ? int64_t(2080) : int64_t(300)}) {
            const DType vt = vec_dot_type(w);
            // Rows with padding between them, as views into bigger tensors have (keeping the blocks'
            // natural alignment).
            const size_t wstride = row_bytes(w, K) + 8, xstride = row_bytes(vt, K) + 12;
            std::vector<uint8_t> W(wstride * N), X(xstride * 64);
            for (int64_t n = 0; n < N; n++) {
                const auto row = n % 2 ? random_row(w, K, seed++) : quantized_row(w, gaussian(size_t(K), seed++, 0.1f));
                std::copy(row.begin(), row.end(), W.begin() + n * int64_t(wstride));
            }
            for (int64_t m = 0; m < 64; m++) {
                const auto row = activations(w, gaussian(size_t(K), seed++));
                std::copy(row.begin(), row.end(), X.begin() + m * int64_t(xstride));
            }
            for (int64_t M : {1, 3, 17, 64}) {
                for (auto range : {std::pair<int64_t, int64_t>{0, N}, {3, 20}, {8, 16}, {36, 37}, {5, 5}}) {
                    const std::string type_name = dtype_name(w);
        CAPTURE(type_name);
                    CAPTURE(K);
                    CAPTURE(M);
                    CAPTURE(range.first);
                    CAPTURE(range.second);
                    const int64_t ldy = N + 3;
                    const float sentinel = 12345.0f;
                    std::vector<float> Y(size_t(ldy * M), sentinel), R(size_t(ldy * M), sentinel);
                    matmul_rows(w, W.data(), wstride, X.data(), xstride, Y.data(), ldy, K, range.first, range.second, M);
                    matmul_rows_reference(w, W.data(), wstride, X.data(), xstride, R.data(), ldy, K, range.first,
                                          range.second, M);
                    int bad = 0;
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t n = 0; n < ldy; n++) {
                            const float y = Y[size_t(m * ldy + n)], r = R[size_t(m * ldy + n)];
                            if (n < range.first || n >= range.second) {
                                if (y != sentinel) bad++;  // outside the range: untouched
                                continue;
                            }
                            const Expected e = expected_dot(w, K, W.data() + n * int64_t(wstride),
                                                            X.data() + m * int64_t(xstride));
                            if (!(std::fabs(double(y) - r) <= 2 * e.tol)) bad++;
                        }
                    CHECK(bad == 0);
                }
            }
        }
    }
}

TEST_CASE("matmul_rows gives every output the same bits whatever the batch") {
    // Batch invariance is what makes chunked prompts, chat's KV reuse and speculative verification
    // exact.
    const int64_t N = 40, K = 640, MMAX = 9;
    uint64_t seed = 900;
    for (DType w : weight_types()) {
        const int64_t bs = dtype_info(w).block_size;
        const int64_t k = bs == 256 ? 768 : K;
        const Operands ops = operands(w, N, k, MMAX, seed);
        const size_t wstride = ops.wstride, xstride = ops.xstride;
        const std::vector<uint8_t>&W = ops.W, &X = ops.X;
        const std::string type_name = dtype_name(w);
        CAPTURE(type_name);
        std::vector<float> one(size_t(N * MMAX));
        for (int64_t m = 0; m < MMAX; m++)
            matmul_rows(w, W.data(), wstride, X.data() + m * int64_t(xstride), xstride, one.data() + m * N, N, k, 0, N, 1);
        int bad_batch = 0;
        for (int64_t M = 2; M <= MMAX; M++) {
            std::vector<float> Y(size_t(N * M));
            matmul_rows(w, W.data(), wstride, X.data(), xstride, Y.data(), N, k, 0, 16, M);
            matmul_rows(w, W.data(), wstride, X.data(), xstride, Y.data(), N, k, 16, N, M);
            for (int64_t i = 0; i < N * M; i++) bad_batch += Y[size_t(i)] != one[size_t(i)];
        }
        CHECK(bad_batch == 0);
    }
}

TEST_CASE("integer formats: the kernel for few tokens adds up each output as the tiles do") {
    // Decode (1-4 tokens) reads the blocks in place; more tokens go through decoded tiles
    // (matmul_few_avx2.cpp, matmul_tile_avx2.cpp). Speculative verification and prompt chunks
    // depend on both giving the same bits. Rows that are not a multiple of 8, thread slices that
    // start mid-tile, rows longer than the tiles' K chunk (2048), and legacy rows that end in a
    // part of a 256-value unit included.
    const int64_t N = 29, M = 7;
    uint64_t seed = 4100;
    for (DType w : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q4_0, DType::Q4_1,
                    DType::Q5_0, DType::Q5_1, DType::Q8_0}) {
        const int64_t K = dtype_info(w).block_size == 256 ? 2560 : 2400;
        const Operands ops = operands(w, N, K, M, seed);
        const size_t wstride = ops.wstride, xstride = ops.xstride;
        const std::vector<uint8_t>&W = ops.W, &X = ops.X;
        const std::string type_name = dtype_name(w);
        CAPTURE(type_name);
        std::vector<float> tiles(size_t(N * M));  // all 7 tokens at once: the tiled kernel
        matmul_rows(w, W.data(), wstride, X.data(), xstride, tiles.data(), N, K, 0, N, M);
        int bad = 0;
        for (int64_t few = 1; few <= 4; few++)
            for (int64_t m0 = 0; m0 + few <= M; m0 += few) {
                std::vector<float> Y(size_t(N * few), -1.0f);
                for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 5}, {5, 16}, {16, N}})
                    matmul_rows(w, W.data(), wstride, X.data() + m0 * int64_t(xstride), xstride, Y.data(), N, K, b, e, few);
                for (int64_t m = 0; m < few; m++)
                    for (int64_t n = 0; n < N; n++)
                        bad += std::memcmp(&Y[size_t(m * N + n)], &tiles[size_t((m0 + m) * N + n)], sizeof(float)) != 0;
            }
        CHECK(bad == 0);
    }
}

TEST_CASE("bad arguments are a lumen::Error") {
    std::vector<uint8_t> buf(4096);
    std::vector<float> y(64);
    CHECK_THROWS_AS(vec_dot(DType::Q4_0, 48, buf.data(), buf.data()), Error);
    CHECK_THROWS_AS(vec_dot(DType::IQ2_XS, 256, buf.data(), buf.data()), Error);
    CHECK_THROWS_AS(vec_dot_scalar(DType::Q8_1, 32, buf.data(), buf.data()), Error);
    CHECK_THROWS_AS(matmul_rows(DType::Q4_K, buf.data(), 144, buf.data(), 292, y.data(), 1, 128, 0, 1, 1), Error);
    CHECK_THROWS_AS(matmul_rows(DType::TQ2_0, buf.data(), 66, buf.data(), 292, y.data(), 1, 256, 0, 1, 1), Error);
}

}  // TEST_SUITE("vec_dot")
