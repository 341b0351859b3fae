// Launcher of the top-k selection (the body is in top_k.cuh): one block per row.
#include "kernels.h"
#include "launch.cuh"
#include "top_k.cuh"

namespace lumen::cuda {

namespace {

struct TopK : KernelDefaults {
    static constexpr int kThreads = simt::kTopKThreads;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* x, size_t x_stride, int n, int k, int32_t* out) {
        const int r = c.block().x;
        simt::top_k_row(c, x + size_t(r) * x_stride, n, k, out + size_t(r) * 2 * k);
    }
};

}  // namespace

void top_k_rows(const float* x, size_t x_stride, int32_t* out, int64_t n, int64_t k, int64_t rows, cudaStream_t s) {
    launch<TopK>(unsigned(rows), simt::kTopKThreads, sizeof(simt::TopKShared), s, x, x_stride, int(n), int(k), out);
}

}  // namespace lumen::cuda
