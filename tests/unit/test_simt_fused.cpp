// The fused kernel bodies of cuda/fused.cuh (and the product's add epilogue in matvec.cuh) on the
// host emulator, against the unfused ops: their CPU twins (src/cpu/ops_*.cpp, quantize_row for the
// cache rows as op_kv_write does) and the unfused device body that quantizes activations
// (quantize_act_body), whose int8 copy the fused kernels must reproduce bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "fused.cuh"
#include "matvec.cuh"
#include "simt_emulator.h"
#include "tensor/half.h"
#include "tensor/quant.h"
#include "test_quant_util.h"

using lumen::DType;
using lumen::Op;
using lumen::Tensor;
using lumen::simt::Dim;
using lumen::simt::Emu;
namespace cu = lumen::cuda;

namespace {

// 16-byte aligned floats or bytes, as cudaMalloc gives.
template <class T>
struct Buf {
    std::vector<lumen::simt::u32x4> v;
    explicit Buf(size_t n = 0) : v((n * sizeof(T) + 15) / 16 + 1) {}
    T* data() { return reinterpret_cast<T*>(v.data()); }
    T& operator[](size_t i) { return data()[i]; }
};

Buf<float> floats(const std::vector<float>& x) {
    Buf<float> b(x.size());
    std::copy(x.begin(), x.end(), b.data());
    return b;
}

// A tensor over host memory for the CPU ops: a leaf (inputs) or an op's result (the op's output
// lives in OpCtx::arena at offset 0).
Tensor tensor(DType t, int64_t ne0, int64_t ne1, int64_t ne2, void* data) {
    Tensor x;
    x.type = t;
    x.ne[0] = ne0;
    x.ne[1] = ne1;
    x.ne[2] = ne2;
    x.nb[0] = lumen::dtype_info(t).block_bytes;
    x.nb[1] = lumen::row_bytes(t, ne0);
    x.nb[2] = x.nb[1] * size_t(ne1);
    x.nb[3] = x.nb[2] * size_t(ne2);
    x.data = data;
    return x;
}

// Runs one CPU op on one thread; its result goes to `out`.
template <class F>
void cpu_op(Tensor& t, void* out, F&& op) {
    lumen::cpu::OpCtx c;
    c.arena = static_cast<uint8_t*>(out);
    t.offset = 0;
    op(c, &t);
}

double max_abs(const float* a, const float* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(double(a[i]) - b[i]));
    return m;
}

// The int8 copy of M rows of n values as the unfused device body makes it.
struct Int8 {
    std::vector<int8_t> q;
    std::vector<cu::ActBlock> a;
};
Int8 quantized(const float* y, int64_t n, int64_t M) {
    Int8 r{std::vector<int8_t>(size_t(n * M)), std::vector<cu::ActBlock>(size_t(n / 32 * M))};
    Emu::launch(Dim{int((n / 32 * 8 + 63) / 64), int(M), 1}, 64, 0,
                [&](Emu& c) { cu::quantize_act_body(c, y, size_t(n), n, r.q.data(), r.a.data()); });
    return r;
}
void check_same_int8(const Int8& got, const Int8& ref) {
    CHECK(got.q == ref.q);
    REQUIRE(got.a.size() == ref.a.size());
    for (size_t i = 0; i < ref.a.size(); i++) {
        CAPTURE(i);
        CHECK(got.a[i].d == ref.a[i].d);
        CHECK(got.a[i].s[0] == ref.a[i].s[0]);
        CHECK(got.a[i].s[1] == ref.a[i].s[1]);
    }
}

