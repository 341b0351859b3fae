// The whole forward pass against a deliberately plain f32 implementation written here, on tiny
// random models made by synth. The reference reads the same GGUF and shares no code with the
// graph, the ops or the quant kernels (F16 weights are decoded by its own converter).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../../cuda/device.h"
#include "engine/backend_select.h"
#include "engine/session.h"
#include "model/model.h"
#include "model/synth.h"
#include "test_backends.h"
#include "util/error.h"
#include "tiny_model.h"

using namespace lumen;

namespace {

float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float f;
    if (exp == 0) f = std::ldexp(float(man), -24);
    else if (exp == 31) f = man ? NAN : INFINITY;
    else f = std::ldexp(float(man | 0x400), int(exp) - 25);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Row-major copy of a F16 or F32 tensor: rows of ne[0].
std::vector<float> load(const gguf::File& f, const std::string& name) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    REQUIRE_MESSAGE(t, name);
    std::vector<float> out(static_cast<size_t>(t->n_elements()));
    for (size_t i = 0; i < out.size(); i++) {
        if (t->type == DType::F32) std::memcpy(&out[i], t->data + 4 * i, 4);
        else {
            uint16_t h;
            std::memcpy(&h, t->data + 2 * i, 2);
            out[i] = half_to_float(h);
        }
    }
    return out;
}

bool has(const gguf::File& f, const std::string& name) { return f.find_tensor(name) != nullptr; }

// y[n] = sum_k W[n][k] x[k]
std::vector<float> matvec(const std::vector<float>& W, const std::vector<float>& x, size_t rows) {
    std::vector<float> y(rows, 0.0f);
    const size_t K = x.size();
    for (size_t n = 0; n < rows; n++) {
        double s = 0;
        for (size_t k = 0; k < K; k++) s += double(W[n * K + k]) * x[k];
        y[n] = float(s);
    }
    return y;
}

std::vector<float> rmsnorm(const std::vector<float>& x, const std::vector<float>& w, float eps) {
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const float k = float(1.0 / std::sqrt(ss / double(x.size()) + eps));
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = x[i] * k * w[i];
    return y;
}

// Logits after each token of `tokens`, computed one token at a time with an explicit cache.
std::vector<std::vector<float>> reference_logits(const Model& m, const std::vector<int32_t>& tokens) {
    const gguf::File& f = *m.file;
    const HParams& h = m.hp;
    const size_t E = size_t(h.n_embd), D = size_t(h.head_dim), H = size_t(h.n_head), HK = size_t(h.n_head_kv);
    const size_t F = size_t(h.n_ff), V = size_t(h.n_vocab);
    const std::vector<float> emb = load(f, "token_embd.weight");
    const std::vector<float> out_w = has(f, "output.weight") ? load(f, "output.weight") : emb;
    const std::vector<float> out_norm = load(f, "output_norm.weight");
    std::vector<std::vector<std::vector<float>>> kcache(size_t(h.n_layer)), vcache(size_t(h.n_layer));
    std::vector<std::vector<float>> result;
    for (size_t p = 0; p < tokens.size(); p++) {
        std::vector<float> x(emb.begin() + long(size_t(tokens[p]) * E), emb.begin() + long(size_t(tokens[p]) * E + E));
        for (int il = 0; il < h.n_layer; il++) {
            const std::string b = "blk." + std::to_string(il) + ".";
            std::vector<float> xn = rmsnorm(x, load(f, b + "attn_norm.weight"), h.norm_eps);
            std::vector<float> q = matvec(load(f, b + "attn_q.weight"), xn, H * D);
            std::vector<float> k = matvec(load(f, b + "attn_k.weight"), xn, HK * D);
            std::vector<float> v = matvec(load(f, b + "attn_v.weight"), xn, HK * D);
            if (has(f, b + "attn_q.bias")) {
                auto bq = load(f, b + "attn_q.bias"), bk = load(f, b + "attn_k.bias"), bv = load(f, b + "attn_v.bias");
                for (size_t i = 0; i < q.size(); i++) q[i] += bq[i];
                for (size_t i = 0; i < k.size(); i++) k[i] += bk[i], v[i] += bv[i];
            }
            // RoPE: llama rotates adjacent pairs, qwen2 (NeoX) rotates halves.
            auto rope = [&](std::vector<float>& vec, size_t heads) {
                for (size_t hh = 0; hh < heads; hh++)
                    for (size_t i = 0; i < D / 2; i++) {
                        const double theta = double(p) * std::pow(double(h.rope_freq_base), -2.0 * double(i) / double(D));
                        const size_t a = h.rope_neox ? i : 2 * i, c = h.rope_neox ? i + D / 2 : 2 * i + 1;
                        const double x0 = vec[hh * D + a], x1 = vec[hh * D + c];
                        vec[hh * D + a] = float(x0 * std::cos(theta) - x1 * std::sin(theta));
                        vec[hh * D + c] = float(x0 * std::sin(theta) + x1 * std::cos(theta));
                    }
            };
            rope(q, H);
            rope(k, HK);
            kcache[size_t(il)].push_back(k);
            vcache[size_t(il)].push_back(v);
            std::vector<float> att(H * D, 0.0f);
            for (size_t hh = 0; hh < H; hh++) {
                const size_t kh = hh / (H / HK);
                std::vector<double> s(p + 1);
                double mx = -1e300, sum = 0;
                for (size_t j = 0; j <= p; j++) {
                    double d = 0;
                    for (size_t i = 0; i < D; i++) d += double(q[hh * D + i]) * kcache[size_t(il)][j][kh * D + i];
                    s[j] = d / std::sqrt(double(D));
                    mx = std::max(mx, s[j]);
                }
                for (size_t j = 0; j <= p; j++) sum += s[j] = std::exp(s[j] - mx);
                for (size_t j = 0; j <= p; j++)
                    for (size_t i = 0; i < D; i++) att[hh * D + i] += float(s[j] / sum * vcache[size_t(il)][j][kh * D + i]);
            }
            std::vector<float> o = matvec(load(f, b + "attn_output.weight"), att, E);
            for (size_t i = 0; i < E; i++) x[i] += o[i];
            xn = rmsnorm(x, load(f, b + "ffn_norm.weight"), h.norm_eps);
            std::vector<float> g = matvec(load(f, b + "ffn_gate.weight"), xn, F);
            std::vector<float> u = matvec(load(f, b + "ffn_up.weight"), xn, F);
            for (size_t i = 0; i < F; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
            std::vector<float> d = matvec(load(f, b + "ffn_down.weight"), g, E);
            for (size_t i = 0; i < E; i++) x[i] += d[i];
        }
        result.push_back(matvec(out_w, rmsnorm(x, out_norm, h.norm_eps), V));
    }
    return result;
}

double rel_err(const float* a, const std::vector<float>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
    }
    return std::sqrt(num / den);
}

