// A loaded model: the mapped GGUF, its hyperparameters, and its weights bound by role.
// Weights are views into the mapping (never copied on the CPU).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/hparams.h"

namespace lumen {

using WeightRef = const gguf::TensorInfo*;  // nullptr when the model has no such tensor

struct LayerWeights {
    WeightRef attn_norm = nullptr, wq = nullptr, wk = nullptr, wv = nullptr, wo = nullptr;
    WeightRef bq = nullptr, bk = nullptr, bv = nullptr, bo = nullptr;  // qwen2 has q/k/v biases
    WeightRef q_norm = nullptr, k_norm = nullptr;                       // gemma3: per-head RMSNorm
    WeightRef post_attn_norm = nullptr, post_ffn_norm = nullptr;        // gemma3: sandwich norms
    WeightRef ffn_norm = nullptr, ffn_gate = nullptr, ffn_up = nullptr, ffn_down = nullptr;
    bool sliding = false;        // gemma3: local (windowed) attention layer
};

struct Model {
    std::unique_ptr<gguf::File> file;
    HParams hp;
    WeightRef tok_embd = nullptr, output_norm = nullptr, output = nullptr;  // output = tok_embd if tied
    WeightRef rope_freqs = nullptr;  // Llama 3.1 long-context frequency factors
    std::vector<LayerWeights> layers;
    int sliding_window = 0;          // gemma3
    float rope_freq_base_swa = 10000.0f;

    // Loads and checks every tensor's presence, shape and type. Throws lumen::Error naming the
    // file and the tensor: unsupported architecture or quant type, missing or misshapen tensors.
    static std::unique_ptr<Model> load(const std::string& path);
    size_t weight_bytes() const;
};

}  // namespace lumen
