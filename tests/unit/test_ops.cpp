// Every graph op against a plain scalar reference written here, on random inputs, run through
// the CPU backend; the "gpu" suite runs the same graphs on CUDA, the "simt" suite on the CUDA backend
// with its kernels on the host emulator (test_backends.h).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "../../cuda/device.h"
#include "engine/backend_select.h"
#include "test_backends.h"
#include "test_quant_util.h"
#include "tensor/graph.h"
#include "tensor/quant.h"

using namespace lumen;

namespace {

// Gaussian values: testq::gaussian (test_quant_util.h).
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) { return testq::gaussian(n, seed, scale); }

double rel_err(const std::vector<float>& a, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return std::sqrt(num / (den + 1e-30));
}

// A graph plus the buffers its leaves point at.
struct Case {
    Graph g;
    std::vector<std::vector<uint8_t>> bufs;
    Tensor* out = nullptr;

    Tensor* input_f32(const std::vector<float>& v, int64_t ne0, int64_t ne1) {
        Tensor* t = g.input(DType::F32, ne0, ne1, "x");
        bufs.emplace_back(reinterpret_cast<const uint8_t*>(v.data()),
                          reinterpret_cast<const uint8_t*>(v.data()) + v.size() * 4);
        t->data = bufs.back().data();
        return t;
    }
    Tensor* input_i32(const std::vector<int32_t>& v) {
        Tensor* t = g.input(DType::I32, int64_t(v.size()), 1, "ids");
        bufs.emplace_back(reinterpret_cast<const uint8_t*>(v.data()),
                          reinterpret_cast<const uint8_t*>(v.data()) + v.size() * 4);
        t->data = bufs.back().data();
        return t;
    }
    // A weight of type t made from f32 values (quantized here).
    Tensor* weight(DType t, const std::vector<float>& v, int64_t ne0, int64_t ne1) {
        bufs.emplace_back(row_bytes(t, ne0) * size_t(ne1));
        for (int64_t r = 0; r < ne1; r++)
            quantize_row(t, v.data() + r * ne0, bufs.back().data() + size_t(r) * row_bytes(t, ne0), ne0);
        const int64_t ne[2] = {ne0, ne1};
        return g.weight(t, ne, 2, bufs.back().data(), "w");
    }
    // The weight's values as the kernels see them (after quantization).
    static std::vector<float> dequant(const Tensor* w) {
        std::vector<float> v(static_cast<size_t>(w->nelements()));
        for (int64_t r = 0; r < w->ne[1]; r++)
            dequantize_row(w->type, static_cast<const uint8_t*>(w->data) + size_t(r) * w->nb[1], v.data() + r * w->ne[0], w->ne[0]);
        return v;
    }

    std::vector<float> run(const std::string& device) {
        g.mark_output(out);
        g.plan();
        auto be = test_backend(device);
        for (Tensor* l : g.leaves())
            if (l->is_state) be->alloc_state(l);  // KV caches start zeroed
        be->compute(g);
        std::vector<float> r(static_cast<size_t>(out->nelements()));
        be->read(out, r.data(), r.size() * 4);
        return r;
    }
};

using Builder = std::function<std::vector<double>(Case&)>;  // builds the graph, returns the reference

// device: "cpu", or "cuda" / "simt" (the CUDA kernels, with tol_gpu).
void check_op(const char* name, const Builder& build, double tol_cpu, double tol_gpu, const std::string& device) {
    const bool gpu = device != "cpu";
    Case c;
    std::vector<double> ref = build(c);
    std::vector<float> got = c.run(device);
    INFO(std::string(name));
    REQUIRE(got.size() == ref.size());
    CHECK(rel_err(got, ref) <= (gpu ? tol_gpu : tol_cpu));
}

// --- the ops ---------------------------------------------------------------------------------

