// vec_dot: argument checks and the choice between the SIMD and the scalar kernels.
#include "cpu/vec_dot.h"

#include "cpu/vec_dot_impl.h"
#include "util/error.h"

namespace lumen::cpu {

namespace {

VecDotFn checked(VecDotFn f, DType w, int64_t n) {
    const DTypeInfo* info = dtype_info(uint32_t(w));
    if (!f) fail("dot product: weight type ", info ? info->name : "(unknown)", " is not supported");
    if (n < 0 || n % info->block_size != 0)
        fail("dot product: ", n, " elements of ", info->name, " (not a multiple of ", info->block_size, ")");
    return f;
}

}  // namespace

VecDotFn best_vec_dot(DType w) {
    if (VecDotFn f = avx2::kernel(w)) return f;
    return scalar::kernel(w);
}

float vec_dot(DType w, int64_t n, const void* w_row, const void* act_row) {
    return checked(best_vec_dot(w), w, n)(n, w_row, act_row);
}

float vec_dot_scalar(DType w, int64_t n, const void* w_row, const void* act_row) {
    return checked(scalar::kernel(w), w, n)(n, w_row, act_row);
}

const char* vec_dot_isa() {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return "avx2";
#else
    return "scalar";
#endif
}

}  // namespace lumen::cpu
