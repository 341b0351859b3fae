// Speculation inside the batch scheduler, on a tiny random model: greedy tokens with prompt lookup
// (and with a draft model) equal those without, for sequences of different lengths decoded together,
// through rejections and rollbacks, with shared prefix blocks and a small KV pool; and every block
// is back in the pool at the end.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/backend_select.h"
#include "engine/draft_model.h"
#include "engine/lookup.h"
#include "engine/scheduler.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/synth.h"
#include "tiny_model.h"

using namespace lumen;

namespace {

const TinyModel& tiny() {
    static TinyModel t(DType::F16, 42);
    return t;
}

// Another random model of the same vocabulary: a draft model that is mostly wrong.
const TinyModel& other() {
    static TinyModel t(DType::F16, 4242);
    return t;
}

// A draft model for a scheduler with options o: p_min 0, so it always guesses.
std::unique_ptr<BatchDraftModel> draft_model(const Model& m, Scheduler& s, const SchedulerOptions& o,
                                             int64_t kv_tokens = 0) {
    BatchDraftOptions bo;
    bo.n_slots = o.n_parallel;
    bo.n_ctx = o.n_ctx;
    bo.n_batch = o.n_batch;
    bo.kv_tokens = kv_tokens;
    DraftModelParams p;
    p.p_min = 0.0f;
    return std::make_unique<BatchDraftModel>(m, s.backend(), bo, p);
}

// Ends generation on token 7: some requests stop early.
bool is_eog(int32_t t) { return t == 7; }

// A phrase repeated with small changes, so that lookup finds n-grams that are sometimes wrong.
std::vector<int32_t> repetitive(int n, int seed, std::vector<int32_t> prefix = {}) {
    for (int i = 0; i < n; i++) {
        const int phrase = 6 + seed % 5;
        int32_t t = int32_t(100 + seed * 37 + i % phrase);
        if (i % 23 == 11) t += 200;  // a change the lookup will guess wrong
        prefix.push_back(t % 500 + 8);
    }
    return prefix;
}

Request request(int64_t id, std::vector<int32_t> prompt, int n_predict, bool ignore_eos = false) {
    Request r;
    r.id = id;
    r.prompt = std::move(prompt);
    r.n_predict = n_predict;
    r.sampling.temp = 0;
    r.ignore_eos = ignore_eos;
    return r;
}

// Requests of different prompt lengths: a shared "system prompt" of whole blocks, three copies of one
// prompt (as --n-samples makes), one that runs into the context, one that reads its prompt only.
std::vector<Request> mixed_requests() {
    const auto sys = repetitive(40, 9);
    std::vector<Request> r;
    r.push_back(request(0, repetitive(3, 1), 12));
    r.push_back(request(1, repetitive(57, 2), 30, true));
    r.push_back(request(2, repetitive(9, 3, sys), 16));
    r.push_back(request(3, repetitive(30, 4), 40, true));
    r.push_back(request(4, repetitive(22, 5, sys), 24, true));
    r.push_back(request(5, repetitive(70, 6), 40, true));  // runs into the context
    for (int k = 0; k < 3; k++) r.push_back(request(6 + k, repetitive(50, 7), 20, true));
    r.push_back(request(9, repetitive(31, 8), 0));
    return r;
}

std::map<int64_t, Finished> run_all(Scheduler& s, const std::vector<Request>& reqs) {
    for (const Request& r : reqs) s.submit(r);
    std::map<int64_t, Finished> done;
    for (int guard = 0; !s.idle() && guard < 100000; guard++)
        for (Finished& f : s.step()) done[f.id] = std::move(f);
    return done;
}

SchedulerOptions options(int n_parallel, int n_batch) {
    SchedulerOptions o;
    o.n_parallel = n_parallel;
    o.n_ctx = 96;
    o.n_batch = n_batch;
    o.n_threads = 1;  // tiny matrices: one thread is fastest
    return o;
}

std::map<int64_t, Finished> plain_run(const std::vector<Request>& reqs, const SchedulerOptions& o) {
    Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
    return run_all(s, reqs);
}

// Same tokens and reasons, and the scheduler's totals add up.
void check_same(const std::map<int64_t, Finished>& got, const std::map<int64_t, Finished>& want, const Scheduler& s) {
    REQUIRE(got.size() == want.size());
    int64_t drafted = 0, accepted = 0, rounds = 0, evals = 0;
    for (const auto& [id, f] : want) {
        INFO("request ", id);
        const Finished& g = got.at(id);
        CHECK(g.tokens == f.tokens);
        CHECK(int(g.reason) == int(f.reason));
        CHECK(g.accepted <= g.drafted);
        CHECK(g.rounds <= g.target_evals);
        drafted += g.drafted;
        accepted += g.accepted;
        rounds += g.rounds;
        evals += g.target_evals;
    }
    const SchedulerStats& st = s.stats();
    CHECK(st.drafted == drafted);
    CHECK(st.accepted == accepted);
    CHECK(st.rounds == rounds);
    CHECK(st.target_evals == evals);
    CHECK(st.kv_blocks_used == 0);  // rolled-back and finished blocks all returned
}

}  // namespace