// round_as: the format the kernel under test rounds the activations to (F32: none). The CPU kernels
// use the weight type's partner format (Q8_0, Q8_1, Q8_K); the GPU int8 per 32 (as Q8_0) for the
// integer formats, in the decode kernel (M <= 8) and before its tensor-core GEMM (M > 8) alike, and
// f32 (decode) or f16 (GEMM) for the float ones.
std::vector<double> build_mul_mat(Case& c, DType wt, int64_t K, int64_t N, int64_t M, DType round_as) {
    auto wv = randn(size_t(K * N), 1, 0.5f), xv = randn(size_t(K * M), 2);
    Tensor* w = c.weight(wt, wv, K, N);
    Tensor* x = c.input_f32(xv, K, M);
    c.out = c.g.mul_mat(w, x);
    auto wd = Case::dequant(w);
    // The reference rounds like the kernel under test, leaving only summation order as a difference.
    std::vector<uint8_t> q(row_bytes(round_as, K));
    for (int64_t m = 0; round_as != DType::F32 && m < M; m++) {
        quantize_row(round_as, xv.data() + m * K, q.data(), K);
        dequantize_row(round_as, q.data(), xv.data() + m * K, K);
    }
    std::vector<double> ref(static_cast<size_t>(N * M));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += double(wd[size_t(n * K + k)]) * xv[size_t(m * K + k)];
            ref[size_t(m * N + n)] = s;
        }
    return ref;
}

std::vector<double> build_rms_norm_mul_add(Case& c) {
    const int64_t n = 96, rows = 5;
    auto xv = randn(size_t(n * rows), 3), wv = randn(size_t(n), 4), bv = randn(size_t(n * rows), 5);
    Tensor* x = c.input_f32(xv, n, rows);
    Tensor* w = c.input_f32(wv, n, 1);
    Tensor* b = c.input_f32(bv, n, rows);
    c.out = c.g.add(c.g.scale(c.g.mul(c.g.rms_norm(x, 1e-5f), w), 0.5f), b);
    std::vector<double> ref(size_t(n * rows));
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += double(xv[size_t(r * n + i)]) * xv[size_t(r * n + i)];
        const double k = 1.0 / std::sqrt(ss / double(n) + 1e-5);
        for (int64_t i = 0; i < n; i++)
            ref[size_t(r * n + i)] = xv[size_t(r * n + i)] * k * wv[size_t(i)] * 0.5 + bv[size_t(r * n + i)];
    }
    return ref;
}

std::vector<double> build_glu(Case& c, bool gelu) {
    const int64_t n = 200, rows = 3;
    auto gv = randn(size_t(n * rows), 6, 2.0f), uv = randn(size_t(n * rows), 7);
    Tensor* gt = c.input_f32(gv, n, rows);
    Tensor* ut = c.input_f32(uv, n, rows);
    c.out = gelu ? c.g.geglu(gt, ut) : c.g.swiglu(gt, ut);
    std::vector<double> ref(gv.size());
    for (size_t i = 0; i < gv.size(); i++) {
        const double x = gv[i];
        const double act = gelu ? 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)))
                                : x / (1 + std::exp(-x));
        ref[i] = act * uv[i];
    }
    return ref;
}

std::vector<double> build_get_rows(Case& c, DType t) {
    const int64_t n = 64, rows = 10;
    auto tv = randn(size_t(n * rows), 8);
    Tensor* table = c.weight(t, tv, n, rows);
    std::vector<int32_t> ids = {3, 0, 9, 3};
    Tensor* it = c.input_i32(ids);
    c.out = c.g.get_rows(table, it);
    auto td = Case::dequant(table);
    std::vector<double> ref;
    for (int32_t id : ids)
        for (int64_t i = 0; i < n; i++) ref.push_back(td[size_t(id * n + i)]);
    return ref;
}

