// How the CUDA backend runs a graph: its nodes grouped into steps, each one launch (a product may
// add the quantization of its input), found once per graph. Plain C++ (no CUDA types), so the unit
// tests plan the model graphs on machines without a GPU and count the launches.
//
// Why: a decode step is ~20 kernels per layer, most of them moving a few KiB, and even replayed as
// a CUDA graph each costs ~1 us of gap; fusing the small ones into their neighbours halves that.
// A step takes nodes that follow one another in the graph when the pattern holds and every
// intermediate it skips has no reader outside the step and is no output:
//   Norm:      rms_norm [-> mul by one row of weights]
//   Glu:       swiglu or geglu
//   RopeWrite: up to two ropes of one position list [-> up to two kv_writes] (Q, K; K and V)
//   Products:  up to three decode products of one input sharing a launch, each [-> add] (the
//              residual or the bias added by the product's epilogue)
// and a Norm or Glu step whose result feeds int8 decode products also writes the int8 copy they
// read, so they skip their own quantization launch. Unfused (fuse = false), every op is its own
// step except products sharing a launch, as before this pass existed.
// The graph's planner may give a node memory freed by an earlier node of the same step (an add's
// result where its product's input was): a step whose results would overlap what it reads writes
// them to memory of their own instead (own_memory; the backend places them apart).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/graph.h"

namespace lumen::cuda {

// What only the backend knows of a product (from its weight's layout).
struct ProductInfo {
    std::function<bool(const Tensor*)> decode;  // runs on the matrix-vector kernels (few columns)
    std::function<bool(const Tensor*)> int8;    // ...which read X quantized to int8 in the scratch
    std::function<bool(const Tensor*, const Tensor*)> share;  // two decode products of one X may share a launch
};

enum class StepKind : uint8_t { Node, Products, Norm, Glu, RopeWrite };

struct Step {
    static constexpr int kMaxProducts = 3;  // kMatvecMaxWeights
    StepKind kind = StepKind::Node;
    size_t first = 0, end = 0;  // the nodes it covers, [first, end) (Views among them: no work)
    Tensor* node = nullptr;     // Node: the op, run alone
    // Products: mm[i] with the add fused into its epilogue (or null).
    Tensor* mm[kMaxProducts] = {};
    Tensor* add[kMaxProducts] = {};
    int n = 0;
    bool decode = false;        // on the matrix-vector kernels (else the tensor cores: f16 conversion + GEMM)
    Tensor* norm = nullptr;     // Norm, and the mul by its weights (or null)
    Tensor* mul = nullptr;
    Tensor* glu = nullptr;      // Glu
    // RopeWrite: ropes (with whether their f32 result is read after the step) and cache writes.
    Tensor* rope[2] = {};
    bool rope_kept[2] = {};
    int n_rope = 0;
    Tensor* write[2] = {};
    int n_write = 0;
    // Products: quantize X into the scratch first (a launch of its own). Norm, Glu: also write the
    // int8 copy of the result there, for the products that follow.
    bool quantize = false;
    bool own_memory = false;  // written() goes to memory of its own, not the graph's arena offsets

