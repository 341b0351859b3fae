// The row kernels of a step, as kernel bodies over a simt context (fused.cu launches them, the unit
// tests run them on the host emulator): RMSNorm, the GLU activations and RoPE, each able to do the
// work of the nodes that follow it in the graph (fused_plan.h decides when):
//   norm_body:       rms_norm -> mul by a row of weights -> int8 copy for the products next
//   glu_body:        swiglu / geglu -> int8 copy for the down product
//   rope_write_body: rope of Q and K -> K and V written into their cache rows (f32, f16, q8_0)
// A decode step spends ~1 us between kernels even in a CUDA graph, and these ops move a few KiB, so
// each fused launch saves about what the ops it absorbs cost. Unfused, the same bodies run each op
// alone (no weights, no int8 copy, one rope, no cache).
#pragma once
#include <cstddef>
#include <cstdint>

#include "matvec.cuh"  // ActBlock, quantize32, pdl_wait / pdl_trigger
#include "simt.cuh"

namespace lumen::cuda {

// ---- what differs between the GPU and the host twin ----------------------------------------------
#ifdef __CUDACC__
// f32 rows a kernel may also write (in place): plain, coherent loads.
LUMEN_DEV simt::u32x4 ld_f32x4(const float* p) { return *reinterpret_cast<const uint4*>(p); }
LUMEN_DEV void st_f32x4(float* p, const float v[4]) { *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]); }
LUMEN_DEV float rsqrt_approx(float x) { return rsqrtf(x); }
LUMEN_DEV float round_half_away(float x) { return roundf(x); }
LUMEN_DEV void sin_cos(float x, float* s, float* c) { sincosf(x, s, c); }
#else
inline simt::u32x4 ld_f32x4(const float* p) { return ld_aligned<simt::u32x4>(p); }
inline void st_f32x4(float* p, const float v[4]) {
    ld_aligned<simt::u32x4>(p);  // the same alignment check as the load
    std::memcpy(p, v, 16);
}
inline float rsqrt_approx(float x) { return 1.0f / std::sqrt(x); }
inline float round_half_away(float x) { return std::round(x); }
inline void sin_cos(float x, float* s, float* c) {
    *s = std::sin(x);
    *c = std::cos(x);
}
#endif

// Sum over the block; shared memory: one float per warp. Every thread gets the same sum.
template <class C>
LUMEN_DEV float block_sum(C& c, float v) {
    for (int o = 16; o > 0; o >>= 1) v += c.shfl_xor(v, o);
    float* part = reinterpret_cast<float*>(c.smem());
    if (c.lane() == 0) part[c.warp()] = v;
    c.sync();
    float s = 0.0f;
    for (int w = 0; w < c.threads() / 32; w++) s += part[w];
    return s;
}

// ---- RMSNorm ------------------------------------------------------------------------------------

// One block per row: y = x / rms(x) [* w] [-> int8 copy]. Four elements per thread and step (so
// eight consecutive threads hold one 32-block of the int8 copy). n: a multiple of 4 (of 32 with xq).
struct NormArgs {
    const float* x;     // rows x_stride floats apart
    size_t x_stride;
    const float* w;     // one row of n weights, or null
    float* y;           // may be x itself (same stride): each thread rereads what it then writes
    size_t y_stride;
    int64_t n;
    float eps;
    int8_t* xq;         // the int8 copy for the products after (rows n apart, as act_scratch), or null
    ActBlock* xa;
};
constexpr int kNormMaxThreads = 1024;
constexpr size_t kNormSmem = 32 * sizeof(float);
// Threads for rows of n: one per four elements up to 1024 (the rows are read by one block).
inline int norm_threads(int64_t n) {
    const int64_t t = (n / 4 + 31) / 32 * 32;
    return t < 32 ? 32 : t > kNormMaxThreads ? kNormMaxThreads : int(t);
}

template <class C>
LUMEN_DEV void norm_body(C& c, const NormArgs& a) {
    const int64_t row = c.block().x, nq = a.n / 4;
    const float* x = a.x + size_t(row) * a.x_stride;
    float* y = a.y + size_t(row) * a.y_stride;
    pdl_trigger();
    pdl_wait();
    float ss = 0.0f;
    for (int64_t q = c.thread(); q < nq; q += c.threads()) {
        const simt::u32x4 v = ld_f32x4(x + 4 * q);
        for (int i = 0; i < 4; i++) ss += simt::bits_float(word(v, i)) * simt::bits_float(word(v, i));
    }
    const float s = rsqrt_approx(block_sum(c, ss) / float(a.n) + a.eps);
    // Every thread takes the same number of steps: the int8 copy's shuffles need whole warps.
    for (int64_t q0 = 0; q0 < nq; q0 += c.threads()) {
        const int64_t q = q0 + c.thread();
        const bool valid = q < nq;
        const int64_t e = 4 * (valid ? q : nq - 1);
        const simt::u32x4 xv = ld_f32x4(x + e);
        float v[4];
        for (int i = 0; i < 4; i++) v[i] = simt::bits_float(word(xv, i)) * s;  // rounded as the unfused norm rounds it
        if (a.w) {
            const simt::u32x4 wv = ld_act16(a.w + e);
            for (int i = 0; i < 4; i++) v[i] *= simt::bits_float(word(wv, i));
        }
        if (valid) st_f32x4(y + e, v);
        if (a.xq)
            quantize32(c, v, valid, a.xq + size_t(row) * size_t(a.n) + size_t(e / 32) * 32,
                       a.xa + size_t(row) * size_t(a.n / 32) + size_t(e / 32));
    }
}

