// Shapes of real models, for `lumen synth` (random weights, exact shapes: timings on machines
// where no model can be downloaded) and for tests.
#pragma once
#include <string>
#include <vector>

namespace lumen {

struct Preset {
    const char* name;
    const char* arch;        // llama or qwen2
    int n_vocab, n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx;
    float rope_base, norm_eps;
    bool tied;               // no output.weight
    bool qkv_bias;           // qwen2
};

const std::vector<Preset>& presets();
const Preset* find_preset(const std::string& name);

}  // namespace lumen
