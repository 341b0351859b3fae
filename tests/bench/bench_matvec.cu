// Decode products on the GPU, one shape at a time: microseconds and weight GB/s of the packed
// kernels (matvec.cuh) against the GGUF-row kernels, with their results compared (not part of the
// CMake build; needs a GPU):
//
//   nvcc -std=c++17 -O3 -arch=sm_90 --use_fast_math -Icuda -Isrc tests/bench/bench_matvec.cu cuda/matvec.cu \
//       -o /tmp/bench_matvec && /tmp/bench_matvec [M] [types...]
//
// Weights are random blocks with sane scales. Each timed product reads a different copy of the
// weight (copies totalling > 4x the L2), as a model's stream of layers does; the launches of a
// repetition are replayed from a CUDA graph, so the times are the GPU's, not the CPU's launch rate.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels.h"
#include "tensor/half.h"

using namespace lumen::cuda;

namespace {

#define CHECK_CUDA(x)                                                                    \
    do {                                                                                 \
        cudaError_t e_ = (x);                                                            \
        if (e_ != cudaSuccess) {                                                         \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            std::exit(1);                                                                \
        }                                                                                \
    } while (0)

struct TypeInfo {
    const char* name;
    int id, block, bytes;
    std::vector<int> f16_fields;  // byte offsets of fp16 scales in a block
};
const TypeInfo kTypes[] = {
    {"q4_0", T_Q4_0, 32, 18, {0}},    {"q8_0", T_Q8_0, 32, 34, {0}}, {"q4_k", T_Q4_K, 256, 144, {0, 2}},
    {"q6_k", T_Q6_K, 256, 210, {208}}, {"f16", T_F16, 1, 2, {}},
};

// GGUF rows of random blocks (every quant level occurs) with scales of a real model's size.
std::vector<uint8_t> random_rows(const TypeInfo& t, int64_t K, int64_t N, uint64_t seed) {
    const size_t row = size_t(K / t.block) * t.bytes;
    std::vector<uint8_t> v(row * size_t(N));
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> scale(0.001f, 0.02f), value(-1.0f, 1.0f);
    if (t.id == T_F16) {
        for (size_t i = 0; i < v.size(); i += 2) {
            const uint16_t h = lumen::f32_to_fp16_scalar(0.05f * value(rng));
            std::memcpy(&v[i], &h, 2);
        }
        return v;
    }
    for (uint8_t& b : v) b = uint8_t(rng());
    for (size_t off = 0; off < v.size(); off += size_t(t.bytes))
        for (int f : t.f16_fields) {
            const uint16_t h = lumen::f32_to_fp16_scalar(scale(rng));
            std::memcpy(&v[off + size_t(f)], &h, 2);
        }
    return v;
}

struct Uploaded {
    std::vector<void*> copies;
    WeightLayout L;
};

Uploaded upload(const TypeInfo& t, const std::vector<uint8_t>& rows, int64_t K, int64_t N, bool pack, int copies) {
    Uploaded u;
    const size_t row_bytes = rows.size() / size_t(N);
    u.L = weight_layout(t.id, K, N, row_bytes, pack);
    std::vector<uint8_t> image(u.L.bytes, 0);
    repack_rows(u.L, rows.data(), row_bytes, 0, N, image.data());
    for (int c = 0; c < copies; c++) {
        void* d = nullptr;
        CHECK_CUDA(cudaMalloc(&d, u.L.bytes));
        CHECK_CUDA(cudaMemcpy(d, image.data(), u.L.bytes, cudaMemcpyHostToDevice));
        u.copies.push_back(d);
    }
    return u;
}

// Microseconds per product of `reps` products (each on the next copy), from a replayed graph;
// the activations are quantized once before (as products of one X share it).
double time_products(const Uploaded& u, const float* X, int64_t K, int64_t M, void* scratch, float* Y, cudaStream_t s) {
    const int reps = int(u.copies.size());
    if (matvec_int8(u.L)) quantize_activations(X, size_t(K), K, M, scratch, s);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int r = 0; r < reps; r++) {
        const Matrix w{u.copies[size_t(r)], u.L};
        float* y = Y;
        const int64_t ldy = u.L.N;
        matvec(&w, 1, X, size_t(K), &y, &ldy, M, scratch, s);
    }
    CHECK_CUDA(cudaStreamEndCapture(s, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    CHECK_CUDA(cudaGraphLaunch(exec, s));  // warm up
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    double best = 1e30;
    for (int i = 0; i < 5; i++) {
        cudaEventRecord(a, s);
        CHECK_CUDA(cudaGraphLaunch(exec, s));
        cudaEventRecord(b, s);
        CHECK_CUDA(cudaEventSynchronize(b));
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        best = std::min(best, 1000.0 * ms / reps);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return best;
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t M = argc > 1 ? std::atoi(argv[1]) : 1;
    std::vector<std::string> want;
    for (int i = 2; i < argc; i++) want.push_back(argv[i]);
    struct Shape { const char* what; int64_t K, N; };
    const Shape shapes[] = {
        {"8B q,o", 4096, 4096},   {"8B k,v", 4096, 1024},   {"8B gate,up", 4096, 14336}, {"8B down", 14336, 4096},
        {"8B output", 4096, 128256}, {"1B q,o", 2048, 2048}, {"1B k,v", 2048, 512},       {"1B gate,up", 2048, 8192},
        {"1B down", 8192, 2048},  {"1B output", 2048, 128256},
    };
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    const size_t l2 = size_t(prop.l2CacheSize);
    std::printf("%s, L2 %zu MiB, M = %lld\n", prop.name, l2 >> 20, (long long)M);
    std::printf("| type | shape | K x N | MiB | packed us | packed GB/s | GGUF rows us | GGUF GB/s | quantize us | max rel diff |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    cudaStream_t s;
    CHECK_CUDA(cudaStreamCreate(&s));
    for (const TypeInfo& t : kTypes) {
        if (!want.empty() && std::find(want.begin(), want.end(), t.name) == want.end()) continue;
        for (const Shape& sh : shapes) {
            const int64_t K = sh.K, N = sh.N;
            const std::vector<uint8_t> rows = random_rows(t, K, N, 1);
            const double mib = double(rows.size()) / (1 << 20);
            const int copies = int(std::clamp<size_t>(4 * l2 / rows.size() + 1, 2, 64));
            const Uploaded packed = upload(t, rows, K, N, true, copies), gguf = upload(t, rows, K, N, false, copies);
            std::vector<float> x(size_t(K * M));
            std::mt19937_64 rng(2);
            std::normal_distribution<float> nd;
            for (float& v : x) v = nd(rng);
            float *X, *Y0, *Y1;
            void* scratch;
            CHECK_CUDA(cudaMalloc(&X, x.size() * 4));
            CHECK_CUDA(cudaMemcpy(X, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
            CHECK_CUDA(cudaMalloc(&Y0, size_t(N * M) * 4));
            CHECK_CUDA(cudaMalloc(&Y1, size_t(N * M) * 4));
            CHECK_CUDA(cudaMalloc(&scratch, matvec_scratch_bytes(K, M)));

            const double us_packed = time_products(packed, X, K, M, scratch, Y0, s);
            const double us_gguf = time_products(gguf, X, K, M, scratch, Y1, s);
            // The activations' quantization, once per X (back to back: its launch rate, an upper bound).
            double us_quant = 0;
            if (matvec_int8(packed.L)) {
                cudaEvent_t a, b;
                cudaEventCreate(&a);
                cudaEventCreate(&b);
                cudaEventRecord(a, s);
                for (int i = 0; i < 100; i++) quantize_activations(X, size_t(K), K, M, scratch, s);
                cudaEventRecord(b, s);
                CHECK_CUDA(cudaEventSynchronize(b));
                float ms = 0;
                cudaEventElapsedTime(&ms, a, b);
                us_quant = 10.0 * ms;
                cudaEventDestroy(a);
                cudaEventDestroy(b);
            }
            // Results of the two layouts (each after its own last run).
            std::vector<float> y0(size_t(N * M)), y1(size_t(N * M));
            CHECK_CUDA(cudaMemcpy(y0.data(), Y0, y0.size() * 4, cudaMemcpyDeviceToHost));
            CHECK_CUDA(cudaMemcpy(y1.data(), Y1, y1.size() * 4, cudaMemcpyDeviceToHost));
            double num = 0, den = 0;
            for (size_t i = 0; i < y0.size(); i++) {
                num = std::max(num, double(std::fabs(y0[i] - y1[i])));
                den = std::max(den, double(std::fabs(y1[i])));
            }
            const double gb = double(rows.size()) / 1e9;
            std::printf("| %s | %s | %lldx%lld | %.1f | %.2f | %.0f | %.2f | %.0f | %.2f | %.1e |\n", t.name, sh.what,
                        (long long)K, (long long)N, mib, us_packed, gb / (us_packed * 1e-6), us_gguf,
                        gb / (us_gguf * 1e-6), us_quant, num / (den + 1e-30));
            std::fflush(stdout);
            for (void* p : packed.copies) cudaFree(p);
            for (void* p : gguf.copies) cudaFree(p);
            cudaFree(X);
            cudaFree(Y0);
            cudaFree(Y1);
            cudaFree(scratch);
        }
    }
    return 0;
}
