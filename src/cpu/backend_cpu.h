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
    explicit CpuBackend(int n_threads);
    ~CpuBackend() override;
    std::string name() const override { return "CPU"; }
    int n_threads() const { return pool_.size(); }
    void alloc_state(Tensor* t) override;
    void prepare(Graph& g) override;
    void compute(Graph& g) override;
    void read(const Tensor* t, void* dst, size_t bytes) override;
    void release(Graph& g) override;

private:
    ThreadPool pool_;
    std::vector<uint8_t> arena_, work_;
    size_t work_shared_ = 0, work_per_thread_ = 0;
    const Graph* prepared_ = nullptr;  // the graph the buffers were last sized for
    struct Free { void operator()(uint8_t* p) const { std::free(p); } };
    std::vector<std::unique_ptr<uint8_t, Free>> states_;
};

}  // namespace lumen
