// Flags for speculative decoding (a draft model) and prompt-lookup decoding, shared by the
// subcommands that generate, and the code that turns them into a drafter.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/options.h"
#include "engine/draft_model.h"
#include "engine/generator.h"
#include "engine/lookup.h"
#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace lumen::cli {

struct SpecOptions {
    std::string draft_model;
    bool lookup = false;
    LookupParams lookup_params;
    int draft_max = 16;
    int draft_min = 0;
    float p_min = 0.75f;
    bool fixed = false;  // --draft-fixed: no adaptive guess length
    // Which flags were given (to reject those that need --lookup or --draft-model).
    CLI::Option *o_ngram_min = nullptr, *o_ngram_max = nullptr, *o_draft_max = nullptr, *o_draft_min = nullptr,
                *o_p_min = nullptr, *o_fixed = nullptr;
    bool enabled() const { return lookup || !draft_model.empty(); }
};

void add_spec_options(CLI::App* cmd, SpecOptions& o);

// What the flags ask for, built: a drafter (nullptr: plain decoding) and what it needs to live.
struct Speculation {
    std::unique_ptr<Model> draft_model;
    std::unique_ptr<Session> draft_session;
    std::unique_ptr<Drafter> drafter;
    std::unique_ptr<BatchDrafter> batch;  // `batch`: one drafter for all the scheduler's sequences
    SpeculativeParams params;
    Drafter* get() const { return drafter.get(); }
    BatchDrafter* get_batch() const { return batch.get(); }
    bool on() const { return drafter || batch; }
    const char* name() const;
    // The draft model's forward passes (0 for lookup).
    int draft_evals() const;
};

// Checks the flags, loads and checks the draft model (same tokenizer as the target's; a session with
// the target's context size) or sets up the lookup.
Speculation make_speculation(const SpecOptions& o, const RunOptions& run, const tokenizer::Tokenizer& target_tok,
                             const SamplingParams& sampling, int n_ctx);

// The same for `lumen batch`: the drafter serves every sequence of a scheduler with these sizes, n_ctx
// being its resolved context; a draft model runs on `backend` (the scheduler's).
Speculation make_batch_speculation(const SpecOptions& o, const RunOptions& run, const tokenizer::Tokenizer& target_tok,
                                   const SchedulerOptions& sched, int n_ctx, Backend& backend);

// The statistics line ("" without speculation).
std::string spec_stats_line(const Speculation& s, const GenerateStats& st);
// One line on stderr: drafted, accepted, acceptance rate, mean accepted length, effective speed.
void print_spec_stats(const Speculation& s, const GenerateStats& st);

}  // namespace lumen::cli
