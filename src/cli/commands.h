// Each subcommand lives in its own file and registers itself on the CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace lumen::cli {

void add_info(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_complete(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_synth(CLI::App& app);
void add_bench(CLI::App& app);
void add_quantize(CLI::App& app);
void add_chat(CLI::App& app);
void add_batch(CLI::App& app);

}  // namespace lumen::cli
