// Launches the row kernels of fused.cuh: each is one launch whether it runs one op of the graph or
// the few that fused_plan.h grouped with it.
#include "fused.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace lumen::cuda {

namespace {

struct Norm : KernelDefaults {
    static constexpr int kThreads = kNormMaxThreads;
    template <class C> LUMEN_DEV static void run(C& c, const NormArgs& a) { norm_body(c, a); }
};

struct Glu : KernelDefaults {
    static constexpr int kThreads = kGluThreads;
    template <class C> LUMEN_DEV static void run(C& c, const GluArgs& a) { glu_body(c, a); }
};

struct RopeWrite : KernelDefaults {
    static constexpr int kThreads = 1024;
    template <class C> LUMEN_DEV static void run(C& c, const RopeWriteArgs& a) { rope_write_body(c, a); }
};

}  // namespace

void norm_rows(const NormArgs& a, int64_t rows, cudaStream_t s) {
    launch<Norm>(dim3(unsigned(rows)), dim3(unsigned(norm_threads(a.n))), kNormSmem, s, a);
}

void glu_rows(const GluArgs& a, cudaStream_t s) {
    const int64_t quads = a.n / 4 * a.rows;
    launch<Glu>(dim3(unsigned((quads + kGluThreads - 1) / kGluThreads)), dim3(kGluThreads), 0, s, a);
}

void rope_write(const RopeWriteArgs& a, int64_t T, cudaStream_t s) {
    int heads = 0;
    for (int i = 0; i < a.segs; i++) heads += a.seg[i].heads;
    launch<RopeWrite>(dim3(unsigned(heads), unsigned(T)), dim3(unsigned(rope_threads(a.D))), rope_smem(a.D), s,
           a);
}

}  // namespace lumen::cuda
