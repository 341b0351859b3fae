// Speculative and prompt-lookup decoding: the lookup itself, the acceptance rule, greedy identity with
// and without guesses on tiny random models, and a chi-square test that sampled output keeps the
// target's distribution (and that a deliberately wrong acceptance rule is caught).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend_select.h"
#include "engine/draft_model.h"
#include "engine/generator.h"
#include "engine/lookup.h"
#include "engine/session.h"
#include "engine/speculative.h"
#include "model/model.h"
#include "model/synth.h"
#include "chi_square.h"
#include "first_three.h"
#include "tiny_model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

using namespace lumen;

namespace {

// ---- tiny models ------------------------------------------------------------------------------

struct Tiny : TinyModel {
    explicit Tiny(uint64_t seed) : TinyModel(DType::Q8_0, seed) {}
    std::unique_ptr<Session> session(int n_ctx = 256) const {
        SessionOptions so;
        so.n_ctx = n_ctx;
        so.n_threads = 1;  // tiny matrices: one thread is fastest, and several sessions share the cores
        return std::make_unique<Session>(*m, make_backend("cpu", 1), so);
    }
    int n_vocab() const { return m->hp.n_vocab; }
};

const Tiny& target_model() {
    static Tiny t(42);
    return t;
}
const Tiny& other_model() {
    static Tiny t(4242);
    return t;
}

// A prompt with repeats, so that lookup finds n-grams.
std::vector<int32_t> repetitive_prompt() {
    std::vector<int32_t> p = {1};
    const int32_t phrase[] = {300, 301, 302, 303, 304, 305, 306, 307};
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 8; i++) p.push_back(phrase[(i + r) % 8] + (i == 5 && r == 2 ? 50 : 0));
    return p;
}

struct RunResult {
    std::vector<int32_t> tokens;
    GenerateStats stats;
    GenerateEnd end;
};

// Generates after `prompt` from a fresh cache.
RunResult generate(Session& s, const std::vector<int32_t>& prompt, const SamplingParams& sp, Drafter* d,
                   const SpeculativeParams& spp, int n, bool ignore_eos = true) {
    s.truncate(0);
    Sampler sampler(sp, s.model().hp.n_vocab);
    for (int32_t t : prompt) sampler.accept(t);
    s.decode(prompt);
    Generator g(s, sampler, [](int32_t t) { return t == 2; });
    g.set_drafter(d, spp);
    GenerateOptions o;
    o.n_predict = n;
    o.ignore_eos = ignore_eos;
    RunResult r;
    std::vector<int32_t> context = prompt;
    r.end = g.run(context, s, o, [&](int32_t t) { r.tokens.push_back(t); });
    r.stats = g.stats();
    CHECK(int(context.size()) == s.n_past());
    return r;
}

SamplingParams greedy_params() {
    SamplingParams sp;
    sp.temp = 0;
    return sp;
}

}  // namespace

