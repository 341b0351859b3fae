// The batch scheduler on a tiny random model: each request's greedy tokens equal the same request
// run alone on a Session, and prompts with a common prefix store its full blocks once.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/backend_select.h"
#include "engine/scheduler.h"
#include "engine/session.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/synth.h"
#include "test_backends.h"
#include "tiny_model.h"

using namespace lumen;

namespace {

std::vector<int32_t> tokens(int n, int seed, std::vector<int32_t> prefix = {}) {
    for (int i = 0; i < n; i++) prefix.push_back(int32_t((seed * 977 + i * 131) % 500 + 1));
    return prefix;
}

// Ends generation on token 7: some requests stop early.
bool is_eog(int32_t t) { return t == 7; }

// The request alone on a Session, as `lumen complete` runs it (greedy).
Finished alone(const Model& m, const Request& r, int n_ctx) {
    SessionOptions so;
    so.n_ctx = n_ctx;
    so.n_batch = 64;
    Session s(m, make_backend("cpu", 2), so);
    Finished f;
    f.reason = FinishReason::Length;
    const std::vector<float>* l = &s.eval(r.prompt);
    while (int(f.tokens.size()) < r.n_predict) {
        const int32_t next = argmax(l->data(), m.hp.n_vocab);
        if (is_eog(next)) { f.reason = FinishReason::Stop; break; }
        f.tokens.push_back(next);
        if (int(f.tokens.size()) == r.n_predict) break;
        if (s.n_past() >= s.n_ctx()) { f.reason = FinishReason::Context; break; }
        l = &s.eval({next});
    }
    return f;
}

Request request(int64_t id, std::vector<int32_t> prompt, int n_predict) {
    Request r;
    r.id = id;
    r.prompt = std::move(prompt);
    r.n_predict = n_predict;
    r.sampling.temp = 0;
    return r;
}

std::map<int64_t, Finished> run_all(Scheduler& s) {
    std::map<int64_t, Finished> done;
    for (int guard = 0; !s.idle() && guard < 100000; guard++)
        for (Finished& f : s.step()) done[f.id] = std::move(f);
    return done;
}

}  // namespace

