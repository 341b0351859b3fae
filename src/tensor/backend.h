// What an executor of the graph provides. The model code builds a Graph and hands it to a
// Backend; it never names a particular backend (CPU or CUDA).
#pragma once
#include <cstddef>
#include <string>

#include "tensor/graph.h"

namespace lumen {

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    // Makes a persistent tensor (a KV cache layer) resident on this backend, zero-filled.
    virtual void alloc_state(Tensor* t) = 0;
    // Prepares a planned graph once (GPU backends upload new weights, size the arena).
    virtual void prepare(Graph& g) = 0;
    // Runs the graph. Input leaves' `host` buffers hold this call's data.
    virtual void compute(Graph& g) = 0;
    // Copies an output tensor (contiguous) into host memory.
    virtual void read(const Tensor* t, void* dst, size_t bytes) = 0;
    // The graph is about to be destroyed: drop anything kept for it (captured CUDA graphs).
    virtual void release(Graph&) {}
    // Whether each new graph shape costs a capture (CUDA graphs): callers then prefer few shapes.
    virtual bool replays_graphs() const { return false; }
};

}  // namespace lumen