TEST_SUITE("speculative") {

TEST_CASE("spec: lookup finds the longest earlier n-gram and copies what followed") {
    LookupParams p;
    p.ngram_min = 2;
    p.ngram_max = 8;
    std::vector<int32_t> out;

    lookup_continuation({1, 2, 3, 4, 5, 9, 9, 1, 2, 3}, p, 4, out);
    CHECK(out == std::vector<int32_t>{4, 5, 9, 9});

    // "7 8 9" matched in full at the start beats the more recent "8 9".
    lookup_continuation({7, 8, 9, 10, 5, 8, 9, 11, 6, 7, 8, 9}, p, 2, out);
    CHECK(out == std::vector<int32_t>{10, 5});

    // Equally long matches: the most recent wins.
    lookup_continuation({8, 9, 10, 5, 8, 9, 11, 6, 8, 9}, p, 1, out);
    CHECK(out == std::vector<int32_t>{11});

    // One matching token is below ngram_min = 2.
    lookup_continuation({5, 1, 6, 7, 1}, p, 3, out);
    CHECK(out.empty());
    p.ngram_min = 1;
    lookup_continuation({5, 1, 6, 7, 1}, p, 3, out);
    CHECK(out == std::vector<int32_t>{6, 7, 1});

    // Nothing recurs.
    lookup_continuation({1, 2, 3, 4}, p, 3, out);
    CHECK(out.empty());
    lookup_continuation({1}, p, 3, out);
    CHECK(out.empty());

    // A match running into the context's end continues the pattern from the draft itself.
    p.ngram_min = 2;
    lookup_continuation({5, 6, 5, 6, 5, 6}, p, 5, out);
    CHECK(out == std::vector<int32_t>{5, 6, 5, 6, 5});
    lookup_continuation({4, 4, 4}, p, 3, out);
    CHECK(out == std::vector<int32_t>{4, 4, 4});

    // ngram_max caps how far back the match is compared: with max 2, "x 8 9" and "y 8 9" tie and
    // the most recent wins.
    p.ngram_max = 2;
    lookup_continuation({7, 8, 9, 10, 5, 8, 9, 11, 6, 7, 8, 9}, p, 1, out);
    CHECK(out == std::vector<int32_t>{11});

    // n_max bounds the draft; the drafter returns the same.
    LookupDrafter d(p);
    Draft dr;
    d.draft({1, 2, 3, 4, 5, 6, 1, 2}, 3, dr);
    CHECK(dr.tokens == std::vector<int32_t>{3, 4, 5});
    CHECK(dr.dists.empty());
    CHECK_THROWS_AS(LookupDrafter(LookupParams{0, 3}), Error);
    CHECK_THROWS_AS(LookupDrafter(LookupParams{3, 2}), Error);
}

TEST_CASE("spec: the sampler's distribution is what sample() draws from") {
    std::vector<float> logits(64);
    for (int i = 0; i < 64; i++) logits[size_t(i)] = std::sin(float(i) * 1.7f) * 3.0f;
    SamplingParams sp;
    sp.temp = 0.9f;
    sp.top_k = 10;
    sp.top_p = 0.9f;
    sp.min_p = 0.02f;
    sp.repeat_penalty = 1.3f;
    sp.seed = 123;
    Sampler a(sp, 64), b(sp, 64);
    for (int32_t t : {3, 5, 7, 3}) {
        a.accept(t);
        b.accept(t);
    }
    for (int i = 0; i < 200; i++) {
        const TokenDist& d = b.distribution(logits.data());
        double sum = 0;
        for (size_t j = 0; j < d.size(); j++) {
            sum += d[j].p;
            if (j) CHECK(d[j].p <= d[j - 1].p);
        }
        CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
        CHECK(int(d.size()) <= 10);
        CHECK(a.sample(logits.data()) == b.draw(d));
    }
    // Greedy: a point mass on sample()'s choice, penalties included.
    sp.temp = 0;
    Sampler g(sp, 64);
    g.accept(int32_t(argmax(logits.data(), 64)));
    const TokenDist& d = g.distribution(logits.data());
    REQUIRE(d.size() == 1);
    CHECK(d[0].p == 1.0f);
    CHECK(d[0].id == g.sample(logits.data()));
    CHECK(d[0].id != argmax(logits.data(), 64));
}

TEST_CASE("spec: the acceptance rule keeps the target distribution (and a wrong rule is caught)") {
    // Target p over 6 tokens; drafts from q (overlapping, different) and from a point mass.
    const TokenDist p = {{4, 0.4f}, {1, 0.25f}, {0, 0.15f}, {5, 0.1f}, {2, 0.1f}};
    const TokenDist q = {{1, 0.5f}, {3, 0.2f}, {4, 0.2f}, {2, 0.1f}};
    std::map<int32_t, double> expect;
    for (const TokenProb& c : p) expect[c.id] = c.p;
    const int N = 40000;
    for (AcceptRule rule : {AcceptRule::Exact, AcceptRule::BrokenResample}) {
        for (int point = 0; point < 2; point++) {
            DraftVerifier v(8, rule);
            SamplingParams sp;
            sp.seed = 99;
            Sampler rng(sp, 8);
            sp.seed = 7;
            Sampler draft_rng(sp, 8);
            std::map<int32_t, int> seen;
            int accepted = 0;
            for (int i = 0; i < N; i++) {
                // Point mass: the drafter always proposes token 1 (p = 0.25).
                const int32_t x = point ? 1 : draft_rng.draw(q);
                const Verdict r = v.verify(p, x, point ? nullptr : &q, rng);
                accepted += r.accepted;
                seen[r.token]++;
            }
            const ChiSquare c = chi_square(expect, seen, N);
            const std::string label = std::string("rule ") + (rule == AcceptRule::Exact ? "exact" : "broken") +
                                      (point ? ", point mass" : ", sampled q");
            INFO(label,
                 ": chi2 ", c.stat, " df ", c.df, " p-value ", c.p_value);
            if (rule == AcceptRule::Exact) {
                CHECK(c.p_value > 1e-3);
                // Acceptance: sum min(p, q) = 0.25 + 0.2 + 0.1 = 0.55 for q; p(1) = 0.25 for the point mass.
                CHECK(double(accepted) / N == doctest::Approx(point ? 0.25 : 0.55).epsilon(0.03));
            } else {
                CHECK(c.p_value < 1e-9);
            }
        }
    }
}

TEST_CASE("spec: chi-square helper gives textbook p-values") {
    CHECK(gamma_q(0.5, 3.841 / 2) == doctest::Approx(0.05).epsilon(0.01));   // df 1
    CHECK(gamma_q(5.0, 18.307 / 2) == doctest::Approx(0.05).epsilon(0.01));  // df 10
    CHECK(gamma_q(15.0, 59.703 / 2) == doctest::Approx(0.001).epsilon(0.02));  // df 30
}

TEST_CASE("spec: a draft model must share the target's tokenizer") {
    const Tiny& tm = target_model();
    const Tiny& om = other_model();
    const tokenizer::Tokenizer t = tokenizer::Tokenizer::from_gguf(*tm.m->file);
    CHECK_NOTHROW(check_draft_compatible(t, tokenizer::Tokenizer::from_gguf(*om.m->file), "other.gguf"));
    Preset bigger = *find_preset("tiny");
    bigger.n_vocab = 640;
    const std::string path = "/tmp/lumen-test-spec-" + std::to_string(getpid()) + "-640.gguf";
    SynthOptions so;
    so.type = DType::Q8_0;
    synth_model(bigger, so, path);
    auto m = Model::load(path);
    std::remove(path.c_str());
    CHECK_THROWS_WITH_AS(check_draft_compatible(t, tokenizer::Tokenizer::from_gguf(*m->file), "big.gguf"),
                         doctest::Contains("--draft-model big.gguf: its vocabulary has 640 tokens, the target's 512"),
                         Error);
}

TEST_CASE("spec: greedy text is identical with and without lookup or a draft model") {
    const Tiny& tm = target_model();
    const Tiny& om = other_model();
    auto s = tm.session();
    auto ds_same = tm.session();  // the target as its own draft: long acceptances
    auto ds_other = om.session();  // another random model: mostly rejections
    const std::vector<int32_t> prompt = repetitive_prompt();
    const int n = 64;
    for (int pen = 0; pen < 2; pen++) {
        SamplingParams sp = greedy_params();
        if (pen) sp.repeat_penalty = 1.3f;  // penalties change the greedy choice: verification must apply them
        const RunResult plain = generate(*s, prompt, sp, nullptr, {}, n);
        REQUIRE(plain.tokens.size() == size_t(n));
        CHECK(plain.stats.target_evals == n - 1);

        LookupDrafter lookup(LookupParams{1, 8});
        DraftModelParams dmp;
        dmp.p_min = 0.0f;
        DraftModelDrafter same(*ds_same, dmp), other(*ds_other, dmp);
        struct Case {
            const char* name;
            Drafter* d;
            SpeculativeParams sp;
        };
        SpeculativeParams fixed;
        fixed.adaptive = false;
        fixed.draft_max = 5;
        SpeculativeParams adaptive;
        adaptive.draft_max = 12;
        SpeculativeParams min3;
        min3.draft_min = 3;
        min3.draft_max = 6;
        for (const Case& c : {Case{"lookup", &lookup, fixed}, Case{"lookup adaptive", &lookup, adaptive},
                              Case{"lookup draft-min 3", &lookup, min3}, Case{"draft model (same)", &same, fixed},
                              Case{"draft model (same) adaptive", &same, adaptive},
                              Case{"draft model (other)", &other, fixed}}) {
            const std::string label = std::string(c.name) + (pen ? " with repeat penalty" : "");
            INFO(label);
            const RunResult r = generate(*s, prompt, sp, c.d, c.sp, n);
            CHECK(r.tokens == plain.tokens);
            CHECK(r.stats.generated == n);
            CHECK(r.stats.drafted > 0);
            CHECK(r.stats.accepted <= r.stats.drafted);
            CHECK(r.stats.target_evals < n + 1);
        }
        // The target drafting for itself: every greedy guess is kept.
        const RunResult r = generate(*s, prompt, sp, &same, fixed, n);
        if (!pen) CHECK(r.stats.accepted == r.stats.drafted);
    }
}

TEST_CASE("spec: generation stops at the budget, at end of generation and on the stop flag, with the cache in step") {
    const Tiny& tm = target_model();
    auto s = tm.session();
    auto ds = tm.session();
    DraftModelParams dmp;
    dmp.p_min = 0.0f;
    DraftModelDrafter same(*ds, dmp);
    SpeculativeParams spp;
    spp.draft_max = 8;
    const std::vector<int32_t> prompt = repetitive_prompt();
    const RunResult plain = generate(*s, prompt, greedy_params(), nullptr, {}, 40);
    // Budgets that end inside a run of accepted guesses.
    for (int n : {1, 2, 3, 7, 13}) {
        const RunResult r = generate(*s, prompt, greedy_params(), &same, spp, n);
        CHECK(r.end == GenerateEnd::Length);
        CHECK(r.tokens == std::vector<int32_t>(plain.tokens.begin(), plain.tokens.begin() + n));
    }
    // End of generation inside the guesses: make one of the plain tokens the "EOG" token.
    const int32_t eog = plain.tokens[9];
    size_t first = 0;
    while (plain.tokens[first] != eog) first++;
    {
        s->truncate(0);
        SamplingParams sp = greedy_params();
        Sampler sampler(sp, tm.n_vocab());
        s->decode(prompt);
        Generator g(*s, sampler, [eog](int32_t t) { return t == eog; });
        g.set_drafter(&same, spp);
        std::vector<int32_t> context = prompt, out;
        const GenerateEnd e = g.run(context, *s, GenerateOptions{}, [&](int32_t t) { out.push_back(t); });
        CHECK(e == GenerateEnd::EndOfGeneration);
        CHECK(out == std::vector<int32_t>(plain.tokens.begin(), plain.tokens.begin() + long(first)));
        CHECK(int(context.size()) == s->n_past());
    }
    // The stop flag, raised after the 5th token.
    {
        s->truncate(0);
        Sampler sampler(greedy_params(), tm.n_vocab());
        s->decode(prompt);
        Generator g(*s, sampler, [](int32_t) { return false; });
        g.set_drafter(&same, spp);
        std::atomic<bool> stop{false};
        GenerateOptions o;
        o.stop = &stop;
        std::vector<int32_t> context = prompt, out;
        const GenerateEnd e = g.run(context, *s, o, [&](int32_t t) {
            out.push_back(t);
            if (out.size() == 5) stop.store(true);
        });
        CHECK(e == GenerateEnd::Interrupted);
        CHECK(out.size() == 5);
        CHECK(int(context.size()) == s->n_past());
    }
    // A small context: guesses never overflow it and the loop ends with ContextFull.
    {
        auto small = tm.session(48);
        Sampler sampler(greedy_params(), tm.n_vocab());
        small->decode(prompt);
        Generator g(*small, sampler, [](int32_t) { return false; });
        g.set_drafter(&same, spp);
        std::vector<int32_t> context = prompt, out;
        const GenerateEnd e = g.run(context, *small, GenerateOptions{}, [&](int32_t t) { out.push_back(t); });
        CHECK(e == GenerateEnd::ContextFull);
        CHECK(out.size() == size_t(48 - prompt.size() + 1));
        CHECK(out == std::vector<int32_t>(plain.tokens.begin(), plain.tokens.begin() + long(out.size())));
    }
}

TEST_CASE("spec: sampled output keeps the target's distribution (chi-square over seeds)") {
    const Tiny& tm = target_model();
    const Tiny& om = other_model();
    auto s = tm.session();
    auto ds_same = tm.session();
    auto ds_other = om.session();
    const int V = tm.n_vocab();
    SamplingParams sp;
    sp.temp = 1.5f;
    sp.top_k = 6;
    sp.top_p = 0.98f;
    sp.min_p = 0.01f;

    // The prompt: the target's own greedy continuation, twice, so that lookup finds likely guesses.
    std::vector<int32_t> prompt = {1, 300, 301, 302};
    {
        const RunResult g = generate(*s, prompt, greedy_params(), nullptr, {}, 12);
        for (int r = 0; r < 2; r++) prompt.insert(prompt.end(), g.tokens.begin(), g.tokens.end());
    }
    const int P = int(prompt.size());

    // The exact joint distribution of the first three tokens under the plain sampler.
    auto key = [V](int32_t a, int32_t b, int32_t c) { return first_three_key(a, b, c, V); };
    const std::map<int64_t, double> exact = exact_first_three(*s, prompt, sp, V);
    double total = 0;
    for (const auto& [k, p] : exact) total += p;
    REQUIRE(total == doctest::Approx(1.0).epsilon(1e-4));

    s->truncate(0);
    s->eval(prompt);
    const int N = 1500;
    // Runs N seeds and tests the first three tokens against `exact`.
    auto run = [&](Drafter* d, const SpeculativeParams& spp, GenerateStats* agg) {
        std::map<int64_t, int> seen;
        for (int seed = 0; seed < N; seed++) {
            SamplingParams p = sp;
            p.seed = uint64_t(1000 + seed);
            Sampler sampler(p, V);
            s->truncate(P - 1);
            s->decode({prompt.back()});
            Generator g(*s, sampler, [](int32_t) { return false; });
            g.set_drafter(d, spp);
            GenerateOptions o;
            o.n_predict = 4;  // guesses of up to two tokens after the first: chains of acceptances
            std::vector<int32_t> context = prompt, out;
            g.run(context, *s, o, [&](int32_t t) { out.push_back(t); });
            REQUIRE(out.size() == 4);
            seen[key(out[0], out[1], out[2])]++;
            agg->drafted += g.stats().drafted;
            agg->accepted += g.stats().accepted;
            agg->rounds += g.stats().rounds;
        }
        return chi_square(exact, seen, N);
    };

    LookupDrafter lookup(LookupParams{1, 8});
    DraftModelParams greedy_draft;
    greedy_draft.p_min = 0.0f;
    DraftModelParams sampled_draft = greedy_draft;
    sampled_draft.sample = true;
    sampled_draft.sampling = sp;
    sampled_draft.sampling.temp = 0.7f;  // a draft distribution q that differs from p
    sampled_draft.sampling.top_k = 4;
    sampled_draft.sampling.seed = 5;
    DraftModelDrafter same_greedy(*ds_same, greedy_draft), same_sampled(*ds_same, sampled_draft),
        other_greedy(*ds_other, greedy_draft);
    struct Case {
        const char* name;
        Drafter* d;
        bool must_catch_broken;  // the guesses are good enough that the wrong rule shows
        int min_drafted;
    };
    for (const Case& c : {Case{"plain", nullptr, false, 0}, Case{"lookup", &lookup, false, N / 5},
                          Case{"draft model, greedy guesses", &same_greedy, true, N},
                          Case{"draft model, sampled guesses", &same_sampled, true, N},
                          Case{"other draft model", &other_greedy, false, N}}) {
        for (AcceptRule rule : {AcceptRule::Exact, AcceptRule::BrokenResample}) {
            if (rule == AcceptRule::BrokenResample && !c.must_catch_broken) continue;
            SpeculativeParams spp;
            spp.draft_max = 4;
            spp.rule = rule;
            GenerateStats agg;
            const ChiSquare r = run(c.d, spp, &agg);
            const bool exact_rule = rule == AcceptRule::Exact;
            const std::string label = std::string(c.name) + (exact_rule ? "" : " (broken rule)");
            MESSAGE(label, ": chi2 ", r.stat, " df ", r.df, " p-value ", r.p_value,
                    " | drafted ", agg.drafted, " accepted ", agg.accepted);
            INFO(label, ": chi2 ", r.stat, " df ", r.df, " p-value ", r.p_value);
            CHECK(agg.drafted >= c.min_drafted);
            if (exact_rule) CHECK(r.p_value > 1e-3);
            else CHECK(r.p_value < 1e-6);
        }
    }
}

}  // TEST_SUITE
