// Model hyperparameters read from GGUF metadata ("{arch}.block_count", ...).
#pragma once
#include <cstdint>
#include <string>

#include "gguf/gguf.h"

namespace lumen {

enum class RopeScaling { None, Linear, Yarn, Llama3 };
const char* rope_scaling_name(RopeScaling s);

struct HParams {
    std::string arch;         // general.architecture
    std::string name;         // general.name
    int n_layer = 0;
    int n_embd = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int n_ff = 0;
    int n_vocab = 0;
    int n_ctx_train = 0;
    int head_dim = 0;         // attention.key_length, default n_embd / n_head
    int n_rot = 0;            // rope.dimension_count, default head_dim
    float norm_eps = 1e-5f;
    bool rope_neox = false;   // NeoX layout rotates (i, i + n_rot/2) instead of (2i, 2i+1)
    float rope_freq_base = 10000.0f;
    RopeScaling rope_scaling = RopeScaling::None;
    float rope_scale_factor = 1.0f;  // context extension factor
    int rope_orig_ctx = 0;           // rope.scaling.original_context_length
    float yarn_beta_fast = 32.0f, yarn_beta_slow = 1.0f;
    bool tied_embeddings = false;    // no output.weight: the token embedding is reused
    int64_t n_params = 0;            // sum of tensor elements
};

// Reads what is there; architectures lumen cannot run still get their numbers for `info`.
HParams read_hparams(const gguf::File& f);

// Architectures with a graph builder.
bool arch_supported(const std::string& arch);

}  // namespace lumen
