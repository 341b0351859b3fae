// What a kernel body uses beyond plain C++, as members of a context `C`: its place in the grid, block
// barriers, warp shuffles, tensor-core mma and ldmatrix, and asynchronous copies to shared memory.
//
// A kernel body is a function template over C. The .cu files instantiate it with Gpu below (each
// member one intrinsic or PTX instruction) inside a __global__ wrapper; the unit tests instantiate it
// with the emulator in tests/unit/simt_emulator.h, which runs every thread of a block as a fiber on
// the host. So a kernel's indexing, fragment layouts and barriers are checked against the CPU in CI,
// on machines without a GPU; speed is measured on the GPU only.
//
// Rules for bodies: only 1-D blocks (thread() in [0, threads())); shared memory only through
// smem() (dynamic, 16-byte aligned); every thread of a block reaches each sync() the same number of
// times, and all 32 lanes of a warp take part in each warp-wide member (shuffles, mma, ldmatrix).
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define LUMEN_DEV __device__ __forceinline__
#define LUMEN_UNROLL _Pragma("unroll")  // unroll the loop that follows (a hint only nvcc takes)
#else
#define LUMEN_UNROLL
#include <cmath>
#include <cstring>

#include "tensor/half.h"
#define LUMEN_DEV inline
#endif

namespace lumen::simt {

struct Dim { int x = 1, y = 1, z = 1; };

// Vector types for wide loads and stores (16 and 8 bytes).
#ifdef __CUDACC__
using u32x4 = uint4;
using f32x4 = float4;
using i32x2 = int2;
#else
struct alignas(16) u32x4 { uint32_t x, y, z, w; };
struct alignas(16) f32x4 { float x, y, z, w; };
struct alignas(8) i32x2 { int x, y; };
#endif

// ---- arithmetic available on both sides ----

LUMEN_DEV float h2f(uint16_t h) {
#ifdef __CUDACC__
    return __half2float(__ushort_as_half(h));
#else
    return fp16_to_f32_scalar(h);
#endif
}
LUMEN_DEV uint16_t f2h(float f) {  // round to nearest even
#ifdef __CUDACC__
    return __half_as_ushort(__float2half_rn(f));
#else
    return f32_to_fp16_scalar(f);
#endif
}
// Two halves in one 32-bit register, `lo` in the low 16 bits (the element with the lower index).
LUMEN_DEV uint32_t pack_h2(float lo, float hi) {
#ifdef __CUDACC__
    const __half2 h = __floats2half2_rn(lo, hi);  // one instruction for both
    return *reinterpret_cast<const uint32_t*>(&h);
#else
    return uint32_t(f2h(lo)) | (uint32_t(f2h(hi)) << 16);
#endif
}
LUMEN_DEV float h2_lo(uint32_t v) { return h2f(uint16_t(v & 0xFFFF)); }
LUMEN_DEV float h2_hi(uint32_t v) { return h2f(uint16_t(v >> 16)); }

LUMEN_DEV int imin(int a, int b) { return a < b ? a : b; }
LUMEN_DEV int imax(int a, int b) { return a > b ? a : b; }
LUMEN_DEV float fmax2(float a, float b) { return a > b ? a : b; }  // no NaN handling: scores only

LUMEN_DEV float tanh_f(float x) {  // the hardware's approximation under --use_fast_math
#ifdef __CUDACC__
    return tanhf(x);
#else
    return std::tanh(x);
#endif
}

// A float's bits and back.
LUMEN_DEV uint32_t float_bits(float f) {
#ifdef __CUDACC__
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}
LUMEN_DEV float bits_float(uint32_t u) {
#ifdef __CUDACC__
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

// 2^x; the GPU's approximate instruction (relative error ~2^-22), exact on the host.
LUMEN_DEV float exp2_fast(float x) {
#ifdef __CUDACC__
    return exp2f(x);  // ex2.approx under --use_fast_math
#else
    return std::exp2(x);
#endif
}

// Sum of the four byte products of a and b (signed) plus c.
LUMEN_DEV int dp4a(int a, int b, int c) {
#ifdef __CUDACC__
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += int(int8_t(uint32_t(a) >> (8 * i))) * int(int8_t(uint32_t(b) >> (8 * i)));
    return c;
#endif
}

// ---- fragment layouts of the tensor-core instructions (what both sides agree on) ----
//
// mma m16n8k16, f16 x f16 -> f32, lane = 4 * g + t (g = lane / 4, t = lane % 4):
//   A (16x16, row-major) a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]
//                        a[2] = A[g][2t+8..+9]   a[3] = A[g+8][2t+8..+9]
//   B (16x8)             b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   C, D (16x8, f32)     d[0..1] = D[g][2t..2t+1]  d[2..3] = D[g+8][2t..2t+1]
// mma m16n8k32, s8 x s8 -> s32: the same with four int8 per register along k:
//   a[0] = A[g][4t..4t+3]  a[1] = A[g+8][4t..]  a[2] = A[g][16+4t..]  a[3] = A[g+8][16+4t..]
//   b[0] = B[4t..4t+3][g]  b[1] = B[16+4t..][g]
// ldmatrix x4: lanes 8j..8j+7 give the row addresses of 8x8 f16 matrix j (16 bytes per row); lane i
//   receives r[j] = M_j[i/4][2(i%4)..+1]; with .trans r[j] = {M_j[2(i%4)][i/4], M_j[2(i%4)+1][i/4]}.
//   x2: matrices 0-1 (addresses from lanes 0-15).

#ifdef __CUDACC__

// The GPU side: a thin wrapper over the hardware.
struct Gpu {
    char* smem_;

    LUMEN_DEV int thread() const { return int(threadIdx.x); }
    LUMEN_DEV int threads() const { return int(blockDim.x); }
    LUMEN_DEV int lane() const { return int(threadIdx.x) & 31; }
    LUMEN_DEV int warp() const { return int(threadIdx.x) >> 5; }
    LUMEN_DEV Dim block() const { return {int(blockIdx.x), int(blockIdx.y), int(blockIdx.z)}; }
    LUMEN_DEV Dim grid() const { return {int(gridDim.x), int(gridDim.y), int(gridDim.z)}; }
    LUMEN_DEV char* smem() const { return smem_; }
    LUMEN_DEV void sync() const { __syncthreads(); }
    LUMEN_DEV void sync_warp() const { __syncwarp(); }  // a barrier of the 32 lanes of this warp
    // Atomic on shared or global memory; returns the old value.
    LUMEN_DEV int atomic_add(int* p, int v) const { return atomicAdd(p, v); }

    template <class T> LUMEN_DEV T shfl_xor(T v, int mask) const { return __shfl_xor_sync(0xffffffffu, v, mask); }
    template <class T> LUMEN_DEV T shfl(T v, int src) const { return __shfl_sync(0xffffffffu, v, src); }

    LUMEN_DEV void mma_f16(float d[4], const uint32_t a[4], const uint32_t b[2]) const {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    LUMEN_DEV void mma_s8(int d[4], const uint32_t a[4], const uint32_t b[2]) const {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }

    LUMEN_DEV void ldmatrix_x4(uint32_t r[4], const void* row) const {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(row)));
    }
    LUMEN_DEV void ldmatrix_x4_trans(uint32_t r[4], const void* row) const {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(row)));
    }
    LUMEN_DEV void ldmatrix_x2(uint32_t r[2], const void* row) const {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(smem_addr(row)));
    }
    LUMEN_DEV void ldmatrix_x2_trans(uint32_t r[2], const void* row) const {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(smem_addr(row)));
    }

    // 16 bytes global -> shared without passing through registers; `valid` false writes zeros
    // (reads nothing, but `src` must still be a valid address). Visible after cp_async_wait<N>(c)
    // (below; N: newer groups left in flight) and a sync().
    LUMEN_DEV void cp_async16(void* dst, const void* src, bool valid = true) const {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                     "r"(valid ? 16 : 0));
    }
    LUMEN_DEV void cp_async_commit() const { asm volatile("cp.async.commit_group;\n" ::); }
    template <int N> LUMEN_DEV void wait_group() const { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

private:
    LUMEN_DEV static uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
};

#endif  // __CUDACC__

// Waits until at most N committed groups of cp_async16 copies are still in flight.
template <int N, class C> LUMEN_DEV void cp_async_wait(C& c) { c.template wait_group<N>(); }

}  // namespace lumen::simt