std::vector<double> build_rope(Case& c, bool neox, float freq_scale, bool factors) {
    const int64_t D = 64, H = 3, T = 4;
    const int n_rot = 48;  // partial rotation: the last 16 dims pass through
    auto xv = randn(size_t(D * H * T), 9);
    std::vector<int32_t> pos = {0, 5, 17, 1000};
    std::vector<float> fv(size_t(n_rot / 2));
    for (size_t i = 0; i < fv.size(); i++) fv[i] = 1.0f + float(i) * 0.25f;
    Tensor* x = c.g.reshape(c.input_f32(xv, D, H * T), D, H, T);
    RopeParams p;
    p.n_rot = n_rot;
    p.neox = neox;
    p.freq_base = 10000.0f;
    p.freq_scale = freq_scale;
    c.out = c.g.rope(x, c.input_i32(pos), p, factors ? c.input_f32(fv, int64_t(fv.size()), 1) : nullptr);
    std::vector<double> ref(xv.begin(), xv.end());
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++)
            for (int i = 0; i < n_rot / 2; i++) {
                double theta = freq_scale * pos[size_t(t)] * std::pow(10000.0, -2.0 * i / n_rot);
                if (factors) theta /= fv[size_t(i)];
                const size_t base = size_t((t * H + h) * D);
                const size_t a = base + size_t(neox ? i : 2 * i), b = base + size_t(neox ? i + n_rot / 2 : 2 * i + 1);
                const double x0 = xv[a], x1 = xv[b];
                ref[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
                ref[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
            }
    return ref;
}

// Writes T new rows at positions base..base+T-1 of an empty paged cache whose blocks the sequence
// holds in reverse order, then attends.
// With a long cache and few tokens the GPU splits the cached positions into slices (split-KV).
std::vector<double> build_attention(Case& c, DType cache_type, int window, float softcap, int64_t D,
                                    int64_t T = 6, int64_t n_ctx = 16, int base = 2) {
    const int64_t H = 4, HK = 2;
    // Rows below `base` are never written: attended as zeros, as the reference assumes.
    auto qv = randn(size_t(D * H * T), 10), kv = randn(size_t(D * HK * T), 11), vv = randn(size_t(D * HK * T), 12);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; t++) pos[size_t(t)] = base + int32_t(t);
    auto cache = [&](const char* name) {
        Tensor t;  // the graph keeps its own copy; the backend allocates it in run()
        t.type = cache_type;
        t.ne[0] = D * HK;
        t.ne[1] = n_ctx;
        t.nb[0] = dtype_info(cache_type).block_bytes;
        t.nb[1] = row_bytes(cache_type, D * HK);
        t.nb[2] = t.nb[3] = t.nb[1] * size_t(n_ctx);
        t.is_state = true;
        t.name = name;
        return c.g.state(&t);
    };
    const int bs = 4;
    const int32_t n_blocks = int32_t(n_ctx / bs);
    std::vector<int32_t> table(static_cast<size_t>(n_blocks)), rows(static_cast<size_t>(T)),
        seq(static_cast<size_t>(T), 0);
    for (int32_t b = 0; b < n_blocks; b++) table[size_t(b)] = n_blocks - 1 - b;
    for (int64_t t = 0; t < T; t++) rows[size_t(t)] = table[size_t(pos[size_t(t)] / bs)] * bs + pos[size_t(t)] % bs;
    Tensor* pt = c.input_i32(pos);
    Tensor* rt = c.input_i32(rows);
    Tensor* kc = c.g.kv_write(cache("k"), c.input_f32(kv, D * HK, T), rt);
    Tensor* vc = c.g.kv_write(cache("v"), c.input_f32(vv, D * HK, T), rt);
    Tensor* q = c.g.reshape(c.input_f32(qv, D, H * T), D, H, T);
    const float scale = 1.0f / std::sqrt(float(D));
    c.out = c.g.attention(q, kc, vc, pt, c.input_i32(seq), c.input_i32(table), bs, int(HK), scale, window, softcap);
    // Reference: rows never written are zero (the cache starts zeroed); values pass through the cache type.
    auto through = [&](const std::vector<float>& src) {
        std::vector<float> out(size_t(n_ctx * D * HK), 0.0f);
        std::vector<uint8_t> buf(row_bytes(cache_type, D * HK));
        for (int64_t t = 0; t < T; t++) {
            quantize_row(cache_type, src.data() + t * D * HK, buf.data(), D * HK);
            dequantize_row(cache_type, buf.data(), out.data() + (base + t) * D * HK, D * HK);
        }
        return out;
    };
    auto K = through(kv), V = through(vv);
    std::vector<double> ref(size_t(D * H * T));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t hk = h / (H / HK), last = pos[size_t(t)];
            const int64_t first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
            std::vector<double> s;
            double mx = -1e300;
            for (int64_t j = first; j <= last; j++) {
                double d = 0;
                for (int64_t i = 0; i < D; i++) d += double(qv[size_t((t * H + h) * D + i)]) * K[size_t(j * D * HK + hk * D + i)];
                d *= scale;
                if (softcap > 0) d = softcap * std::tanh(d / softcap);
                s.push_back(d);
                mx = std::max(mx, d);
            }
            double sum = 0;
            for (double& x : s) sum += x = std::exp(x - mx);
            for (int64_t i = 0; i < D; i++) {
                double acc = 0;
                for (int64_t j = first; j <= last; j++) acc += s[size_t(j - first)] * V[size_t(j * D * HK + hk * D + i)];
                ref[size_t(t * H * D + h * D + i)] = acc / sum;
            }
        }
    return ref;
}

