// CPU attention: its arithmetic gives the same bits in the portable and the AVX2 code, and a token's
// output has the same bits whatever shares its batch (tokens of its own sequence before it, other
// sequences, a prompt or one token at a time) and whatever the thread count: speculative decoding
// and chat's KV reuse rely on it. Accuracy against a double-precision reference is in test_ops.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/attention_math.h"
#include "tensor/graph.h"
#include "tensor/quant.h"
#include "test_backends.h"
#include "test_quant_util.h"

using namespace lumen;
namespace attn = lumen::cpu::attn;

namespace {

// Gaussian values: testq::gaussian (test_quant_util.h).
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) { return testq::gaussian(n, seed, scale); }

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// --- the op, step by step over a persistent paged cache ----------------------------------------

constexpr int64_t kH = 6, kHK = 2, kBS = 8, kBlocks = 200, kMaxBlocks = 100;

struct Token {
    int seq, pos;
};

// The inputs of (sequence, position): the same whenever and with whatever the token is run.
std::vector<float> token_values(const Token& t, int what, int64_t n) {
    return randn(size_t(n), uint64_t(t.seq) * 1000003 + uint64_t(t.pos) * 7 + uint64_t(what), 1.0f);
}

struct Run {
    int64_t head_dim;
    DType type;
    int window;
    float softcap;
    std::unique_ptr<Backend> be;
    std::vector<uint8_t> k, v;
    std::vector<std::vector<int32_t>> tables;  // per sequence: its physical blocks

    Run(int64_t D, DType type_, int window_, float softcap_, int n_threads, int shuffle)
        : head_dim(D), type(type_), window(window_), softcap(softcap_), be(test_backend("cpu", n_threads)),
          k(row_bytes(type_, D * kHK) * kBlocks * kBS), v(k.size()), tables(2) {
        // Two sequences' blocks spread through the pool; `shuffle` picks the spread.
        for (int b = 0; b < kBlocks; b++) {
            const int phys = (b * (shuffle ? 7 : 1) + shuffle) % kBlocks;  // 7 is coprime to 200
            tables[size_t(b % 2)].push_back(phys);
        }
    }

    Tensor cache(std::vector<uint8_t>& mem, const char* name) {
        Tensor t;
        t.type = type;
        t.ne[0] = head_dim * kHK;
        t.ne[1] = kBlocks * kBS;
        t.nb[0] = dtype_info(type).block_bytes;
        t.nb[1] = row_bytes(type, head_dim * kHK);
        t.nb[2] = t.nb[3] = t.nb[1] * size_t(t.ne[1]);
        t.is_state = true;
        t.data = mem.data();
        t.name = name;
        return t;
    }

    // Writes the tokens' K and V, attends; returns each token's output.
    std::vector<std::vector<float>> step(const std::vector<Token>& toks) {
        const int64_t T = int64_t(toks.size());
        std::vector<float> q, kv, vv;
        std::vector<int32_t> pos, seq, rows, table(size_t(kMaxBlocks * 2));
        for (const Token& t : toks) {
            for (float x : token_values(t, 0, head_dim * kH)) q.push_back(x);
            for (float x : token_values(t, 1, head_dim * kHK)) kv.push_back(x);
            for (float x : token_values(t, 2, head_dim * kHK)) vv.push_back(x);
            pos.push_back(t.pos);
            seq.push_back(t.seq);
            rows.push_back(tables[size_t(t.seq)][size_t(t.pos / kBS)] * int32_t(kBS) + t.pos % int32_t(kBS));
        }
        for (int s = 0; s < 2; s++)
            for (int64_t b = 0; b < kMaxBlocks; b++) table[size_t(s * kMaxBlocks + b)] = tables[size_t(s)][size_t(b)];
        Graph g;
        auto input = [&](DType dt, void* data, int64_t ne0, int64_t ne1) {
            Tensor* t = g.input(dt, ne0, ne1, "in");
            t->data = data;
            return t;
        };
        Tensor kt = cache(k, "k"), vt = cache(v, "v");
        Tensor* rt = input(DType::I32, rows.data(), T, 1);
        Tensor* kc = g.kv_write(g.state(&kt), input(DType::F32, kv.data(), head_dim * kHK, T), rt);
        Tensor* vc = g.kv_write(g.state(&vt), input(DType::F32, vv.data(), head_dim * kHK, T), rt);
        Tensor* qt = g.reshape(input(DType::F32, q.data(), head_dim, kH * T), head_dim, kH, T);
        Tensor* out = g.attention(qt, kc, vc, input(DType::I32, pos.data(), T, 1), input(DType::I32, seq.data(), T, 1),
                                  input(DType::I32, table.data(), kMaxBlocks, 2), int(kBS), int(kHK),
                                  1.0f / std::sqrt(float(head_dim)), window, softcap);
        g.mark_output(out);
        g.plan();
        be->prepare(g);  // each step's graph is new (maybe at the last one's address): size the scratch again
        be->compute(g);
        std::vector<float> all(size_t(out->nelements()));
        be->read(out, all.data(), all.size() * sizeof(float));
        be->release(g);
        std::vector<std::vector<float>> r;
        for (int64_t i = 0; i < T; i++) r.emplace_back(all.begin() + i * head_dim * kH, all.begin() + (i + 1) * head_dim * kH);
        return r;
    }
};

