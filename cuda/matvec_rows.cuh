// Decode-time matrix x vector(s) on weights kept in GGUF's rows (the types without a packed
// layout, or every type under LUMEN_NO_REPACK), plus their f16 copy and get_rows, as kernel structs
// (launch.cuh) over a simt context: matvec.cu launches them, tests/unit/test_simt_matvec_rows.cpp
// runs them on the host emulator against the CPU. Each warp of a product owns one row, stages it
// in shared memory and decodes it a few elements at a time (quant_decode.cuh).
#pragma once
#include <cstddef>
#include <cstdint>

#include "matvec.cuh"
#include "quant_decode.cuh"
#include "simt.cuh"

namespace lumen::cuda::rows {

constexpr int kMaxCols = 8;
constexpr int kWarps = 4;

// Each warp stages up to 6 KiB of its row in shared memory (a whole row of 4096 4-bit weights),
// so a warp has its row in flight at once; 8 blocks of four warps fit an SM (24.6 KiB each, at
// most 64 registers per thread).
constexpr int kSegBytes = 6144 + 16;
constexpr int kBlocksPerSM = 8;
constexpr size_t kStageBytes = size_t(kWarps) * kSegBytes;  // a block's dynamic shared memory
// Elements per staged segment for type T: as many as fit, a multiple of 256 (whole super-blocks).
template <int T>
constexpr int kSegElems = (kSegBytes - 16) / Layout<T>::bytes * Layout<T>::block / 256 * 256;

// Blocks per SM that hold each thread to `regs` registers (64K per SM). Bounded by their block
// size alone, the one-thread-per-32-elements kernels (f16 copy, get_rows) get up to 88 registers
// from ptxas, and only a quarter of an SM's threads fit; 48 is the most any of them needs without
// spilling (47: Q6_K's packed copy).
constexpr int blocks_for_regs(int threads, int regs) { return 65536 / (threads * regs); }
constexpr int kDecodeRegs = 48;

// Copies bytes [b0, b1) of row w into the warp's shared memory with 16-byte loads, all issued
// before any is used; returns where byte b0 landed (the copy starts at a 16-byte boundary).
template <class C>
LUMEN_DEV int stage_row(C& c, const uint8_t* w, size_t b0, size_t b1, uint8_t* sm) {
    const int lead = int(reinterpret_cast<uintptr_t>(w + b0) & 15);
    const int n16 = int((lead + (b1 - b0) + 15) / 16);
    const simt::u32x4* src = reinterpret_cast<const simt::u32x4*>(w + b0 - lead);
    c.sync_warp();
    // ld_act16: the read-only (non-coherent) load, as __ldg was; for a plain load nvcc proves that
    // only for some of the kernels.
    for (int i = c.lane(); i < n16; i += 32) reinterpret_cast<simt::u32x4*>(sm)[i] = ld_act16(src + i);
    c.sync_warp();
    return lead;
}

// Where a launch writes: Y[m * ldy + row], plus R[m * ldr + row] when R is set (an add fused into
// the product; ldr = 0 broadcasts one row).
struct Out {
    float* y;
    int64_t ldy;
    const float* r;
    int64_t ldr;
};

// Sums each column's partial dot products across the warp and writes Y[m][row] (+ R[m][row]).
template <class C>
LUMEN_DEV void store_rows(C& c, const float* acc, int M, const Out& o, int row) {
    LUMEN_UNROLL
    for (int m = 0; m < kMaxCols; m++) {
        if (m >= M) break;
        float s = acc[m];
        for (int d = 16; d > 0; d >>= 1) s += c.shfl_xor(s, d);
        if (o.r) s += o.r[size_t(m) * o.ldr + row];
        if (c.lane() == 0) o.y[size_t(m) * o.ldy + row] = s;
    }
}

// The warp first copies its row segment to shared memory with 16-byte loads (all issued before any
// is used, so many bytes are in flight), then decodes 32-element chunks from there.
template <int T>
struct MatvecKernel {
    static constexpr int kThreads = kWarps * 32, kMinBlocks = kBlocksPerSM;
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ W, size_t w_stride, const float* __restrict__ X,
                              size_t x_stride, const Out& o, int K, int N, int M) {
        constexpr int B = Layout<T>::block, S = Layout<T>::bytes;
        const int row = c.block().x * kWarps + c.warp();
        if (row >= N) return;
        const uint8_t* w = W + size_t(row) * w_stride;
        uint8_t* sm = reinterpret_cast<uint8_t*>(c.smem()) + c.warp() * kSegBytes;
        float acc[kMaxCols] = {0};
        float y[4];
        for (int e0 = 0; e0 < K; e0 += kSegElems<T>) {
            const int n_el = simt::imin(kSegElems<T>, K - e0);
            const size_t b0 = size_t(e0 / B) * S, b1 = size_t((e0 + n_el) / B) * S;
            const int lead = stage_row(c, w, b0, b1, sm);
            // Lane l takes elements 4l..4l+3 of each 128: the activation reads are coalesced 16-byte loads.
            for (int e = 4 * c.lane(); e < n_el; e += 128) {
                decode4<T>(sm + lead, e, y);
                LUMEN_UNROLL
                for (int m = 0; m < kMaxCols; m++) {
                    if (m >= M) break;
                    const simt::f32x4 v =
                        *reinterpret_cast<const simt::f32x4*>(X + size_t(m) * x_stride + size_t(e0) + size_t(e));
                    acc[m] += y[0] * v.x + y[1] * v.y + y[2] * v.z + y[3] * v.w;
                }
            }
        }
        store_rows(c, acc, M, o, row);
    }
};

LUMEN_DEV uint32_t load_u32_2aligned(const uint8_t* p) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
    return uint32_t(h[0]) | uint32_t(h[1]) << 16;
}

