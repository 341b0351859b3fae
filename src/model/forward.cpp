#include "model/forward.h"

#include <algorithm>
#include <cmath>

namespace lumen {

namespace {

Tensor* W(Graph& g, WeightRef w) {
    if (!w) return nullptr;
    return g.weight(w->type, w->ne, w->n_dims, w->data, w->name);
}

// x normalised per row, times the norm's weight vector.
Tensor* norm(Graph& g, Tensor* x, WeightRef w, float eps) { return g.mul(g.rms_norm(x, eps), W(g, w)); }

Tensor* linear(Graph& g, Tensor* x, WeightRef w, WeightRef bias) {
    Tensor* y = g.mul_mat(W(g, w), x);
    return bias ? g.add(y, W(g, bias)) : y;
}

}  // namespace

std::unique_ptr<ForwardGraph> build_forward(const Model& m, KVCache& kv, int n_tokens, int n_out, int n_seqs,
                                            int max_blocks, int n_top) {
    const HParams& h = m.hp;
    const bool gemma = h.arch == "gemma3";
    auto fg = std::make_unique<ForwardGraph>();
    Graph& g = fg->g;
    const int64_t T = n_tokens, D = h.head_dim;
    fg->n_tokens = n_tokens;
    fg->n_out = n_out;
    fg->n_seqs = n_seqs;
    fg->max_blocks = max_blocks;
    auto input = [&](std::vector<int32_t>& buf, int64_t ne0, int64_t ne1, const char* name) {
        buf.assign(size_t(ne0 * ne1), 0);
        Tensor* t = g.input(DType::I32, ne0, ne1, name);
        t->data = buf.data();
        return t;
    };
    fg->tokens = input(fg->tokens_buf, T, 1, "tokens");
    fg->pos = input(fg->pos_buf, T, 1, "positions");
    fg->seq = input(fg->seq_buf, T, 1, "sequences");
    fg->rows = input(fg->rows_buf, T, 1, "cache_rows");
    fg->block_table = input(fg->table_buf, max_blocks, n_seqs, "block_table");
    fg->out_ids = input(fg->out_buf, n_out, 1, "out_ids");

    Tensor* freq_factors = W(g, m.rope_freqs);
    RopeParams rp;
    rp.n_rot = h.n_rot;
    rp.neox = h.rope_neox;
    rp.freq_base = h.rope_freq_base;
    rp.orig_ctx = h.rope_orig_ctx;
    if (h.rope_scaling == RopeScaling::Linear || h.rope_scaling == RopeScaling::Yarn)
        rp.freq_scale = 1.0f / h.rope_scale_factor;
    if (h.rope_scaling == RopeScaling::Yarn) {
        rp.ext_factor = 1.0f;
        rp.beta_fast = h.yarn_beta_fast;
        rp.beta_slow = h.yarn_beta_slow;
    }
    const float kq_scale = 1.0f / std::sqrt(float(D));

    Tensor* x = g.get_rows(W(g, m.tok_embd), fg->tokens);
    if (gemma) x = g.scale(x, std::sqrt(float(h.n_embd)));

    for (int il = 0; il < h.n_layer; il++) {
        const LayerWeights& L = m.layers[size_t(il)];
        Tensor* cur = norm(g, x, L.attn_norm, h.norm_eps);
        Tensor* q = g.reshape(linear(g, cur, L.wq, L.bq), D, h.n_head, T);
        Tensor* k = g.reshape(linear(g, cur, L.wk, L.bk), D, h.n_head_kv, T);
        Tensor* v = linear(g, cur, L.wv, L.bv);
        if (L.q_norm) q = norm(g, q, L.q_norm, h.norm_eps);
        if (L.k_norm) k = norm(g, k, L.k_norm, h.norm_eps);
        RopeParams lp = rp;
        if (L.sliding) {
            lp.freq_base = m.rope_freq_base_swa;
            lp.freq_scale = 1.0f;
        }
        q = g.rope(q, fg->pos, lp, freq_factors);
        k = g.rope(k, fg->pos, lp, freq_factors);
        Tensor* kc = g.kv_write(g.state(&kv.k[size_t(il)]), k, fg->rows);
        Tensor* vc = g.kv_write(g.state(&kv.v[size_t(il)]), v, fg->rows);
        Tensor* att = g.attention(q, kc, vc, fg->pos, fg->seq, fg->block_table, kv.block_size, h.n_head_kv, kq_scale,
                                  L.sliding ? m.sliding_window : 0);
        Tensor* o = linear(g, att, L.wo, L.bo);
        if (L.post_attn_norm) o = norm(g, o, L.post_attn_norm, h.norm_eps);
        x = g.add(x, o);

        if (il == h.n_layer - 1 && n_out < n_tokens) x = g.get_rows(x, fg->out_ids);
        cur = norm(g, x, L.ffn_norm, h.norm_eps);
        Tensor* gate = g.mul_mat(W(g, L.ffn_gate), cur);
        Tensor* up = g.mul_mat(W(g, L.ffn_up), cur);
        Tensor* f = g.mul_mat(W(g, L.ffn_down), gemma ? g.geglu(gate, up) : g.swiglu(gate, up));
        if (L.post_ffn_norm) f = norm(g, f, L.post_ffn_norm, h.norm_eps);
        x = g.add(x, f);
    }
    x = norm(g, x, m.output_norm, h.norm_eps);
    fg->logits = g.mul_mat(W(g, m.output), x);
    g.mark_output(fg->logits);
    if (n_top > 0) {
        fg->top = g.top_k(fg->logits, std::min(n_top, int(h.n_vocab)));
        g.mark_output(fg->top);
    }
    g.plan();
    return fg;
}

}  // namespace lumen
