// The decode kernels of cuda/matvec.cuh on the host emulator: weights quantized by the CPU's
// quantizers, repacked (cuda/repack.h), multiplied with int8 activations from the activation
// kernel, and compared with the CPU's dequantized weights; the f16 copy and get_rows of packed
// weights must equal the CPU's dequantization exactly.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "matvec.cuh"
#include "simt_emulator.h"
#include "tensor/half.h"
#include "tensor/quant.h"
#include "test_quant_util.h"

using lumen::DType;
using lumen::simt::Dim;
using lumen::simt::Emu;
namespace cu = lumen::cuda;

namespace {

// 16-byte aligned bytes, as cudaMalloc gives.
struct Aligned {
    std::vector<lumen::simt::u32x4> v;
    explicit Aligned(size_t bytes = 0) : v((bytes + 15) / 16 + 1) {}
    uint8_t* data() { return reinterpret_cast<uint8_t*>(v.data()); }
};

struct Weight {
    DType t;
    int64_t K, N;
    cu::WeightLayout L;
    std::vector<uint8_t> gguf;
    Aligned packed;
    std::vector<float> deq;  // the CPU's dequantization, row-major
};

Weight make_weight(DType t, int64_t K, int64_t N, uint64_t seed) {
    Weight w{t, K, N, {}, {}, Aligned(), {}};
    const size_t rb = lumen::row_bytes(t, K);
    w.gguf.resize(rb * size_t(N));
    const std::vector<float> v = lumen::testq::gaussian(size_t(K * N), seed);
    for (int64_t n = 0; n < N; n++) lumen::quantize_row(t, v.data() + n * K, w.gguf.data() + size_t(n) * rb, K);
    w.L = cu::weight_layout(int(t), K, N, rb, true);
    REQUIRE(w.L.packed);
    w.packed = Aligned(w.L.bytes);
    cu::repack_rows(w.L, w.gguf.data(), rb, 0, N, w.packed.data());
    w.deq.resize(size_t(K * N));
    for (int64_t n = 0; n < N; n++) lumen::dequantize_row(t, w.gguf.data() + size_t(n) * rb, w.deq.data() + n * K, K);
    return w;
}

struct Acts {
    int64_t K, M;
    Aligned xf;            // f32, rows K apart
    Aligned xq;            // int8
    std::vector<cu::ActBlock> xa;
    float* f() { return reinterpret_cast<float*>(xf.data()); }
    int8_t* q() { return reinterpret_cast<int8_t*>(xq.data()); }
};

// M columns of K gaussian activations, quantized by the activation kernel.
Acts make_acts(int64_t K, int64_t M, uint64_t seed) {
    Acts a{K, M, Aligned(size_t(K * M) * 4), Aligned(size_t(K * M)), std::vector<cu::ActBlock>(size_t(K / 32 * M))};
    const std::vector<float> v = lumen::testq::gaussian(size_t(K * M), seed);
    std::copy(v.begin(), v.end(), a.f());
    const int threads = 64;
    const Dim grid{int((K / 32 * 8 + threads - 1) / threads), int(M), 1};
    Emu::launch(grid, threads, 0,
                [&](Emu& c) { cu::quantize_act_body(c, a.f(), size_t(K), K, a.q(), a.xa.data()); });
    return a;
}

template <int T, int R, int MC>
void emu_matvec(const cu::MatvecArgs& a, int64_t blocks) {
    Emu::launch(Dim{int(blocks), 1, 1}, cu::kMatvecThreads, cu::kMatvecSmem,
                [&](Emu& c) { cu::matvec_body<T, R, MC>(c, a); });
}

template <int T, int R>
void emu_matvec_r(const cu::MatvecArgs& a, int64_t blocks, int MC) {
    switch (MC) {
        case 1: emu_matvec<T, R, 1>(a, blocks); break;
        case 2: emu_matvec<T, R, 2>(a, blocks); break;
        case 4: emu_matvec<T, R, 4>(a, blocks); break;
        default: emu_matvec<T, R, 8>(a, blocks); break;
    }
}

template <int T>
void emu_matvec_t(const cu::MatvecArgs& a, int64_t blocks, int R, int MC) {
    switch (R) {
        case 1: emu_matvec_r<T, 1>(a, blocks, MC); break;
        case 2: emu_matvec_r<T, 2>(a, blocks, MC); break;
        default: emu_matvec_r<T, 4>(a, blocks, MC); break;
    }
}

// Y_i = W_i x for weights of one type and K, in one launch tiled by t.
std::vector<std::vector<float>> run_matvec(const std::vector<Weight*>& ws, Acts& x, int M, const cu::MatvecTiling& t) {
    std::vector<std::vector<float>> y;
    for (Weight* w : ws) y.emplace_back(size_t(w->N * M), -1.0f);
    cu::MatvecArgs a{};
    a.xq = x.q();
    a.xa = x.xa.data();
    a.xf = x.f();
    a.x_stride = size_t(x.K);
    a.M = M;
    int64_t blocks = 0;
    for (size_t i = 0; i < ws.size(); i++)
        blocks = cu::matvec_add_part(a, t, ws[i]->packed.data(), ws[i]->L, y[i].data(), ws[i]->N);
    switch (ws[0]->L.type) {
        case cu::T_Q4_0: emu_matvec_t<cu::T_Q4_0>(a, blocks, t.rows, t.cols); break;
        case cu::T_Q8_0: emu_matvec_t<cu::T_Q8_0>(a, blocks, t.rows, t.cols); break;
        case cu::T_Q4_K: emu_matvec_t<cu::T_Q4_K>(a, blocks, t.rows, t.cols); break;
        case cu::T_Q6_K: emu_matvec_t<cu::T_Q6_K>(a, blocks, t.rows, t.cols); break;
        case cu::T_F16: emu_matvec_t<cu::T_F16>(a, blocks, t.rows, t.cols); break;
        default: FAIL("no packed kernel for this type");
    }
    return y;
}

// The worst error of y = W x against the CPU's weights times the activations the kernel saw (int8
// ones for the integer types), relative to the sum of |terms|: only the summation order differs,
// so it is a small multiple of float rounding.
double matvec_error(const Weight& w, Acts& x, int M, const std::vector<float>& y) {
    const bool f16 = w.t == DType::F16;
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int64_t n = 0; n < w.N; n++) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < w.K; k++) {
                const double xv = f16 ? double(x.f()[m * w.K + k])
                                      : double(x.xa[size_t(m * (w.K / 32) + k / 32)].d) * x.q()[m * w.K + k];
                ref += double(w.deq[size_t(n * w.K + k)]) * xv;
                mag += std::fabs(double(w.deq[size_t(n * w.K + k)]) * xv);
            }
            worst = std::max(worst, std::fabs(double(y[size_t(m * w.N + n)]) - ref) / (mag + 1e-30));
        }
    return worst;
}

