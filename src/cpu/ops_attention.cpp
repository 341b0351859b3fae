// KV-cache writes and attention on the CPU. The cache holds one row per position:
// {head_dim * n_head_kv} elements in the cache type (F16 by default, Q8_0 as an option).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/ops.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu {

void work_size(const Tensor* t, int n_threads, size_t& shared, size_t& per_thread) {
    shared = per_thread = 0;
    if (t->op == Op::MulMat) {
        const Tensor* w = t->src[0];
        shared = row_bytes(vec_dot_type(w->type), w->ne[0]) * size_t(t->src[1]->nrows());
    } else if (t->op == Op::Attention) {
        const Tensor* kc = t->src[1];
        // the query, one dequantized K/V row, and the f32 and f16 output accumulators
        per_thread = sizeof(float) * 4 * size_t(t->src[0]->ne[0]) + 64;
    }
}

void op_kv_write(const OpCtx& c, Tensor* t) {
    const Tensor* cache = t->src[0];
    const Tensor* k = t->src[1];
    const int32_t* pos = reinterpret_cast<const int32_t*>(c.ptr(t->src[2]));
    const int64_t width = cache->ne[0], T = t->src[2]->ne[0];
    int64_t b, e;
    c.range(T, b, e);
    for (int64_t r = b; r < e; r++) {
        const float* src = reinterpret_cast<const float*>(c.ptr(k)) + r * width;
        quantize_row(cache->type, src, c.ptr(cache) + size_t(pos[r]) * cache->nb[1], width);
    }
}

// Online softmax over the cached positions in order, as llama.cpp's CPU flash attention does it,
// so that greedy text matches it token for token: with an F16 cache the query is rounded to f16
// and the weighted sum of V is accumulated in f16 (each step rounded), otherwise in f32.
void op_attention(const OpCtx& c, Tensor* t) {
    const Tensor* q = t->src[0];
    const Tensor* kc = t->src[1];
    const Tensor* vc = t->src[2];
    const int32_t* pos = reinterpret_cast<const int32_t*>(c.ptr(t->src[3]));
    const int64_t head_dim = q->ne[0], n_head = q->ne[1], T = q->ne[2];
    const int n_head_kv = t->ip[0], window = t->ip[1];
    const float scale = t->fp[0], softcap = t->fp[1];
    const int64_t group = n_head / n_head_kv;
    const size_t head_bytes = row_bytes(kc->type, head_dim);
    const bool f16_k = kc->type == DType::F16, f16_v = vc->type == DType::F16;

    float* qv = reinterpret_cast<float*>(c.thread_work());
    float* row = qv + head_dim;
    float* acc = row + head_dim;
    uint16_t* acc16 = reinterpret_cast<uint16_t*>(acc + head_dim);

    int64_t b, e;
    c.range(T * n_head, b, e);
    for (int64_t r = b; r < e; r++) {
        const int64_t tok = r / n_head, h = r % n_head, hk = h / group;
        const float* qsrc = reinterpret_cast<const float*>(c.ptr(q) + size_t(tok) * q->nb[2] + size_t(h) * q->nb[1]);
        for (int64_t i = 0; i < head_dim; i++) qv[i] = f16_k ? fp16_to_f32(f32_to_fp16(qsrc[i])) : qsrc[i];
        const int64_t last = pos[tok];
        const int64_t first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
        float M = -INFINITY, S = 0.0f;
        std::fill(acc, acc + head_dim, 0.0f);
        std::fill(acc16, acc16 + head_dim, uint16_t(0));
        for (int64_t j = first; j <= last; j++) {
            dequantize_row(kc->type, c.ptr(kc) + size_t(j) * kc->nb[1] + size_t(hk) * head_bytes, row, head_dim);
            float s = 0;
            for (int64_t i = 0; i < head_dim; i++) s += qv[i] * row[i];
            if (softcap > 0) s = softcap * std::tanh(s * (scale / softcap));
            else s *= scale;
            float ms = 1.0f, vs = 1.0f;
            if (s > M) {
                const float Mold = M;
                M = s;
                ms = std::exp(Mold - M);
                if (f16_v)
                    for (int64_t i = 0; i < head_dim; i++) acc16[i] = f32_to_fp16(fp16_to_f32(acc16[i]) * ms);
                else
                    for (int64_t i = 0; i < head_dim; i++) acc[i] *= ms;
            } else {
                vs = std::exp(s - M);
            }
            dequantize_row(vc->type, c.ptr(vc) + size_t(j) * vc->nb[1] + size_t(hk) * head_bytes, row, head_dim);
            if (f16_v)
                for (int64_t i = 0; i < head_dim; i++) acc16[i] = f32_to_fp16(std::fma(row[i], vs, fp16_to_f32(acc16[i])));
            else
                for (int64_t i = 0; i < head_dim; i++) acc[i] = std::fma(row[i], vs, acc[i]);
            S = S * ms + vs;
        }
        float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(tok) * t->nb[1]) + h * head_dim;
        const float inv = 1.0f / S;
        for (int64_t i = 0; i < head_dim; i++) out[i] = (f16_v ? fp16_to_f32(acc16[i]) : acc[i]) * inv;
    }
}

}  // namespace lumen::cpu