// rms_norm [-> mul] [-> int8] by the fused body, against op_rms_norm and op_binary.
void check_norm(int64_t n, int64_t M, bool weights, bool in_place) {
    CAPTURE(n);
    CAPTURE(M);
    CAPTURE(weights);
    CAPTURE(in_place);
    const std::vector<float> xv = lumen::testq::gaussian(size_t(n * M), 3, 2.0f);
    const std::vector<float> wv = lumen::testq::gaussian(size_t(n), 4);
    Buf<float> x = floats(xv), w = floats(wv), y(size_t(n * M));
    // CPU: rms_norm, then mul by the row of weights.
    std::vector<float> normed(size_t(n * M)), ref(size_t(n * M));
    Tensor xt = tensor(DType::F32, n, M, 1, x.data()), wt = tensor(DType::F32, n, 1, 1, w.data());
    Tensor nt = tensor(DType::F32, n, M, 1, nullptr);
    nt.op = Op::RmsNorm;
    nt.src[0] = &xt;
    nt.fp[0] = 1e-5f;
    cpu_op(nt, normed.data(), lumen::cpu::op_rms_norm);
    if (weights) {
        Tensor nl = tensor(DType::F32, n, M, 1, normed.data()), mt = tensor(DType::F32, n, M, 1, nullptr);
        mt.op = Op::Mul;
        mt.src[0] = &nl;
        mt.src[1] = &wt;
        cpu_op(mt, ref.data(), lumen::cpu::op_binary);
    } else {
        ref = normed;
    }
    // Fused, with the int8 copy.
    Int8 got{std::vector<int8_t>(size_t(n * M)), std::vector<cu::ActBlock>(size_t(n / 32 * M))};
    cu::NormArgs a{};
    a.x = x.data();
    a.x_stride = size_t(n);
    a.w = weights ? w.data() : nullptr;
    a.y = in_place ? x.data() : y.data();
    a.y_stride = size_t(n);
    a.n = n;
    a.eps = 1e-5f;
    a.xq = got.q.data();
    a.xa = got.a.data();
    Emu::launch(Dim{int(M), 1, 1}, cu::norm_threads(n), cu::kNormSmem, [&](Emu& c) { cu::norm_body(c, a); });
    const float* out = in_place ? x.data() : y.data();
    double scale = 0;
    for (float v : ref) scale = std::max(scale, double(std::fabs(v)));
    CHECK(max_abs(out, ref.data(), ref.size()) <= 2e-6 * scale);  // float sum vs the CPU's double sum
    check_same_int8(got, quantized(out, n, M));
}

// swiglu / geglu [-> int8] by the fused body, against op_unary.
void check_glu(bool gelu, int64_t n, int64_t M) {
    CAPTURE(gelu);
    CAPTURE(n);
    CAPTURE(M);
    const std::vector<float> gv = lumen::testq::gaussian(size_t(n * M), 5, 3.0f);
    const std::vector<float> uv = lumen::testq::gaussian(size_t(n * M), 6);
    Buf<float> g = floats(gv), u = floats(uv), y(size_t(n * M));
    std::vector<float> ref(size_t(n * M));
    Tensor gt = tensor(DType::F32, n, M, 1, g.data()), ut = tensor(DType::F32, n, M, 1, u.data());
    Tensor t = tensor(DType::F32, n, M, 1, nullptr);
    t.op = gelu ? Op::GeGLU : Op::SwiGLU;
    t.src[0] = &gt;
    t.src[1] = &ut;
    cpu_op(t, ref.data(), lumen::cpu::op_unary);
    Int8 got{std::vector<int8_t>(size_t(n * M)), std::vector<cu::ActBlock>(size_t(n / 32 * M))};
    cu::GluArgs a{};
    a.gate = g.data();
    a.gate_stride = size_t(n);
    a.up = u.data();
    a.up_stride = size_t(n);
    a.y = y.data();
    a.y_stride = size_t(n);
    a.n = n;
    a.rows = M;
    a.gelu = gelu;
    a.xq = got.q.data();
    a.xa = got.a.data();
    Emu::launch(Dim{int((n / 4 * M + cu::kGluThreads - 1) / cu::kGluThreads), 1, 1}, cu::kGluThreads, 0,
                [&](Emu& c) { cu::glu_body(c, a); });
    double worst = 0;  // libm's expf / tanhf against the CPU's vector exp; near zero, 1 + tanh cancels
    for (size_t i = 0; i < ref.size(); i++)
        worst = std::max(worst, std::fabs(double(y[i]) - ref[i]) / (std::fabs(double(ref[i])) + 0.1));
    CHECK(worst < 1e-5);
    check_same_int8(got, quantized(y.data(), n, M));
}

}  // namespace