void check_matvec(Weight& w, Acts& x, int M, int tu, int R, int MC) {
    CAPTURE(tu);
    CAPTURE(R);
    CAPTURE(MC);
    CAPTURE(M);
    const cu::MatvecTiling t{tu, R, MC, 0};
    CHECK(matvec_error(w, x, M, run_matvec({&w}, x, M, t)[0]) < 2e-6);
}

const DType kTypes[] = {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F16};

// A row length of several blocks, and one whose chunks need more than one pass of a 32-thread
// group (every K-quant row is a multiple of 256, the others of 32 only).
std::vector<int64_t> lengths(DType t) {
    switch (t) {
        case DType::Q4_0: return {96, 2336};
        case DType::Q8_0: return {96, 1056};
        case DType::Q4_K: return {256, 2304};
        case DType::Q6_K: return {256, 1280};
        default: return {96, 576};
    }
}

}  // namespace

TEST_CASE("simt matvec: activations to int8 per 32, with the sums of each half") {
    const int64_t K = 96, M = 3;
    Acts x = make_acts(K, M, 7);
    for (int64_t b = 0; b < K / 32 * M; b++) {
        const float* v = x.f() + b * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(v[i]));
        const cu::ActBlock& a = x.xa[size_t(b)];
        CHECK(a.d == lumen::fp16_to_f32_scalar(lumen::f32_to_fp16_scalar(amax / 127.0f)));  // f16, as Q8_0's
        int s[2] = {0, 0};
        for (int i = 0; i < 32; i++) {
            const int q = x.q()[b * 32 + i];
            CHECK(std::abs(q - int(std::lround(v[i] / a.d))) <= 1);
            s[i / 16] += q;
        }
        CHECK(a.s[0] == s[0]);
        CHECK(a.s[1] == s[1]);
    }
}

