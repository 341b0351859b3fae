// Launcher of the top-k selection (the body is in top_k.cuh).
#include "kernels.h"
#include "top_k.cuh"

namespace lumen::cuda {

namespace {

__global__ void __launch_bounds__(simt::kTopKThreads) top_k_kernel(const float* x, size_t x_stride, int n, int k,
                                                                   int32_t* out) {
    __shared__ __align__(16) char smem[sizeof(simt::TopKShared)];
    simt::Gpu c{smem};
    const int r = blockIdx.x;
    simt::top_k_row(c, x + size_t(r) * x_stride, n, k, out + size_t(r) * 2 * k);
}

}  // namespace

void top_k_rows(const float* x, size_t x_stride, int32_t* out, int64_t n, int64_t k, int64_t rows, cudaStream_t s) {
    top_k_kernel<<<unsigned(rows), simt::kTopKThreads, 0, s>>>(x, x_stride, int(n), int(k), out);
}

}  // namespace lumen::cuda
