// The kernels for weights kept in GGUF's rows (cuda/matvec_rows.cuh) on the host emulator, with
// the grids, block sizes and shared memory of their launchers in matvec.cu: products for every
// type the launcher dispatches against the CPU's dequantized rows, and the f16 copy and get_rows
// exactly equal to the CPU's dequantization.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "matvec_rows.cuh"
#include "simt_emulator.h"
#include "tensor/half.h"
#include "tensor/quant.h"
#include "test_quant_util.h"

using lumen::DType;
using lumen::simt::Dim;
using lumen::simt::Emu;
namespace cu = lumen::cuda;
namespace rows = lumen::cuda::rows;

namespace {

// 16-byte aligned memory, as cudaMalloc gives, with 16 bytes to spare: the staging copy reads
// whole 16-byte words, so up to 15 bytes past the last row.
template <class T>
struct Buf {
    std::vector<lumen::simt::u32x4> v;
    explicit Buf(size_t n) : v((n * sizeof(T) + 15) / 16 + 1) {}
    T* data() { return reinterpret_cast<T*>(v.data()); }
};

struct Rows {
    DType t;
    int64_t K, N;
    size_t stride;  // GGUF's row bytes: most types' rows do not start 16-byte aligned
    Buf<uint8_t> mem;
    std::vector<float> deq;  // the CPU's dequantization, row-major
};

// Random blocks: every quant level and scale bit occurs (gaussian values for the float types).
Rows make_rows(DType t, int64_t K, int64_t N, uint64_t seed) {
    const size_t rb = lumen::row_bytes(t, K);
    Rows w{t, K, N, rb, Buf<uint8_t>(rb * size_t(N)), std::vector<float>(size_t(K * N))};
    for (int64_t n = 0; n < N; n++) {
        const std::vector<uint8_t> row = lumen::testq::random_row(t, K, seed + uint64_t(n));
        std::copy(row.begin(), row.end(), w.mem.data() + size_t(n) * rb);
        lumen::dequantize_row(t, row.data(), w.deq.data() + n * K, K);
    }
    return w;
}

// M columns of K gaussian activations, and their int8 form from the activation kernel.
struct Acts {
    int64_t K, M;
    Buf<float> f;
    Buf<int8_t> q;
    std::vector<cu::ActBlock> blocks;
};

Acts make_acts(int64_t K, int64_t M, uint64_t seed) {
    Acts a{K, M, Buf<float>(size_t(K * M)), Buf<int8_t>(size_t(K * M)), std::vector<cu::ActBlock>(size_t(K / 32 * M))};
    const std::vector<float> v = lumen::testq::gaussian(size_t(K * M), seed);
    std::copy(v.begin(), v.end(), a.f.data());
    const int threads = 64;
    Emu::launch(Dim{int((K / 32 * 8 + threads - 1) / threads), int(M), 1}, threads, 0,
                [&](Emu& c) { cu::quantize_act_body(c, a.f.data(), size_t(K), K, a.q.data(), a.blocks.data()); });
    return a;
}

// Calls f(std::integral_constant<int, T>()) for the types matvec.cu's dispatch() has kernels for.
template <class F>
void with_type(DType t, F&& f) {
    switch (t) {
        case DType::F32: f(std::integral_constant<int, cu::T_F32>()); break;
        case DType::F16: f(std::integral_constant<int, cu::T_F16>()); break;
        case DType::BF16: f(std::integral_constant<int, cu::T_BF16>()); break;
        case DType::Q4_0: f(std::integral_constant<int, cu::T_Q4_0>()); break;
        case DType::Q4_1: f(std::integral_constant<int, cu::T_Q4_1>()); break;
        case DType::Q5_0: f(std::integral_constant<int, cu::T_Q5_0>()); break;
        case DType::Q5_1: f(std::integral_constant<int, cu::T_Q5_1>()); break;
        case DType::Q8_0: f(std::integral_constant<int, cu::T_Q8_0>()); break;
        case DType::Q2_K: f(std::integral_constant<int, cu::T_Q2_K>()); break;
        case DType::Q3_K: f(std::integral_constant<int, cu::T_Q3_K>()); break;
        case DType::Q4_K: f(std::integral_constant<int, cu::T_Q4_K>()); break;
        case DType::Q5_K: f(std::integral_constant<int, cu::T_Q5_K>()); break;
        case DType::Q6_K: f(std::integral_constant<int, cu::T_Q6_K>()); break;
        default: FAIL("no row kernels for " << lumen::dtype_name(t));
    }
}

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// The 32-element formats, which the launcher multiplies with int8 activations.
bool int8_type(DType t) {
    return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1 || t == DType::Q8_0;
}

// 17 blocks of 32, or 2 super-blocks: a partial last pass of the warp's lanes either way.
int64_t row_length(DType t) { return lumen::dtype_info(t).block_size == 256 ? 512 : 544; }

// Y[m * ldy + n] for M columns, ldy > N so that a write outside the rows shows; plus R[m * ldr + n]
// when `ldr` >= 0 (ldr = 0: one row added to every column).
struct Target {
    int64_t N, M, ldy, ldr;
    std::vector<float> y, r;
    Target(int64_t n, int64_t m, int64_t ldr_, uint64_t seed)
        : N(n), M(m), ldy(n + 3), ldr(ldr_), y(size_t(m * (n + 3)), -7.0f) {
        if (ldr >= 0) r = lumen::testq::gaussian(size_t(ldr * (m - 1) + n), seed);
    }
    rows::Out out() { return {y.data(), ldy, r.empty() ? nullptr : r.data(), ldr}; }
};

// Y = W X (+ R) as matvec() launches it: one warp per row, kWarps rows per block.
template <int T>
void run_product(Rows& w, Acts& x, bool int8, Target& t) {
    const Dim grid{int((w.N + rows::kWarps - 1) / rows::kWarps), 1, 1};
    const rows::Out o = t.out();
    const int K = int(w.K), N = int(w.N), M = int(t.M);
    if (int8) {
        using Kern = rows::MatvecQ8Kernel<T>;
        Emu::launch(grid, Kern::kThreads, rows::kStageBytes, [&](Emu& c) {
            Kern::run(c, w.mem.data(), w.stride, x.q.data(), x.blocks.data(), o, K, N, M);
        });
    } else {
        using Kern = rows::MatvecKernel<T>;
        Emu::launch(grid, Kern::kThreads, rows::kStageBytes,
                    [&](Emu& c) { Kern::run(c, w.mem.data(), w.stride, x.f.data(), size_t(x.K), o, K, N, M); });
    }
}

// The worst error of Y against W x + R, relative to the sum of |terms|, with x the activations the
// kernel saw (their int8 form on the int8 path): only rounding and the order of the sums differ.
// A write into the gaps of Y counts as an error of 1.
double product_error(Rows& w, Acts& x, bool int8, Target& t) {
    double worst = 0;
    for (int64_t m = 0; m < t.M; m++) {
        for (int64_t n = 0; n < w.N; n++) {
            double ref = t.r.empty() ? 0.0 : double(t.r[size_t(m * t.ldr + n)]), mag = std::fabs(ref);
            for (int64_t k = 0; k < w.K; k++) {
                const double xv = int8 ? double(x.blocks[size_t(m * (w.K / 32) + k / 32)].d) * x.q.data()[m * w.K + k]
                                       : double(x.f.data()[m * w.K + k]);
                const double term = double(w.deq[size_t(n * w.K + k)]) * xv;
                ref += term;
                mag += std::fabs(term);
            }
            worst = std::max(worst, std::fabs(double(t.y[size_t(m * t.ldy + n)]) - ref) / (mag + 1e-30));
        }
        for (int64_t n = w.N; n < t.ldy; n++)
            if (t.y[size_t(m * t.ldy + n)] != -7.0f) worst = 1;
    }
    return worst;
}

void check_products(DType t, int64_t K, int64_t N, const std::vector<int>& columns, uint64_t seed) {
    const std::string name = lumen::dtype_name(t);
    CAPTURE(name);
    CAPTURE(K);
    Rows w = make_rows(t, K, N, seed);
    Acts x = make_acts(K, 8, seed + 100);
    // The launcher takes the int8 path for the 32-element formats; their f32 path (decode4) is
    // checked as well.
    std::vector<bool> paths = {false};
    if (int8_type(t)) paths.push_back(true);
    for (bool int8 : paths)
        for (int M : columns) {
            CAPTURE(int8);
            CAPTURE(M);
            // No addend at one column; per-column rows at three; one broadcast row at eight.
            Target y(N, M, M == 1 ? -1 : M == 3 ? N : 0, seed + 200);
            with_type(t, [&](auto tc) { run_product<decltype(tc)::value>(w, x, int8, y); });
            CHECK(product_error(w, x, int8, y) < 2e-6);
        }
}

}  // namespace