// Spreads 4 bits into bit 4 of 4 bytes (the fifth bit of Q5 quants).
LUMEN_DEV uint32_t spread4(uint32_t x) { return ((x * 0x00204081u) & 0x01010101u) << 4; }

// The legacy 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with int8 activations: DP4A does
// four multiply-adds per instruction. Lane l takes elements 8l..8l+7 of each 256; per block of 32
// the sum is d_w * d_x * (sum q*xq) + (offset or min) * d_x * (sum xq).
template <int T>
struct MatvecQ8Kernel {
    static constexpr int kThreads = kWarps * 32, kMinBlocks = kBlocksPerSM;
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ W, size_t w_stride, const int8_t* __restrict__ xq,
                              const ActBlock* __restrict__ xa, const Out& o, int K, int N, int M) {
        constexpr int S = Layout<T>::bytes;
        constexpr bool has_min = T == T_Q4_1 || T == T_Q5_1, five = T == T_Q5_0 || T == T_Q5_1;
        constexpr int qs_off = T == T_Q8_0 ? 2 : (has_min ? 4 : 2) + (five ? 4 : 0);
        const int row = c.block().x * kWarps + c.warp();
        if (row >= N) return;
        const uint8_t* w = W + size_t(row) * w_stride;
        uint8_t* sm = reinterpret_cast<uint8_t*>(c.smem()) + c.warp() * kSegBytes;
        float acc[kMaxCols] = {0};
        for (int e0 = 0; e0 < K; e0 += kSegElems<T>) {
            const int n_el = simt::imin(kSegElems<T>, K - e0);
            const size_t b0 = size_t(e0 / 32) * S, b1 = size_t((e0 + n_el) / 32) * S;
            const int lead = stage_row(c, w, b0, b1, sm);
            for (int e = 8 * c.lane(); e < n_el; e += 256) {
                const uint8_t* b = sm + lead + (e / 32) * S;
                const int idx = e % 32;
                const float d = h2f(b);
                float cx;  // what multiplies sum(xq): the min, the -8/-16 offset, or nothing
                if constexpr (has_min) cx = h2f(b + 2);
                else if constexpr (T == T_Q8_0) cx = 0.0f;
                else cx = (five ? -16.0f : -8.0f) * d;
                int v0, v1;
                if constexpr (T == T_Q8_0) {
                    v0 = int(load_u32_2aligned(b + qs_off + idx));
                    v1 = int(load_u32_2aligned(b + qs_off + idx + 4));
                } else {
                    const int shift = idx < 16 ? 0 : 4, base = idx % 16;
                    uint32_t w0 = (load_u32_2aligned(b + qs_off + base) >> shift) & 0x0F0F0F0Fu;
                    uint32_t w1 = (load_u32_2aligned(b + qs_off + base + 4) >> shift) & 0x0F0F0F0Fu;
                    if constexpr (five) {
                        const uint32_t hb = (load_u32_2aligned(b + (has_min ? 4 : 2)) >> idx) & 0xFFu;
                        w0 |= spread4(hb & 0xF);
                        w1 |= spread4(hb >> 4);
                    }
                    v0 = int(w0);
                    v1 = int(w1);
                }
                const int blk = (e0 + e) / 32;
                LUMEN_UNROLL
                for (int m = 0; m < kMaxCols; m++) {
                    if (m >= M) break;
                    const simt::i32x2 x = *reinterpret_cast<const simt::i32x2*>(xq + size_t(m) * K + e0 + e);
                    const int qx = simt::dp4a(v0, x.x, simt::dp4a(v1, x.y, 0));
                    float t = d * float(qx);
                    if constexpr (T != T_Q8_0)
                        t += cx * float(simt::dp4a(0x01010101, x.x, simt::dp4a(0x01010101, x.y, 0)));
                    acc[m] += xa[size_t(m) * (K / 32) + blk].d * t;
                }
            }
        }
        store_rows(c, acc, M, o, row);
    }
};

// One thread per 32 elements, row-major f16 out (the tensor-core path's copy of the weight).
template <int T>
struct DequantF16Kernel {
    static constexpr int kThreads = 256, kMinBlocks = blocks_for_regs(kThreads, kDecodeRegs);
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ W, size_t w_stride, uint16_t* __restrict__ out, int K,
                              int N) {
        const int64_t chunk = int64_t(c.block().x) * c.threads() + c.thread();
        const int per_row = K / 32;
        if (chunk >= int64_t(per_row) * N) return;
        const int row = int(chunk / per_row), ch = int(chunk % per_row);
        float y[32];
        decode_chunk<T>(W + size_t(row) * w_stride, ch, y);
        uint32_t* o = reinterpret_cast<uint32_t*>(out + size_t(row) * K + size_t(ch) * 32);
        LUMEN_UNROLL
        for (int i = 0; i < 32; i += 2) o[i / 2] = simt::pack_h2(y[i], y[i + 1]);
    }
};

// Rows ids[block().y] as f32, one thread per 32 elements (the token embedding).
template <int T>
struct GetRowsKernel {
    static constexpr int kThreads = 64, kMinBlocks = blocks_for_regs(kThreads, kDecodeRegs);
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ table, size_t stride, const int32_t* __restrict__ ids,
                              float* __restrict__ out, size_t out_stride, int K) {
        const int r = c.block().y;
        const int ch = c.block().x * c.threads() + c.thread();
        if (ch >= K / 32) return;
        float y[32];
        decode_chunk<T>(table + size_t(ids[r]) * stride, ch, y);
        float* o = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out) + size_t(r) * out_stride) + size_t(ch) * 32;
        for (int i = 0; i < 32; i++) o[i] = y[i];
    }
};

}  // namespace lumen::cuda::rows