// ---- GLU activations ----------------------------------------------------------------------------

// y = act(gate) * up, act = silu or gelu (tanh form) [-> int8 copy]; four elements per thread,
// the rows one after another over a 1-D grid. n: a multiple of 4 (of 32 with xq, so that the eight
// threads of a 32-block stay in one row).
struct GluArgs {
    const float* gate;
    size_t gate_stride;  // floats between rows
    const float* up;
    size_t up_stride;
    float* y;
    size_t y_stride;
    int64_t n, rows;
    int gelu;
    int8_t* xq;          // as NormArgs
    ActBlock* xa;
};
constexpr int kGluThreads = 256;

LUMEN_DEV float silu(float x) { return x / (1.0f + expf(-x)); }
LUMEN_DEV float gelu_tanh(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

template <class C>
LUMEN_DEV void glu_body(C& c, const GluArgs& a) {
    const int64_t nq = a.n / 4, all = nq * a.rows;
    const int64_t i = int64_t(c.block().x) * c.threads() + c.thread();
    const bool valid = i < all;
    const int64_t row = (valid ? i : all - 1) / nq;
    const int64_t e = 4 * ((valid ? i : all - 1) % nq);  // clamped: every lane joins the shuffles
    pdl_trigger();
    pdl_wait();
    const simt::u32x4 g = ld_f32x4(a.gate + size_t(row) * a.gate_stride + size_t(e));
    const simt::u32x4 u = ld_f32x4(a.up + size_t(row) * a.up_stride + size_t(e));
    float v[4];
    for (int i = 0; i < 4; i++) {
        const float x = simt::bits_float(word(g, i));
        v[i] = (a.gelu ? gelu_tanh(x) : silu(x)) * simt::bits_float(word(u, i));
    }
    if (valid) st_f32x4(a.y + size_t(row) * a.y_stride + size_t(e), v);
    if (a.xq)
        quantize32(c, v, valid, a.xq + size_t(row) * size_t(a.n) + size_t(e / 32) * 32,
                   a.xa + size_t(row) * size_t(a.n / 32) + size_t(e / 32));
}

// ---- RoPE and the KV-cache writes -----------------------------------------------------------------

// One source of a rope/write step: `heads` vectors of D floats per token, rotated (Q, K) or not
// (V), kept as f32 and/or written into a cache row.
struct RopeSeg {
    const float* x;     // head h of token t at x + t * nb2 + h * nb1
    int64_t nb1, nb2;   // in floats
    int heads;
    int rotate;
    float* y;           // the f32 result, {D, heads, T} contiguous, or null
    uint8_t* cache;     // cache row rows[t], elements h * D.., or null
    size_t row_bytes;
    int cache_type;     // T_F32, T_F16 or T_Q8_0
};
constexpr int kRopeMaxSegs = 4;

struct RopeWriteArgs {
    RopeSeg seg[kRopeMaxSegs];
    int segs;
    int D;                  // head size: even; a multiple of 4 to write a cache (of 32 for Q8_0)
    const int32_t* pos;     // per token
    const int32_t* rows;    // the cache row per token (when a segment writes one)
    const float* factors;   // per frequency divisors (Llama 3), or null
    int n_rot, neox, orig_ctx;
    float base, freq_scale, ext_factor, attn_factor, beta_fast, beta_slow;
};
// Threads: one per rotated pair; shared memory: the D values of the block's head.
inline int rope_threads(int64_t D) { return int((D / 2 + 31) / 32 * 32); }
inline size_t rope_smem(int64_t D) { return size_t(D) * sizeof(float); }

LUMEN_DEV float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return float(n_dims) * logf(float(n_ctx_orig) / (n_rot * 2.0f * 3.14159265358979f)) / (2.0f * logf(base));
}

