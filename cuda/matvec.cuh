// Decode-time matrix x vector(s) on packed weights (layouts in repack.h), as kernel bodies over a
// simt context: matvec.cu launches them on the GPU, tests/unit/test_simt_matvec.cpp runs them on
// the host emulator against the CPU.
//
// The bandwidth argument. At batch 1 every weight byte is read once per token and the arithmetic
// per byte is small, so a product runs at HBM speed only if (1) every load is a 16-byte load and
// each warp-wide load instruction covers 512 contiguous bytes, (2) enough bytes are in flight per
// SM to cover DRAM latency (Little's law: ~3 TB/s x ~1 us / 132 SMs ~ 24 KiB; we aim for 32+),
// and (3) the issue slots spent per byte stay well under the SM's budget (~12.5 bytes per clock
// per SM at 2.9 TB/s, while an SM issues 4 warp instructions per clock).
// So: a block of 128 threads works on R rows at once. Its threads split into G = 128 / TU groups
// of TU threads (TU = 128, 64 or 32, the most the row length feeds), each group owning R rows;
// thread u of a group takes chunks u, u + TU, ... of each of its rows (one chunk: 16 bytes of
// quants, the unit one lane decodes alone; consecutive lanes, consecutive chunks). A thread first
// issues the loads of S chunks of each of its R rows (S = 1; 2 for F16, whose chunks hold 8
// weights), and only then decodes; the int8 activation chunk it needs is loaded once and used for
// all R rows (an L1 hit: every block of an SM reads the same activations), and each decoded weight
// word is used for all M columns. At M = 1 and R = 4 a thread has 64 bytes of quants in flight and
// needs ~60 registers, so 8 blocks fit an SM: 64 KiB in flight. At the end each warp reduces its
// R x MC partial sums with a reduce-scatter butterfly (R*MC - 1 + 5 - log2(R*MC) shuffles instead
// of 5 per value), and groups wider than a warp add their warps' sums through shared memory.
// Small matrices (4096 x 1024) still need every SM: the launcher lowers R until there are at
// least two blocks per SM.
#pragma once
#include <cstddef>
#include <cstdint>

#include "repack.h"
#include "simt.cuh"

#ifndef __CUDACC__
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#endif