std::vector<Token> span(int seq, int from, int to) {  // positions [from, to)
    std::vector<Token> r;
    for (int p = from; p < to; p++) r.push_back({seq, p});
    return r;
}

std::vector<Token> cat(std::vector<Token> a, const std::vector<Token>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// Sequence 0 at positions 0..kN-1 three ways; every output must have the same bits.
constexpr int kN = 600;  // three chunks of keys

void check_invariance(DType type, int window, float softcap, int64_t head_dim = 64) {
    // 1. The whole sequence in one batch, 2 threads.
    Run ref(head_dim, type, window, softcap, 2, 0);
    const std::vector<std::vector<float>> want = ref.step(span(0, 0, kN));
    std::vector<std::vector<float>> got(kN);
    auto take = [&](const std::vector<Token>& toks, const std::vector<std::vector<float>>& outs) {
        for (size_t i = 0; i < toks.size(); i++)
            if (toks[i].seq == 0) got[size_t(toks[i].pos)] = outs[i];
    };
    // 2. A prompt of 300, then one token at a time up to 330 (the decode path), then the rest in
    //    batches of 16 (still split by chunk) and 45; 3 threads, other blocks.
    {
        Run r(head_dim, type, window, softcap, 3, 5);
        auto s = span(0, 0, 300);
        take(s, r.step(s));
        for (int p = 300; p < 330; p++) take({{0, p}}, r.step({{0, p}}));
        for (int p = 330; p < kN;) {
            const int n = p < 450 ? 16 : 45;
            s = span(0, p, std::min(kN, p + n));
            take(s, r.step(s));
            p += n;
        }
    }
    for (int p = 0; p < kN; p++) {
        INFO("one at a time / in batches: position ", p);
        REQUIRE(got[size_t(p)].size() == size_t(head_dim * kH));
        CHECK(same_bits(got[size_t(p)].data(), want[size_t(p)].data(), sizeof(float) * head_dim * kH));
    }
    // 3. Mixed with sequence 1 in every step, 1 thread: a shared prompt batch, decode steps of both,
    //    a verification-sized run of 7 beside one token of the other, then the rest together.
    got.assign(kN, {});
    {
        Run r(head_dim, type, window, softcap, 1, 3);
        auto s = cat(span(1, 0, 100), span(0, 0, 290));
        take(s, r.step(s));
        for (int p = 290; p < 300; p++) {
            s = {{1, 100 + p - 290}, {0, p}};
            take(s, r.step(s));
        }
        s = cat(span(0, 300, 307), {{1, 110}});
        take(s, r.step(s));
        s = cat(span(0, 307, kN), span(1, 111, 140));
        take(s, r.step(s));
    }
    for (int p = 0; p < kN; p++) {
        INFO("beside another sequence: position ", p);
        REQUIRE(got[size_t(p)].size() == size_t(head_dim * kH));
        CHECK(same_bits(got[size_t(p)].data(), want[size_t(p)].data(), sizeof(float) * head_dim * kH));
    }
}

}  // namespace

