// Executes the graph on one GPU. Weights are uploaded once (keyed by their address in the
// mapped file), KV caches live on the device, intermediates share one arena planned by the
// graph. The nodes run as the steps of a plan made once per graph (fused_plan.h: neighbouring ops
// fused into one launch; LUMEN_NO_FUSE=1 runs them one by one). After its first eager run a graph
// is captured as a CUDA graph and replayed, so a decode step costs one launch plus the copy of the
// token ids and positions.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend_cuda.h"
#include "device.h"
#include "fused.cuh"
#include "fused_plan.h"
#include "kernels.h"
#include "util/error.h"
#include "util/progress.h"

namespace lumen {

namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}
void check(cublasStatus_t e, const char* what) {
    if (e != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: ", what, ": status ", int(e));
}

// Batches up to this many tokens use the decode kernel; larger ones the tensor-core GEMM.
constexpr int64_t kMatvecMaxCols = 8;
static_assert(cuda::Step::kMaxProducts == cuda::kMatvecMaxWeights, "fused_plan.h and kernels.h agree");

class CudaBackend : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        if (cuda::device_count() == 0) fail("--device cuda: ", cuda::unavailable_reason());
        check(cudaSetDevice(device), "cudaSetDevice");
        info_ = cuda::device_info(device);
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
        check(cublasCreate(&cublas_), "create");
        check(cublasSetStream(cublas_, stream_), "set stream");
        device_alloc(&cublas_ws_, kCublasWorkspace, "cuBLAS workspace");
        check(cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspace), "set workspace");
        check(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH), "math mode");
    }

    ~CudaBackend() override {
        if (profile_) {
            double total = 0;
            for (auto& [k, ms] : profile_ms_) total += ms;
            std::fprintf(stderr, "CUDA profile (%.3f ms in all):\n", total);
            for (auto& [k, ms] : profile_ms_)
                std::fprintf(stderr, "  %-48s %8d calls %10.3f ms %5.1f%%\n", k.c_str(), profile_n_[k], ms, 100 * ms / total);
        }
        for (auto& [g, exec] : graphs_) if (exec.exec) cudaGraphExecDestroy(exec.exec);
        for (auto& [h, d] : weights_) cudaFree(d.data);
        for (auto& [h, d] : f16_cache_) cudaFree(d);
        for (void* p : states_) cudaFree(p);
        cudaFree(arena_);
        cudaFree(scratch_);
        cudaFree(partial_);
        cudaFree(moved_);
        cudaFree(cublas_ws_);
        cudaFreeHost(staging_);
        cublasDestroy(cublas_);
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "CUDA (" + info_.name + ")"; }
    bool replays_graphs() const override { return use_graphs_; }

    void alloc_state(Tensor* t) override {
        void* p = nullptr;
        device_alloc(&p, t->nbytes(), ("KV cache " + t->name).c_str());
        check(cudaMemset(p, 0, t->nbytes()), "memset");
        states_.push_back(p);
        t->data = p;
    }

    void prepare(Graph& g) override {
        upload_weights(g);
        grow(arena_, arena_size_, g.arena_size(), "activations");
        size_t scratch = 0, staging = 0, partial = 0;
        for (Tensor* l : g.leaves())
            if (l->is_input) staging = std::max(staging, l->offset + l->nbytes());
        for (Tensor* n : g.nodes()) {
            if (n->op == Op::MulMat) {
                const Tensor* w = n->src[0];
                if (!cuda::matvec_supported(int(w->type)))
                    fail("CUDA backend: no kernel for weight type ", dtype_name(w->type), " (tensor ", w->name, ")");
                if (w->ne[0] % 32) fail("CUDA backend: row length ", w->ne[0], " of ", w->name, " is not a multiple of 32");
                const int64_t M = n->src[1]->nrows();
                if (M <= kMatvecMaxCols) scratch = std::max(scratch, cuda::matvec_scratch_bytes(w->ne[0], M));
                if (M > kMatvecMaxCols) {
                    scratch = std::max(scratch, size_t(w->ne[0]) * size_t(M) * 2);
                    if (!f16_copy(w)) scratch = std::max(scratch, size_t(w->ne[0]) * size_t(w->ne[1] + M) * 2);
                }
            }
            if (n->op == Op::Attention) {
                const int64_t d = n->src[0]->ne[0], heads = n->src[0]->ne[1], T = n->src[0]->ne[2];
                if (d != 64 && d != 128 && d != 256) fail("CUDA backend: attention head size ", d, " is not supported");
                const int splits =
                    cuda::attention_splits(int(n->src[1]->type), d, heads, n->ip[0], T, max_positions(n));
                if (splits > 1) partial = std::max(partial, size_t(heads * T * splits * (d + 2)) * sizeof(float));
            }
            if (n->op == Op::GetRows && n->src[0]->ne[0] % 32)
                fail("CUDA backend: get_rows needs rows that are a multiple of 32 elements");
            if ((n->op == Op::RmsNorm || n->op == Op::SwiGLU || n->op == Op::GeGLU) &&
                (n->ne[0] % 4 || n->src[0]->nb[1] % 16 || (n->src[1] && n->src[1]->nb[1] % 16)))
                fail("CUDA backend: ", op_name(n->op), " needs rows of a multiple of 4 elements");
        }
        grow(scratch_, scratch_size_, scratch, "GEMM scratch");
        grow(partial_, partial_size_, partial, "attention partials");
        if (staging > staging_size_) {
            cudaFreeHost(staging_);
            check(cudaMallocHost(&staging_, staging), "pinned staging buffer");
            staging_size_ = staging;
        }
    }

    void compute(Graph& g) override {
        Capture& cap = graphs_[&g];
        if (!cap.prepared) {
            prepare(g);
            plan(cap, g);
            cap.prepared = true;
        }
        running_ = &cap;
        // Inputs: host buffers -> pinned staging -> arena (outside any captured graph).
        for (Tensor* l : g.leaves()) {
            if (!l->is_input) continue;
            std::memcpy(static_cast<uint8_t*>(staging_) + l->offset, l->data, l->nbytes());
            check(cudaMemcpyAsync(static_cast<uint8_t*>(arena_) + l->offset, static_cast<uint8_t*>(staging_) + l->offset,
                                  l->nbytes(), cudaMemcpyHostToDevice, stream_),
                  "input upload");
        }
        if (profile_) {
            run_profiled(cap.plan);
        } else if (cap.exec) {
            check(cudaGraphLaunch(cap.exec, stream_), "graph launch");
        } else if (cap.runs == 0 || !use_graphs_) {
            run_steps(cap.plan);  // first run eagerly: errors surface with their op
            check(cudaGetLastError(), "kernel launch");
        } else {
            cudaGraph_t graph;
            check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture");
            run_steps(cap.plan);
            check(cudaStreamEndCapture(stream_, &graph), "end capture");
            check(cudaGraphInstantiate(&cap.exec, graph, 0), "instantiate graph");
            cudaGraphDestroy(graph);
            check(cudaGraphLaunch(cap.exec, stream_), "graph launch");
        }
        cap.runs++;
    }

    void read(const Tensor* t, void* dst, size_t bytes) override {
        check(cudaMemcpyAsync(dst, ptr(t), bytes, cudaMemcpyDeviceToHost, stream_), "read back");
        check(cudaStreamSynchronize(stream_), "synchronize");
    }

    void release(Graph& g) override {
        auto it = graphs_.find(&g);
        if (it == graphs_.end()) return;
        if (running_ == &it->second) running_ = nullptr;
        if (it->second.exec) cudaGraphExecDestroy(it->second.exec);
        graphs_.erase(it);
    }