    Tensor* result() const { return kind == StepKind::Norm ? (mul ? mul : norm) : glu; }
    Tensor* product_out(int i) const { return add[i] ? add[i] : mm[i]; }
    // The tensors it writes (not counting caches).
    std::vector<Tensor*> written() const {
        switch (kind) {
            case StepKind::Node: return {node};
            case StepKind::Products: return {product_out(0), product_out(1), product_out(2)};  // (null past n)
            case StepKind::Norm: case StepKind::Glu: return {result()};
            case StepKind::RopeWrite: return {rope_kept[0] ? rope[0] : nullptr, rope_kept[1] ? rope[1] : nullptr};
        }
        return {};
    }
    int launches() const {
        if (kind == StepKind::Node) return node->op == Op::View || node->op == Op::None ? 0 : 1;
        if (kind == StepKind::Products) return decode ? 1 + int(quantize) : 2;
        return 1;
    }
    std::string name() const;  // for LUMEN_PROFILE: the ops it runs and their shape
};

struct Plan {
    std::vector<Step> steps;
    // Kernel launches of the steps that start in nodes [first, end) (attention's split merge not counted).
    int launches(size_t first = 0, size_t end = SIZE_MAX) const {
        int n = 0;
        for (const Step& s : steps)
            if (s.first >= first && s.first < end) n += s.launches();
        return n;
    }
};

namespace plan_detail {

// Where a tensor's bytes are: the arena (base null) or a state / weight of its own.
struct Span {
    const void* base;
    size_t begin, end;
};
inline Span span(const Tensor* t) {
    size_t off = 0;
    const Tensor* s = t;
    while (s->view_src) {
        off += s->view_offset;
        s = s->view_src;
    }
    if (s->is_state || s->is_weight) return {s->data ? s->data : s, off, off + t->nbytes()};
    return {nullptr, s->offset + off, s->offset + off + t->nbytes()};
}
inline bool overlap(const Span& a, const Span& b) { return a.base == b.base && a.begin < b.end && b.begin < a.end; }
inline bool same(const Span& a, const Span& b) { return a.base == b.base && a.begin == b.begin && a.end == b.end; }
inline bool same_params(const Tensor* a, const Tensor* b) {
    for (int i = 0; i < 3; i++)
        if (a->ip[i] != b->ip[i]) return false;
    for (int i = 0; i < 6; i++)
        if (a->fp[i] != b->fp[i]) return false;
    return true;
}
inline bool row_f32(const Tensor* t, int64_t n) {  // one contiguous F32 row of n
    return t->type == DType::F32 && t->ne[0] == n && t->nrows() == 1 && t->nb[0] == 4;
}

class Planner {
public:
    Planner(const Graph& g, const ProductInfo& info, bool fuse) : nodes_(g.nodes()), info_(info), fuse_(fuse) {
        for (const Tensor* n : nodes_)
            for (const Tensor* s : n->src)
                if (s) readers_[s]++;
    }

    Plan run() {
        Plan p;
        for (size_t k = 0; k < nodes_.size();) {
            Step s = step_at(k);
            k = s.end;
            p.steps.push_back(s);
        }
        decide_quantization(p);
        return p;
    }

private:
    const std::vector<Tensor*>& nodes_;
    const ProductInfo& info_;
    bool fuse_;
    std::unordered_map<const Tensor*, int> readers_;

    int readers(const Tensor* t) const {
        auto it = readers_.find(t);
        return it == readers_.end() ? 0 : it->second;
    }
    // Read by `n` readers only (those the step absorbs) and not an output: need not be written.
    bool private_to(const Tensor* t, int n) const { return !t->is_output && readers(t) == n; }
    // The next node at or after j that is not a View (nodes_.size() if none).
    size_t skip_views(size_t j) const {
        while (j < nodes_.size() && nodes_[j]->op == Op::View) j++;
        return j;
    }

    Step step_at(size_t k) {
        Tensor* t = nodes_[k];
        Step s;
        s.first = k;
        s.end = k + 1;
        switch (t->op) {
            case Op::MulMat: return products(k);
            case Op::RmsNorm:
                s.kind = StepKind::Norm;
                s.norm = t;
                if (fuse_) absorb_mul(s);
                return s;
            case Op::SwiGLU: case Op::GeGLU:
                s.kind = StepKind::Glu;
                s.glu = t;
                return s;
            case Op::Rope: return rope_write(k);
            default:
                s.node = t;
                return s;
        }
    }

    // Whether a fused step may run: what it writes (in the arena) does not overlap what it reads,
    // but for `in_place` (a read that a write may equal exactly: each thread reads an element
    // before it writes it), or can be moved to memory of its own (own_memory: not an output, and
    // small, as decode rows are; the backend keeps each apart for the whole graph).
    static constexpr size_t kMaxOwnBytes = size_t(1) << 20;
    static bool place(Step& s, const std::vector<const Tensor*>& reads, const Tensor* in_place = nullptr) {
        bool clash = false, fixed = false;  // fixed: a result that may not move
        for (const Tensor* w : s.written()) {
            if (!w) continue;
            fixed |= w->is_output || w->nbytes() > kMaxOwnBytes;
            for (const Tensor* r : reads) {
                const bool exact = r == in_place && same(span(w), span(r)) && w->nb[1] == r->nb[1];
                clash |= !exact && overlap(span(w), span(r));
            }
        }
        if (clash && fixed) return false;
        s.own_memory = clash;
        return true;
    }

    // rms_norm -> mul(norm, one row of weights); the result may be x itself, in place.
    void absorb_mul(Step& s) const {
        const size_t j = s.end;
        if (j >= nodes_.size()) return;
        Tensor* m = nodes_[j];
        const Tensor* x = s.norm->src[0];
        if (m->op != Op::Mul || m->src[0] != s.norm || !private_to(s.norm, 1) || !row_f32(m->src[1], s.norm->ne[0]))
            return;
        Step fused = s;
        fused.mul = m;
        fused.end = j + 1;
        if (place(fused, {x}, x)) s = fused;
    }

