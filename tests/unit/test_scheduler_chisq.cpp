// Speculation through the batch scheduler keeps the target's output distribution: many sampled
// requests of one prompt (a seed each), decoded eight at a time so that their guesses, verifications
// and rollbacks share forward passes, with a draft model (sampled guesses, mostly rejected) and with
// prompt lookup (point-mass guesses); the joint distribution of their first three tokens is tested
// against the exact one with a chi-square test, and a wrong acceptance rule is caught.
// Significance: an exact-rule case fails when its p-value is below 1e-3, so a correct scheduler fails
// one of the three such cases with probability about 3e-3 over the choice of seeds; the seeds are
// fixed, so a given build passes or fails every time. The broken rule gave p-values of 3e-9 or less
// (lookup) and 1e-9 or less (draft model) over several ranges of seeds, against the 1e-6 it must stay
// under.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chi_square.h"
#include "first_three.h"
#include "engine/backend_select.h"
#include "engine/draft_model.h"
#include "engine/lookup.h"
#include "engine/scheduler.h"
#include "engine/session.h"
#include "engine/speculative.h"
#include "sampling/sampler.h"
#include "tiny_model.h"

using namespace lumen;

namespace {

const TinyModel& target() {
    static TinyModel t(DType::F16, 42);
    return t;
}

// A draft model: another random model of the same vocabulary.
const TinyModel& draft() {
    static TinyModel t(DType::F16, 4242);
    return t;
}

const int kRequests = 1500;

int n_vocab() { return target().m->hp.n_vocab; }

// The first three tokens as one outcome.
int64_t key(int32_t a, int32_t b, int32_t c) { return first_three_key(a, b, c, n_vocab()); }

SchedulerOptions options() {
    SchedulerOptions o;
    o.n_parallel = 8;
    o.n_ctx = 64;
    o.n_batch = 64;
    o.n_threads = 1;  // tiny matrices: one thread is fastest
    return o;
}

Request request(int64_t id, const std::vector<int32_t>& prompt, int n_predict, const SamplingParams& sp) {
    Request r;
    r.id = id;
    r.prompt = prompt;
    r.n_predict = n_predict;
    r.sampling = sp;
    r.ignore_eos = true;
    return r;
}

// The target's greedy continuation of `prompt`.
std::vector<int32_t> greedy(const std::vector<int32_t>& prompt, int n) {
    Scheduler s(*target().m, make_backend("cpu", 1), options(), [](int32_t) { return false; });
    SamplingParams sp;
    sp.temp = 0;
    s.submit(request(0, prompt, n, sp));
    std::vector<int32_t> out;
    while (!s.idle())
        for (Finished& f : s.step()) out = f.tokens;
    return out;
}

// The exact joint distribution of the first three tokens after `prompt` under `sp`.
std::map<int64_t, double> exact_first_three(const std::vector<int32_t>& prompt, const SamplingParams& sp) {
    SessionOptions so;
    so.n_ctx = 64;
    so.n_threads = 1;
    Session s(*target().m, make_backend("cpu", 1), so);
    return lumen::exact_first_three(s, prompt, sp, n_vocab());
}

enum class Guesses { None, Lookup, DraftModel };

struct Sampled {
    std::map<int64_t, int> seen;  // first three tokens -> requests
    SchedulerStats stats;
};

// Runs kRequests requests of `prompt` with seeds 1000, 1001, ... through one scheduler. n_predict 4:
// the first pass after the prompt's verifies up to two guesses, so accepted chains, replacements and
// bonus tokens all reach the first three.
Sampled sample_requests(const std::vector<int32_t>& prompt, const SamplingParams& sp, Guesses g, AcceptRule rule) {
    const SchedulerOptions o = options();
    Scheduler s(*target().m, make_backend("cpu", 1), o, [](int32_t) { return false; });
    LookupDrafter lookup(LookupParams{1, 8});
    EachDrafter each(lookup);
    BatchDraftOptions bo;
    bo.n_slots = o.n_parallel;
    bo.n_ctx = o.n_ctx;
    bo.n_batch = o.n_batch;
    DraftModelParams dp;
    dp.p_min = 0.0f;  // always guess
    BatchDraftModel dm(*draft().m, s.backend(), bo, dp);  // samples its guesses, as the requests do
    SpeculativeParams spp;
    spp.draft_max = 4;
    spp.rule = rule;
    if (g == Guesses::Lookup) s.set_drafter(&each, spp);
    if (g == Guesses::DraftModel) s.set_drafter(&dm, spp);
    for (int i = 0; i < kRequests; i++) {
        SamplingParams r = sp;
        r.seed = uint64_t(1000 + i);
        s.submit(request(i, prompt, 4, r));
    }
    Sampled out;
    while (!s.idle())
        for (const Finished& f : s.step()) {
            REQUIRE(f.tokens.size() == 4);
            out.seen[key(f.tokens[0], f.tokens[1], f.tokens[2])]++;
        }
    out.stats = s.stats();
    return out;
}

}  // namespace

TEST_SUITE("scheduler") {
    TEST_CASE("scheduler speculation: sampled output keeps the target's distribution (chi-square over seeds)") {
        SamplingParams sp;
        sp.temp = 1.0f;
        sp.top_k = 6;
        sp.top_p = 0.98f;
        sp.min_p = 0.01f;
        // The prompt: the target's own greedy continuation, twice, so that lookup finds likely guesses.
        std::vector<int32_t> prompt = {1, 300, 301, 302};
        const std::vector<int32_t> cont = greedy(prompt, 12);
        REQUIRE(cont.size() == 12);
        for (int r = 0; r < 2; r++) prompt.insert(prompt.end(), cont.begin(), cont.end());

        const std::map<int64_t, double> exact = exact_first_three(prompt, sp);
        double total = 0;
        for (const auto& [k, p] : exact) total += p;
        REQUIRE(total == doctest::Approx(1.0).epsilon(1e-4));

        struct Case {
            const char* name;
            Guesses g;
            AcceptRule rule;
        };
        // Without guesses: the exact distribution, read through a Session, is the scheduler's too.
        for (const Case& c : {Case{"plain", Guesses::None, AcceptRule::Exact},
                              Case{"lookup", Guesses::Lookup, AcceptRule::Exact},
                              Case{"lookup (broken rule)", Guesses::Lookup, AcceptRule::BrokenResample},
                              Case{"draft model", Guesses::DraftModel, AcceptRule::Exact},
                              Case{"draft model (broken rule)", Guesses::DraftModel, AcceptRule::BrokenResample}}) {
            const Sampled s = sample_requests(prompt, sp, c.g, c.rule);
            const ChiSquare r = chi_square(exact, s.seen, kRequests);
            const std::string label = c.name;
            MESSAGE(label, ": chi2 ", r.stat, " df ", r.df, " p-value ", r.p_value, " | drafted ", s.stats.drafted,
                    " accepted ", s.stats.accepted);
            INFO(label, ": chi2 ", r.stat, " df ", r.df, " p-value ", r.p_value);
            CHECK(s.stats.steps < kRequests);  // alone, each request takes at least two passes
            if (c.g != Guesses::None) {
                // Guesses made, some kept, some rolled back: the verification path really ran.
                CHECK(s.stats.drafted >= kRequests / 2);
                CHECK(s.stats.accepted > 0);
                CHECK(s.stats.accepted < s.stats.drafted);
            }
            if (c.rule == AcceptRule::Exact) CHECK(r.p_value > 1e-3);
            else CHECK(r.p_value < 1e-6);
        }
    }
}
