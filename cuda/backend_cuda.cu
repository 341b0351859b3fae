// Executes the graph on one GPU. Weights are uploaded once (keyed by their address in the
// mapped file), KV caches live on the device, intermediates share one arena planned by the
// graph. After its first eager run a graph is captured as a CUDA graph and replayed, so a decode
// step costs one launch plus the copy of the token ids and positions.
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

class CudaBackend : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        if (cuda::device_count() == 0) fail("--device cuda: ", cuda::unavailable_reason());
        check(cudaSetDevice(device), "cudaSetDevice");
        info_ = cuda::device_info(device);
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
        check(cublasCreate(&cublas_), "create");
        check(cublasSetStream(cublas_, stream_), "set stream");
        check(cudaMalloc(&cublas_ws_, kCublasWorkspace), "cuBLAS workspace");
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
        cudaFree(cublas_ws_);
        cudaFreeHost(staging_);
        cublasDestroy(cublas_);
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "CUDA (" + info_.name + ")"; }

    void alloc_state(Tensor* t) override {
        void* p = nullptr;
        device_alloc(&p, t->nbytes(), ("KV cache " + t->name).c_str());
        check(cudaMemset(p, 0, t->nbytes()), "memset");
        states_.push_back(p);
        t->data = p;
    }

    void prepare(Graph& g) override {
        upload_weights(g);
        if (arena_size_ < g.arena_size()) {
            cudaFree(arena_);
            arena_ = nullptr;
            device_alloc(&arena_, g.arena_size(), "activations");
            arena_size_ = g.arena_size();
            drop_captures();  // captured graphs point at the old arena
        }
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
        }
        if (scratch > scratch_size_) {
            cudaFree(scratch_);
            scratch_ = nullptr;
            device_alloc(&scratch_, scratch, "GEMM scratch");
            scratch_size_ = scratch;
            drop_captures();
        }
        if (partial > partial_size_) {
            cudaFree(partial_);
            partial_ = nullptr;
            device_alloc(&partial_, partial, "attention partials");
            partial_size_ = partial;
            drop_captures();
        }
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
            cap.prepared = true;
        }
        // Inputs: host buffers -> pinned staging -> arena (outside any captured graph).
        for (Tensor* l : g.leaves()) {
            if (!l->is_input) continue;
            std::memcpy(static_cast<uint8_t*>(staging_) + l->offset, l->data, l->nbytes());
            check(cudaMemcpyAsync(static_cast<uint8_t*>(arena_) + l->offset, static_cast<uint8_t*>(staging_) + l->offset,
                                  l->nbytes(), cudaMemcpyHostToDevice, stream_),
                  "input upload");
        }
        if (profile_) {
            run_profiled(g);
        } else if (cap.exec) {
            check(cudaGraphLaunch(cap.exec, stream_), "graph launch");
        } else if (cap.runs == 0 || !use_graphs_) {
            run_nodes(g);  // first run eagerly: errors surface with their op
            check(cudaGetLastError(), "kernel launch");
        } else {
            cudaGraph_t graph;
            check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture");
            run_nodes(g);
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
        if (it->second.exec) cudaGraphExecDestroy(it->second.exec);
        graphs_.erase(it);
    }

