#include "cli/options.h"

#include <fstream>
#include <sstream>

#include "engine/backend_select.h"
#include "util/error.h"

namespace lumen::cli {

void add_run_options(CLI::App* cmd, RunOptions& o) {
    cmd->add_option("-m,--model", o.model, "GGUF model file")->required();
    cmd->add_option("-c,--ctx-size", o.n_ctx, "Context size in tokens (default: the model's, at most 4096)");
    cmd->add_option("-b,--batch-size", o.n_batch, "Tokens per forward pass when reading a prompt");
    cmd->add_option("-t,--threads", o.n_threads, "CPU threads for generation (default: the physical cores)");
    cmd->add_option("--threads-batch", o.n_threads_batch, "CPU threads for prompts and batches (default: as -t; also -tb)");
    cmd->add_option("--device", o.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    cmd->add_option("--cache-type", o.cache_type, "KV cache type: f16, f32 or q8_0");
}

void add_sampling_options(CLI::App* cmd, SamplingParams& p) {
    cmd->add_option("--temp", p.temp, "Temperature (0: greedy)");
    cmd->add_option("--top-k", p.top_k, "Keep the k most likely tokens (0: off)");
    cmd->add_option("--top-p", p.top_p, "Keep the most likely tokens up to this total probability (1: off)");
    cmd->add_option("--min-p", p.min_p, "Drop tokens less likely than min-p times the top one (0: off)");
    cmd->add_option("--repeat-penalty", p.repeat_penalty, "Penalty for repeated tokens (1: off)");
    cmd->add_option("--repeat-last-n", p.penalty_last_n, "Window of recent tokens the penalties consider");
    cmd->add_option("--presence-penalty", p.presence_penalty, "Subtracted once from tokens in the window");
    cmd->add_option("--frequency-penalty", p.frequency_penalty, "Subtracted per occurrence in the window");
    cmd->add_option("-s,--seed", p.seed, "Random seed");
}

std::unique_ptr<Model> load_model(const RunOptions& o) { return Model::load(o.model); }

void check_threads(const RunOptions& o) {
    if (o.n_threads < 0 || o.n_threads > 1024) fail("-t ", o.n_threads, ": must be between 1 and 1024 (0: the physical cores)");
    if (o.n_threads_batch < 0 || o.n_threads_batch > 1024)
        fail("-tb ", o.n_threads_batch, ": must be between 1 and 1024 (0: as -t)");
}

std::unique_ptr<Session> open_session(const Model& m, const RunOptions& o, int n_top) {
    SessionOptions so;
    so.n_top = n_top;
    so.n_ctx = o.n_ctx;
    so.n_batch = o.n_batch;
    so.n_threads = o.n_threads;
    if (!dtype_from_name(o.cache_type, so.cache_type)) fail("--cache-type ", o.cache_type, ": unknown type");
    check_threads(o);
    return std::make_unique<Session>(m, make_backend(o.device, o.n_threads, o.n_threads_batch), so);
}

std::string read_file(const std::string& path, const char* flag) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(flag, " ", path, ": cannot open file");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace lumen::cli
