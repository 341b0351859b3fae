// mul_mat on the CPU: quantize the activations once to the weight type's partner format
// (all threads share the rows), then each thread computes a slice of the output rows.
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "tensor/quant.h"

namespace lumen::cpu {

void op_mul_mat(const OpCtx& c, Tensor* t) {
    const Tensor* w = t->src[0];
    const Tensor* x = t->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], M = x->nrows();
    const DType vt = vec_dot_type(w->type);
    const size_t xq_stride = row_bytes(vt, K);

    int64_t b, e;
    c.range(M, b, e);
    for (int64_t m = b; m < e; m++)
        quantize_activations(vt, reinterpret_cast<const float*>(c.ptr(x) + size_t(m) * x->nb[1]),
                             c.work + size_t(m) * xq_stride, K);
    c.barrier();

    // Split output rows in chunks that are multiples of 16 so SIMD tiles stay whole.
    int64_t per = ((N + c.nth - 1) / c.nth + 15) / 16 * 16;
    int64_t nb = std::min<int64_t>(N, per * c.ith), ne = std::min<int64_t>(N, nb + per);
    if (nb < ne)
        matmul_rows(w->type, c.ptr(w), w->nb[1], c.work, xq_stride, reinterpret_cast<float*>(c.ptr(t)),
                    t->ne[0], K, nb, ne, M);
}

}  // namespace lumen::cpu