std::string synth_tiny(const char* preset) {
    const std::string path = std::string("/tmp/lumen-test-") + preset + "-" + std::to_string(getpid()) + ".gguf";
    SynthOptions so;
    so.type = DType::F16;
    synth_model(*find_preset(preset), so, path);
    return path;
}

// All positions' logits from the engine: the prompt in one batch and then token by token.
void check_engine(const char* preset, const std::string& device, double tol) {
    const std::string path = synth_tiny(preset);
    auto m = Model::load(path);
    std::vector<int32_t> tokens = {1, 17, 300, 42, 511, 7, 7, 260, 99, 3};
    auto ref = reference_logits(*m, tokens);
    const size_t V = size_t(m->hp.n_vocab);

    SessionOptions so;
    so.n_ctx = 64;
    so.n_threads = 2;
    so.cache_type = DType::F32;
    Session batch(*m, test_backend(device), so);
    const std::vector<float>& all = batch.eval(tokens, true);
    for (size_t p = 0; p < tokens.size(); p++) {
        INFO(preset, " batched, position ", p);
        CHECK(rel_err(all.data() + p * V, ref[p]) < tol);
    }
    Session step(*m, test_backend(device), so);
    for (size_t p = 0; p < tokens.size(); p++) {
        const std::vector<float>& l = step.eval({tokens[p]});
        INFO(preset, " one token at a time, position ", p);
        CHECK(rel_err(l.data(), ref[p]) < tol);
    }
    std::remove(path.c_str());
}

// The logits of every position, the prompt as one batch and then token by token.
struct AllLogits {
    std::vector<float> batched;
    std::vector<std::vector<float>> stepwise;
};
AllLogits all_logits(const Model& m, const std::vector<int32_t>& tokens, const std::string& device, DType cache_type) {
    SessionOptions so;
    so.n_ctx = 64;
    so.n_threads = 2;
    so.cache_type = cache_type;
    AllLogits r;
    Session batch(m, test_backend(device), so);
    r.batched = batch.eval(tokens, true);
    Session step(m, test_backend(device), so);
    for (int32_t t : tokens) r.stepwise.push_back(step.eval({t}));
    return r;
}

// Sets an environment variable for as long as it lives (the CUDA backend reads its switches when made).
struct EnvSwitch {
    const char* name;
    EnvSwitch(const char* n) : name(n) { if (name) setenv(name, "1", 1); }
    ~EnvSwitch() { if (name) unsetenv(name); }
};

