// Row-wise ops: get_rows, add/mul with broadcast, scale, GLU activations, rms_norm, top_k.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#if defined(__AVX2__) && defined(__FMA__)
#include "cpu/silu_avx2.h"
#endif
#include "tensor/quant.h"

namespace lumen::cpu {

void op_get_rows(const OpCtx& c, Tensor* t) {
    const Tensor* table = t->src[0];
    const int32_t* ids = reinterpret_cast<const int32_t*>(c.ptr(t->src[1]));
    int64_t b, e;
    c.range(t->ne[1], b, e);
    for (int64_t r = b; r < e; r++) {
        int32_t id = ids[r];
        const uint8_t* row = c.ptr(table) + size_t(id) * table->nb[1];
        float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(r) * t->nb[1]);
        dequantize_row(table->type, row, out, t->ne[0]);
    }
}

void op_binary(const OpCtx& c, Tensor* t) {
    const Tensor* a = t->src[0];
    const Tensor* bt = t->src[1];
    const int64_t n = t->ne[0], rows = t->nrows();
    const bool bcast = bt->nrows() == 1;
    int64_t b, e;
    c.range(rows, b, e);
    for (int64_t r = b; r < e; r++) {
        const float* x = reinterpret_cast<const float*>(c.ptr(a) + size_t(r) * a->nb[1]);
        const float* y = reinterpret_cast<const float*>(c.ptr(bt) + size_t(bcast ? 0 : r) * bt->nb[1]);
        float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(r) * t->nb[1]);
        if (t->op == Op::Add)
            for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
        else
            for (int64_t i = 0; i < n; i++) out[i] = x[i] * y[i];
    }
}

static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

void op_unary(const OpCtx& c, Tensor* t) {
    const Tensor* a = t->src[0];
    const Tensor* u = t->src[1];
    const int64_t n = t->ne[0];
    int64_t b, e;
    c.range(t->nrows(), b, e);
    for (int64_t r = b; r < e; r++) {
        const float* x = reinterpret_cast<const float*>(c.ptr(a) + size_t(r) * a->nb[1]);
        float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(r) * t->nb[1]);
        if (t->op == Op::Scale) {
            const float s = t->fp[0];
            for (int64_t i = 0; i < n; i++) out[i] = x[i] * s;
            continue;
        }
        const float* y = reinterpret_cast<const float*>(c.ptr(u) + size_t(r) * u->nb[1]);
        if (t->op == Op::SwiGLU) {
            int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
            // 8 at a time as llama.cpp does (its vector exp), the tail with libm's expf like it.
            for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(out + i, _mm256_mul_ps(avx2::silu8(_mm256_loadu_ps(x + i)), _mm256_loadu_ps(y + i)));
#endif
            for (; i < n; i++) out[i] = x[i] / (1.0f + std::exp(-x[i])) * y[i];
        } else
            for (int64_t i = 0; i < n; i++) out[i] = gelu_tanh(x[i]) * y[i];
    }
}

void op_rms_norm(const OpCtx& c, Tensor* t) {
    const Tensor* a = t->src[0];
    const int64_t n = t->ne[0];
    const float eps = t->fp[0];
    int64_t b, e;
    c.range(t->nrows(), b, e);
    for (int64_t r = b; r < e; r++) {
        const float* x = reinterpret_cast<const float*>(c.ptr(a) + size_t(r) * a->nb[1]);
        float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(r) * t->nb[1]);
        // As ggml: float squares summed in double, the mean rounded to float, the rest in float.
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += double(x[i] * x[i]);
        const float mean = float(sum / double(n));
        const float s = 1.0f / std::sqrt(mean + eps);
        for (int64_t i = 0; i < n; i++) out[i] = x[i] * s;
    }
}

// One pass keeping the k best so far in order (value descending, index ascending): an element
// enters only if it beats the current k-th, which after the first few thousand elements is rare.
void op_top_k(const OpCtx& c, Tensor* t) {
    const Tensor* a = t->src[0];
    const int k = t->ip[0];
    int64_t b, e;
    c.range(a->nrows(), b, e);
    std::vector<std::pair<float, int32_t>> best;
    for (int64_t r = b; r < e; r++) {
        const float* x = reinterpret_cast<const float*>(c.ptr(a) + size_t(r) * a->nb[1]);
        best.clear();
        for (int32_t i = 0; i < int32_t(a->ne[0]); i++) {
            if (int(best.size()) == k && !(x[i] > best.back().first)) continue;  // later index loses ties
            auto at = std::upper_bound(best.begin(), best.end(), x[i],
                                       [](float v, const std::pair<float, int32_t>& p) { return v > p.first; });
            best.insert(at, {x[i], i});
            if (int(best.size()) > k) best.pop_back();
        }
        int32_t* out = reinterpret_cast<int32_t*>(c.ptr(t) + size_t(r) * t->nb[1]);
        for (int j = 0; j < k; j++) {
            out[j] = best[size_t(j)].second;
            std::memcpy(&out[k + j], &best[size_t(j)].first, 4);
        }
    }
}

}  // namespace lumen::cpu