TEST_CASE("simt matvec: packed weights times 1, 2, 5, 8 columns match the CPU's dequantized rows") {
    for (DType t : kTypes) {
        for (int64_t K : lengths(t)) {
            const std::string name = lumen::dtype_name(t);
            CAPTURE(name);
            CAPTURE(K);
            Weight w = make_weight(t, K, 37, 11 + uint64_t(K));
            Acts x = make_acts(K, 8, 23 + uint64_t(K));
            for (int M : {1, 2, 5, 8}) {
                const cu::MatvecTiling tl = cu::matvec_tiling(int(t), K, w.N, M, 1);  // one SM: few emulated blocks
                check_matvec(w, x, M, tl.tu, tl.rows, tl.cols);
            }
        }
    }
}

TEST_CASE("simt matvec: every tiling (threads per row, rows per group, column capacity)") {
    for (DType t : kTypes) {
        const std::string name = lumen::dtype_name(t);
        CAPTURE(name);
        const int64_t K = lengths(t)[1];
        Weight w = make_weight(t, K, 6, 5);  // not a multiple of 4 rows: the last group reads row 5 twice, stores once
        Acts x = make_acts(K, 8, 6);
        for (int tu : {32, 64, 128})
            for (int R : {1, 2, 4})
                for (int MC : {1, 8}) check_matvec(w, x, MC == 1 ? 1 : 3, tu, R, MC);
    }
}

TEST_CASE("simt matvec: weights sharing the activations share a launch (Q, K, V)") {
    for (DType t : kTypes) {
        const std::string name = lumen::dtype_name(t);
        CAPTURE(name);
        const int64_t K = lengths(t)[0];
        Weight q = make_weight(t, K, 37, 1), k = make_weight(t, K, 5, 2), v = make_weight(t, K, 2, 3);
        Acts x = make_acts(K, 2, 4);
        for (int M : {1, 2}) {
            CAPTURE(M);
            const cu::MatvecTiling tl = cu::matvec_tiling(int(t), K, 37 + 5 + 2, M, 1);
            const auto y = run_matvec({&q, &k, &v}, x, M, tl);
            CHECK(matvec_error(q, x, M, y[0]) < 2e-6);
            CHECK(matvec_error(k, x, M, y[1]) < 2e-6);
            CHECK(matvec_error(v, x, M, y[2]) < 2e-6);
        }
    }
}

TEST_CASE("simt matvec: tilings keep every SM busy and rows fed") {
    // Llama-3 8B's products at batch 1 on 132 SMs.
    const cu::MatvecTiling a = cu::matvec_tiling(cu::T_Q4_0, 4096, 14336, 1, 132);
    CHECK(a.tu == 128);
    CHECK(a.rows == 4);
    const cu::MatvecTiling b = cu::matvec_tiling(cu::T_Q4_0, 4096, 1024, 1, 132);
    CHECK(b.blocks >= 2 * 132);
    const cu::MatvecTiling c = cu::matvec_tiling(cu::T_Q4_0, 576, 192, 8, 132);  // SmolLM2: 18 chunks a row
    CHECK(c.tu == 32);
    CHECK(c.cols == 8);
}

