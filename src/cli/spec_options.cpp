#include "cli/spec_options.h"

#include <cstdio>

#include "util/error.h"

namespace lumen::cli {

void add_spec_options(CLI::App* cmd, SpecOptions& o) {
    const char* g = "Speculative decoding";
    cmd->add_option("--draft-model", o.draft_model, "Draft model (same tokenizer) for speculative decoding (-md)")
        ->group(g);
    cmd->add_flag("--lookup", o.lookup, "Prompt-lookup decoding: guess tokens by n-grams found earlier in the text")
        ->group(g);
    o.o_ngram_min = cmd->add_option("--lookup-ngram-min", o.lookup_params.ngram_min,
                                    "Shortest n-gram a lookup guess needs (default 2)")->group(g);
    o.o_ngram_max = cmd->add_option("--lookup-ngram-max", o.lookup_params.ngram_max,
                                    "Longest n-gram the lookup matches (default 8)")->group(g);
    o.o_draft_max = cmd->add_option("--draft-max", o.draft_max, "Most tokens guessed per step (default 16)")->group(g);
    o.o_draft_min = cmd->add_option("--draft-min", o.draft_min,
                                    "Fewer guesses than this are not verified (default 0)")->group(g);
    o.o_p_min = cmd->add_option("--draft-p-min", o.p_min,
                                "The draft model stops guessing below this top probability (default 0.75)")->group(g);
    o.o_fixed = cmd->add_flag("--draft-fixed", o.fixed, "Keep the guess length at --draft-max (no adaptation)")
                    ->group(g);
}

const char* Speculation::name() const {
    if (batch) return batch->name();
    return drafter ? drafter->name() : "";
}

int Speculation::draft_evals() const {
    if (auto* b = dynamic_cast<const BatchDraftModel*>(batch.get())) return b->evals();
    auto* d = dynamic_cast<const DraftModelDrafter*>(drafter.get());
    return d ? d->evals() : 0;
}

namespace {

// Checks the flags and fills s.params; false when no speculation is asked for.
bool check_flags(const SpecOptions& o, Speculation& s) {
    if (o.lookup && !o.draft_model.empty()) fail("give at most one of --lookup or --draft-model");
    auto given = [](const CLI::Option* opt) { return opt && opt->count() > 0; };
    if (!o.lookup) {
        if (given(o.o_ngram_min)) fail("--lookup-ngram-min needs --lookup");
        if (given(o.o_ngram_max)) fail("--lookup-ngram-max needs --lookup");
    }
    if (o.draft_model.empty() && given(o.o_p_min)) fail("--draft-p-min needs --draft-model");
    if (!o.enabled()) {
        if (given(o.o_draft_max)) fail("--draft-max needs --lookup or --draft-model");
        if (given(o.o_draft_min)) fail("--draft-min needs --lookup or --draft-model");
        if (given(o.o_fixed)) fail("--draft-fixed needs --lookup or --draft-model");
        return false;
    }
    if (o.draft_max < 1) fail("--draft-max ", o.draft_max, ": must be at least 1");
    if (o.draft_min < 0 || o.draft_min > o.draft_max)
        fail("--draft-min ", o.draft_min, ": must be between 0 and --draft-max (", o.draft_max, ")");
    s.params.draft_max = o.draft_max;
    s.params.draft_min = o.draft_min;
    s.params.adaptive = !o.fixed;
    if (o.lookup) {
        if (o.lookup_params.ngram_min < 1) fail("--lookup-ngram-min ", o.lookup_params.ngram_min, ": must be at least 1");
        if (o.lookup_params.ngram_max < o.lookup_params.ngram_min)
            fail("--lookup-ngram-max ", o.lookup_params.ngram_max, ": must be at least --lookup-ngram-min (",
                 o.lookup_params.ngram_min, ")");
    } else if (!(o.p_min >= 0.0f && o.p_min <= 1.0f)) {
        fail("--draft-p-min ", o.p_min, ": want a probability in [0, 1]");
    }
    return true;
}

// Loads the draft model into s and checks that it shares the target's tokenizer.
void load_draft(const SpecOptions& o, const RunOptions& dr, const tokenizer::Tokenizer& target_tok, Speculation& s) {
    try {
        s.draft_model = load_model(dr);
    } catch (const Error& e) {
        fail("--draft-model: ", e.what());
    }
    const tokenizer::Tokenizer draft_tok = tokenizer::Tokenizer::from_gguf(*s.draft_model->file);
    check_draft_compatible(target_tok, draft_tok, o.draft_model);
}

}  // namespace

Speculation make_speculation(const SpecOptions& o, const RunOptions& run, const tokenizer::Tokenizer& target_tok,
                             const SamplingParams& sampling, int n_ctx) {
    Speculation s;
    if (!check_flags(o, s)) return s;
    if (o.lookup) {
        s.drafter = std::make_unique<LookupDrafter>(o.lookup_params);
        return s;
    }
    RunOptions dr = run;
    dr.model = o.draft_model;
    dr.n_ctx = n_ctx;
    load_draft(o, dr, target_tok, s);
    s.draft_session = open_session(*s.draft_model, dr);
    DraftModelParams dp;
    dp.p_min = o.p_min;
    dp.sample = sampling.temp > 0.0f;
    dp.sampling = sampling;
    s.drafter = std::make_unique<DraftModelDrafter>(*s.draft_session, dp);
    return s;
}

Speculation make_batch_speculation(const SpecOptions& o, const RunOptions& run, const tokenizer::Tokenizer& target_tok,
                                   const SchedulerOptions& sched, int n_ctx, Backend& backend) {
    Speculation s;
    if (!check_flags(o, s)) return s;
    if (o.lookup) {
        // The lookup keeps nothing between calls: one serves every sequence.
        s.drafter = std::make_unique<LookupDrafter>(o.lookup_params);
        s.batch = std::make_unique<EachDrafter>(*s.drafter);
        return s;
    }
    RunOptions dr = run;
    dr.model = o.draft_model;
    dr.n_ctx = n_ctx;
    load_draft(o, dr, target_tok, s);
    BatchDraftOptions bo;
    bo.n_slots = sched.n_parallel;
    bo.n_ctx = n_ctx;
    bo.n_batch = sched.n_batch;
    bo.kv_tokens = sched.kv_tokens;
    bo.cache_type = sched.cache_type;
    DraftModelParams dp;  // greedy or sampled per sequence: BatchDraftModel::start
    dp.p_min = o.p_min;
    s.batch = std::make_unique<BatchDraftModel>(*s.draft_model, backend, bo, dp);
    return s;
}

std::string spec_stats_line(const Speculation& s, const GenerateStats& st) {
    if (!s.on()) return "";
    char buf[512];
    int n = std::snprintf(buf, sizeof buf,
                          "speculative (%s): drafted %d, accepted %d (%.1f%%), mean accepted length %.2f over %d rounds, "
                          "%.2f tokens per target pass, %.2f t/s effective",
                          s.name(), st.drafted, st.accepted, 100.0 * st.acceptance(), st.mean_accepted(),
                          st.rounds, st.target_evals > 0 ? double(st.generated) / st.target_evals : 0.0,
                          st.tokens_per_second());
    if (s.draft_model && n > 0 && size_t(n) < sizeof buf)
        std::snprintf(buf + n, sizeof buf - size_t(n), ", %d draft passes, %.2f s drafting", s.draft_evals(),
                      st.draft_seconds);
    return buf;
}

void print_spec_stats(const Speculation& s, const GenerateStats& st) {
    if (s.on()) std::fprintf(stderr, "%s\n", spec_stats_line(s, st).c_str());
}

}  // namespace lumen::cli