TEST_CASE("simt fused: rms_norm -> mul -> int8 copy in one body equals the ops one by one") {
    for (int64_t n : {256, 576, 4096, 8192})
        for (int64_t M : {1, 4}) {
            check_norm(n, M, true, false);
            check_norm(n, M, false, false);
        }
    check_norm(2048, 4, true, true);  // the result over its input (the planner may place it there)
}

TEST_CASE("simt fused: swiglu and geglu -> int8 copy in one body equal op_unary") {
    for (bool gelu : {false, true})
        for (int64_t M : {1, 4}) {
            check_glu(gelu, 1536, M);
            check_glu(gelu, 14336, M);
        }
}

TEST_CASE("simt fused: a product's epilogue adds the residual (full or one broadcast row)") {
    const int64_t K = 256, N = 96;
    for (int M : {1, 4}) {
        for (bool broadcast : {false, true}) {
            CAPTURE(M);
            CAPTURE(broadcast);
            // A Q4_0 weight, repacked; activations quantized by the device body.
            const size_t rb = lumen::row_bytes(DType::Q4_0, K);
            std::vector<uint8_t> gguf(rb * size_t(N));
            const std::vector<float> wv = lumen::testq::gaussian(size_t(K * N), 8);
            for (int64_t r = 0; r < N; r++) lumen::quantize_row(DType::Q4_0, wv.data() + r * K, gguf.data() + size_t(r) * rb, K);
            const cu::WeightLayout L = cu::weight_layout(cu::T_Q4_0, K, N, rb, true);
            Buf<uint8_t> w(L.bytes);
            cu::repack_rows(L, gguf.data(), rb, 0, N, w.data());
            Buf<float> x = floats(lumen::testq::gaussian(size_t(K * M), 9));
            const Int8 xq = quantized(x.data(), K, M);
            const std::vector<float> rv = lumen::testq::gaussian(size_t(N * (broadcast ? 1 : M)), 10);
            const cu::MatvecTiling t{32, 4, M == 1 ? 1 : 4, 0};
            auto run = [&](const float* r) {
                std::vector<float> y(size_t(N * M), -1.0f);
                cu::MatvecArgs a{};
                a.xq = xq.q.data();
                a.xa = xq.a.data();
                a.xf = x.data();
                a.x_stride = size_t(K);
                a.M = M;
                const int64_t blocks = cu::matvec_add_part(a, t, w.data(), L, y.data(), N, r, broadcast ? 0 : N);
                Emu::launch(Dim{int(blocks), 1, 1}, cu::kMatvecThreads, cu::kMatvecSmem, [&](Emu& c) {
                    if (M == 1) cu::matvec_body<cu::T_Q4_0, 4, 1>(c, a);
                    else cu::matvec_body<cu::T_Q4_0, 4, 4>(c, a);
                });
                return y;
            };
            const std::vector<float> plain = run(nullptr), fused = run(rv.data());
            for (int m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    const float r = rv[size_t((broadcast ? 0 : m) * N + n)];
                    CHECK(fused[size_t(m * N + n)] == plain[size_t(m * N + n)] + r);  // the add's own rounding
                }
        }
    }
}

