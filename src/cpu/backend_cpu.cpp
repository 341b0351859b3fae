#include "cpu/backend_cpu.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cpu/ops.h"
#include "util/error.h"

namespace lumen {

namespace cpu {
uint8_t* OpCtx::ptr(const Tensor* t) const {
    size_t off = 0;
    while (t->view_src) {
        off += t->view_offset;
        t = t->view_src;
    }
    // Leaves (weights, inputs, states) live in host memory; everything else in the arena.
    uint8_t* base = t->op == Op::None ? static_cast<uint8_t*>(t->data) : arena + t->offset;
    return base + off;
}
}  // namespace cpu

CpuBackend::CpuBackend(int n_threads, int n_threads_batch)
    : n_threads_(std::max(1, n_threads)),
      n_threads_batch_(n_threads_batch > 0 ? n_threads_batch : n_threads_),
      pool_(std::max(n_threads_, n_threads_batch_)) {}
CpuBackend::~CpuBackend() = default;

void CpuBackend::alloc_state(Tensor* t) {
    // calloc: a large KV pool gets zero pages from the OS, touched only as blocks are used.
    auto* p = static_cast<uint8_t*>(std::calloc(1, std::max<size_t>(t->nbytes(), 1)));
    if (!p) fail("not enough memory for ", t->name, " (", t->nbytes() >> 20, " MiB)");
    states_.emplace_back(p);
    t->data = p;
}

void CpuBackend::prepare(Graph& g) {
    if (arena_.size() < g.arena_size()) arena_.resize(g.arena_size());
    int64_t tokens = 1;  // the most activation rows any product of the pass multiplies
    for (Tensor* n : g.nodes())
        if (n->op == Op::MulMat) tokens = std::max(tokens, n->src[1]->nrows());
    nth_ = tokens > 1 ? n_threads_batch_ : n_threads_;
    for (Tensor* n : g.nodes()) {
        size_t s = 0, p = 0;
        cpu::work_size(n, pool_.size(), s, p);
        work_shared_ = std::max(work_shared_, (s + 63) / 64 * 64);
        work_per_thread_ = std::max(work_per_thread_, (p + 63) / 64 * 64);
    }
    size_t need = work_shared_ + work_per_thread_ * size_t(pool_.size());
    if (work_.size() < need) work_.resize(need);
    prepared_ = &g;
}

void CpuBackend::release(Graph& g) {
    if (prepared_ == &g) prepared_ = nullptr;
}

namespace {
// LUMEN_DUMP=1: each node's op, shape and the float sum of its values in element order, on stderr:
// the sums llama.cpp's llama-eval-callback prints, so a divergence shows at its first node.
void dump_node(const cpu::OpCtx& c, const Tensor* t) {
    if (t->type != DType::F32 || t->op == Op::KVWrite) return;
    const float* p = reinterpret_cast<const float*>(c.ptr(t));
    float sum = 0;
    for (int64_t i = 0; i < t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; i++) sum += p[i];
    std::fprintf(stderr, "dump %-10s {%lld, %lld, %lld} sum = %f\n", op_name(t->op), static_cast<long long>(t->ne[0]),
                 static_cast<long long>(t->ne[1]), static_cast<long long>(t->ne[2]), double(sum));
}
}  // namespace

void CpuBackend::compute(Graph& g) {
    if (prepared_ != &g) prepare(g);  // sizing walks every node: not once per token
    const size_t shared = work_shared_, per_thread = work_per_thread_;
    const std::vector<Tensor*>& nodes = g.nodes();
    const bool dump = std::getenv("LUMEN_DUMP") != nullptr;
    pool_.run([&](int ith, int nth) {
        cpu::OpCtx c;
        c.ith = ith;
        c.nth = nth;
        c.arena = arena_.data();
        c.work = work_.data();
        c.work_shared = shared;
        c.work_per_thread = per_thread;
        c.barrier_fn = [](void* p) { static_cast<ThreadPool*>(p)->barrier(); };
        c.barrier_arg = &pool_;
        for (Tensor* t : nodes) {
            switch (t->op) {
                case Op::None: case Op::View: continue;  // no work, no barrier needed
                case Op::GetRows: cpu::op_get_rows(c, t); break;
                case Op::MulMat: cpu::op_mul_mat(c, t); break;
                case Op::Add: case Op::Mul: cpu::op_binary(c, t); break;
                case Op::Scale: case Op::SwiGLU: case Op::GeGLU: cpu::op_unary(c, t); break;
                case Op::RmsNorm: cpu::op_rms_norm(c, t); break;
                case Op::Rope: cpu::op_rope(c, t); break;
                case Op::KVWrite: cpu::op_kv_write(c, t); break;
                case Op::Attention: cpu::op_attention(c, t); break;
                case Op::TopK: cpu::op_top_k(c, t); break;
            }
            c.barrier();
            if (dump && ith == 0) dump_node(c, t);
            if (dump) c.barrier();
        }
    }, nth_);
}

void CpuBackend::read(const Tensor* t, void* dst, size_t bytes) {
    cpu::OpCtx c;
    c.arena = arena_.data();
    std::memcpy(dst, c.ptr(t), bytes);
}

}  // namespace lumen
