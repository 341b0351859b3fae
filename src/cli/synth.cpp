// `lumen synth`: write a random-weight model with the shapes of a real one.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "model/synth.h"
#include "util/error.h"

namespace lumen::cli {

namespace {

struct Opts {
    std::string preset, type = "q4_0", output_type, out;
    uint64_t seed = 42;
    bool list = false;
};

void run(const Opts& o) {
    if (o.list || o.preset.empty()) {
        std::printf("%-14s %-6s %7s %6s %6s %5s %4s %6s\n", "preset", "arch", "vocab", "layers", "embd", "heads", "kv", "ff");
        for (const Preset& p : presets())
            std::printf("%-14s %-6s %7d %6d %6d %5d %4d %6d\n", p.name, p.arch, p.n_vocab, p.n_layer, p.n_embd, p.n_head,
                        p.n_head_kv, p.n_ff);
        if (!o.list) fail("--preset is required (the list above)");
        return;
    }
    const Preset* p = find_preset(o.preset);
    if (!p) fail("--preset ", o.preset, ": unknown (see lumen synth --list)");
    if (o.out.empty()) fail("-o is required");
    SynthOptions so;
    if (!dtype_from_name(o.type, so.type)) fail("--type ", o.type, ": unknown type");
    if (!o.output_type.empty()) {
        if (!dtype_from_name(o.output_type, so.output_type)) fail("--output-type ", o.output_type, ": unknown type");
        so.output_type_set = true;
    }
    so.seed = o.seed;
    auto t0 = std::chrono::steady_clock::now();
    synth_model(*p, so, o.out);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "wrote %s (%s, %s) in %.1f s\n", o.out.c_str(), p->name, dtype_name(so.type), s);
}

}  // namespace

void add_synth(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("synth", "Write a random-weight GGUF with the exact shapes of a real model");
    cmd->add_option("--preset", o->preset, "Model shape (see --list)");
    cmd->add_option("--type", o->type, "Weight type: f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k..q6_k");
    cmd->add_option("--output-type", o->output_type, "Type of output.weight (default: q6_k for K-quants)");
    cmd->add_option("-o,--output", o->out, "Output GGUF path");
    cmd->add_option("--seed", o->seed, "Random seed");
    cmd->add_flag("--list", o->list, "List the presets");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
