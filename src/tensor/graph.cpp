#include "tensor/graph.h"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "util/error.h"

namespace lumen {

namespace {
void set_contiguous_strides(Tensor* t) {
    const DTypeInfo& i = dtype_info(t->type);
    t->nb[0] = i.block_bytes;
    t->nb[1] = lumen::row_bytes(t->type, t->ne[0]);
    t->nb[2] = t->nb[1] * size_t(t->ne[1]);
    t->nb[3] = t->nb[2] * size_t(t->ne[2]);
}

void check(bool ok, const char* op, const char* what) {
    if (!ok) fail("graph: ", op, ": ", what);
}
}  // namespace

Tensor* Graph::storage(Tensor* t) {
    while (t->view_src) t = t->view_src;
    return t;
}

Tensor* Graph::new_tensor(DType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    pool_.emplace_back();
    Tensor* t = &pool_.back();
    t->type = type;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = ne2; t->ne[3] = ne3;
    set_contiguous_strides(t);
    return t;
}

Tensor* Graph::new_op(Op op, DType type, int64_t ne0, int64_t ne1, int64_t ne2) {
    Tensor* t = new_tensor(type, ne0, ne1, ne2, 1);
    t->op = op;
    nodes_.push_back(t);
    return t;
}

Tensor* Graph::weight(DType type, const int64_t* ne, int n_dims, const void* data, const std::string& name) {
    Tensor* t = new_tensor(type, ne[0], n_dims > 1 ? ne[1] : 1, n_dims > 2 ? ne[2] : 1, n_dims > 3 ? ne[3] : 1);
    t->data = const_cast<void*>(data);  // weights are only ever read
    t->is_weight = true;
    t->name = name;
    leaves_.push_back(t);
    return t;
}

Tensor* Graph::input(DType type, int64_t ne0, int64_t ne1, const std::string& name) {
    Tensor* t = new_tensor(type, ne0, ne1, 1, 1);
    t->is_input = true;
    t->name = name;
    leaves_.push_back(t);
    return t;
}

Tensor* Graph::state(Tensor* ext) {
    pool_.push_back(*ext);
    Tensor* t = &pool_.back();
    t->op = Op::None;
    t->is_state = true;
    leaves_.push_back(t);
    return t;
}

Tensor* Graph::reshape(Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2) {
    check(a->contiguous(), "reshape", "source is not contiguous");
    check(ne0 * ne1 * ne2 == a->nelements(), "reshape", "element count differs");
    Tensor* t = new_op(Op::View, a->type, ne0, ne1, ne2);
    t->src[0] = a;
    t->view_src = a;
    return t;
}

Tensor* Graph::get_rows(Tensor* table, Tensor* ids) {
    check(ids->type == DType::I32, "get_rows", "ids must be I32");
    Tensor* t = new_op(Op::GetRows, DType::F32, table->ne[0], ids->ne[0]);
    t->src[0] = table; t->src[1] = ids;
    return t;
}

Tensor* Graph::mul_mat(Tensor* w, Tensor* x) {
    check(w->ne[0] == x->ne[0], "mul_mat", "inner dimensions differ");
    check(x->type == DType::F32, "mul_mat", "activations must be F32");
    Tensor* t = new_op(Op::MulMat, DType::F32, w->ne[1], x->nrows());
    t->src[0] = w; t->src[1] = x;
    return t;
}

Tensor* Graph::binary(Op op, Tensor* a, Tensor* b, const char* name) {
    check(a->ne[0] == b->ne[0] && (b->nrows() == 1 || b->nrows() == a->nrows()), name, "shapes do not broadcast");
    Tensor* t = new_op(op, DType::F32, a->ne[0], a->ne[1], a->ne[2]);
    t->src[0] = a; t->src[1] = b;
    return t;
}

Tensor* Graph::add(Tensor* a, Tensor* b) { return binary(Op::Add, a, b, "add"); }
Tensor* Graph::mul(Tensor* a, Tensor* b) { return binary(Op::Mul, a, b, "mul"); }

Tensor* Graph::scale(Tensor* a, float s) {
    Tensor* t = new_op(Op::Scale, DType::F32, a->ne[0], a->ne[1], a->ne[2]);
    t->src[0] = a;
    t->fp[0] = s;
    return t;
}

Tensor* Graph::rms_norm(Tensor* a, float eps) {
    Tensor* t = new_op(Op::RmsNorm, DType::F32, a->ne[0], a->ne[1], a->ne[2]);
    t->src[0] = a;
    t->fp[0] = eps;
    return t;
}

Tensor* Graph::rope(Tensor* a, Tensor* pos, const RopeParams& p, Tensor* freq_factors) {
    check(pos->type == DType::I32 && pos->ne[0] == a->ne[2], "rope", "need one I32 position per token");
    check(p.n_rot % 2 == 0 && p.n_rot <= a->ne[0], "rope", "bad rotated dimension count");
    Tensor* t = new_op(Op::Rope, DType::F32, a->ne[0], a->ne[1], a->ne[2]);
    check(!freq_factors || (freq_factors->type == DType::F32 && freq_factors->ne[0] >= p.n_rot / 2), "rope",
          "frequency factors must be F32 with n_rot/2 entries");
    t->src[0] = a; t->src[1] = pos; t->src[2] = freq_factors;
    t->ip[0] = p.n_rot; t->ip[1] = p.neox; t->ip[2] = p.orig_ctx;
    t->fp[0] = p.freq_base; t->fp[1] = p.freq_scale; t->fp[2] = p.ext_factor; t->fp[3] = p.attn_factor;
    t->fp[4] = p.beta_fast; t->fp[5] = p.beta_slow;
    return t;
}

Tensor* Graph::swiglu(Tensor* gate, Tensor* up) {
    check(gate->nelements() == up->nelements(), "swiglu", "shapes differ");
    Tensor* t = new_op(Op::SwiGLU, DType::F32, gate->ne[0], gate->ne[1], gate->ne[2]);
    t->src[0] = gate; t->src[1] = up;
    return t;
}

Tensor* Graph::geglu(Tensor* gate, Tensor* up) {
    check(gate->nelements() == up->nelements(), "geglu", "shapes differ");
    Tensor* t = new_op(Op::GeGLU, DType::F32, gate->ne[0], gate->ne[1], gate->ne[2]);
    t->src[0] = gate; t->src[1] = up;
    return t;
}

Tensor* Graph::kv_write(Tensor* cache, Tensor* k, Tensor* rows) {
    check(rows->type == DType::I32, "kv_write", "rows must be I32");
    check(k->nelements() == cache->ne[0] * rows->ne[0], "kv_write", "k does not match the cache row width");
    Tensor* t = new_op(Op::KVWrite, cache->type, cache->ne[0], cache->ne[1]);
    t->nb[1] = cache->nb[1];
    t->src[0] = cache; t->src[1] = k; t->src[2] = rows;
    t->view_src = cache;  // the result is the cache itself, written in place
    return t;
}

Tensor* Graph::attention(Tensor* q, Tensor* k_cache, Tensor* v_cache, Tensor* pos, Tensor* seq, Tensor* block_table,
                         int block_size, int n_head_kv, float scale, int window, float softcap) {
    int64_t head_dim = q->ne[0], n_head = q->ne[1], T = q->ne[2];
    check(n_head % n_head_kv == 0, "attention", "heads are not a multiple of KV heads");
    check(k_cache->ne[0] == head_dim * n_head_kv && v_cache->ne[0] == head_dim * n_head_kv, "attention",
          "cache row width differs from head_dim * n_head_kv");
    check(pos->type == DType::I32 && pos->ne[0] == T, "attention", "need one I32 position per token");
    check(seq->type == DType::I32 && seq->ne[0] == T, "attention", "need one I32 sequence index per token");
    check(block_table->type == DType::I32, "attention", "the block table must be I32");
    check(block_size > 0 && k_cache->ne[1] % block_size == 0, "attention", "the cache is not a whole number of blocks");
    Tensor* t = new_op(Op::Attention, DType::F32, head_dim * n_head, T);
    t->src[0] = q; t->src[1] = k_cache; t->src[2] = v_cache; t->src[3] = pos; t->src[4] = seq; t->src[5] = block_table;
    t->ip[0] = n_head_kv; t->ip[1] = window; t->ip[2] = block_size;
    t->fp[0] = scale; t->fp[1] = softcap;
    return t;
}

Tensor* Graph::top_k(Tensor* a, int k) {
    check(a->type == DType::F32, "top_k", "the input must be F32");
    check(k >= 1 && k <= kTopKMax && k <= a->ne[0], "top_k", "k must be in [1, min(256, row length)]");
    Tensor* t = new_op(Op::TopK, DType::I32, 2 * int64_t(k), a->nrows());
    t->src[0] = a;
    t->ip[0] = k;
    return t;
}

size_t Graph::plan(size_t alignment) {
    auto align = [&](size_t n) { return (n + alignment - 1) / alignment * alignment; };
    // Last node index reading each storage tensor.
    std::unordered_map<Tensor*, size_t> last_use;
    for (size_t k = 0; k < nodes_.size(); k++)
        for (Tensor* s : nodes_[k]->src)
            if (s) last_use[storage(s)] = k;

    // Free blocks by offset; first fit, merged on release.
    std::map<size_t, size_t> free_blocks;
    size_t top = 0;
    auto alloc = [&](size_t n) -> size_t {
        n = align(n);
        for (auto it = free_blocks.begin(); it != free_blocks.end(); ++it) {
            if (it->second < n) continue;
            size_t off = it->first, left = it->second - n;
            free_blocks.erase(it);
            if (left) free_blocks[off + n] = left;
            return off;
        }
        size_t off = top;
        top += n;
        return off;
    };
    auto release = [&](size_t off, size_t n) {
        n = align(n);
        auto it = free_blocks.emplace(off, n).first;
        auto next = std::next(it);
        if (next != free_blocks.end() && it->first + it->second == next->first) {
            it->second += next->second;
            free_blocks.erase(next);
        }
        if (it != free_blocks.begin()) {
            auto prev = std::prev(it);
            if (prev->first + prev->second == it->first) {
                prev->second += it->second;
                free_blocks.erase(it);
            }
        }
    };

    // Inputs live for the whole graph (the caller fills them before compute).
    for (Tensor* l : leaves_)
        if (l->is_input) l->offset = alloc(l->nbytes());
    for (size_t k = 0; k < nodes_.size(); k++) {
        Tensor* n = nodes_[k];
        if (!n->view_src) n->offset = alloc(n->nbytes());
        for (Tensor* s : n->src) {
            if (!s) continue;
            Tensor* st = storage(s);
            if (st->op == Op::None || st->is_output || last_use[st] != k) continue;
            last_use[st] = SIZE_MAX;  // release once
            release(st->offset, st->nbytes());
        }
    }
    arena_size_ = top;
    return top;
}

}  // namespace lumen
