// lumen: runs quantized LLMs from GGUF files. This file only dispatches to the subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "util/error.h"

// llama.cpp's tools spell some options with a single dash and two letters (-pg, -ub, -np, -md, -tb), which
// CLI11 reads as clustered short flags: rewrite them to their long forms so users can switch tools freely.
static std::vector<std::string> normalise_args(int argc, char** argv) {
    std::vector<std::string> args;
    for (int i = argc - 1; i >= 1; i--) {  // CLI11 wants them in reverse order
        std::string a = argv[i];
        if (a == "-pg") a = "--pg";
        else if (a == "-ub") a = "--ubatch-size";
        else if (a == "-np") a = "--parallel";
        else if (a == "-md") a = "--draft-model";
        else if (a == "-tb") a = "--threads-batch";
        args.push_back(a);
    }
    return args;
}

int main(int argc, char** argv) {
    CLI::App app{"lumen: run quantized large language models from GGUF files", "lumen"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "lumen 0.1.0");
    lumen::cli::add_info(app);
    lumen::cli::add_tokenize(app);
    lumen::cli::add_complete(app);
    lumen::cli::add_perplexity(app);
    lumen::cli::add_synth(app);
    lumen::cli::add_bench(app);
    lumen::cli::add_quantize(app);
    lumen::cli::add_chat(app);
    lumen::cli::add_batch(app);
    try {
        std::vector<std::string> args = normalise_args(argc, argv);
        app.parse(args);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "lumen: error: %s (see lumen --help)\n", e.what());
        return 1;
    } catch (const lumen::Error& e) {
        std::fprintf(stderr, "lumen: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "lumen: error: out of memory\n");
        return 1;
    }
    return 0;
}