TEST_SUITE("scheduler") {
    TEST_CASE("lookup in the scheduler: greedy tokens equal those without guesses") {
        const std::vector<Request> reqs = mixed_requests();
        LookupDrafter lookup(LookupParams{1, 6});
        EachDrafter each(lookup);
        SchedulerOptions o = options(4, 64);
        SpeculativeParams sp;
        SUBCASE("4 sequences, adaptive guess length") {}
        SUBCASE("4 sequences, 5 guesses each") {
            sp.adaptive = false;
            sp.draft_max = 5;
        }
        SUBCASE("3 sequences, 10 tokens a step: guesses squeezed by the batch") {
            o = options(3, 10);
            sp.draft_max = 8;
        }
        SUBCASE("at least 3 guesses or none") {
            sp.draft_min = 3;
            sp.draft_max = 6;
        }
        bool pad = false;  // the guessing run's steps padded to few shapes, the plain run's not
        SUBCASE("steps padded to few shapes (as for CUDA graphs)") { pad = true; }
        const auto want = plain_run(reqs, o);
        SchedulerOptions so = o;
        so.pad_shapes = pad ? 1 : 0;
        Scheduler s(*tiny().m, make_backend("cpu", 1), so, is_eog);
        s.set_drafter(&each, sp);
        const auto got = run_all(s, reqs);
        check_same(got, want, s);
        CHECK(got.at(5).reason == FinishReason::Context);
        CHECK(got.at(7).n_prompt_cached > 0);  // the copies shared the prompt's blocks
        const SchedulerStats& st = s.stats();
        CHECK(st.accepted > 0);
        CHECK(st.accepted < st.drafted);  // some guesses were rejected and rolled back
        CHECK(st.target_evals < st.gen_tokens);
    }

    TEST_CASE("lookup in the scheduler: a small pool makes requests wait, and guesses stay inside it") {
        SchedulerOptions o = options(4, 64);
        o.kv_tokens = 128;  // two requests of up to 64 tokens at a time
        std::vector<Request> reqs;
        for (int k = 0; k < 5; k++) reqs.push_back(request(k, repetitive(20 + 3 * k, 20 + k), 40, true));
        const auto want = plain_run(reqs, o);
        LookupDrafter lookup(LookupParams{1, 6});
        EachDrafter each(lookup);
        Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
        s.set_drafter(&each, SpeculativeParams{});
        const auto got = run_all(s, reqs);
        check_same(got, want, s);
        CHECK(s.stats().kv_blocks_peak * kKVBlockSize <= 128);
        CHECK(s.stats().drafted > 0);
    }

    TEST_CASE("lookup in the scheduler: sampled generation runs, reproducibly, within its budgets") {
        std::vector<Request> reqs = mixed_requests();
        for (Request& r : reqs) {
            r.sampling.temp = 0.9f;
            r.sampling.seed = 100 + uint64_t(r.id);
        }
        LookupDrafter lookup(LookupParams{1, 6});
        EachDrafter each(lookup);
        std::map<int64_t, Finished> runs[2];
        for (auto& run : runs) {
            Scheduler s(*tiny().m, make_backend("cpu", 1), options(4, 64), is_eog);
            s.set_drafter(&each, SpeculativeParams{});
            run = run_all(s, reqs);
            CHECK(s.stats().kv_blocks_used == 0);
            CHECK(s.stats().drafted > 0);
        }
        REQUIRE(runs[0].size() == reqs.size());
        for (const Request& r : reqs) {
            INFO("request ", r.id);
            const Finished& f = runs[0].at(r.id);
            CHECK(f.tokens == runs[1].at(r.id).tokens);
            CHECK(int(f.tokens.size()) <= std::max(r.n_predict, 0));
            CHECK(int(r.prompt.size() + f.tokens.size()) <= 96 + 1);  // the last token is never read
        }
    }

    TEST_CASE("draft model in the scheduler: greedy tokens equal those without guesses") {
        const std::vector<Request> reqs = mixed_requests();
        SchedulerOptions o = options(4, 64);
        SpeculativeParams sp;
        sp.draft_max = 6;
        const auto want = plain_run(reqs, o);
        SUBCASE("the target drafting for itself keeps every guess") {
            Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
            auto dm = draft_model(*tiny().m, s, o);
            s.set_drafter(dm.get(), sp);
            const auto got = run_all(s, reqs);
            check_same(got, want, s);
            const SchedulerStats& st = s.stats();
            CHECK(st.drafted > 0);
            CHECK(st.accepted == st.drafted);
            CHECK(st.target_evals < st.gen_tokens);
            CHECK(dm->evals() < st.drafted);  // the sequences' guesses share passes
            CHECK(dm->tokens_shared() >= 2 * (50 / kKVBlockSize - 1) * kKVBlockSize);  // the prompt's copies
        }
        SUBCASE("another model: mostly rejected, still the same tokens") {
            Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
            auto dm = draft_model(*other().m, s, o);
            s.set_drafter(dm.get(), sp);
            check_same(run_all(s, reqs), want, s);
            CHECK(s.stats().accepted < s.stats().drafted);
        }
        SUBCASE("a draft cache too small for every sequence: some draft less") {
            Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
            auto dm = draft_model(*tiny().m, s, o, 160);
            s.set_drafter(dm.get(), sp);
            check_same(run_all(s, reqs), want, s);
            CHECK(s.stats().drafted > 0);
            CHECK(dm->blocks_used() * kKVBlockSize <= 160);
        }
        SUBCASE("draft-min 4, 3 sequences, 12 tokens a step") {
            o = options(3, 12);
            sp.draft_min = 4;
            const auto want3 = plain_run(reqs, o);
            Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
            auto dm = draft_model(*tiny().m, s, o);
            s.set_drafter(dm.get(), sp);
            check_same(run_all(s, reqs), want3, s);
            CHECK(s.stats().accepted == s.stats().drafted);
        }
    }

    TEST_CASE("draft model in the scheduler: sampled generation is reproducible") {
        std::vector<Request> reqs = mixed_requests();
        for (Request& r : reqs) {
            r.sampling.temp = 0.9f;
            r.sampling.seed = 7 + uint64_t(r.id);
        }
        const SchedulerOptions o = options(4, 64);
        std::map<int64_t, Finished> runs[2];
        for (auto& run : runs) {
            Scheduler s(*tiny().m, make_backend("cpu", 1), o, is_eog);
            auto dm = draft_model(*tiny().m, s, o);
            s.set_drafter(dm.get(), SpeculativeParams{});
            run = run_all(s, reqs);
            CHECK(s.stats().kv_blocks_used == 0);
            CHECK(s.stats().accepted > 0);
        }
        REQUIRE(runs[0].size() == reqs.size());
        for (const Request& r : reqs) CHECK(runs[0].at(r.id).tokens == runs[1].at(r.id).tokens);
    }

    TEST_CASE("scheduler: bad guess lengths are errors naming the flag") {
        LookupDrafter lookup(LookupParams{});
        EachDrafter each(lookup);
        Scheduler s(*tiny().m, make_backend("cpu", 1), options(1, 8), is_eog);
        SpeculativeParams sp;
        sp.draft_max = 0;
        CHECK_THROWS_WITH(s.set_drafter(&each, sp), doctest::Contains("--draft-max 0"));
        sp.draft_max = 2;
        sp.draft_min = 3;
        CHECK_THROWS_WITH(s.set_drafter(&each, sp), doctest::Contains("--draft-min 3"));
    }
}