TEST_CASE("simt matvec rows: every GGUF type times 1, 3, 8 columns matches the CPU's dequantized rows") {
    for (DType t : kTypes) check_products(t, row_length(t), 11, {1, 3, 8}, 31);  // 11 rows: a block's last warps idle
}

TEST_CASE("simt matvec rows: rows longer than one staged segment") {
    check_products(DType::F32, 2 * rows::kSegElems<cu::T_F32> + 96, 5, {1, 3}, 41);  // three segments
    check_products(DType::Q8_0, rows::kSegElems<cu::T_Q8_0> + 160, 5, {1, 3}, 43);   // the second one unaligned
    check_products(DType::Q6_K, rows::kSegElems<cu::T_Q6_K> + 256, 3, {2}, 47);
}

TEST_CASE("simt matvec rows: f16 copy and get_rows equal the CPU's dequantization") {
    for (DType t : kTypes) {
        const std::string name = lumen::dtype_name(t);
        CAPTURE(name);
        const int64_t K = row_length(t), N = 5;
        Rows w = make_rows(t, K, N, 53);

        // dequant_rows_f16: one thread per 32 elements.
        std::vector<uint16_t> f16(size_t(K * N) + 2, 0x7E00);  // two past the end must stay NaN
        with_type(t, [&](auto tc) {
            using Kern = rows::DequantF16Kernel<decltype(tc)::value>;
            const Dim grid{int((K / 32 * N + Kern::kThreads - 1) / Kern::kThreads), 1, 1};
            Emu::launch(grid, Kern::kThreads, 0,
                        [&](Emu& c) { Kern::run(c, w.mem.data(), w.stride, f16.data(), int(K), int(N)); });
        });
        // Compared as values: where a Q4_0/Q5_0 quant is 8/16 the GPU's d*q + (-8d) gives +0 and the
        // CPU's (q - 8) * d gives -0 when d < 0.
        int bad = 0;
        for (size_t i = 0; i < size_t(K * N); i++)
            bad += lumen::fp16_to_f32(f16[i]) != lumen::fp16_to_f32(lumen::f32_to_fp16(w.deq[i]));
        CHECK(bad == 0);
        CHECK(f16[size_t(K * N)] == 0x7E00);

        // get_rows_f32: rows ids[block().y] into rows of out_stride bytes (the gaps untouched).
        const std::vector<int32_t> ids = {4, 0, 4, 2};
        const int64_t ld = K + 8;
        std::vector<float> out(ids.size() * size_t(ld), -7.0f);
        with_type(t, [&](auto tc) {
            using Kern = rows::GetRowsKernel<decltype(tc)::value>;
            const Dim grid{int((K / 32 + Kern::kThreads - 1) / Kern::kThreads), int(ids.size()), 1};
            Emu::launch(grid, Kern::kThreads, 0, [&](Emu& c) {
                Kern::run(c, w.mem.data(), w.stride, ids.data(), out.data(), size_t(ld) * 4, int(K));
            });
        });
        bad = 0;
        for (size_t r = 0; r < ids.size(); r++)
            for (int64_t k = 0; k < ld; k++) {
                const float want = k < K ? w.deq[size_t(ids[r] * K + k)] : -7.0f;
                bad += out[r * size_t(ld) + size_t(k)] != want;
            }
        CHECK(bad == 0);
    }
}
