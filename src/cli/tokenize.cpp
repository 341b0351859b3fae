#include "cli/commands.h"
namespace lumen::cli {
void add_tokenize(CLI::App& app) {}
}
