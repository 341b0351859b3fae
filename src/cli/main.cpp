// lumen: runs quantized LLMs from GGUF files. This file only dispatches to the subcommands.
#include <cstdio>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
    CLI::App app{"lumen: run quantized large language models from GGUF files", "lumen"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "lumen 0.1.0");
    lumen::cli::add_info(app);
    lumen::cli::add_tokenize(app);
    try {
        app.parse(argc, argv);
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