    // Decode products of one X with layouts that share a launch, each with the add that follows it.
    Step products(size_t k) {
        Step s = product_group(k, fuse_);
        if (s.add[0] || s.add[1] || s.add[2]) {  // the adds' results must not land on what the launch reads
            std::vector<const Tensor*> reads;
            for (int i = 0; i < s.n; i++)
                if (s.add[i]) reads.push_back(s.add[i]->src[s.add[i]->src[0] == s.mm[i] ? 1 : 0]);
            if (!info_.int8(s.mm[0])) reads.push_back(s.mm[0]->src[1]);  // f32 X, read by every block
            if (!place(s, reads)) s = product_group(k, false);
        }
        return s;
    }

    Step product_group(size_t k, bool adds) {
        Tensor* t = nodes_[k];
        Step s;
        s.kind = StepKind::Products;
        s.first = k;
        s.mm[s.n++] = t;
        s.end = k + 1;
        s.decode = info_.decode(t);
        if (!s.decode || !t->src[0]->is_weight) return s;
        if (adds) absorb_add(s, 0);
        for (size_t j = skip_views(s.end); j < nodes_.size() && s.n < Step::kMaxProducts; j = skip_views(s.end)) {
            Tensor* u = nodes_[j];
            if (u->op != Op::MulMat || u->src[1] != t->src[1] || !u->src[0]->is_weight || !info_.decode(u) ||
                !info_.share(t, u))
                break;
            s.mm[s.n++] = u;
            s.end = j + 1;
            if (adds) absorb_add(s, s.n - 1);
        }
        return s;
    }

    // Y = W X + R: the add right after product i (Views between skipped), R a full-size or one-row
    // F32 operand.
    void absorb_add(Step& s, int i) const {
        const size_t j = skip_views(s.end);
        if (j >= nodes_.size()) return;
        Tensor* a = nodes_[j];
        const Tensor* y = s.mm[i];
        if (a->op != Op::Add || !private_to(y, 1) || (a->src[0] != y && a->src[1] != y) || a->src[0] == a->src[1])
            return;
        const Tensor* r = a->src[a->src[0] == y ? 1 : 0];
        if (r->type != DType::F32 || r->nb[0] != 4 || r->ne[0] != y->ne[0] || (r->nrows() != 1 && r->nrows() != y->nrows()) ||
            a->nb[1] != size_t(a->ne[0]) * 4)
            return;
        s.add[i] = a;
        s.end = j + 1;
    }

    // rope [rope] [kv_write [kv_write]]: ropes of one head size and positions; writes of one rows
    // list whose sources are those ropes' results or plain f32 rows of whole heads.
    Step rope_write(size_t k) {
        Step s;
        s.kind = StepKind::RopeWrite;
        s.first = k;
        s.rope[s.n_rope++] = nodes_[k];
        s.end = k + 1;
        if (!fuse_) {
            s.rope_kept[0] = true;
            return s;
        }
        const Tensor* r0 = nodes_[k];
        const int64_t D = r0->ne[0], T = r0->ne[2];
        size_t j = skip_views(s.end);
        if (j < nodes_.size() && nodes_[j]->op == Op::Rope) {
            const Tensor* r1 = nodes_[j];
            if (r1->ne[0] == D && r1->ne[2] == T && r1->src[1] == r0->src[1] && r1->src[2] == r0->src[2] &&
                same_params(r0, r1)) {
                s.rope[s.n_rope++] = nodes_[j];
                s.end = j + 1;
            }
        }
        for (j = skip_views(s.end); j < nodes_.size() && s.n_write < 2; j = skip_views(s.end)) {
            Tensor* w = nodes_[j];
            if (w->op != Op::KVWrite || !writable(w, s, D, T)) break;
            s.write[s.n_write++] = w;
            s.end = j + 1;
        }
        // A rope's f32 result is written when something after the step reads it.
        std::vector<const Tensor*> reads;
        for (int i = 0; i < s.n_rope; i++) {
            int in_step = 0;
            for (int w = 0; w < s.n_write; w++) in_step += s.write[w]->src[1] == s.rope[i];
            s.rope_kept[i] = !private_to(s.rope[i], in_step);
            reads.push_back(s.rope[i]->src[0]);
        }
        for (int w = 0; w < s.n_write; w++) {
            const Tensor* src = s.write[w]->src[1];
            if (src != s.rope[0] && src != s.rope[1]) reads.push_back(src);  // a rope's result comes from its source
        }
        if (!place(s, reads)) {  // one rope alone, as unfused
            s = Step{};
            s.kind = StepKind::RopeWrite;
            s.first = k;
            s.end = k + 1;
            s.rope[s.n_rope++] = nodes_[k];
            s.rope_kept[0] = true;
        }
        return s;
    }

