#include "model/hparams.h"

#include "util/error.h"

namespace lumen {

const char* rope_scaling_name(RopeScaling s) {
    switch (s) {
        case RopeScaling::None: return "none";
        case RopeScaling::Linear: return "linear";
        case RopeScaling::Yarn: return "yarn";
        case RopeScaling::Llama3: return "llama3";
    }
    return "?";
}

bool arch_supported(const std::string& arch) {
    return arch == "llama" || arch == "qwen2" || arch == "gemma3";
}

HParams read_hparams(const gguf::File& f) {
    HParams h;
    h.arch = f.get_str("general.architecture");
    if (h.arch.empty()) f.error("general.architecture is missing");
    h.name = f.get_str("general.name");
    const std::string a = h.arch + ".";
    auto gi = [&](const char* k, int64_t def) {
        int64_t v = f.get_int(a + k, def);
        if (v < 0 || v > (int64_t(1) << 30)) f.error(a + k + " has an impossible value " + std::to_string(v));
        return int(v);
    };
    h.n_layer = gi("block_count", 0);
    h.n_embd = gi("embedding_length", 0);
    h.n_ff = gi("feed_forward_length", 0);
    h.n_head = gi("attention.head_count", 0);
    h.n_head_kv = gi("attention.head_count_kv", h.n_head);
    h.n_ctx_train = gi("context_length", 0);
    h.head_dim = gi("attention.key_length", h.n_head ? h.n_embd / h.n_head : 0);
    h.n_rot = gi("rope.dimension_count", h.head_dim);
    h.norm_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
    h.rope_freq_base = float(f.get_float(a + "rope.freq_base", 10000.0));
    h.rope_neox = h.arch == "qwen2" || h.arch == "gemma3";

    std::string scaling = f.get_str(a + "rope.scaling.type", "none");
    double factor = f.get_float(a + "rope.scaling.factor", 0.0);
    if (scaling == "linear") h.rope_scaling = RopeScaling::Linear;
    else if (scaling == "yarn") h.rope_scaling = RopeScaling::Yarn;
    else if (scaling == "llama3") h.rope_scaling = RopeScaling::Llama3;
    else if (scaling != "none") f.error("unknown RoPE scaling type '" + scaling + "'");
    // Older files carry only rope.scale_linear.
    if (h.rope_scaling == RopeScaling::None && f.find(a + "rope.scale_linear")) {
        h.rope_scaling = RopeScaling::Linear;
        factor = f.get_float(a + "rope.scale_linear", 1.0);
    }
    h.rope_scale_factor = factor > 0 ? float(factor) : 1.0f;
    h.rope_orig_ctx = gi("rope.scaling.original_context_length", h.n_ctx_train);

    if (const gguf::Value* toks = f.find("tokenizer.ggml.tokens"); toks && toks->type == gguf::VType::ARRAY)
        h.n_vocab = int(toks->count);
    h.n_vocab = gi("vocab_size", h.n_vocab);

    h.tied_embeddings = f.find_tensor("output.weight") == nullptr && !f.tensors().empty();
    for (const auto& t : f.tensors()) h.n_params += t.n_elements();
    return h;
}

}  // namespace lumen