TEST_SUITE("scheduler") {
    TEST_CASE("greedy tokens through the scheduler equal each request run alone") {
        TinyModel tm;
        const int n_ctx = 96;
        SchedulerOptions o;
        o.n_parallel = 4;
        o.n_ctx = n_ctx;
        o.n_batch = 24;  // long prompts are read in chunks between decode steps
        SUBCASE("4 sequences, 24 tokens a step") {}
        SUBCASE("3 sequences, 2 tokens a step: decode tokens take turns") {
            o.n_parallel = 3;
            o.n_batch = 2;
        }
        SUBCASE("steps padded to few shapes (as for CUDA graphs)") { o.pad_shapes = 1; }
        Scheduler sched(*tm.m, make_backend("cpu", 2), o, is_eog);
        std::vector<Request> reqs;
        const auto sys = tokens(40, 99);  // a shared "system prompt" (whole blocks of 8 or 16)
        reqs.push_back(request(0, tokens(3, 1), 12));
        reqs.push_back(request(1, tokens(57, 2), 20));
        reqs.push_back(request(2, tokens(9, 3, sys), 16));
        reqs.push_back(request(3, tokens(1, 4), 30));
        reqs.push_back(request(4, tokens(22, 5, sys), 8));
        reqs.push_back(request(5, tokens(80, 6), 40));  // runs into the context
        reqs.push_back(request(6, tokens(16, 7), 5));
        reqs.push_back(request(7, tokens(5, 8, sys), 25));
        reqs.push_back(request(8, tokens(31, 9), 0));
        for (const Request& r : reqs) sched.submit(r);
        auto done = run_all(sched);
        REQUIRE(done.size() == reqs.size());
        for (const Request& r : reqs) {
            INFO("request ", r.id);
            const Finished ref = alone(*tm.m, r, n_ctx);
            const Finished& got = done.at(r.id);
            CHECK(got.tokens == ref.tokens);
            CHECK(int(got.reason) == int(ref.reason));
            CHECK(got.n_prompt == int(r.prompt.size()));
        }
        CHECK(done.at(5).reason == FinishReason::Context);
        // The requests with the system prompt after the first one found its full blocks.
        CHECK(done.at(4).n_prompt_cached == 40 / kKVBlockSize * kKVBlockSize);
        CHECK(done.at(7).n_prompt_cached == 40 / kKVBlockSize * kKVBlockSize);
        const SchedulerStats& st = sched.stats();
        CHECK(st.gen_tokens > 0);
        CHECK(st.kv_blocks_used == 0);  // everything released
        CHECK(st.block_size == kKVBlockSize);
        CHECK(st.kv_bytes_per_block > 0);
    }

    TEST_CASE("K requests with one prompt store its full blocks once") {
        TinyModel tm;
        SchedulerOptions o;
        o.n_parallel = 6;
        o.n_ctx = 128;
        Scheduler sched(*tm.m, make_backend("cpu", 2), o, is_eog);
        const auto prompt = tokens(50, 3);
        const int bs = kKVBlockSize, full = 49 / bs;  // full blocks before the last prompt token
        for (int k = 0; k < 6; k++) {
            Request r = request(k, prompt, 10);
            r.ignore_eos = true;
            sched.submit(r);
        }
        auto done = run_all(sched);
        REQUIRE(done.size() == 6);
        int cached = 0;
        for (auto& [id, f] : done) {
            CHECK(f.tokens == done.at(0).tokens);
            cached += f.n_prompt_cached;
        }
        CHECK(cached == 5 * full * bs);  // all but the first found the full blocks
        // The shared blocks once, plus private blocks for positions full*bs..59 of each.
        const int priv = (60 - full * bs + bs - 1) / bs;
        CHECK(sched.stats().kv_blocks_peak == full + 6 * priv);
    }

    TEST_CASE("a prompt of whole blocks recomputes its last block instead of writing into a shared one") {
        TinyModel tm;
        SchedulerOptions o;
        o.n_parallel = 2;
        o.n_ctx = 64;
        Scheduler sched(*tm.m, make_backend("cpu", 2), o, is_eog);
        const int bs = kKVBlockSize;
        const auto prompt = tokens(2 * bs, 5);
        sched.submit(request(0, prompt, 4));
        auto first = run_all(sched);
        sched.submit(request(1, prompt, 4));
        auto second = run_all(sched);
        REQUIRE(first.size() == 1);
        REQUIRE(second.size() == 1);
        CHECK(first.at(0).n_prompt_cached == 0);
        CHECK(second.at(1).n_prompt_cached == bs);  // block 1 holds the last prompt token: private
        CHECK(second.at(1).tokens == first.at(0).tokens);
    }

    TEST_CASE("a small pool makes requests wait, never fail") {
        TinyModel tm;
        SchedulerOptions o;
        o.n_parallel = 4;
        o.n_ctx = 64;
        o.kv_tokens = 80;  // room for one request of up to 64 tokens at a time
        Scheduler sched(*tm.m, make_backend("cpu", 2), o, is_eog);
        for (int k = 0; k < 5; k++) sched.submit(request(k, tokens(20 + k, 20 + k), 30));
        auto done = run_all(sched);
        REQUIRE(done.size() == 5);
        CHECK(sched.stats().kv_blocks_peak * kKVBlockSize <= 80);
        for (int k = 0; k < 5; k++) CHECK(done.at(k).tokens == alone(*tm.m, request(k, tokens(20 + k, 20 + k), 30), 64).tokens);
        o.kv_tokens = 48;  // a 63-token prompt and its first new token cannot fit
        Scheduler tiny(*tm.m, make_backend("cpu", 2), o, is_eog);
        CHECK_THROWS(tiny.submit(request(9, tokens(63, 1), 1)));
    }
}

TEST_SUITE("simt") {
    // The CUDA backend pads steps to few shapes and replays each as a captured graph; its matmuls
    // round otherwise than the CPU's (f16 tensor-core GEMM above 8 rows), so a near tie may flip a
    // greedy token: most requests, not all, must match.
    TEST_CASE("the scheduler on the CUDA backend (emulated) gives the CPU's greedy tokens") {
        TinyModel tm;
        SchedulerOptions o;
        o.n_parallel = 4;
        o.n_ctx = 96;
        o.n_batch = 24;
        std::vector<Request> reqs;
        const auto sys = tokens(40, 99);
        reqs.push_back(request(0, tokens(3, 1), 12));
        reqs.push_back(request(1, tokens(57, 2), 20));
        reqs.push_back(request(2, tokens(9, 3, sys), 16));
        reqs.push_back(request(3, tokens(1, 4), 30));
        reqs.push_back(request(4, tokens(22, 5, sys), 8));
        reqs.push_back(request(5, tokens(80, 6), 40));
        auto run = [&](const std::string& device) {
            Scheduler sched(*tm.m, test_backend(device), o, is_eog);
            for (const Request& r : reqs) sched.submit(r);
            auto done = run_all(sched);
            CHECK(sched.stats().kv_blocks_used == 0);
            return done;
        };
        auto cpu = run("cpu"), gpu = run("simt");
        REQUIRE(gpu.size() == reqs.size());
        int same = 0;
        for (const Request& r : reqs) {
            INFO("request ", r.id);
            CHECK(gpu.at(r.id).n_prompt_cached == cpu.at(r.id).n_prompt_cached);
            same += gpu.at(r.id).tokens == cpu.at(r.id).tokens;
        }
        CHECK(same >= int(reqs.size()) - 1);
    }
}
