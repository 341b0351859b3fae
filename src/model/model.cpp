#include "model/model.h"

#include "util/error.h"

namespace lumen {

namespace {

struct Binder {
    const gguf::File& f;

    WeightRef get(const std::string& name, std::initializer_list<int64_t> shape, bool required = true) const {
        const gguf::TensorInfo* t = f.find_tensor(name);
        if (!t) {
            if (required) f.error("tensor '" + name + "' is missing");
            return nullptr;
        }
        if (!dtype_info(t->type).supported)
            f.error(std::string("tensor '") + name + "': quant type " + dtype_name(t->type) + " is not supported");
        int d = 0;
        for (int64_t want : shape) {
            if (t->ne[d] != want) {
                std::string s = "[";
                for (int64_t x : shape) s += (s.size() > 1 ? ", " : "") + std::to_string(x);
                f.error("tensor '" + name + "' has shape " + t->shape_string() + ", expected " + s + "]");
            }
            d++;
        }
        for (; d < 4; d++)
            if (t->ne[d] != 1) f.error("tensor '" + name + "' has shape " + t->shape_string() + ": too many dimensions");
        return t;
    }
};

}  // namespace

size_t Model::weight_bytes() const {
    size_t n = 0;
    for (const auto& t : file->tensors()) n += t.nbytes;
    return n;
}

std::unique_ptr<Model> Model::load(const std::string& path) {
    auto m = std::make_unique<Model>();
    m->file = gguf::File::open(path);
    const gguf::File& f = *m->file;
    m->hp = read_hparams(f);
    HParams& h = m->hp;
    if (!arch_supported(h.arch))
        f.error("architecture '" + h.arch + "' is not supported (supported: llama, qwen2, gemma3)");
    if (f.tensors().empty()) f.error("has no tensors (a vocab-only file cannot be run)");
    if (h.n_layer <= 0 || h.n_embd <= 0 || h.n_head <= 0 || h.n_head_kv <= 0 || h.n_ff <= 0 || h.n_vocab <= 0)
        f.error("hyperparameters are missing or zero (block_count, embedding_length, head counts, feed_forward_length, vocab)");
    if (h.n_head % h.n_head_kv != 0) f.error("attention.head_count is not a multiple of head_count_kv");

    const int64_t E = h.n_embd, V = h.n_vocab, F = h.n_ff, D = h.head_dim;
    const int64_t q_dim = D * h.n_head, kv_dim = D * h.n_head_kv;
    Binder b{f};
    m->tok_embd = b.get("token_embd.weight", {E, V});
    m->output_norm = b.get("output_norm.weight", {E});
    m->output = b.get("output.weight", {E, V}, false);
    if (!m->output) m->output = m->tok_embd;
    m->rope_freqs = b.get("rope_freqs.weight", {h.n_rot / 2}, false);

    const bool gemma = h.arch == "gemma3";
    if (gemma) {
        m->sliding_window = int(f.get_int("gemma3.attention.sliding_window", 0));
        m->rope_freq_base_swa = float(f.get_float("gemma3.rope.freq_base_swa", 10000.0));
    }
    m->layers.resize(size_t(h.n_layer));
    for (int il = 0; il < h.n_layer; il++) {
        LayerWeights& L = m->layers[size_t(il)];
        auto n = [&](const char* what) { return "blk." + std::to_string(il) + "." + what; };
        L.attn_norm = b.get(n("attn_norm.weight"), {E});
        L.wq = b.get(n("attn_q.weight"), {E, q_dim});
        L.wk = b.get(n("attn_k.weight"), {E, kv_dim});
        L.wv = b.get(n("attn_v.weight"), {E, kv_dim});
        L.wo = b.get(n("attn_output.weight"), {q_dim, E});
        L.bq = b.get(n("attn_q.bias"), {q_dim}, false);
        L.bk = b.get(n("attn_k.bias"), {kv_dim}, false);
        L.bv = b.get(n("attn_v.bias"), {kv_dim}, false);
        L.bo = b.get(n("attn_output.bias"), {E}, false);
        L.ffn_norm = b.get(n("ffn_norm.weight"), {E});
        L.ffn_gate = b.get(n("ffn_gate.weight"), {E, F});
        L.ffn_up = b.get(n("ffn_up.weight"), {E, F});
        L.ffn_down = b.get(n("ffn_down.weight"), {F, E});
        if (gemma) {
            L.q_norm = b.get(n("attn_q_norm.weight"), {D});
            L.k_norm = b.get(n("attn_k_norm.weight"), {D});
            L.post_attn_norm = b.get(n("post_attention_norm.weight"), {E});
            L.post_ffn_norm = b.get(n("post_ffw_norm.weight"), {E});
            // Gemma 3: every sixth layer attends globally, the others within the sliding window.
            L.sliding = m->sliding_window > 0 && (il + 1) % 6 != 0;
        }
    }
    return m;
}

}  // namespace lumen
