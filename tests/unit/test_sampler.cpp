// Sampling from the graph's top-k candidates gives exactly what sampling from the whole row gives,
// whenever the sampler says it can (no penalties; greedy, or top-k within the candidates).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include <algorithm>

#include "engine/backend_select.h"
#include "engine/session.h"
#include "tiny_model.h"
#include "sampling/sampler.h"
#include "tensor/graph.h"

using namespace lumen;

namespace {

// The CPU backend's TopK over one row of logits: k ids then k logits.
void top_k(const std::vector<float>& logits, int k, std::vector<int32_t>& ids, std::vector<float>& vals) {
    Graph g;
    Tensor* x = g.input(DType::F32, int64_t(logits.size()), 1, "logits");
    x->data = const_cast<float*>(logits.data());
    Tensor* t = g.top_k(x, k);
    g.mark_output(t);
    g.plan();
    auto be = make_backend("cpu", 1);
    be->compute(g);
    std::vector<int32_t> out(size_t(2 * k));
    be->read(t, out.data(), out.size() * 4);
    ids.assign(out.begin(), out.begin() + k);
    vals.resize(size_t(k));
    std::memcpy(vals.data(), out.data() + k, size_t(k) * 4);
}

}  // namespace

TEST_CASE("sampler: k candidates give the same distribution and draws as the whole row") {
    const int V = 3000, K = 64;
    std::mt19937 rng(4);
    std::normal_distribution<float> d(0.0f, 2.5f);
    struct P { float temp; int top_k; float top_p, min_p; };
    for (const P& p : {P{0.0f, 40, 0.95f, 0.05f}, P{0.8f, 40, 0.95f, 0.05f}, P{1.0f, 64, 1.0f, 0.0f},
                       P{1.5f, 10, 0.5f, 0.0f}, P{0.7f, 1, 1.0f, 0.0f}}) {
        CAPTURE(p.temp);
        CAPTURE(p.top_k);
        SamplingParams sp;
        sp.temp = p.temp;
        sp.top_k = p.top_k;
        sp.top_p = p.top_p;
        sp.min_p = p.min_p;
        sp.seed = 77;
        Sampler full(sp, V), cand(sp, V);
        REQUIRE(cand.exact_from(K));
        for (int trial = 0; trial < 20; trial++) {
            std::vector<float> logits(V);
            for (float& x : logits) x = d(rng);
            if (trial % 4 == 1)  // ties around the top
                for (int i = 0; i < V; i += 50) logits[size_t(i)] = 6.0f;
            std::vector<int32_t> ids;
            std::vector<float> vals;
            top_k(logits, K, ids, vals);
            const Candidates c{ids.data(), vals.data(), K};
            const TokenDist a = full.distribution(logits.data());
            const TokenDist b = cand.distribution(c);
            REQUIRE(a.size() == b.size());
            for (size_t i = 0; i < a.size(); i++) {
                CHECK(a[i].id == b[i].id);
                CHECK(a[i].p == b[i].p);
            }
            CHECK(full.sample(logits.data()) == cand.sample(c));  // same seed, same draws
        }
    }
}

TEST_CASE("sampler: candidates are refused when the chain needs the whole row") {
    SamplingParams sp;
    sp.temp = 0.8f;
    sp.top_k = 0;  // top-p over the whole vocabulary
    CHECK_FALSE(Sampler(sp, 100).exact_from(64));
    sp.top_k = 100;
    CHECK_FALSE(Sampler(sp, 100).exact_from(64));
    sp.top_k = 40;
    sp.repeat_penalty = 1.1f;
    Sampler pen(sp, 100);
    CHECK(pen.exact_from(64));  // nothing recent to penalise yet
    pen.accept(5);
    CHECK_FALSE(pen.exact_from(64));
    const int32_t ids[1] = {3};
    const float vals[1] = {1.0f};
    CHECK_THROWS(pen.sample(Candidates{ids, vals, 1}));
}

TEST_CASE("session: candidates are the top of each output row, across prompt chunks") {
    const TinyModel tiny(DType::Q8_0);
    const Model* model = tiny.m.get();
    const int V = model->hp.n_vocab, K = 16;
    SessionOptions so;
    so.n_ctx = 64;
    so.n_batch = 5;  // a 12-token prompt runs in three chunks
    so.n_threads = 1;
    so.n_top = K;
    Session s(*model, make_backend("cpu", 1), so);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 12; i++) prompt.push_back((i * 37 + 3) % V);
    for (bool all : {true, false}) {
        CAPTURE(all);
        s.truncate(0);
        s.decode(prompt, all);
        const int rows = all ? 12 : 1;
        CHECK_THROWS(s.logits(rows));
        for (int r = 0; r < rows; r++) {
            const Candidates c = s.candidates(r);
            REQUIRE(c.k == K);
            const float* l = s.logits(r);
            std::vector<int32_t> idx(static_cast<size_t>(V));
            for (int i = 0; i < V; i++) idx[size_t(i)] = i;
            std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
            for (int j = 0; j < K; j++) {
                CHECK(c.ids[j] == idx[size_t(j)]);
                CHECK(c.logits[j] == l[idx[size_t(j)]]);
            }
        }
    }
    // eval() is decode() plus every row's logits, as before.
    s.truncate(0);
    const std::vector<float> all = s.eval(prompt, true);
    s.truncate(0);
    s.decode(prompt, true);
    REQUIRE(all.size() == prompt.size() * size_t(V));
    for (int r = 0; r < int(prompt.size()); r++) CHECK(std::equal(all.begin() + r * V, all.begin() + (r + 1) * V, s.logits(r)));
}