private:
    static constexpr size_t kCublasWorkspace = 32u << 20;
    struct Capture {
        cudaGraphExec_t exec = nullptr;
        int runs = 0;
        bool prepared = false;
        cuda::Plan plan;
        std::unordered_map<const Tensor*, size_t> moved;  // results of own_memory steps: offsets in moved_
    };

    // The steps the graph runs as, and where the results of steps that cannot use their arena place
    // go. The weights must be uploaded (their layouts decide which products share a launch and read
    // int8 activations).
    void plan(Capture& cap, const Graph& g) {
        cuda::ProductInfo info;
        info.decode = [](const Tensor* t) { return t->src[1]->nrows() <= kMatvecMaxCols; };
        info.int8 = [this](const Tensor* t) { return cuda::matvec_int8(matrix(t->src[0]).layout); };
        info.share = [this](const Tensor* a, const Tensor* b) {
            return cuda::matvec_can_share(matrix(a->src[0]).layout, matrix(b->src[0]).layout);
        };
        cap.plan = cuda::make_plan(g, info, use_fusion_);
        size_t bytes = 0;  // each its own place for the whole graph: they are few and small (decode rows)
        for (const cuda::Step& s : cap.plan.steps)
            if (s.own_memory)
                for (const Tensor* t : s.written())
                    if (t) {
                        cap.moved[t] = bytes;
                        bytes += (t->nbytes() + 255) / 256 * 256;
                    }
        grow(moved_, moved_size_, bytes, "fused results");
    }

    // A device buffer made at least `need` bytes; replacing it drops the captured graphs, which
    // point at the old one.
    void grow(void*& p, size_t& size, size_t need, const char* what) {
        if (need <= size) return;
        cudaFree(p);
        p = nullptr;
        device_alloc(&p, need, what);
        size = need;
        drop_captures();
    }

    void device_alloc(void** p, size_t bytes, const char* what) {
        cudaError_t e = cudaMalloc(p, bytes);
        if (e == cudaSuccess) return;
        cudaGetLastError();
        size_t free_b = 0, total = 0;
        cudaMemGetInfo(&free_b, &total);
        fail("not enough GPU memory for ", what, ": need ", bytes >> 20, " MiB, ", free_b >> 20, " MiB free of ",
             total >> 20, " MiB on ", info_.name);
    }

    void drop_captures() {
        for (auto& [g, c] : graphs_) {
            if (c.exec) cudaGraphExecDestroy(c.exec);
            c.exec = nullptr;
        }
    }

    // An f16 copy of a quantized weight for the tensor-core path, made once, kept while the GPU has
    // room (a prompt then costs no dequantization). Returns false when it could not be made.
    bool f16_copy(const Tensor* w) {
        if (w->type == DType::F16) return true;
        auto it = f16_cache_.find(w->data);
        if (it != f16_cache_.end()) return it->second != nullptr;
        const size_t bytes = size_t(w->nelements()) * 2;
        size_t free_b = 0, total = 0;
        cudaMemGetInfo(&free_b, &total);
        void* d = nullptr;
        if (use_f16_cache_ && free_b > bytes + (size_t(2) << 30) && cudaMalloc(&d, bytes) == cudaSuccess) {
            cuda::dequant_rows_f16(matrix(w), d, stream_);
            check(cudaGetLastError(), "dequantize to f16");
        } else {
            cudaGetLastError();
            d = nullptr;
        }
        f16_cache_[w->data] = d;
        return d != nullptr;
    }

    // Every weight gets one layout (cuda/repack.h): matrices of the decode-hot types are repacked
    // on the host into the GPU-friendly planes, the rest keep GGUF's rows; every kernel that reads
    // a weight (matvec, the f16 copy, get_rows) takes the layout with the bytes. LUMEN_NO_REPACK=1
    // keeps GGUF's rows for all (the row-staging kernels; for comparisons).
    void upload_weights(Graph& g) {
        size_t total = 0;
        std::vector<Tensor*> todo;
        for (Tensor* l : g.leaves()) {
            if (!l->is_weight || weights_.count(l->data)) continue;
            weights_[l->data] = {};
            todo.push_back(l);
            total += l->nbytes();
        }
        if (todo.empty()) return;
        const bool show = total > (64u << 20);
        Progress bar("upload", int64_t(total >> 20), "MiB");
        size_t done = 0;
        std::vector<uint8_t> image;  // a packed weight, built on the host
        for (Tensor* l : todo) {
            DeviceWeight& dw = weights_[l->data];
            const bool matrix = l->ne[2] == 1 && l->ne[3] == 1;
            dw.layout = cuda::weight_layout(int(l->type), l->ne[0], l->nrows(), l->nb[1], use_repack_ && matrix);
            device_alloc(&dw.data, dw.layout.bytes, ("weight " + l->name).c_str());
            const void* src = l->data;
            size_t bytes = l->nbytes();
            if (!cuda::layout_is_gguf(dw.layout)) {
                image.resize(dw.layout.bytes);
                repack(dw.layout, l->data, l->nb[1], image.data());
                src = image.data();
                bytes = dw.layout.bytes;
            }
            check(cudaMemcpy(dw.data, src, bytes, cudaMemcpyHostToDevice), "weight upload");
            done += l->nbytes();
            if (show) bar.update(int64_t(done >> 20));
        }
        if (show) bar.finish();
    }

    // Repacks all rows, split over the host's cores (an 8B model's 4 GiB take seconds on one).
    static void repack(const cuda::WeightLayout& L, const void* src, size_t row_bytes, uint8_t* dst) {
        const int64_t n_threads = std::clamp<int64_t>(int64_t(std::thread::hardware_concurrency()), 1, 16);
        const int64_t per = (L.N + n_threads - 1) / n_threads;
        std::vector<std::thread> workers;
        for (int64_t r0 = 0; r0 < L.N; r0 += per)
            workers.emplace_back([&, r0] { cuda::repack_rows(L, src, row_bytes, r0, std::min(L.N, r0 + per), dst); });
        for (std::thread& t : workers) t.join();
    }

    // A matrix operand as the kernels see it: an uploaded weight with its layout, or rows of any
    // other tensor (GGUF-style rows nb[1] apart).
    cuda::Matrix matrix(const Tensor* t) const {
        if (t->is_weight) {
            const DeviceWeight& dw = weights_.at(t->data);
            return {dw.data, dw.layout};
        }
        return {ptr(t), cuda::weight_layout(int(t->type), t->ne[0], t->nrows(), t->nb[1], false)};
    }

    uint8_t* ptr(const Tensor* t) const {
        size_t off = 0;
        while (t->view_src) {
            off += t->view_offset;
            t = t->view_src;
        }
        uint8_t* base;
        if (t->is_weight) {
            // Reached by ops that read a weight as plain elements (norm weights, biases, the f16
            // GEMM's operand): a repacked one would be read wrong, so say so.
            const DeviceWeight& dw = weights_.at(t->data);
            if (!cuda::layout_is_gguf(dw.layout))
                fail("CUDA backend: weight ", t->name, " is repacked for the matrix kernels and cannot be read as ",
                     dtype_name(t->type), " elements");
            base = static_cast<uint8_t*>(dw.data);
        }
        else if (t->is_state) base = static_cast<uint8_t*>(t->data);
        else base = static_cast<uint8_t*>(arena_) + t->offset;  // inputs and intermediates
        if (running_ && !running_->moved.empty() && !t->is_weight && !t->is_state) {
            auto it = running_->moved.find(t);  // a fused step's result placed apart (fused_plan.h)
            if (it != running_->moved.end()) base = static_cast<uint8_t*>(moved_) + it->second;
        }
        return base + off;
    }
    // The most positions one sequence of an attention op can have: its block table's length.
    static int64_t max_positions(const Tensor* att) { return att->src[5]->ne[0] * att->ip[2]; }
    const float* f(const Tensor* t) const { return reinterpret_cast<const float*>(ptr(t)); }
    float* fo(const Tensor* t) const { return reinterpret_cast<float*>(ptr(t)); }

    // A Products step: up to kMatvecMaxWeights decode products of one X in one launch, each with
    // the add fused into its epilogue (Y = W X + R); or one product on the tensor cores.
    void mul_mat(const cuda::Step& s) {
        Tensor* t = s.mm[0];
        const Tensor* w = t->src[0];
        const Tensor* x = t->src[1];
        const int64_t K = w->ne[0], N = w->ne[1], M = x->nrows();
        if (M <= kMatvecMaxCols) {
            cuda::Matrix W[cuda::kMatvecMaxWeights];
            float* Y[cuda::kMatvecMaxWeights];
            const float* R[cuda::kMatvecMaxWeights];
            int64_t ldy[cuda::kMatvecMaxWeights], ldr[cuda::kMatvecMaxWeights];
            for (int i = 0; i < s.n; i++) {
                W[i] = matrix(s.mm[i]->src[0]);
                Y[i] = fo(s.product_out(i));
                ldy[i] = s.mm[i]->ne[0];
                R[i] = nullptr;
                ldr[i] = 0;
                if (const Tensor* a = s.add[i]) {
                    const Tensor* r = a->src[a->src[0] == s.mm[i] ? 1 : 0];
                    R[i] = f(r);
                    ldr[i] = r->nrows() == 1 ? 0 : int64_t(r->nb[1] / 4);
                }
            }
            if (s.quantize) cuda::quantize_activations(f(x), x->nb[1] / 4, K, M, scratch_, stream_);
            cuda::matvec(W, s.n, f(x), x->nb[1] / 4, Y, ldy, M, scratch_, stream_, R, ldr);
            return;
        }
        // Tensor cores: weights and activations in f16, f32 accumulation. The weights come from the
        // f16 copy made in prepare(), or are dequantized into scratch when memory was short.
        void* xh = scratch_;
        void* wh = f16_cache_.count(w->data) ? f16_cache_.at(w->data) : nullptr;
        if (!wh || w->type == DType::F16) {
            wh = w->type == DType::F16 ? ptr(w) : static_cast<uint8_t*>(scratch_) + size_t(K) * size_t(M) * 2;
            if (w->type != DType::F16) cuda::dequant_rows_f16(matrix(w), wh, stream_);
        }
        // Weights the decode products multiply with int8 activations get the same rounding here.
        if (cuda::matvec_int8(matrix(w).layout)) cuda::activations_int8_f16(f(x), K * M, xh, stream_);
        else cuda::f32_to_f16(f(x), xh, K * M, stream_);
        const float alpha = 1.0f, beta = 0.0f;
        check(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, wh, CUDA_R_16F, int(K), xh,
                           CUDA_R_16F, int(K), &beta, fo(t), CUDA_R_32F, int(t->ne[0]), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT),
              "GemmEx");
    }

    // LUMEN_PROFILE=1: every step timed with events (eagerly, no CUDA graph); a table per step kind
    // and shape (fused steps named by the ops they run) is printed to stderr when the backend closes.
    void run_profiled(const cuda::Plan& p) {
        std::vector<cudaEvent_t> ev(p.steps.size() + 1);
        for (auto& e : ev) cudaEventCreate(&e);
        cudaEventRecord(ev[0], stream_);
        for (size_t i = 0; i < p.steps.size(); i++) {
            run_step(p.steps[i]);
            cudaEventRecord(ev[i + 1], stream_);
        }
        check(cudaStreamSynchronize(stream_), "profile");
        for (size_t i = 0; i < p.steps.size(); i++) {
            if (p.steps[i].launches() == 0) continue;
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[i], ev[i + 1]);
            const std::string key = p.steps[i].name();
            profile_ms_[key] += ms;
            profile_n_[key]++;
        }
        for (auto& e : ev) cudaEventDestroy(e);
    }

    void run_steps(const cuda::Plan& p) {
        for (const cuda::Step& s : p.steps) run_step(s);
    }

    const int32_t* i32(const Tensor* t) const { return reinterpret_cast<const int32_t*>(ptr(t)); }

    void run_step(const cuda::Step& s) {
        switch (s.kind) {
            case cuda::StepKind::Node: run_node(s.node); break;
            case cuda::StepKind::Products: mul_mat(s); break;
            case cuda::StepKind::Norm: {
                const Tensor* x = s.norm->src[0];
                const Tensor* y = s.result();
                cuda::NormArgs a{};
                a.x = f(x);
                a.x_stride = x->nb[1] / 4;
                a.w = s.mul ? f(s.mul->src[1]) : nullptr;
                a.y = fo(y);
                a.y_stride = y->nb[1] / 4;
                a.n = x->ne[0];
                a.eps = s.norm->fp[0];
                if (s.quantize) {
                    const cuda::ActScratch q = cuda::act_scratch(scratch_, a.n, y->nrows());
                    a.xq = q.xq;
                    a.xa = q.xa;
                }
                cuda::norm_rows(a, x->nrows(), stream_);
                break;
            }
            case cuda::StepKind::Glu: {
                const Tensor* t = s.glu;
                cuda::GluArgs a{};
                a.gate = f(t->src[0]);
                a.gate_stride = t->src[0]->nb[1] / 4;
                a.up = f(t->src[1]);
                a.up_stride = t->src[1]->nb[1] / 4;
                a.y = fo(t);
                a.y_stride = t->nb[1] / 4;
                a.n = t->ne[0];
                a.rows = t->nrows();
                a.gelu = t->op == Op::GeGLU;
                if (s.quantize) {
                    const cuda::ActScratch q = cuda::act_scratch(scratch_, a.n, t->nrows());
                    a.xq = q.xq;
                    a.xa = q.xa;
                }
                cuda::glu_rows(a, stream_);
                break;
            }
            case cuda::StepKind::RopeWrite: rope_write(s); break;
        }
    }

    // Ropes of one position list and the cache writes after them (one segment per rope and per
    // write of other rows, e.g. V), in one launch.
    void rope_write(const cuda::Step& s) {
        const Tensor* r0 = s.rope[0];
        cuda::RopeWriteArgs a{};
        a.D = int(r0->ne[0]);
        a.pos = i32(r0->src[1]);
        a.factors = r0->src[2] ? f(r0->src[2]) : nullptr;
        a.rows = s.n_write ? i32(s.write[0]->src[2]) : nullptr;
        a.n_rot = r0->ip[0];
        a.neox = r0->ip[1];
        a.orig_ctx = r0->ip[2];
        a.base = r0->fp[0];
        a.freq_scale = r0->fp[1];
        a.ext_factor = r0->fp[2];
        a.attn_factor = r0->fp[3];
        a.beta_fast = r0->fp[4];
        a.beta_slow = r0->fp[5];
        auto to_cache = [&](cuda::RopeSeg& g, const Tensor* w) {
            const Tensor* c = w->src[0];
            g.cache = ptr(c);
            g.row_bytes = c->nb[1];
            g.cache_type = int(c->type);
        };
        for (int i = 0; i < s.n_rope; i++) {
            const Tensor* x = s.rope[i]->src[0];
            cuda::RopeSeg& g = a.seg[a.segs++];
            g.x = f(x);
            g.nb1 = int64_t(x->nb[1] / 4);
            g.nb2 = int64_t(x->nb[2] / 4);
            g.heads = int(x->ne[1]);
            g.rotate = 1;
            g.y = s.rope_kept[i] ? fo(s.rope[i]) : nullptr;
            for (int k = 0; k < s.n_write; k++)
                if (s.write[k]->src[1] == s.rope[i]) to_cache(g, s.write[k]);
        }
        for (int k = 0; k < s.n_write; k++) {
            const Tensor* src = s.write[k]->src[1];
            if (src == s.rope[0] || src == s.rope[1]) continue;
            const int64_t width = s.write[k]->src[0]->ne[0];
            cuda::RopeSeg& g = a.seg[a.segs++];
            g.x = f(src);
            g.nb1 = a.D;
            g.nb2 = width;
            g.heads = int(width / a.D);
            to_cache(g, s.write[k]);
        }
        cuda::rope_write(a, r0->ne[2], stream_);
    }

    void run_node(Tensor* t) {
        {
            switch (t->op) {
                case Op::None: case Op::View: break;
                case Op::GetRows:
                    cuda::get_rows_f32(matrix(t->src[0]), reinterpret_cast<const int32_t*>(ptr(t->src[1])), fo(t),
                                       t->nb[1], t->ne[1], stream_);
                    break;
                case Op::MulMat: case Op::RmsNorm: case Op::SwiGLU: case Op::GeGLU: case Op::Rope:
                    break;  // steps of their own kinds (run_step)
                case Op::Add: case Op::Mul: {
                    const Tensor* b = t->src[1];
                    cuda::add_or_mul(t->op == Op::Mul, f(t->src[0]), t->src[0]->nb[1], f(b), b->nb[1], b->nrows() == 1,
                                     fo(t), t->nb[1], t->ne[0], t->nrows(), stream_);
                    break;
                }
                case Op::Scale: cuda::scale(f(t->src[0]), fo(t), t->fp[0], t->nelements(), stream_); break;
                case Op::KVWrite: {
                    const Tensor* c = t->src[0];
                    cuda::kv_write(int(c->type), ptr(c), c->nb[1], f(t->src[1]),
                                   reinterpret_cast<const int32_t*>(ptr(t->src[2])), c->ne[0], t->src[2]->ne[0], stream_);
                    break;
                }
                case Op::Attention: {
                    const Tensor* q = t->src[0];
                    const Tensor* kc = t->src[1];
                    const cuda::PagedKV paged{reinterpret_cast<const int32_t*>(ptr(t->src[4])),
                                              reinterpret_cast<const int32_t*>(ptr(t->src[5])), int(t->src[5]->ne[0]),
                                              t->ip[2], int(t->src[5]->ne[1])};
                    cuda::attention(int(kc->type), f(q), q->nb[1], q->nb[2], ptr(kc), ptr(t->src[2]), kc->nb[1],
                                    reinterpret_cast<const int32_t*>(ptr(t->src[3])), paged, fo(t), t->nb[1], q->ne[0],
                                    q->ne[1], t->ip[0], q->ne[2], max_positions(t), t->fp[0], t->ip[1], t->fp[1],
                                    static_cast<float*>(partial_), stream_);
                    break;
                }
                case Op::TopK:
                    cuda::top_k_rows(f(t->src[0]), t->src[0]->nb[1] / 4, reinterpret_cast<int32_t*>(ptr(t)),
                                     t->src[0]->ne[0], t->ip[0], t->src[0]->nrows(), stream_);
                    break;
            }
        }
    }

    int device_;
    cuda::DeviceInfo info_;
    cudaStream_t stream_ = nullptr;
    cublasHandle_t cublas_ = nullptr;
    void* cublas_ws_ = nullptr;
    struct DeviceWeight {
        void* data = nullptr;
        cuda::WeightLayout layout;
    };
    std::unordered_map<const void*, DeviceWeight> weights_;  // by the weight's address in the mapped file
    bool use_repack_ = getenv("LUMEN_NO_REPACK") == nullptr;
    std::unordered_map<const void*, void*> f16_cache_;  // nullptr: no room, dequantize per call
    bool use_f16_cache_ = getenv("LUMEN_NO_F16_CACHE") == nullptr;
    std::vector<void*> states_;
    void* arena_ = nullptr;
    size_t arena_size_ = 0;
    void* scratch_ = nullptr;
    size_t scratch_size_ = 0;
    void* staging_ = nullptr;
    size_t staging_size_ = 0;
    void* partial_ = nullptr;  // split-KV attention slices
    size_t partial_size_ = 0;
    void* moved_ = nullptr;  // results of fused steps kept apart from the arena (Capture::moved)
    size_t moved_size_ = 0;
    const Capture* running_ = nullptr;  // the graph being computed (whose moved results ptr() finds)
    std::unordered_map<const Graph*, Capture> graphs_;
    bool use_graphs_ = getenv("LUMEN_NO_CUDA_GRAPHS") == nullptr;
    bool use_fusion_ = getenv("LUMEN_NO_FUSE") == nullptr;
    bool profile_ = getenv("LUMEN_PROFILE") != nullptr;
    std::map<std::string, double> profile_ms_;
    std::map<std::string, int> profile_n_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace lumen