    // A kv_write the step can do: same rows as the step's others, a cache type the kernel writes,
    // and a source that is one of the step's ropes (not yet written) or contiguous f32 heads.
    bool writable(const Tensor* w, const Step& s, int64_t D, int64_t T) const {
        const Tensor* cache = w->src[0];
        const Tensor* src = w->src[1];
        const DType ct = cache->type;
        if (ct != DType::F32 && ct != DType::F16 && ct != DType::Q8_0) return false;
        if (D % 4 != 0 || (ct == DType::Q8_0 && D % 32 != 0) || cache->ne[0] % D != 0) return false;
        if (w->src[2]->ne[0] != T || (s.n_write > 0 && w->src[2] != s.write[0]->src[2])) return false;
        for (int i = 0; i < s.n_rope; i++)
            if (src == s.rope[i]) {
                for (int k = 0; k < s.n_write; k++)
                    if (s.write[k]->src[1] == src) return false;  // one cache per rope
                return src->ne[0] * src->ne[1] == cache->ne[0];
            }
        return src->type == DType::F32 && src->contiguous() && src->nelements() == cache->ne[0] * T;
    }

    // Which step quantizes each int8 product's X: the Norm or Glu step that produced it, when the
    // products come next; else the products' own launch, unless the scratch still holds that X.
    void decide_quantization(Plan& p) const {
        const Tensor* held = nullptr;  // whose int8 copy the scratch holds
        for (size_t i = 0; i < p.steps.size(); i++) {
            Step& s = p.steps[i];
            if (s.kind == StepKind::Products) {
                if (s.decode && info_.int8(s.mm[0])) {
                    s.quantize = held != s.mm[0]->src[1];
                    held = s.mm[0]->src[1];
                } else if (!s.decode) {
                    held = nullptr;  // the tensor-core path uses the scratch
                }
            } else if (fuse_ && (s.kind == StepKind::Norm || s.kind == StepKind::Glu)) {
                size_t j = i + 1;
                while (j < p.steps.size() && p.steps[j].launches() == 0) j++;
                if (j == p.steps.size() || p.steps[j].kind != StepKind::Products) continue;
                const Tensor* mm = p.steps[j].mm[0];
                const Tensor* x = s.result();
                if (mm->src[1] == x && info_.decode(mm) && info_.int8(mm) && x->ne[0] % 32 == 0 &&
                    x->nb[1] == size_t(x->ne[0]) * 4) {
                    s.quantize = true;
                    held = x;
                }
            }
        }
    }
};

}  // namespace plan_detail

inline Plan make_plan(const Graph& g, const ProductInfo& info, bool fuse) {
    return plan_detail::Planner(g, info, fuse).run();
}

inline std::string Step::name() const {
    auto shape = [](const Tensor* t) { return std::to_string(t->ne[0]) + " M=" + std::to_string(t->nrows()); };
    switch (kind) {
        case StepKind::Node: return op_name(node->op);
        case StepKind::Products: {
            const Tensor* w = mm[0]->src[0];
            std::string s = std::string("mul_mat ") + dtype_name(w->type) + " " + std::to_string(w->ne[0]) + "x" +
                            std::to_string(w->ne[1]) + " M=" + std::to_string(mm[0]->src[1]->nrows());
            if (n > 1) s += " +" + std::to_string(n - 1) + " in its launch";
            if (add[0] || add[1] || add[2]) s += " +add";
            return s;
        }
        case StepKind::Norm:
            return std::string("rms_norm") + (mul ? "+mul" : "") + (quantize ? "+quantize " : " ") + shape(result());
        case StepKind::Glu:
            return std::string(op_name(glu->op)) + (quantize ? "+quantize " : " ") + shape(glu);
        case StepKind::RopeWrite:
            return "rope x" + std::to_string(n_rope) + (n_write ? " +kv_write x" + std::to_string(n_write) : "") + " " +
                   std::to_string(rope[0]->ne[0]) + " T=" + std::to_string(rope[0]->ne[2]);
    }
    return "";
}

}  // namespace lumen::cuda