// Pair p of a head (p < n_rot / 2 rotates; the rest pass through): its two element indices and
// cos/sin scaled by the YaRN magnitude (as src/cpu/ops_rope.cpp, but theta from powf per pair).
LUMEN_DEV void rope_pair(const RopeWriteArgs& a, int32_t pos, int p, int& ia, int& ib, float& cs, float& sn) {
    const int i0 = 2 * p;
    const float theta_e = float(pos) * powf(a.base, -float(i0) / float(a.n_rot)) / (a.factors ? a.factors[p] : 1.0f);
    float theta = a.freq_scale * theta_e, mscale = a.attn_factor;
    if (a.ext_factor != 0.0f) {
        const float lo = fmaxf(0.0f, floorf(yarn_corr_dim(a.n_rot, a.orig_ctx, a.beta_fast, a.base)));
        const float hi = fminf(float(a.n_rot - 1), ceilf(yarn_corr_dim(a.n_rot, a.orig_ctx, a.beta_slow, a.base)));
        const float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, (float(p) - lo) / fmaxf(0.001f, hi - lo)));
        const float mix = ramp * a.ext_factor;
        theta = theta * (1 - mix) + theta_e * mix;
        mscale *= 1.0f + 0.1f * logf(1.0f / a.freq_scale);
    }
    sin_cos(theta, &sn, &cs);
    cs *= mscale;
    sn *= mscale;
    ia = a.neox ? p : i0;
    ib = a.neox ? p + a.n_rot / 2 : i0 + 1;
}

// 32 values, four per lane of eight consecutive lanes, as one Q8_0 block (f16 scale, 32 int8) at
// `b`, with the kv_write kernel's rounding (attention.cu). Every lane of the warp calls it.
template <class C>
LUMEN_DEV void store_q8_0(C& c, const float v[4], bool store, uint8_t* b) {
    const int part = c.lane() % 8;
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) amax = fmaxf(amax, fabsf(v[i]));
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, c.shfl_xor(amax, o));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!store) return;
    if (part == 0) *reinterpret_cast<uint16_t*>(b) = simt::f2h(d);
    for (int i = 0; i < 4; i++) reinterpret_cast<int8_t*>(b + 2)[4 * part + i] = int8_t(round_half_away(v[i] * id));
}

// Block (head across all segments, token). Rotates (or copies) the head into shared memory, keeps
// it as f32 where asked, then writes it into its cache row.
template <class C>
LUMEN_DEV void rope_write_body(C& c, const RopeWriteArgs& a) {
    const int t = c.block().y, D = a.D;
    int h = c.block().x;
    RopeSeg seg = a.seg[0];  // this block's segment, picked without indexing the arguments
    int first = 0, next = a.seg[0].heads;
    LUMEN_UNROLL
    for (int i = 1; i < kRopeMaxSegs; i++) {
        if (i < a.segs && h >= next) {
            seg = a.seg[i];
            first = next;
        }
        next += i < a.segs ? a.seg[i].heads : 0;
    }
    h -= first;
    pdl_trigger();
    pdl_wait();
    const float* x = seg.x + size_t(t) * size_t(seg.nb2) + size_t(h) * size_t(seg.nb1);
    float* sm = reinterpret_cast<float*>(c.smem());
    float* y = seg.y ? seg.y + (size_t(t) * size_t(seg.heads) + size_t(h)) * size_t(D) : nullptr;
    const int32_t pos = a.pos[t];
    for (int p = c.thread(); p < D / 2; p += c.threads()) {
        const bool rot = seg.rotate && 2 * p < a.n_rot;
        int ia = 2 * p, ib = 2 * p + 1;
        float cs = 1.0f, sn = 0.0f;
        if (rot) rope_pair(a, pos, p, ia, ib, cs, sn);
        const float x0 = x[ia], x1 = x[ib];
        const float y0 = rot ? x0 * cs - x1 * sn : x0;
        const float y1 = rot ? x0 * sn + x1 * cs : x1;
        sm[ia] = y0;
        sm[ib] = y1;
        if (y) {
            y[ia] = y0;
            y[ib] = y1;
        }
    }
    if (!seg.cache) return;  // the same for the whole block
    c.sync();
    uint8_t* row = seg.cache + size_t(a.rows[t]) * seg.row_bytes;
    for (int q0 = 0; q0 < D / 4; q0 += c.threads()) {  // four elements per thread, whole warps
        const int q = q0 + c.thread();
        const bool valid = q < D / 4;
        const int e = 4 * (valid ? q : D / 4 - 1);
        const float v[4] = {sm[e], sm[e + 1], sm[e + 2], sm[e + 3]};
        const size_t col = size_t(h) * size_t(D) + size_t(e);  // element of the cache row
        if (seg.cache_type == T_Q8_0) {
            store_q8_0(c, v, valid, row + col / 32 * 34);
        } else if (valid && seg.cache_type == T_F16) {
            for (int i = 0; i < 4; i++) reinterpret_cast<uint16_t*>(row)[col + i] = simt::f2h(v[i]);
        } else if (valid) {
            for (int i = 0; i < 4; i++) reinterpret_cast<float*>(row)[col + i] = v[i];
        }
    }
}

}  // namespace lumen::cuda
