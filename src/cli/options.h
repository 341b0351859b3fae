// Flags shared by the subcommands that run a model, and the code that turns them into a session.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/session.h"
#include "model/model.h"
#include "sampling/sampler.h"

namespace lumen::cli {

struct RunOptions {
    std::string model;
    int n_ctx = 0;
    int n_batch = 512;
    int n_threads = 0;        // 0: the physical cores
    int n_threads_batch = 0;  // 0: as n_threads
    std::string device = "auto";
    std::string cache_type = "f16";
};

void add_run_options(CLI::App* cmd, RunOptions& o);
void add_sampling_options(CLI::App* cmd, SamplingParams& p);

// Loads the model (the only place that prints load progress) and opens a session on it; n_top:
// sampling candidates per output row (SessionOptions::n_top), 0 where nothing samples.
std::unique_ptr<Model> load_model(const RunOptions& o);
std::unique_ptr<Session> open_session(const Model& m, const RunOptions& o, int n_top = kSampleCandidates);

// -t and -tb in range, else an error naming the flag.
void check_threads(const RunOptions& o);

// Reads a whole file; errors name the flag and the file.
std::string read_file(const std::string& path, const char* flag);

}  // namespace lumen::cli
