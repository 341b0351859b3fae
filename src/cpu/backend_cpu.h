// The CPU backend: runs a graph on a thread pool, reading weights straight from the mapped file.
#pragma once
#include <cstdlib>
#include <memory>
#include <vector>

#include "cpu/thread_pool.h"
#include "tensor/backend.h"

namespace lumen {

class CpuBackend : public Backend {
public:
    // n_threads for passes of one token (generation), n_threads_batch (0: the same) for passes of
    // several (prompts, speculative verification, batches): llama.cpp's -t and -tb.
    explicit CpuBackend(int n_threads, int n_threads_batch = 0);
    ~CpuBackend() override;
    std::string name() const override { return "CPU"; }
    int n_threads() const { return n_threads_; }
    void alloc_state(Tensor* t) override;
    void prepare(Graph& g) override;
    void compute(Graph& g) override;
    void read(const Tensor* t, void* dst, size_t bytes) override;
    void release(Graph& g) override;

private:
    int n_threads_, n_threads_batch_;
    ThreadPool pool_;
    int nth_ = 1;  // threads for the prepared graph
    std::vector<uint8_t> arena_, work_;
    size_t work_shared_ = 0, work_per_thread_ = 0;
    const Graph* prepared_ = nullptr;  // the graph the buffers were last sized for
    struct Free { void operator()(uint8_t* p) const { std::free(p); } };
    std::vector<std::unique_ptr<uint8_t, Free>> states_;
};

}  // namespace lumen