namespace {

struct RopeCase {
    const char* name;
    int64_t D, H, HK, T;
    int n_rot, neox;
    bool factors, yarn;
    DType cache;
};

// rope q, rope k, kv_write k, kv_write v by one launch of rope_write_body, against op_rope and
// quantize_row (op_kv_write's conversion) on the same inputs; Q arrives as a strided view.
void check_rope_write(const RopeCase& rc) {
    CAPTURE(rc.name);
    const std::string cache_name = lumen::dtype_name(rc.cache);
    CAPTURE(cache_name);
    CAPTURE(rc.T);
    const int64_t D = rc.D, H = rc.H, HK = rc.HK, T = rc.T, W = D * HK;
    const int64_t q_row = D * H + 2 * W;  // Q as part of a wider row, as a view of a fused QKV output would be
    Buf<float> qkv = floats(lumen::testq::gaussian(size_t(q_row * T), 11));
    Buf<float> k = floats(lumen::testq::gaussian(size_t(W * T), 12));
    Buf<float> v = floats(lumen::testq::gaussian(size_t(W * T), 13));
    std::vector<int32_t> pos(static_cast<size_t>(T)), rows(static_cast<size_t>(T));
    const int32_t some_pos[4] = {0, 3, 17, 60};
    for (int64_t t = 0; t < T; t++) {
        pos[size_t(t)] = some_pos[t % 4] + int32_t(t / 4);
        rows[size_t(t)] = int32_t((5 * t + 2) % 16);
    }
    Buf<float> factors = floats(lumen::testq::gaussian(size_t(D / 2), 14, 0.2f));
    for (int64_t i = 0; i < D / 2; i++) factors[size_t(i)] = 1.0f + std::fabs(factors[size_t(i)]);

    // CPU twins.
    Tensor qt = tensor(DType::F32, D, H, T, qkv.data());
    qt.nb[2] = size_t(q_row) * 4;  // the view's token stride
    Tensor kt = tensor(DType::F32, D, HK, T, k.data()), pt = tensor(DType::I32, T, 1, 1, pos.data());
    Tensor ft = tensor(DType::F32, D / 2, 1, 1, factors.data());
    auto rope = [&](Tensor& x, std::vector<float>& out) {
        Tensor t = tensor(DType::F32, x.ne[0], x.ne[1], x.ne[2], nullptr);
        t.op = Op::Rope;
        t.src[0] = &x;
        t.src[1] = &pt;
        t.src[2] = rc.factors ? &ft : nullptr;
        t.ip[0] = rc.n_rot;
        t.ip[1] = rc.neox;
        t.ip[2] = rc.yarn ? 4096 : 0;
        t.fp[0] = 10000.0f;
        t.fp[1] = rc.yarn ? 0.25f : 1.0f;
        t.fp[2] = rc.yarn ? 1.0f : 0.0f;
        t.fp[3] = 1.0f;
        t.fp[4] = 32.0f;
        t.fp[5] = 1.0f;
        out.resize(size_t(x.ne[0] * x.ne[1] * x.ne[2]));
        cpu_op(t, out.data(), lumen::cpu::op_rope);
        return t;
    };
    std::vector<float> q_ref, k_ref;
    const Tensor rt = rope(qt, q_ref);
    rope(kt, k_ref);

    // Fused: Q rotated and kept as f32, K rotated into its cache, V copied into its cache.
    const size_t rb = lumen::row_bytes(rc.cache, W), n_rows = 16;
    std::vector<uint8_t> kc(rb * n_rows, 0xA5), vc(rb * n_rows, 0xA5);
    Buf<float> q_out(size_t(D * H * T));
    cu::RopeWriteArgs a{};
    a.D = int(D);
    a.pos = pos.data();
    a.rows = rows.data();
    a.factors = rc.factors ? factors.data() : nullptr;
    a.n_rot = rt.ip[0];
    a.neox = rt.ip[1];
    a.orig_ctx = rt.ip[2];
    a.base = rt.fp[0];
    a.freq_scale = rt.fp[1];
    a.ext_factor = rt.fp[2];
    a.attn_factor = rt.fp[3];
    a.beta_fast = rt.fp[4];
    a.beta_slow = rt.fp[5];
    a.seg[0] = {qkv.data(), D, q_row, int(H), 1, q_out.data(), nullptr, 0, 0};
    a.seg[1] = {k.data(), D, W, int(HK), 1, nullptr, kc.data(), rb, int(rc.cache)};
    a.seg[2] = {v.data(), D, W, int(HK), 0, nullptr, vc.data(), rb, int(rc.cache)};
    a.segs = 3;
    Emu::launch(Dim{int(H + 2 * HK), int(T), 1}, cu::rope_threads(D), cu::rope_smem(D),
                [&](Emu& c) { cu::rope_write_body(c, a); });

    // Angles: the CPU multiplies theta_scale up the pairs, the kernel takes powf per pair; a few
    // ulps of an angle of up to ~60 rad.
    CHECK(max_abs(q_out.data(), q_ref.data(), q_ref.size()) < 2e-4);
    auto through_cache = [&](const float* src, const std::vector<uint8_t>& cache, const char* what) {
        CAPTURE(what);
        std::vector<uint8_t> row(rb);
        std::vector<float> want(static_cast<size_t>(W)), got(static_cast<size_t>(W));
        for (int64_t t = 0; t < T; t++) {
            lumen::quantize_row(rc.cache, src + t * W, row.data(), W);  // op_kv_write's conversion
            lumen::dequantize_row(rc.cache, row.data(), want.data(), W);
            lumen::dequantize_row(rc.cache, cache.data() + size_t(rows[size_t(t)]) * rb, got.data(), W);
            for (int64_t i = 0; i < W; i++) {
                // One step of the cache type: a value on a rounding edge may go either way.
                double step = 0;
                if (rc.cache == DType::F16) step = std::fabs(double(want[size_t(i)])) / 1024;
                if (rc.cache == DType::Q8_0)
                    step = lumen::fp16_to_f32_scalar(*reinterpret_cast<const uint16_t*>(row.data() + size_t(i / 32) * 34));
                CHECK(std::fabs(double(got[size_t(i)]) - want[size_t(i)]) <= 2e-4 + 1.01 * step);
            }
        }
        for (size_t r = 0; r < n_rows; r++) {  // rows no token writes are untouched
            bool written = false;
            for (int32_t x : rows) written |= size_t(x) == r;
            if (written) continue;
            for (size_t b = 0; b < rb; b++) CHECK(cache[r * rb + b] == 0xA5);
        }
    };
    through_cache(k_ref.data(), kc, "K");
    through_cache(v.data(), vc, "V");
}

}  // namespace