// A tiny model of weight type `type` on the emulated CUDA backend: batched (the tensor-core GEMM
// over the f16 copies) and token by token (the int8 decode products), against the CPU backend
// within `tol`, and under each of the backend's switches against its default within 1e-4. The GPU
// rounds the query and keys to f16 for the tensor cores; the larger weights of the synth Q8_0 model
// make its attention sharper, which amplifies that rounding (its ops alone agree to 3e-4).
void check_simt_against_cpu(DType type, DType cache, double tol) {
    TinyModel tm(type);
    const std::vector<int32_t> tokens = {1, 17, 300, 42, 511, 7, 7, 260, 99, 3, 12, 5};
    const AllLogits cpu = all_logits(*tm.m, tokens, "cpu", cache);
    const AllLogits gpu = all_logits(*tm.m, tokens, "simt", cache);
    const size_t V = size_t(tm.m->hp.n_vocab);
    const std::string what = std::string(dtype_name(type)) + " weights, " + dtype_name(cache) + " cache";
    for (size_t p = 0; p < tokens.size(); p++) {
        INFO(what, ", position ", p);
        CHECK(rel_err(gpu.batched.data() + p * V, cpu.stepwise[p]) < tol);
        CHECK(rel_err(gpu.stepwise[p].data(), cpu.stepwise[p]) < tol);
    }
    for (const char* sw : {"LUMEN_NO_FUSE", "LUMEN_NO_REPACK", "LUMEN_NO_CUDA_GRAPHS", "LUMEN_NO_F16_CACHE"}) {
        EnvSwitch on(sw);
        const AllLogits alt = all_logits(*tm.m, tokens, "simt", cache);
        for (size_t p = 0; p < tokens.size(); p++) {
            INFO(what, ", ", sw, ", position ", p);
            const std::vector<float> b(gpu.batched.begin() + long(p * V), gpu.batched.begin() + long((p + 1) * V));
            CHECK(rel_err(alt.batched.data() + p * V, b) < 1e-4);
            CHECK(rel_err(alt.stepwise[p].data(), gpu.stepwise[p]) < 1e-4);
        }
    }
}

}  // namespace

TEST_SUITE("model") {
    TEST_CASE("llama forward matches the plain reference") { check_engine("tiny", "cpu", 1e-4); }
    TEST_CASE("qwen2 forward (biases, NeoX rope) matches the plain reference") { check_engine("tiny-qwen2", "cpu", 1e-4); }
}

TEST_SUITE("gpu") {
    TEST_CASE("CUDA llama forward matches the plain reference" * doctest::skip(cuda::device_count() == 0)) {
        check_engine("tiny", "cuda", 2e-3);
    }
    TEST_CASE("CUDA qwen2 forward matches the plain reference" * doctest::skip(cuda::device_count() == 0)) {
        check_engine("tiny-qwen2", "cuda", 2e-3);
    }
}

TEST_SUITE("simt") {
    TEST_CASE("CUDA backend on the emulator: llama forward matches the plain reference") {
        check_engine("tiny", "simt", 2e-3);
    }
    TEST_CASE("CUDA backend on the emulator: qwen2 forward matches the plain reference") {
        check_engine("tiny-qwen2", "simt", 2e-3);
    }
}

TEST_SUITE("simt") {
    TEST_CASE("CUDA backend on the emulator, F16 and quantized models, each switch: logits close to the CPU's") {
        check_simt_against_cpu(DType::F16, DType::F16, 2e-3);
        check_simt_against_cpu(DType::Q4_0, DType::F16, 1e-2);
        check_simt_against_cpu(DType::Q8_0, DType::F32, 3e-2);
    }
}

TEST_SUITE("simt") {
    // Too little GPU memory is a one-line error naming what did not fit, how much it needed and how
    // much was free, whichever allocation is the first to miss out; nothing leaks.
    TEST_CASE("CUDA backend on the emulator: not enough GPU memory is a clear error") {
        TinyModel tm;
        SessionOptions so;
        so.n_ctx = 64;
        const size_t before = simt_memory_used();
        auto message = [&](size_t limit) {  // what making a session and reading 3 tokens throws
            simt_set_memory(limit);
            std::string what;
            try {
                Session s(*tm.m, test_backend("simt"), so);
                s.eval({1, 2, 3});
            } catch (const Error& e) {
                what = e.what();
            }
            simt_set_memory(size_t(80) << 30);
            CHECK(simt_memory_used() == before);
            return what;
        };
        const std::string ws = message(size_t(1) << 20);  // the first allocation: cuBLAS's workspace
        CHECK(ws.find("not enough GPU memory for cuBLAS workspace: need 32 MiB, 1 MiB free of 1 MiB on simt emulator") !=
              std::string::npos);
        const std::string kv = message((size_t(32) << 20) + 1024);  // then the KV cache
        CHECK(kv.find("not enough GPU memory for KV cache") != std::string::npos);
        size_t with_cache = 0;  // the workspace and the cache: the weights come at the first eval
        {
            Session s(*tm.m, test_backend("simt"), so);
            with_cache = simt_memory_used() - before;
        }
        const std::string weight = message(before + with_cache + 4096);
        CHECK(weight.find("not enough GPU memory for weight") != std::string::npos);
        CHECK(message(size_t(1) << 30).empty());
    }
}