TEST_CASE("simt matvec: f16 copy and get_rows of packed weights equal the CPU's dequantization") {
    for (DType t : kTypes) {
        const std::string name = lumen::dtype_name(t);
        CAPTURE(name);
        const int64_t K = lengths(t)[0], N = 5;
        Weight w = make_weight(t, K, N, 3);
        std::vector<uint16_t> f16(size_t(K * N), 0);
        const int threads = 64;
        const int blocks = int((K / 32 * N + threads - 1) / threads);
        Emu::launch(Dim{blocks, 1, 1}, threads, 0, [&](Emu& c) {
            switch (w.L.type) {
                case cu::T_Q4_0: cu::dequant_f16_body<cu::T_Q4_0>(c, w.packed.data(), w.L, f16.data()); break;
                case cu::T_Q8_0: cu::dequant_f16_body<cu::T_Q8_0>(c, w.packed.data(), w.L, f16.data()); break;
                case cu::T_Q4_K: cu::dequant_f16_body<cu::T_Q4_K>(c, w.packed.data(), w.L, f16.data()); break;
                case cu::T_Q6_K: cu::dequant_f16_body<cu::T_Q6_K>(c, w.packed.data(), w.L, f16.data()); break;
                default: cu::dequant_f16_body<cu::T_F16>(c, w.packed.data(), w.L, f16.data()); break;
            }
        });
        int bad = 0;
        for (size_t i = 0; i < f16.size(); i++) bad += f16[i] != lumen::f32_to_fp16(w.deq[i]);
        CHECK(bad == 0);

        const std::vector<int32_t> ids = {4, 0, 4, 2};
        std::vector<float> rows(ids.size() * size_t(K) + 8, -1.0f);
        const size_t out_stride = size_t(K) * 4;
        Emu::launch(Dim{int((K / 32 + 31) / 32), int(ids.size()), 1}, 32, 0, [&](Emu& c) {
            switch (w.L.type) {
                case cu::T_Q4_0: cu::get_rows_body<cu::T_Q4_0>(c, w.packed.data(), w.L, ids.data(), rows.data(), out_stride); break;
                case cu::T_Q8_0: cu::get_rows_body<cu::T_Q8_0>(c, w.packed.data(), w.L, ids.data(), rows.data(), out_stride); break;
                case cu::T_Q4_K: cu::get_rows_body<cu::T_Q4_K>(c, w.packed.data(), w.L, ids.data(), rows.data(), out_stride); break;
                case cu::T_Q6_K: cu::get_rows_body<cu::T_Q6_K>(c, w.packed.data(), w.L, ids.data(), rows.data(), out_stride); break;
                default: cu::get_rows_body<cu::T_F16>(c, w.packed.data(), w.L, ids.data(), rows.data(), out_stride); break;
            }
        });
        bad = 0;
        for (size_t r = 0; r < ids.size(); r++)
            for (int64_t k = 0; k < K; k++) bad += rows[r * size_t(K) + size_t(k)] != w.deq[size_t(ids[r] * K + k)];
        CHECK(bad == 0);
    }
}

TEST_CASE("simt matvec: layouts keep GGUF's bytes per weight and align every plane") {
    for (DType t : kTypes) {
        const int64_t K = 4096, N = 1024;
        const cu::WeightLayout L = cu::weight_layout(int(t), K, N, lumen::row_bytes(t, K), true);
        size_t payload = 0;
        for (int p = 0; p < 4; p++) {
            CHECK(L.off[p] % 256 == 0);
            payload += L.stride[p] * size_t(N);
        }
        CHECK(payload == lumen::row_bytes(t, K) * size_t(N));
        CHECK(L.stride[0] % 16 == 0);
    }
    // Types without a packed layout, and rows that do not fit one, keep GGUF's rows.
    CHECK_FALSE(cu::weight_layout(cu::T_Q5_K, 4096, 8, 176 * 16, true).packed);
    CHECK_FALSE(cu::weight_layout(cu::T_Q4_0, 4096, 8, 18 * 128, false).packed);
}