TEST_SUITE("cpu attention") {
    TEST_CASE("attention: a token's bits do not depend on its batch or the thread count") {
        for (DType type : {DType::F16, DType::Q8_0, DType::F32}) {
            const std::string name = dtype_name(type);
            CAPTURE(name);
            check_invariance(type, 0, 0.0f);
            check_invariance(type, 270, 0.0f);  // windows start mid-block and mid-chunk
            check_invariance(type, 0, 20.0f);
        }
        check_invariance(DType::F16, 270, 0.0f, 40);  // rows padded from 40 to 48
    }

    TEST_CASE("attention arithmetic: exp1 is accurate, 1 at 0, 0 far below") {
        CHECK(attn::exp1(0.0f) == 1.0f);
        CHECK(attn::exp1(-std::numeric_limits<float>::infinity()) == 0.0f);
        CHECK(attn::exp1(-100.0f) == 0.0f);
        double worst = 0;
        for (float x = -86.0f; x <= 0.0f; x += 0.001373f)
            worst = std::max(worst, std::fabs(attn::exp1(x) / std::exp(double(x)) - 1));
        CHECK(worst < 3e-7);
    }

#if defined(LUMEN_ATTN_AVX2)
    TEST_CASE("attention arithmetic: the portable and the AVX2 code give the same bits") {
        std::mt19937 rng(5);
        std::uniform_real_distribution<float> u(-95.0f, 1.0f);
        for (int i = 0; i < 20000; i++) {
            float x[8], a[8], b[8];
            for (float& e : x) e = u(rng);
            if (i == 0) x[0] = -std::numeric_limits<float>::infinity(), x[1] = 0.0f, x[2] = -87.0f, x[3] = -1e-30f;
            attn::portable::exp8(x, a);
            attn::avx2::exp8(x, b);
            REQUIRE(same_bits(a, b, sizeof a));
        }
        for (int64_t dp : {8, 64, 72, 128, 256}) {
            CAPTURE(dp);
            const auto q = randn(size_t(dp), 1), k = randn(size_t(dp * attn::kBlock), 2), v = randn(size_t(dp * attn::kBlock), 3);
            for (int trial = 0; trial < 40; trial++) {
                CAPTURE(trial);
                const int ra = trial % attn::kBlock, re = ra + int(rng() % uint32_t(attn::kBlock - ra));
                const float softcap = trial % 3 == 0 ? 5.0f : 0.0f;
                attn::RowState s1{trial % 2 ? 0.7f : -std::numeric_limits<float>::infinity(), {}}, s2;
                std::vector<float> acc1(static_cast<size_t>(dp)), acc2, p1(attn::kBlock), p2(attn::kBlock);
                if (trial % 2)
                    for (int64_t i = 0; i < dp; i++) acc1[size_t(i)] = float(i % 5) - 2.0f;
                for (int l = 0; l < 8; l++) s1.sv[l] = trial % 2 ? 0.25f * float(l) : 0.0f;
                s2 = s1;
                acc2 = acc1;
                attn::portable::row_block(q.data(), k.data(), v.data(), dp, ra, re, 0.125f, softcap, s1, acc1.data(), p1.data());
                attn::avx2::row_block(q.data(), k.data(), v.data(), dp, ra, re, 0.125f, softcap, s2, acc2.data(), p2.data());
                CHECK(same_bits(&s1, &s2, sizeof s1));
                CHECK(same_bits(acc1.data(), acc2.data(), sizeof(float) * size_t(dp)));
                CHECK(same_bits(p1.data() + ra, p2.data() + ra, sizeof(float) * size_t(re - ra + 1)));
                // Merging two partial results.
                float M1 = trial % 4 == 1 ? -std::numeric_limits<float>::infinity() : 1.5f, S1 = 3.0f, M2 = M1, S2 = S1;
                std::vector<float> r1 = randn(size_t(dp), uint64_t(trial) + 9), r2 = r1;
                attn::portable::fold(M1, S1, r1.data(), s1.m, attn::sum8(s1.sv), acc1.data(), dp);
                attn::avx2::fold(M2, S2, r2.data(), s2.m, attn::sum8(s2.sv), acc2.data(), dp);
                CHECK(M1 == M2);
                CHECK(same_bits(&S1, &S2, sizeof S1));
                CHECK(same_bits(r1.data(), r2.data(), sizeof(float) * size_t(dp)));
            }
        }
    }
#endif
}
