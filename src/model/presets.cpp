#include "model/presets.h"

namespace lumen {

const std::vector<Preset>& presets() {
    static const std::vector<Preset> p = {
        //  name            arch     vocab  layers embd  heads kv  ff     ctx     rope_base  eps    tied  bias
        {"llama3-8b",     "llama", 128256, 32, 4096, 32, 8, 14336, 131072, 500000.0f, 1e-5f, false, false},
        {"llama3-1b",     "llama", 128256, 16, 2048, 32, 8, 8192, 131072, 500000.0f, 1e-5f, true, false},
        {"llama2-7b",     "llama", 32000, 32, 4096, 32, 32, 11008, 4096, 10000.0f, 1e-5f, false, false},
        {"qwen2.5-7b",    "qwen2", 152064, 28, 3584, 28, 4, 18944, 32768, 1000000.0f, 1e-6f, false, true},
        {"smollm2-135m",  "llama", 49152, 30, 576, 9, 3, 1536, 8192, 100000.0f, 1e-5f, true, false},
        {"tiny",          "llama", 512, 2, 256, 4, 2, 512, 2048, 10000.0f, 1e-5f, true, false},
        {"tiny-qwen2",    "qwen2", 512, 2, 256, 4, 2, 512, 2048, 1000000.0f, 1e-6f, false, true},
    };
    return p;
}

const Preset* find_preset(const std::string& name) {
    for (const Preset& p : presets())
        if (name == p.name) return &p;
    return nullptr;
}

}  // namespace lumen