private:
    static constexpr size_t kCublasWorkspace = 32u << 20;
    struct Capture { cudaGraphExec_t exec = nullptr; int runs = 0; bool prepared = false; };

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
        return base + off;
    }
    // The most positions one sequence of an attention op can have: its block table's length.
    static int64_t max_positions(const Tensor* att) { return att->src[5]->ne[0] * att->ip[2]; }
    const float* f(const Tensor* t) const { return reinterpret_cast<const float*>(ptr(t)); }
    float* fo(const Tensor* t) const { return reinterpret_cast<float*>(ptr(t)); }

    // ts[0..n): products of one X (n > 1 only for decode products that can share a launch).
    void mul_mat(Tensor* const* ts, int n) {
        Tensor* t = ts[0];
        const Tensor* w = t->src[0];
        const Tensor* x = t->src[1];
        const int64_t K = w->ne[0], N = w->ne[1], M = x->nrows();
        if (M <= kMatvecMaxCols) {
            cuda::Matrix W[cuda::kMatvecMaxWeights];
            float* Y[cuda::kMatvecMaxWeights];
            int64_t ldy[cuda::kMatvecMaxWeights];
            for (int i = 0; i < n; i++) {
                W[i] = matrix(ts[i]->src[0]);
                Y[i] = fo(ts[i]);
                ldy[i] = ts[i]->ne[0];
            }
            // Products that read the same X one after another share one quantization of it.
            if (cuda::matvec_int8(W[0].layout) && quantized_x_ != x) {
                cuda::quantize_activations(f(x), x->nb[1] / 4, K, M, scratch_, stream_);
                quantized_x_ = x;
            }
            cuda::matvec(W, n, f(x), x->nb[1] / 4, Y, ldy, M, scratch_, stream_);
            return;
        }
        quantized_x_ = nullptr;  // the scratch is reused below
        // Tensor cores: weights and activations in f16, f32 accumulation. The weights come from the
        // f16 copy made in prepare(), or are dequantized into scratch when memory was short.
        void* xh = scratch_;
        void* wh = f16_cache_.count(w->data) ? f16_cache_.at(w->data) : nullptr;
        if (!wh || w->type == DType::F16) {
            wh = w->type == DType::F16 ? ptr(w) : static_cast<uint8_t*>(scratch_) + size_t(K) * size_t(M) * 2;
            if (w->type != DType::F16) cuda::dequant_rows_f16(matrix(w), wh, stream_);
        }
        cuda::f32_to_f16(f(x), xh, K * M, stream_);
        const float alpha = 1.0f, beta = 0.0f;
        check(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, wh, CUDA_R_16F, int(K), xh,
                           CUDA_R_16F, int(K), &beta, fo(t), CUDA_R_32F, int(t->ne[0]), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT),
              "GemmEx");
    }

    // LUMEN_PROFILE=1: every op timed with events (eagerly, no CUDA graph); a table per op kind
    // and weight shape is printed to stderr when the backend closes.
    void run_profiled(Graph& g) {
        std::vector<cudaEvent_t> ev(g.nodes().size() + 1);
        for (auto& e : ev) cudaEventCreate(&e);
        quantized_x_ = nullptr;
        cudaEventRecord(ev[0], stream_);
        std::vector<int> products(g.nodes().size(), 1);  // products run by the step that starts at a node
        for (size_t k = 0; k < g.nodes().size();) {
            const size_t n = run_step(g.nodes(), k, &products[k]);
            for (size_t i = k + 1; i <= k + n; i++) cudaEventRecord(ev[i], stream_);  // the step's time goes to node k
            k += n;
        }
        check(cudaStreamSynchronize(stream_), "profile");
        for (size_t k = 0; k < g.nodes().size(); k++) {
            const Tensor* t = g.nodes()[k];
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[k], ev[k + 1]);
            std::string key = op_name(t->op);
            if (t->op == Op::MulMat)
                key += std::string(" ") + dtype_name(t->src[0]->type) + " " + std::to_string(t->src[0]->ne[0]) + "x" +
                       std::to_string(t->src[0]->ne[1]) + " M=" + std::to_string(t->src[1]->nrows()) +
                       (products[k] > 1 ? " +" + std::to_string(products[k] - 1) + " in its launch" : "");
            profile_ms_[key] += ms;
            profile_n_[key]++;
        }
        for (auto& e : ev) cudaEventDestroy(e);
    }

    void run_nodes(Graph& g) {
        quantized_x_ = nullptr;
        for (size_t k = 0; k < g.nodes().size();) k += run_step(g.nodes(), k, nullptr);
    }

    // Runs nodes[k]; when it is a decode product, the products right after it that read the same
    // activations with weights of the same packed layout (Q, K, V; gate, up; Views between them
    // are no-ops) join its launch. Returns the nodes covered; *products: the products run.
    size_t run_step(const std::vector<Tensor*>& nodes, size_t k, int* products) {
        Tensor* t = nodes[k];
        Tensor* group[cuda::kMatvecMaxWeights] = {t};
        int n = 1;
        size_t end = k + 1;
        if (t->op == Op::MulMat && t->src[1]->nrows() <= kMatvecMaxCols && t->src[0]->is_weight) {
            const cuda::WeightLayout& L = weights_.at(t->src[0]->data).layout;
            for (size_t j = k + 1; j < nodes.size() && n < cuda::kMatvecMaxWeights; j++) {
                const Tensor* u = nodes[j];
                if (u->op == Op::View) continue;
                if (u->op != Op::MulMat || u->src[1] != t->src[1] || !u->src[0]->is_weight ||
                    !cuda::matvec_can_share(L, weights_.at(u->src[0]->data).layout))
                    break;
                group[n++] = nodes[j];
                end = j + 1;
            }
        }
        if (products) *products = n;
        if (t->op == Op::MulMat) mul_mat(group, n);
        else run_node(t);
        return end - k;
    }

    void run_node(Tensor* t) {
        {
            switch (t->op) {
                case Op::None: case Op::View: break;
                case Op::GetRows:
                    cuda::get_rows_f32(matrix(t->src[0]), reinterpret_cast<const int32_t*>(ptr(t->src[1])), fo(t),
                                       t->nb[1], t->ne[1], stream_);
                    break;
                case Op::MulMat: mul_mat(&t, 1); break;
                case Op::Add: case Op::Mul: {
                    const Tensor* b = t->src[1];
                    cuda::add_or_mul(t->op == Op::Mul, f(t->src[0]), t->src[0]->nb[1], f(b), b->nb[1], b->nrows() == 1,
                                     fo(t), t->nb[1], t->ne[0], t->nrows(), stream_);
                    break;
                }
                case Op::Scale: cuda::scale(f(t->src[0]), fo(t), t->fp[0], t->nelements(), stream_); break;
                case Op::SwiGLU: case Op::GeGLU:
                    cuda::glu(t->op == Op::GeGLU, f(t->src[0]), f(t->src[1]), fo(t), t->nelements(), stream_);
                    break;
                case Op::RmsNorm:
                    cuda::rms_norm(f(t->src[0]), t->src[0]->nb[1], fo(t), t->nb[1], t->ne[0], t->nrows(), t->fp[0], stream_);
                    break;
                case Op::Rope: {
                    cuda::RopeArgs a{t->ip[0], t->ip[1], t->ip[2], t->fp[0], t->fp[1], t->fp[2], t->fp[3], t->fp[4], t->fp[5]};
                    const Tensor* x = t->src[0];
                    cuda::rope(f(x), fo(t), reinterpret_cast<const int32_t*>(ptr(t->src[1])),
                               t->src[2] ? f(t->src[2]) : nullptr, x->ne[0], x->ne[1], x->ne[2], x->nb[1],
                               x->nb[2], a, stream_);
                    break;
                }
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
    const Tensor* quantized_x_ = nullptr;  // whose int8 activations the scratch holds (this run)
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
    std::unordered_map<const Graph*, Capture> graphs_;
    bool use_graphs_ = getenv("LUMEN_NO_CUDA_GRAPHS") == nullptr;
    bool profile_ = getenv("LUMEN_PROFILE") != nullptr;
    std::map<std::string, double> profile_ms_;
    std::map<std::string, int> profile_n_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace lumen
