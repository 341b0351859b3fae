// How every kernel is launched. A kernel is a struct K with
//
//   static constexpr int kThreads;      the most threads a block of it has (__launch_bounds__)
//   static constexpr int kMinBlocks;    blocks per SM the registers are sized for (KernelDefaults: 1)
//   template <class C> LUMEN_DEV static void run(C& c, Args... args);   the body (simt.cuh)
//
// and launch<K>(grid, threads, smem, stream, args...) runs it. On the GPU there is one __global__
// function, kernel_entry<K, Args...>, which hands the body a simt::Gpu context over the block's
// dynamic shared memory. In the emulated build (LUMEN_SIMT_HOST: tests/simt_host) the same call runs
// the body on the host emulator, through an emulated stream that checks the launch as the driver
// would (grid limits, threads against kThreads, shared memory). So the launchers in cuda/*.cu, with
// their grid and shared-memory arithmetic, run in CI on machines without a GPU.
//
// LUMEN_PDL=1 launches with programmatic dependent launch: a kernel may start while the one before
// it finishes; its blocks run up to pdl_wait() (matvec.cuh), which returns once the previous
// kernel's writes are visible. Off by default until measured on a GPU. Include only from .cu files.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>

#include "simt.cuh"

#if !defined(__CUDACC__) && defined(LUMEN_SIMT_HOST)
#include "simt_host.h"
#elif !defined(__CUDACC__)
#error "launch.cuh is for .cu files (nvcc) and the emulated build (LUMEN_SIMT_HOST)"
#endif

namespace lumen::cuda {

struct KernelDefaults {
    static constexpr int kMinBlocks = 1;
};

// Dynamic shared memory a block may use without an opt-in.
constexpr size_t kSmemDefault = 48 * 1024;

inline bool use_pdl() {
    static const bool on = std::getenv("LUMEN_PDL") != nullptr;
    return on;
}

#ifdef __CUDACC__

template <class K, class... A>
__global__ void __launch_bounds__(K::kThreads, K::kMinBlocks) kernel_entry(A... args) {
    extern __shared__ __align__(16) char smem[];
    simt::Gpu c{smem};
    K::run(c, args...);
}

// Lets kernel K (with these argument types) use `bytes` of dynamic shared memory; launch() calls it,
// and occupancy queries need it first.
template <class K, class... A>
void allow_smem(size_t bytes) {
    static size_t allowed = kSmemDefault;
    if (bytes <= allowed) return;
    cudaFuncSetAttribute(kernel_entry<K, A...>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    allowed = bytes;
}

// How many blocks of K fit on one SM at once with `threads` threads and `smem` bytes each.
template <class K, class... A>
int blocks_per_sm(int threads, size_t smem) {
    allow_smem<K, A...>(smem);
    int n = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel_entry<K, A...>, threads, smem);
    return n;
}

template <class K, class... A>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, const A&... args) {
    allow_smem<K, A...>(smem);
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
    cudaLaunchKernelEx(&cfg, kernel_entry<K, A...>, args...);
}

#else  // LUMEN_SIMT_HOST

// launch() raises the opt-in itself, so the emulator only checks the device's ceiling.
template <class K, class... A>
int blocks_per_sm(int threads, size_t smem) {
    return simt_host::blocks_per_sm(threads, smem);
}

template <class K, class... A>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, const A&... args) {
    simt_host::launch(s, simt_host::kernel_id<K, A...>(), K::kThreads, grid, block, smem,
                      [=](simt::Emu& c) { K::run(c, args...); });
}

#endif

}  // namespace lumen::cuda
