// KV-cache writes and attention on the CPU. The cache is a pool of rows of {head_dim * n_head_kv}
// elements in the cache type (F16 by default, Q8_0 as an option), in blocks; each sequence finds its
// positions through its block table (paged attention).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/ops.h"
#include "cpu/matmul.h"
#include "cpu/vec_dot.h"
#include "tensor/half.h"
#include "tensor/quant.h"
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace lumen::cpu {

size_t attention_work(const Tensor* t);

void work_size(const Tensor* t, int n_threads, size_t& shared, size_t& per_thread) {
    shared = per_thread = 0;
    if (t->op == Op::MulMat) {
        const Tensor* w = t->src[0];
        shared = row_bytes(vec_dot_type(w->type), w->ne[0]) * size_t(t->src[1]->nrows());
    } else if (t->op == Op::Attention) {
        per_thread = attention_work(t);
    }
}

void op_kv_write(const OpCtx& c, Tensor* t) {
    const Tensor* cache = t->src[0];
    const Tensor* k = t->src[1];
    const int32_t* rows = reinterpret_cast<const int32_t*>(c.ptr(t->src[2]));
    const int64_t width = cache->ne[0], T = t->src[2]->ne[0];
    int64_t b, e;
    c.range(T, b, e);
    for (int64_t r = b; r < e; r++) {
        const float* src = reinterpret_cast<const float*>(c.ptr(k)) + r * width;
        quantize_row(cache->type, src, c.ptr(cache) + size_t(rows[r]) * cache->nb[1], width);
    }
}

// Online softmax over the cached positions in order, computed as llama.cpp's CPU flash attention
// computes it for small batches (ggml_compute_forward_flash_attn_ext_f16_one_chunk), so greedy text
// matches llama.cpp's: the query rounded to the K cache's dot-product type (f16 for an f16 cache,
// Q8_0 for q8_0), K.q summed in ggml's lane order, and with an f16 V cache the weighted sum of V kept
// in f16 (rounded after every update); f32 otherwise. llama.cpp switches to a tiled f32 kernel for
// 64+ query tokens; this one is used for every batch size, so results never depend on the batch
// (perplexity moves by ~0.05%).
//
// Work items are (query head, tile of up to kTile consecutive tokens of one sequence): each cached
// K/V row is converted to f32 once per item and used for every token of the tile. One item per query
// head (not per KV head) so a single decode token still gives n_head items to share out. Each query
// visits its own keys 0..pos in order with the same arithmetic, so its result does not depend on
// which other tokens or sequences share the batch, nor on the thread count.
constexpr int64_t kTile = 16;

namespace {
struct Row {  // the running state of one (token, head)
    float M, S;
};

// K.q in the order of ggml's AVX2 ggml_vec_dot_f16 / _f32: 4 x 8 lanes with FMA in steps of 32,
// reduced (0+2)+(1+3), 128-bit halves, two horizontal adds; a tail of n % 32 added in double.
inline float dot(const float* k, const float* q, int64_t n) {
    const int64_t np = n & ~int64_t(31);
    double s = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            sum[j] = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 8 * j), _mm256_loadu_ps(q + i + 8 * j), sum[j]);
    sum[0] = _mm256_add_ps(_mm256_add_ps(sum[0], sum[2]), _mm256_add_ps(sum[1], sum[3]));
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(sum[0]), _mm256_extractf128_ps(sum[0], 1));
    const __m128 h2 = _mm_hadd_ps(h, h);
    s = _mm_cvtss_f32(_mm_hadd_ps(h2, h2));
#else
    float lane[32] = {};
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 32; j++) lane[j] = std::fma(k[i + j], q[i + j], lane[j]);
    float r[8];
    for (int l = 0; l < 8; l++) r[l] = (lane[l] + lane[16 + l]) + (lane[8 + l] + lane[24 + l]);
    const float h[4] = {r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]};
    s = (h[0] + h[1]) + (h[2] + h[3]);
#endif
    for (int64_t i = np; i < n; i++) s += double(k[i] * q[i]);
    return float(s);
}

inline float round_f16(float x) { return fp16_to_f32(f32_to_fp16(x)); }

// a = a * ms, then a += v * vs (FMA), each rounded to f16 when `f16` (the accumulator ggml keeps in
// an f16 V cache's type), elementwise, so the vector and scalar paths give the same bits.
inline void update_acc(float* a, const float* v, float ms, float vs, bool rescale, bool f16, int64_t n) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    const __m256 vms = _mm256_set1_ps(ms), vvs = _mm256_set1_ps(vs);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i);
        if (rescale) {
            x = _mm256_mul_ps(x, vms);
            if (f16) x = _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        }
        x = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), vvs, x);
        if (f16) x = _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        _mm256_storeu_ps(a + i, x);
    }
#endif
    for (; i < n; i++) {
        float x = a[i];
        if (rescale) x = f16 ? round_f16(x * ms) : x * ms;
        x = std::fma(v[i], vs, x);
        a[i] = f16 ? round_f16(x) : x;
    }
}
}  // namespace

size_t attention_work(const Tensor* t) {
    const int64_t D = t->src[0]->ne[0], rows = kTile;
    // K and V rows in f32, then per token of the tile: query, accumulator, softmax state; tile starts
    return sizeof(float) * 2 * size_t(D) + size_t(rows) * (sizeof(float) * 2 * size_t(D) + sizeof(Row)) +
           sizeof(int32_t) * size_t(t->src[0]->ne[2] + 1) + 64;
}