TEST_CASE("simt fused: rope q, rope k, kv_write k, kv_write v in one body equal the ops one by one") {
    const RopeCase cases[] = {
        {"llama: pairs (2i, 2i+1), GQA 4:1, Llama 3 factors", 128, 8, 2, 1, 128, 0, true, false, DType::F16},
        {"llama, four tokens", 128, 8, 2, 4, 128, 0, true, false, DType::F16},
        {"qwen2: pairs (i, i + n_rot/2), GQA 7:1", 64, 7, 1, 1, 64, 1, false, false, DType::F16},
        {"qwen2, four tokens", 64, 7, 1, 4, 64, 1, false, false, DType::F16},
        {"llama 8B heads, q8_0 cache", 128, 32, 8, 1, 128, 0, true, false, DType::Q8_0},
        {"qwen2, q8_0 cache, four tokens", 64, 4, 2, 4, 64, 1, false, false, DType::Q8_0},
        {"f32 cache", 64, 4, 2, 4, 64, 0, false, false, DType::F32},
        {"half the dimensions rotated, YaRN", 128, 4, 2, 4, 64, 1, false, true, DType::F16},
        {"head size 256, q8_0", 256, 4, 1, 2, 256, 0, false, false, DType::Q8_0},
    };
    for (const RopeCase& c : cases) check_rope_write(c);
}
