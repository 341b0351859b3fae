// Launches the row kernels of fused.cuh: each is one launch whether it runs one op of the graph or
// the few that fused_plan.h grouped with it.
#include "fused.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace lumen::cuda {

namespace {

__global__ void __launch_bounds__(kNormMaxThreads) norm_kernel(const NormArgs a) {
    __shared__ __align__(16) char red[kNormSmem];
    simt::Gpu c{red};
    norm_body(c, a);
}

__global__ void __launch_bounds__(kGluThreads) glu_kernel(const GluArgs a) {
    simt::Gpu c{nullptr};
    glu_body(c, a);
}

__global__ void rope_write_kernel(const RopeWriteArgs a) {
    extern __shared__ __align__(16) char head[];
    simt::Gpu c{head};
    rope_write_body(c, a);
}

}  // namespace

void norm_rows(const NormArgs& a, int64_t rows, cudaStream_t s) {
    launch(norm_kernel, dim3(unsigned(rows)), dim3(unsigned(norm_threads(a.n))), 0, s, a);
}

void glu_rows(const GluArgs& a, cudaStream_t s) {
    const int64_t quads = a.n / 4 * a.rows;
    launch(glu_kernel, dim3(unsigned((quads + kGluThreads - 1) / kGluThreads)), dim3(kGluThreads), 0, s, a);
}

void rope_write(const RopeWriteArgs& a, int64_t T, cudaStream_t s) {
    int heads = 0;
    for (int i = 0; i < a.segs; i++) heads += a.seg[i].heads;
    launch(rope_write_kernel, dim3(unsigned(heads), unsigned(T)), dim3(unsigned(rope_threads(a.D))), rope_smem(a.D), s,
           a);
}

}  // namespace lumen::cuda