void op_attention(const OpCtx& c, Tensor* t) {
    const Tensor* q = t->src[0];
    const Tensor* kc = t->src[1];
    const Tensor* vc = t->src[2];
    const int32_t* pos = reinterpret_cast<const int32_t*>(c.ptr(t->src[3]));
    const int32_t* seq = reinterpret_cast<const int32_t*>(c.ptr(t->src[4]));
    const int32_t* table = reinterpret_cast<const int32_t*>(c.ptr(t->src[5]));
    const int64_t max_blocks = t->src[5]->ne[0];
    const int64_t D = q->ne[0], n_head = q->ne[1], T = q->ne[2];
    const int n_head_kv = t->ip[0], window = t->ip[1];
    const int64_t bs = t->ip[2];
    const float scale = t->fp[0], softcap = t->fp[1];
    const int64_t group = n_head / n_head_kv;
    const size_t head_bytes = row_bytes(kc->type, D);
    const int64_t rows = kTile;
    const bool k_q8 = kc->type == DType::Q8_0, k_f16 = kc->type == DType::F16, v_f16 = vc->type == DType::F16;

    float* krow = reinterpret_cast<float*>(c.thread_work());
    float* vrow = krow + D;
    float* qv = vrow + D;             // [rows][D]
    float* acc = qv + rows * D;       // [rows][D]
    Row* st = reinterpret_cast<Row*>(acc + rows * D);
    int32_t* tiles = reinterpret_cast<int32_t*>(st + rows);  // [n_tiles + 1] first token of each tile

    // Every thread cuts the batch the same way: a new tile at each change of sequence or every kTile tokens.
    int64_t n_tiles = 0;
    for (int64_t tok = 0; tok < T; tok++)
        if (tok == 0 || seq[tok] != seq[tok - 1] || tok - tiles[n_tiles - 1] == kTile) tiles[n_tiles++] = int32_t(tok);
    tiles[n_tiles] = int32_t(T);

    int64_t b, e;
    c.range(n_head * n_tiles, b, e);
    for (int64_t item = b; item < e; item++) {
        const int64_t h = item / n_tiles, hk = h / group, ti = item % n_tiles, t0 = tiles[ti], t1 = tiles[ti + 1];
        const int32_t* blocks = table + int64_t(seq[t0]) * max_blocks;
        int64_t lo = INT64_MAX, hi = -1;  // positions any token of the tile attends to
        for (int64_t tok = t0; tok < t1; tok++) {
            const int64_t last = pos[tok], first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
            lo = std::min(lo, first);
            hi = std::max(hi, last);
            const int64_t r = tok - t0;
            const float* qs = reinterpret_cast<const float*>(c.ptr(q) + size_t(tok) * q->nb[2] + size_t(h) * q->nb[1]);
            float* qr = qv + r * D;  // a Q8_0 query lives in the same room (fewer bytes)
            if (k_q8) quantize_activations(DType::Q8_0, qs, qr, D);
            else if (k_f16) for (int64_t i = 0; i < D; i++) qr[i] = round_f16(qs[i]);
            else std::copy(qs, qs + D, qr);
            st[r] = {-INFINITY, 0.0f};
            std::fill(acc + r * D, acc + (r + 1) * D, 0.0f);
        }
        for (int64_t j = lo; j <= hi; j++) {
            const size_t row = size_t(blocks[j / bs]) * size_t(bs) + size_t(j % bs);
            const uint8_t* kraw = c.ptr(kc) + row * kc->nb[1] + size_t(hk) * head_bytes;
            if (!k_q8) dequantize_row(kc->type, kraw, krow, D);
            dequantize_row(vc->type, c.ptr(vc) + row * vc->nb[1] + size_t(hk) * head_bytes, vrow, D);
            for (int64_t tok = t0; tok < t1; tok++) {
                const int64_t last = pos[tok], first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
                if (j < first || j > last) continue;
                const int64_t r = tok - t0;
                float s = k_q8 ? vec_dot(DType::Q8_0, D, kraw, qv + r * D) : dot(krow, qv + r * D, D);
                if (softcap > 0) s = softcap * std::tanh(s * (scale / softcap));
                else s *= scale;
                float ms = 1.0f, vs = 1.0f;
                Row& R = st[r];
                float* a = acc + r * D;
                const bool new_max = s > R.M;
                if (new_max) {
                    const float Mold = R.M;
                    R.M = s;
                    ms = std::exp(Mold - R.M);
                } else {
                    vs = std::exp(s - R.M);
                }
                update_acc(a, vrow, ms, vs, new_max, v_f16, D);
                R.S = std::fma(R.S, ms, vs);
            }
        }
        for (int64_t tok = t0; tok < t1; tok++) {
            const int64_t r = tok - t0;
            float* out = reinterpret_cast<float*>(c.ptr(t) + size_t(tok) * t->nb[1]) + h * D;
            const float inv = st[r].S == 0.0f ? 0.0f : 1.0f / st[r].S;
            for (int64_t i = 0; i < D; i++) out[i] = acc[r * D + i] * inv;
        }
    }
}

}  // namespace lumen::cpu