void all_ops(const std::string& device) {
    const bool gpu = device != "cpu";
    for (DType t : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                    DType::Q4_K, DType::Q6_K}) {
        for (int64_t M : {1, 3, 9, 33}) {
            const std::string type_name = dtype_name(t);
            CAPTURE(type_name);
            CAPTURE(M);
            // Q8_1 keeps d * sum(q) in fp16 (as GGUF does), which rounds the min term of Q4_1 / Q5_1.
            const double tol = (t == DType::Q4_1 || t == DType::Q5_1) ? 2e-3 : 1e-5;
            const bool integer = t != DType::F32 && t != DType::F16;
            const DType round_as = !gpu ? vec_dot_type(t) : integer ? DType::Q8_0 : DType::F32;
            check_op("mul_mat", [&](Case& c) { return build_mul_mat(c, t, 512, 40, M, round_as); }, tol, 3e-3, device);
        }
    }
    check_op("rms_norm * w * 0.5 + b", build_rms_norm_mul_add, 1e-6, 1e-5, device);
    check_op("swiglu", [](Case& c) { return build_glu(c, false); }, 1e-6, 1e-5, device);
    check_op("geglu", [](Case& c) { return build_glu(c, true); }, 1e-6, 1e-5, device);
    check_op("get_rows f32", [](Case& c) { return build_get_rows(c, DType::F32); }, 0, 0, device);
    check_op("get_rows q8_0", [](Case& c) { return build_get_rows(c, DType::Q8_0); }, 1e-7, 1e-6, device);
    check_op("rope normal", [](Case& c) { return build_rope(c, false, 1.0f, false); }, 1e-5, 1e-4, device);
    check_op("rope neox, linear scale", [](Case& c) { return build_rope(c, true, 0.25f, false); }, 1e-5, 1e-4, device);
    check_op("rope with frequency factors", [](Case& c) { return build_rope(c, false, 1.0f, true); }, 1e-5, 1e-4, device);
    // The GPU computes attention on tensor cores: query, K, V and the softmax weights in f16 with f32
    // sums (as llama.cpp's CUDA flash attention does, whatever the cache type), 2-4e-4 off the f32 reference.
    const double att_gpu = 1e-3;
    // A head size that is not a multiple of 8 only on the CPU (its kernels pad the rows to 8).
    const std::vector<int64_t> head_sizes = gpu ? std::vector<int64_t>{64, 128} : std::vector<int64_t>{40, 64, 128};
    for (int64_t D : head_sizes) {
        CAPTURE(D);
        check_op("attention f32 cache", [&](Case& c) { return build_attention(c, DType::F32, 0, 0, D); }, 1e-5, att_gpu, device);
        // The CPU sums in f32 whatever the cache type (the reference reads the same rounded cache).
        check_op("attention f16 cache", [&](Case& c) { return build_attention(c, DType::F16, 0, 0, D); }, 1e-5, att_gpu, device);
        if (D % 32 == 0)  // Q8_0 rows are whole blocks of 32
            check_op("attention q8_0 cache", [&](Case& c) { return build_attention(c, DType::Q8_0, 0, 0, D); }, 1e-5, att_gpu, device);
        check_op("attention window 3", [&](Case& c) { return build_attention(c, DType::F32, 3, 0, D); }, 1e-5, att_gpu, device);
        check_op("attention softcap", [&](Case& c) { return build_attention(c, DType::F32, 0, 0.5f, D); }, 1e-5, att_gpu, device);
        check_op("attention, long cache, 2 tokens", [&](Case& c) { return build_attention(c, DType::F16, 0, 0, D, 2, 4096, 3000); },
                 1e-5, att_gpu, device);  // sums over 3000 positions
        check_op("attention, long cache, window", [&](Case& c) { return build_attention(c, DType::F16, 700, 0, D, 1, 4096, 2500); },
                 1e-5, att_gpu, device);
        // 32+ query tokens take the tensor-core flash kernel on the GPU, which rounds the softmax
        // weights to f16 as well as the query (~1e-3).
        check_op("attention f16 cache, 80 tokens", [&](Case& c) { return build_attention(c, DType::F16, 0, 0, D, 80, 128, 5); },
                 1e-5, 2e-3, device);
        check_op("attention f16 cache, 80 tokens, window 20, softcap",
                 [&](Case& c) { return build_attention(c, DType::F16, 20, 0.5f, D, 80, 128, 5); }, 1e-5, 2e-3, device);
    }
}

