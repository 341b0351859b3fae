// Kernel launches with optional programmatic dependent launch (PDL). LUMEN_PDL=1 lets a kernel
// start while the one before it finishes: its blocks run up to pdl_wait() (matvec.cuh), which
// returns once the previous kernel's writes are visible, so a product issues its weight loads and
// a fused step its launch overhead early. Off by default until measured on a GPU. Include only
// from .cu files.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>

namespace lumen::cuda {

inline bool use_pdl() {
    static const bool on = std::getenv("LUMEN_PDL") != nullptr;
    return on;
}

template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = use_pdl() ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, args...);
}

}  // namespace lumen::cuda
