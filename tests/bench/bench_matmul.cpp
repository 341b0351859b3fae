// Single-thread throughput of matmul_rows (not part of the CMake build; see the build line below).
// Prints GFLOP/s (2*M*N*K per call, activation quantization included) for the shapes of SmolLM2-135M's FFN (K=576, N=1536 and the
// transposed down projection) at M=1 (decode) and M=512 (prompt), per weight type.
//
//   cmake --build build --target lumen_core
//   g++ -O2 -std=gnu++17 -march=native -Isrc tests/bench/bench_matmul.cpp build/liblumen_core.a -lpthread \
//       -o /tmp/bench_matmul && /tmp/bench_matmul [types...]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/matmul.h"
#include "cpu/vec_dot.h"
#include "tensor/quant.h"

using namespace lumen;

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<float> gaussian(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

// Best-of-several GFLOP/s of one matmul_rows call over all N rows.
double bench(DType wt, int64_t K, int64_t N, int64_t M) {
    const DType vt = vec_dot_type(wt);
    const size_t wrow = row_bytes(wt, K), xrow = row_bytes(vt, K);
    std::vector<uint8_t> W(wrow * size_t(N)), X(xrow * size_t(M));
    const auto wf = gaussian(size_t(K * N), 1);
    for (int64_t n = 0; n < N; n++) quantize_row(wt, wf.data() + n * K, W.data() + size_t(n) * wrow, K);
    const auto xf = gaussian(size_t(K * M), 2);
    for (int64_t m = 0; m < M; m++) cpu::quantize_activations(vt, xf.data() + m * K, X.data() + size_t(m) * xrow, K);
    std::vector<float> Y(size_t(M * N));

    const double flop = 2.0 * double(M) * double(N) * double(K);
    const int reps = std::max(1, int(2e9 / flop));  // ~2 GFLOP per timing
    double best = 1e30;
    for (int trial = 0; trial < 5; trial++) {
        const double t0 = now();
        for (int r = 0; r < reps; r++) {
            for (int64_t m = 0; m < M; m++)  // as the graph op does it, and as ggml's timing includes it
                cpu::quantize_activations(vt, xf.data() + m * K, X.data() + size_t(m) * xrow, K);
            cpu::matmul_rows(wt, W.data(), wrow, X.data(), xrow, Y.data(), N, K, 0, N, M);
        }
        best = std::min(best, (now() - t0) / reps);
    }
    return flop / best * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<DType> types;
    for (int i = 1; i < argc; i++) {
        DType t;
        if (!dtype_from_name(argv[i], t)) { std::fprintf(stderr, "unknown type %s\n", argv[i]); return 1; }
        types.push_back(t);
    }
    if (types.empty()) types = {DType::Q4_1, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::F16};
    std::printf("kernels: %s, 1 thread, GFLOP/s\n", cpu::matmul_isa());
    std::printf("%-6s %16s %16s %16s %16s\n", "type", "576x1536 M=1", "576x1536 M=512", "1536x576 M=1", "1536x576 M=512");
    for (DType t : types) {
        const int64_t K1 = dtype_info(t).block_size == 256 ? 512 : 576;  // K-quants need K % 256 == 0
        std::printf("%-6s %16.1f %16.1f %16.1f %16.1f\n", dtype_name(t), bench(t, K1, 1536, 1), bench(t, K1, 1536, 512),
                    bench(t, 1536, 576, 1), bench(t, 1536, 576, 512));
        std::fflush(stdout);
    }
}