namespace lumen::cuda {

// Per 32 activations quantized to int8: the scale and the sums of q over each half (16 values),
// which pay for Q4_0's -8, Q4_K's min and Q6_K's -32 once per block instead of per weight.
struct alignas(8) ActBlock {
    float d;
    int16_t s[2];
};

struct u32x2 {
    uint32_t x, y;
};

// ---- loads --------------------------------------------------------------------------------------
#ifdef __CUDACC__
// Weights are read once per token: they bypass L1 (which keeps the activations that every block
// of the SM re-reads) and L2 fetches whole 256-byte lines (the neighbouring lanes' chunks; sm_80+).
// The loads are volatile so that they stay ahead of pdl_wait below.
#if __CUDA_ARCH__ >= 800
#define LUMEN_LD_WEIGHT "ld.global.nc.L1::no_allocate.L2::256B"
#else
#define LUMEN_LD_WEIGHT "ld.global.nc.L1::no_allocate"
#endif
LUMEN_DEV simt::u32x4 ld_weight16(const uint8_t* p) {
    simt::u32x4 v;
    asm volatile(LUMEN_LD_WEIGHT ".v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
LUMEN_DEV u32x2 ld_weight8(const uint8_t* p) {
    u32x2 v;
    asm volatile(LUMEN_LD_WEIGHT ".v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
LUMEN_DEV uint16_t ld_weight2(const uint8_t* p) {
    uint16_t v;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}
// Activations: written by the previous kernel, read-only here, shared by every block.
LUMEN_DEV simt::u32x4 ld_act16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
LUMEN_DEV ActBlock ld_act_block(const ActBlock* p) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    ActBlock a;
    a.d = __uint_as_float(v.x);
    a.s[0] = int16_t(v.y & 0xFFFF);
    a.s[1] = int16_t(v.y >> 16);
    return a;
}
LUMEN_DEV int round_to_int(float x) { return __float2int_rn(x); }
// Programmatic dependent launch (matvec.cu, LUMEN_PDL=1): a kernel launched with it may start
// before the kernel it depends on has finished. pdl_wait() returns once that kernel's results are
// visible (at once without PDL), so a product first issues its weight loads, which depend on
// nothing, then waits, then reads the activations. pdl_trigger() lets the next kernel start.
#if __CUDA_ARCH__ >= 900
LUMEN_DEV void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
LUMEN_DEV void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
#else  // no PDL before Hopper: kernels run one after the other
LUMEN_DEV void pdl_wait() {}
LUMEN_DEV void pdl_trigger() {}
#endif
#else
// The host twins check the alignment the GPU's vector loads need.
template <class T>
inline T ld_aligned(const void* p) {
    if (reinterpret_cast<uintptr_t>(p) % sizeof(T) != 0)
        throw std::runtime_error("misaligned " + std::to_string(sizeof(T)) + "-byte load");
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}
inline simt::u32x4 ld_weight16(const uint8_t* p) { return ld_aligned<simt::u32x4>(p); }
inline u32x2 ld_weight8(const uint8_t* p) { return ld_aligned<u32x2>(p); }
inline uint16_t ld_weight2(const uint8_t* p) { return ld_aligned<uint16_t>(p); }
inline simt::u32x4 ld_act16(const void* p) { return ld_aligned<simt::u32x4>(p); }
inline ActBlock ld_act_block(const ActBlock* p) { return ld_aligned<ActBlock>(p); }
inline int round_to_int(float x) { return int(std::nearbyint(x)); }
inline void pdl_wait() {}
inline void pdl_trigger() {}
#endif

LUMEN_DEV uint32_t word(const simt::u32x4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
// Row `row` of plane p of a weight, from its layout.
LUMEN_DEV const uint8_t* plane(const uint8_t* w, const WeightLayout& L, int p, int64_t row) {
    return w + L.off[p] + size_t(row) * L.stride[p];
}

// ---- activations to int8 --------------------------------------------------------------------------

// Quantizes 32 activations held four per lane by eight consecutive lanes (lane % 8 = part 0..7,
// elements 4 part..4 part + 3): d = amax / 127, q = round(x / d), and the sums of each half of q.
// Stores the lane's four int8 at xq + 4 part and, from part 0, the block at *xa (when `store`).
// Every lane of the warp calls it (shuffles); lanes with nothing to store pass store = false.
// Shared by the activation kernel below and the fused producers (fused.cuh).
template <class C>
LUMEN_DEV void quantize32(C& c, const float v[4], bool store, int8_t* xq, ActBlock* xa) {
    const int part = c.lane() % 8;
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) amax = fmaxf(amax, fabsf(v[i]));
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, c.shfl_xor(amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t packed = 0;
    int sum = 0;
    for (int i = 0; i < 4; i++) {
        int q = round_to_int(v[i] * id);
        q = q < -127 ? -127 : q > 127 ? 127 : q;
        packed |= uint32_t(uint8_t(int8_t(q))) << (8 * i);
        sum += q;
    }
    sum += c.shfl_xor(sum, 1);
    sum += c.shfl_xor(sum, 2);  // lanes 0-3 of the eight: the first half's sum; 4-7: the second's
    const int other = c.shfl_xor(sum, 4);
    if (!store) return;
    *reinterpret_cast<uint32_t*>(xq + 4 * part) = packed;
    if (part == 0) {
        ActBlock a;
        a.d = simt::h2f(simt::f2h(d));  // kept in f16, as llama.cpp's Q8_0 / Q8_1 (CPU and CUDA) keep it
        a.s[0] = int16_t(sum);
        a.s[1] = int16_t(other);
        *xa = a;
    }
}

// The activations as the int8 products see them (quantize32's scale and rounding), written back as
// f16 for the tensor-core GEMM: a prompt then multiplies the values a decode step multiplies, as
// the CPU's quantized dot products do (with f16 activations instead, GPU and CPU perplexities drift
// apart by ~0.4%). One thread per element, a warp per 32; n is a multiple of 32.
template <class C>
LUMEN_DEV void act_int8_f16_body(C& c, const float* X, int64_t n, uint16_t* Y) {
    const int64_t i = int64_t(c.block().x) * c.threads() + c.thread();
    const float v = i < n ? X[i] : 0.0f;  // whole warps are in or out; every lane joins the shuffles
    float amax = fabsf(v);
    for (int o = 1; o < 32; o <<= 1) amax = fmaxf(amax, c.shfl_xor(amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q = round_to_int(v * id);
    q = q < -127 ? -127 : q > 127 ? 127 : q;
    if (i < n) Y[i] = simt::f2h(float(q) * simt::h2f(simt::f2h(d)));
}

// Per 32 activations of column m = block().y, with quantize32: eight lanes per 32 values, four
// values each (one float4 load, one word stored).
template <class C>
LUMEN_DEV void quantize_act_body(C& c, const float* X, size_t x_stride, int64_t K, int8_t* xq, ActBlock* xa) {
    const int m = c.block().y;
    const int64_t nb = K / 32;
    const int64_t b = (int64_t(c.block().x) * c.threads() + c.thread()) / 8;
    const bool valid = b < nb;
    const int64_t e = (valid ? b : nb - 1) * 32 + 4 * (c.lane() % 8);  // clamped: every lane joins the shuffles
    pdl_trigger();  // the product after us may start its weight loads
    pdl_wait();
    const simt::u32x4 raw = ld_act16(X + size_t(m) * x_stride + size_t(e));
    float v[4];
    for (int i = 0; i < 4; i++) v[i] = simt::bits_float(word(raw, i));
    quantize32(c, v, valid, xq + size_t(m) * size_t(K) + size_t(e / 32 * 32), xa + size_t(m) * size_t(nb) + size_t(e / 32));
}

// ---- the product ------------------------------------------------------------------------------------

// One weight of a launch. Weights of one type that multiply the same activations (Q, K and V;
// gate and up) share a launch, each owning a range of its blocks: one launch instead of three,
// and K and V's small matrices no longer leave SMs idle on their own.
struct MatvecPart {
    const uint8_t* plane[4];  // the weight's planes (repack.h)
    int64_t N;                // its rows
    float* y;                 // its output, Y[m * ldy + n]
    int64_t ldy;
    const float* r;           // added to the output (a residual or a bias; ldr = 0 broadcasts one row), or null
    int64_t ldr;
    int64_t block0;           // its first block
};
constexpr int kMatvecMaxParts = 3;

struct MatvecArgs {
    MatvecPart part[kMatvecMaxParts];
    int parts;
    int64_t K;
    size_t stride[4];       // plane strides, the same for every part (same type and K)
    const int8_t* xq;       // int8 activations: column m at xq + m * K
    const ActBlock* xa;     // their blocks: column m at xa + m * K / 32
    const float* xf;        // f32 activations (F16 weights): column m at xf + m * x_stride
    size_t x_stride;
    int M;                  // columns, at most the kernel's MC
    int tu;                 // threads per row group: 32, 64 or 128
};

// Row `row` of plane k of a launch's weight.
LUMEN_DEV const uint8_t* at(const MatvecArgs& a, const MatvecPart& p, int k, int64_t row) {
    return p.plane[k] + size_t(row) * a.stride[k];
}

// Sum of the four byte products of four words of weights and activations, plus acc.
LUMEN_DEV int dot16(const uint32_t* w, const simt::u32x4& x, int acc) {
    acc = simt::dp4a(int(w[0]), int(x.x), acc);
    acc = simt::dp4a(int(w[1]), int(x.y), acc);
    acc = simt::dp4a(int(w[2]), int(x.z), acc);
    return simt::dp4a(int(w[3]), int(x.w), acc);
}

// Per type: E weights per chunk, S chunks per row loaded ahead, Raw = one chunk's loads, and
// accumulate<R, MC>(raw[R], chunk, args, acc[R * MC]) adds the R rows' products with the M columns.
template <int T> struct Packed;

// The 32 activations of chunk `ch` (E = 32) of column m, as two 16-byte loads, and their block.
struct Act32 {
    simt::u32x4 lo, hi;  // elements 0-15, 16-31
    ActBlock b;
};
LUMEN_DEV Act32 load_act32(const MatvecArgs& a, int m, int ch) {
    const int8_t* x = a.xq + size_t(m) * size_t(a.K) + 32 * size_t(ch);
    return {ld_act16(x), ld_act16(x + 16), ld_act_block(a.xa + size_t(m) * size_t(a.K / 32) + size_t(ch))};
}

template <> struct Packed<T_Q4_0> {
    static constexpr int E = 32, S = 1;
    struct Raw {
        simt::u32x4 q;
        uint16_t d;
    };
    LUMEN_DEV static Raw load(const MatvecArgs& a, const MatvecPart& p, int64_t row, int ch) {
        return {ld_weight16(at(a, p, 0, row) + 16 * size_t(ch)), ld_weight2(at(a, p, 1, row) + 2 * size_t(ch))};
    }
    template <int R, int MC>
    LUMEN_DEV static void accumulate(const Raw* raw, int ch, const MatvecArgs& a, float* acc) {
        uint32_t lo[R][4] = {}, hi[R][4] = {};
        float dw[R];
        LUMEN_UNROLL
        for (int r = 0; r < R; r++) {
            dw[r] = simt::h2f(raw[r].d);
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                lo[r][i] = word(raw[r].q, i) & 0x0F0F0F0Fu;         // elements 4i..4i+3
                hi[r][i] = (word(raw[r].q, i) >> 4) & 0x0F0F0F0Fu;  // elements 16+4i..
            }
        }
        LUMEN_UNROLL
        for (int m = 0; m < MC; m++) {
            if (m >= a.M) break;
            const Act32 x = load_act32(a, m, ch);
            const int offset = 8 * (x.b.s[0] + x.b.s[1]);  // the -8 of every weight
            LUMEN_UNROLL
            for (int r = 0; r < R; r++)
                acc[r * MC + m] += dw[r] * x.b.d * float(dot16(hi[r], x.hi, dot16(lo[r], x.lo, 0)) - offset);
        }
    }
};

template <> struct Packed<T_Q8_0> {
    static constexpr int E = 16, S = 1;
    struct Raw {
        simt::u32x4 q;
        uint16_t d;
    };
    LUMEN_DEV static Raw load(const MatvecArgs& a, const MatvecPart& p, int64_t row, int ch) {
        return {ld_weight16(at(a, p, 0, row) + 16 * size_t(ch)),
                ld_weight2(at(a, p, 1, row) + 2 * size_t(ch / 2))};
    }
    template <int R, int MC>
    LUMEN_DEV static void accumulate(const Raw* raw, int ch, const MatvecArgs& a, float* acc) {
        uint32_t q[R][4] = {};
        float dw[R];
        LUMEN_UNROLL
        for (int r = 0; r < R; r++) {
            dw[r] = simt::h2f(raw[r].d);
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) q[r][i] = word(raw[r].q, i);
        }
        LUMEN_UNROLL
        for (int m = 0; m < MC; m++) {
            if (m >= a.M) break;
            const simt::u32x4 x = ld_act16(a.xq + size_t(m) * size_t(a.K) + 16 * size_t(ch));
            const float dx = ld_act_block(a.xa + size_t(m) * size_t(a.K / 32) + size_t(ch / 2)).d;
            LUMEN_UNROLL
            for (int r = 0; r < R; r++) acc[r * MC + m] += dw[r] * dx * float(dot16(q[r], x, 0));
        }
    }
};

// Q4_K's 6-bit scale and min of sub-block j from the packed 12 bytes (as words a, b, c).
LUMEN_DEV void q4k_scale_min(uint32_t a, uint32_t b, uint32_t c, int j, int& sc, int& mn) {
    const int sh = 8 * (j & 3);
    if (j < 4) {
        sc = int((a >> sh) & 63);
        mn = int((b >> sh) & 63);
    } else {
        sc = int(((c >> sh) & 0x0F) | (((a >> sh) >> 6 & 3) << 4));
        mn = int(((c >> sh) >> 4 & 0x0F) | (((b >> sh) >> 6 & 3) << 4));
    }
}

template <> struct Packed<T_Q4_K> {
    static constexpr int E = 32, S = 1;
    struct Raw {
        simt::u32x4 q, meta;  // meta: d | dmin << 16, then the 12 bytes of scales and mins
    };
    LUMEN_DEV static Raw load(const MatvecArgs& a, const MatvecPart& p, int64_t row, int ch) {
        return {ld_weight16(at(a, p, 0, row) + 16 * size_t(ch)),
                ld_weight16(at(a, p, 1, row) + 16 * size_t(ch / 8))};
    }
    template <int R, int MC>
    LUMEN_DEV static void accumulate(const Raw* raw, int ch, const MatvecArgs& a, float* acc) {
        uint32_t lo[R][4] = {}, hi[R][4] = {};
        float ds[R], dm[R];
        LUMEN_UNROLL
        for (int r = 0; r < R; r++) {
            int sc, mn;
            q4k_scale_min(raw[r].meta.y, raw[r].meta.z, raw[r].meta.w, ch & 7, sc, mn);
            ds[r] = simt::h2f(uint16_t(raw[r].meta.x & 0xFFFF)) * float(sc);
            dm[r] = simt::h2f(uint16_t(raw[r].meta.x >> 16)) * float(mn);
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                lo[r][i] = word(raw[r].q, i) & 0x0F0F0F0Fu;
                hi[r][i] = (word(raw[r].q, i) >> 4) & 0x0F0F0F0Fu;
            }
        }
        LUMEN_UNROLL
        for (int m = 0; m < MC; m++) {
            if (m >= a.M) break;
            const Act32 x = load_act32(a, m, ch);
            const float sx = float(x.b.s[0] + x.b.s[1]);
            LUMEN_UNROLL
            for (int r = 0; r < R; r++) {
                const int s = dot16(hi[r], x.hi, dot16(lo[r], x.lo, 0));
                acc[r * MC + m] += x.b.d * (ds[r] * float(s) - dm[r] * sx);
            }
        }
    }
};

template <> struct Packed<T_Q6_K> {
    static constexpr int E = 32, S = 1;
    struct Raw {
        simt::u32x4 ql;
        u32x2 qh;
        uint16_t sc, d;
    };
    LUMEN_DEV static Raw load(const MatvecArgs& a, const MatvecPart& p, int64_t row, int ch) {
        return {ld_weight16(at(a, p, 0, row) + 16 * size_t(ch)), ld_weight8(at(a, p, 1, row) + 8 * size_t(ch)),
                ld_weight2(at(a, p, 2, row) + 2 * size_t(ch)),
                ld_weight2(at(a, p, 3, row) + 2 * size_t(ch / 8))};
    }
    template <int R, int MC>
    LUMEN_DEV static void accumulate(const Raw* raw, int ch, const MatvecArgs& a, float* acc) {
        uint32_t lo[R][4] = {}, hi[R][4] = {};  // the 6-bit values 0..63 (the -32 comes from the sums)
        float dw[R];
        int sc0[R], sc1[R];
        LUMEN_UNROLL
        for (int r = 0; r < R; r++) {
            dw[r] = simt::h2f(raw[r].d);
            sc0[r] = int(int8_t(raw[r].sc & 0xFF));
            sc1[r] = int(int8_t(raw[r].sc >> 8));
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                const uint32_t w = word(raw[r].ql, i);
                lo[r][i] = (w & 0x0F0F0F0Fu) | (((raw[r].qh.x >> (2 * i)) & 0x03030303u) << 4);
                hi[r][i] = ((w >> 4) & 0x0F0F0F0Fu) | (((raw[r].qh.y >> (2 * i)) & 0x03030303u) << 4);
            }
        }
        LUMEN_UNROLL
        for (int m = 0; m < MC; m++) {
            if (m >= a.M) break;
            const Act32 x = load_act32(a, m, ch);
            LUMEN_UNROLL
            for (int r = 0; r < R; r++) {
                const int s0 = dot16(lo[r], x.lo, 0) - 32 * x.b.s[0];
                const int s1 = dot16(hi[r], x.hi, 0) - 32 * x.b.s[1];
                acc[r * MC + m] += dw[r] * x.b.d * float(sc0[r] * s0 + sc1[r] * s1);
            }
        }
    }
};

template <> struct Packed<T_F16> {
    static constexpr int E = 8, S = 2;  // half a chunk's weights of the others: two steps ahead
    struct Raw {
        simt::u32x4 h;
    };
    LUMEN_DEV static Raw load(const MatvecArgs& a, const MatvecPart& p, int64_t row, int ch) {
        return {ld_weight16(at(a, p, 0, row) + 16 * size_t(ch))};
    }
    template <int R, int MC>
    LUMEN_DEV static void accumulate(const Raw* raw, int ch, const MatvecArgs& a, float* acc) {
        float w[R][8] = {};
        LUMEN_UNROLL
        for (int r = 0; r < R; r++)
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                w[r][2 * i] = simt::h2_lo(word(raw[r].h, i));
                w[r][2 * i + 1] = simt::h2_hi(word(raw[r].h, i));
            }
        LUMEN_UNROLL
        for (int m = 0; m < MC; m++) {
            if (m >= a.M) break;
            const float* xp = a.xf + size_t(m) * a.x_stride + 8 * size_t(ch);
            const simt::u32x4 x0 = ld_act16(xp), x1 = ld_act16(xp + 4);
            float x[8];
            LUMEN_UNROLL
            for (int i = 0; i < 4; i++) {
                x[i] = simt::bits_float(word(x0, i));
                x[4 + i] = simt::bits_float(word(x1, i));
            }
            LUMEN_UNROLL
            for (int r = 0; r < R; r++) {
                float s = acc[r * MC + m];
                LUMEN_UNROLL
                for (int k = 0; k < 8; k++) s += w[r][k] * x[k];
                acc[r * MC + m] = s;
            }
        }
    }
};

// Reduces V = R * MC values across the warp (V a power of two up to 32): at each halving step a
// lane keeps one half of its values and adds its partner's copy of that half, so a lane ends with
// the whole warp's sum of value lane / (32 / V); the remaining steps add single values. O is the
// shuffle distance of this step (a template parameter so that every loop has a constant count).
template <int V, int O = 16, class C>
LUMEN_DEV float warp_reduce_scatter(C& c, float* v) {
    static_assert(V >= 1 && V <= 2 * O && (V & (V - 1)) == 0, "V: a power of two up to 32");
    if constexpr (V > 1) {
        constexpr int H = V / 2;
        const bool upper = (c.lane() & O) != 0;
        LUMEN_UNROLL
        for (int i = 0; i < H; i++) {
            const float send = upper ? v[i] : v[i + H];
            const float keep = upper ? v[i + H] : v[i];
            v[i] = keep + c.shfl_xor(send, O);
        }
    } else {
        v[0] += c.shfl_xor(v[0], O);
    }
    if constexpr (O > 1) return warp_reduce_scatter<V == 1 ? 1 : V / 2, O / 2>(c, v);
    else return v[0];
}

// Y rows [row0, row0 + R) of the group (block().x * G + g) times columns 0..M-1.
template <int T, int R, int MC, class C>
LUMEN_DEV void matvec_body(C& c, const MatvecArgs& a) {
    using P = Packed<T>;
    constexpr int S = P::S, V = R * MC;
    const int tu = a.tu, G = c.threads() / tu;
    const int g = c.thread() / tu, u = c.thread() % tu;
    const int64_t block = c.block().x;
    MatvecPart part = a.part[0];  // this block's weight
    LUMEN_UNROLL
    for (int i = 1; i < kMatvecMaxParts; i++)
        if (i < a.parts && block >= a.part[i].block0) part = a.part[i];
    const int64_t N = part.N, first = (block - part.block0) * G;  // the block's first row group
    const int64_t row0 = (first + g) * R;
    const int chunks = int(a.K / P::E);
    int64_t rows[R];
    LUMEN_UNROLL
    for (int r = 0; r < R; r++) rows[r] = row0 + r < N ? row0 + r : N - 1;  // past the end: read, don't store
    float acc[V];
    LUMEN_UNROLL
    for (int i = 0; i < V; i++) acc[i] = 0.0f;

    for (int c0 = u; c0 < chunks; c0 += S * tu) {
        typename P::Raw raw[S][R];
        LUMEN_UNROLL
        for (int s = 0; s < S; s++)  // every load of the step before any use
            LUMEN_UNROLL
            for (int r = 0; r < R; r++)
                if (c0 + s * tu < chunks) raw[s][r] = P::load(a, part, rows[r], c0 + s * tu);
        if (c0 == u) pdl_wait();  // the first weights are on their way; now the activations
        LUMEN_UNROLL
        for (int s = 0; s < S; s++)
            if (c0 + s * tu < chunks) P::template accumulate<R, MC>(raw[s], c0 + s * tu, a, acc);
    }

    pdl_wait();  // (threads that had no chunk: Y may be memory the previous kernel still reads)
    pdl_trigger();
    const float sum = warp_reduce_scatter<V>(c, acc);
    const int idx = c.lane() / (32 / V);  // the value this lane now holds in full
    const bool holder = c.lane() % (32 / V) == 0;
    auto store = [&](int group, int i, float s) {
        const int64_t row = (first + group) * R + i / MC;
        const int m = i % MC;
        if (row >= N || m >= a.M) return;
        if (part.r) s += part.r[size_t(m) * size_t(part.ldr) + size_t(row)];  // the add fused into the product
        part.y[size_t(m) * size_t(part.ldy) + size_t(row)] = s;
    };
    if (tu == 32) {
        if (holder) store(g, idx, sum);
        return;
    }
    // Groups of several warps: each warp's sums through shared memory, added by the first threads.
    float* red = reinterpret_cast<float*>(c.smem());
    if (holder) red[c.warp() * V + idx] = sum;
    c.sync();
    const int wpg = tu / 32;
    if (c.thread() < G * V) {
        const int group = c.thread() / V, i = c.thread() % V;
        float s = 0.0f;
        for (int k = 0; k < wpg; k++) s += red[(group * wpg + k) * V + i];
        store(group, i, s);
    }
}

constexpr int kMatvecThreads = 128;
// Shared memory the body needs: one float per warp and value of the reduction.
constexpr size_t kMatvecSmem = kMatvecThreads / 32 * 32 * sizeof(float);

// How a launch splits the work (see the top of this file): threads per row group, rows per
// group, the column capacity, and the blocks of kMatvecThreads.
struct MatvecTiling {
    int tu, rows, cols;
    int64_t blocks;
};
// N: the rows of all the launch's weights.
inline MatvecTiling matvec_tiling(int type, int64_t K, int64_t N, int M, int n_sm) {
    MatvecTiling t;
    const int64_t chunks = K / chunk_elems(type);
    t.tu = chunks >= 128 ? 128 : chunks >= 64 ? 64 : 32;  // no thread without a chunk while rows are long enough
    const int64_t groups_per_block = kMatvecThreads / t.tu;
    // Four rows share each activation load; fewer when that would leave SMs with under two blocks.
    t.rows = 4;
    while (t.rows > 1 && (N + groups_per_block * t.rows - 1) / (groups_per_block * t.rows) < 2 * int64_t(n_sm)) t.rows /= 2;
    t.cols = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
    t.blocks = (N + groups_per_block * t.rows - 1) / (groups_per_block * t.rows);
    return t;
}

// Adds a weight to a launch tiled by t (parts in order; the same type and K for all); returns the
// launch's blocks so far. r (optional): Y = W X + R, R[m * ldr + n].
inline int64_t matvec_add_part(MatvecArgs& a, const MatvecTiling& t, const uint8_t* w, const WeightLayout& L,
                               float* y, int64_t ldy, const float* r = nullptr, int64_t ldr = 0) {
    const int64_t rows_per_block = kMatvecThreads / t.tu * t.rows;
    const int64_t block0 = a.parts == 0 ? 0 : a.part[a.parts - 1].block0 +
                                                  (a.part[a.parts - 1].N + rows_per_block - 1) / rows_per_block;
    MatvecPart& p = a.part[a.parts++];
    for (int k = 0; k < 4; k++) {
        p.plane[k] = w + L.off[k];
        a.stride[k] = L.stride[k];
    }
    p.N = L.N;
    p.y = y;
    p.ldy = ldy;
    p.r = r;
    p.ldr = ldr;
    p.block0 = block0;
    a.K = L.K;
    a.tu = t.tu;
    return block0 + (L.N + rows_per_block - 1) / rows_per_block;
}

// ---- dequantization of packed rows (the tensor-core path's f16 copy, get_rows) ------------------

// Elements [32 sub, 32 sub + 32) of row `row` into y, with the CPU's arithmetic (dequantize_row in
// src/tensor/quant_*.cpp) so the results are the same bits. Q4_K's d*q - m is fused on the GPU;
// the CPU's Release build (-march=native) fuses it too.
template <int T>
LUMEN_DEV void decode32(const uint8_t* w, const WeightLayout& L, int64_t row, int64_t sub, float* y) {
    if constexpr (T == T_F16) {
        const uint8_t* p = plane(w, L, 0, row) + 64 * size_t(sub);
        for (int k = 0; k < 4; k++) {
            const simt::u32x4 v = ld_weight16(p + 16 * k);
            for (int i = 0; i < 4; i++) {
                y[8 * k + 2 * i] = simt::h2_lo(word(v, i));
                y[8 * k + 2 * i + 1] = simt::h2_hi(word(v, i));
            }
        }
    } else if constexpr (T == T_Q8_0) {
        const float d = simt::h2f(ld_weight2(plane(w, L, 1, row) + 2 * size_t(sub)));
        const uint8_t* p = plane(w, L, 0, row) + 32 * size_t(sub);
        for (int k = 0; k < 2; k++) {
            const simt::u32x4 v = ld_weight16(p + 16 * k);
            for (int i = 0; i < 16; i++) y[16 * k + i] = float(int8_t(word(v, i / 4) >> (8 * (i % 4)))) * d;
        }
    } else {
        const simt::u32x4 v = ld_weight16(plane(w, L, 0, row) + 16 * size_t(sub));
        uint8_t q[32];  // the values of the 32 elements as stored (4 or 6 bits)
        for (int j = 0; j < 16; j++) {
            const uint32_t b = (word(v, j / 4) >> (8 * (j % 4))) & 0xFF;
            q[j] = uint8_t(b & 0x0F);
            q[j + 16] = uint8_t(b >> 4);
        }
        if constexpr (T == T_Q4_0) {
            const float d = simt::h2f(ld_weight2(plane(w, L, 1, row) + 2 * size_t(sub)));
            for (int j = 0; j < 32; j++) y[j] = float(int(q[j]) - 8) * d;
        } else if constexpr (T == T_Q4_K) {
            const simt::u32x4 meta = ld_weight16(plane(w, L, 1, row) + 16 * size_t(sub / 8));
            int sc, mn;
            q4k_scale_min(meta.y, meta.z, meta.w, int(sub & 7), sc, mn);
            const float d = simt::h2f(uint16_t(meta.x & 0xFFFF)) * float(sc);
            const float o = simt::h2f(uint16_t(meta.x >> 16)) * float(mn);
            for (int j = 0; j < 32; j++) {
#ifdef __CUDACC__
                y[j] = __fmaf_rn(d, float(q[j]), -o);
#else
                y[j] = d * float(q[j]) - o;
#endif
            }
        } else if constexpr (T == T_Q6_K) {
            const u32x2 h = ld_weight8(plane(w, L, 1, row) + 8 * size_t(sub));
            const uint16_t sc = ld_weight2(plane(w, L, 2, row) + 2 * size_t(sub));
            const float d = simt::h2f(ld_weight2(plane(w, L, 3, row) + 2 * size_t(sub / 8)));
            for (int j = 0; j < 16; j++) {
                const int i = (j % 16) / 4, bb = j % 4;
                q[j] |= uint8_t(((h.x >> (8 * bb + 2 * i)) & 3) << 4);
                q[j + 16] |= uint8_t(((h.y >> (8 * bb + 2 * i)) & 3) << 4);
            }
            const float d0 = d * float(int8_t(sc & 0xFF)), d1 = d * float(int8_t(sc >> 8));
            for (int j = 0; j < 16; j++) {
                y[j] = d0 * float(int(q[j]) - 32);
                y[j + 16] = d1 * float(int(q[j + 16]) - 32);
            }
        }
    }
}

// Row-major f16 copy of a packed weight for the tensor-core GEMM: one thread per 32 elements.
template <int T, class C>
LUMEN_DEV void dequant_f16_body(C& c, const uint8_t* w, const WeightLayout& L, uint16_t* out) {
    const int64_t per_row = L.K / 32;
    const int64_t i = int64_t(c.block().x) * c.threads() + c.thread();
    if (i >= per_row * L.N) return;
    float y[32];
    decode32<T>(w, L, i / per_row, i % per_row, y);
    uint32_t h[16];
    for (int k = 0; k < 16; k++) h[k] = simt::pack_h2(y[2 * k], y[2 * k + 1]);
    simt::u32x4* o = reinterpret_cast<simt::u32x4*>(out + size_t(i) * 32);  // row i / per_row, elements 32 (i % per_row)
    for (int k = 0; k < 4; k++) o[k] = simt::u32x4{h[4 * k], h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]};
}

// Rows ids[block().y] of a packed weight as f32 (the token embedding): one thread per 32 elements.
template <int T, class C>
LUMEN_DEV void get_rows_body(C& c, const uint8_t* w, const WeightLayout& L, const int32_t* ids, float* out,
                             size_t out_stride) {
    const int64_t sub = int64_t(c.block().x) * c.threads() + c.thread();
    if (sub >= L.K / 32) return;
    float y[32];
    decode32<T>(w, L, ids[c.block().y], sub, y);
    float* o = reinterpret_cast<float*>(reinterpret_cast<char*>(out) + size_t(c.block().y) * out_stride) + 32 * size_t(sub);
    for (int j = 0; j < 32; j++) o[j] = y[j];
}

}  // namespace lumen::cuda