// top_k on `device` against the CPU's: indices and values equal, ties included.
void top_k_matches_cpu(const std::string& device) {
    std::mt19937 rng(9);
    std::normal_distribution<float> d(0.0f, 4.0f);
    const int64_t n = 128256;  // Llama 3's vocabulary
    std::vector<float> v(size_t(n) * 3);
    for (float& x : v) x = d(rng);
    for (int64_t i = 0; i < n; i += 3) v[size_t(2 * n + i)] = 1.5f;  // row 2: many ties at the top
    for (int k : {1, 64, 256}) {
        CAPTURE(k);
        std::vector<int32_t> want(size_t(6 * k)), got(size_t(6 * k));
        for (const std::string& dev : {std::string("cpu"), device}) {
            Case c;
            c.out = c.g.top_k(c.input_f32(v, n, 3), k);
            c.g.mark_output(c.out);
            c.g.plan();
            auto be = test_backend(dev);
            be->compute(c.g);
            be->read(c.out, dev == "cpu" ? want.data() : got.data(), want.size() * 4);
        }
        CHECK(got == want);
    }
}

}  // namespace

TEST_SUITE("ops") {
    TEST_CASE("every op matches its scalar reference on the CPU") { all_ops("cpu"); }

    TEST_CASE("top_k: the k largest, largest first, ties to the lower index") {
        Case c;
        std::vector<float> v = {1, 5, 2, 5, -1, 0, 0, 0,  // row 0
                                0, 0, 0, 0, 3, 0, -2, 0};  // row 1: ties straddle the k-th
        c.out = c.g.top_k(c.input_f32(v, 8, 2), 3);
        c.g.mark_output(c.out);
        c.g.plan();
        auto be = make_backend("cpu", 2);
        be->compute(c.g);
        int32_t r[12];
        be->read(c.out, r, sizeof r);
        auto val = [&](int i) { float f; std::memcpy(&f, &r[i], 4); return f; };
        CHECK(r[0] == 1); CHECK(r[1] == 3); CHECK(r[2] == 2);
        CHECK(val(3) == 5.0f); CHECK(val(4) == 5.0f); CHECK(val(5) == 2.0f);
        CHECK(r[6] == 4); CHECK(r[7] == 0); CHECK(r[8] == 1);
        CHECK(val(9) == 3.0f); CHECK(val(10) == 0.0f); CHECK(val(11) == 0.0f);
    }

    TEST_CASE("the planner reuses memory") {
        Case c;
        auto xv = randn(4096, 1);
        Tensor* x = c.input_f32(xv, 1024, 4);
        for (int i = 0; i < 20; i++) x = c.g.scale(x, 1.0f);
        c.out = x;
        c.g.mark_output(c.out);
        // 20 intermediates of 16 KiB each: with reuse, the arena holds far fewer.
        CHECK(c.g.plan() <= 4 * 16384 + 4096);
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("every op on CUDA matches its scalar reference" * doctest::skip(cuda::device_count() == 0)) { all_ops("cuda"); }
    TEST_CASE("top_k on CUDA equals the CPU's, indices and values" * doctest::skip(cuda::device_count() == 0)) {
        top_k_matches_cpu("cuda");
    }
}

TEST_SUITE("simt") {
    TEST_CASE("every op of the CUDA backend on the emulator matches its scalar reference") { all_ops("simt"); }
    TEST_CASE("top_k of the CUDA backend on the emulator equals the CPU's") { top_k_matches_cpu("simt"); }
}
