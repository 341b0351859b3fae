// Decode-time matrix x vector(s): the launchers. Packed weights (repack.h: Q4_0, Q8_0, Q4_K, Q6_K,
// F16) run the kernel bodies of matvec.cuh; weights in GGUF's rows (the other types, or every type
// under LUMEN_NO_REPACK) run the row-staging kernels of matvec_rows.cuh.
#include "kernels.h"
#include "launch.cuh"
#include "matvec.cuh"
#include "matvec_rows.cuh"

namespace lumen::cuda {

namespace {

// Columns per launch, on both paths.
constexpr int kMaxCols = rows::kMaxCols;

template <int T> struct Tag {};
template <int T> constexpr int type_of(Tag<T>) { return T; }

// Calls f(Tag<T>()) for the runtime type id (type_of(tag) gives T back as a constant); false if
// the type has no kernels.
template <class F>
bool dispatch(int type, F&& f) {
    switch (type) {
        case T_F32: f(Tag<T_F32>()); return true;
        case T_F16: f(Tag<T_F16>()); return true;
        case T_BF16: f(Tag<T_BF16>()); return true;
        case T_Q4_0: f(Tag<T_Q4_0>()); return true;
        case T_Q4_1: f(Tag<T_Q4_1>()); return true;
        case T_Q5_0: f(Tag<T_Q5_0>()); return true;
        case T_Q5_1: f(Tag<T_Q5_1>()); return true;
        case T_Q8_0: f(Tag<T_Q8_0>()); return true;
        case T_Q2_K: f(Tag<T_Q2_K>()); return true;
        case T_Q3_K: f(Tag<T_Q3_K>()); return true;
        case T_Q4_K: f(Tag<T_Q4_K>()); return true;
        case T_Q5_K: f(Tag<T_Q5_K>()); return true;
        case T_Q6_K: f(Tag<T_Q6_K>()); return true;
        default: return false;
    }
}

// ---- packed weights (matvec.cuh) ------------------------------------------------------------------

// Blocks per SM the register budget is sized for: 8 (64 registers) at one column, where ~60 are
// needed (Q6_K's four planes need a few more: 7); fewer for more columns' accumulators.
constexpr int min_blocks(int T, int MC) { return MC == 1 ? (T == T_Q6_K ? 7 : 8) : MC == 2 ? 5 : 4; }

template <int T, int R, int MC>
struct PackedMatvecKernel {
    static constexpr int kThreads = kMatvecThreads, kMinBlocks = min_blocks(T, MC);
    template <class C>
    LUMEN_DEV static void run(C& c, const MatvecArgs& a) {
        matvec_body<T, R, MC>(c, a);
    }
};

struct QuantizeActKernel : KernelDefaults {
    static constexpr int kThreads = 256;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* __restrict__ X, size_t x_stride, int64_t K, int8_t* __restrict__ xq,
                              ActBlock* __restrict__ xa) {
        quantize_act_body(c, X, x_stride, K, xq, xa);
    }
};

struct ActInt8F16Kernel : KernelDefaults {
    static constexpr int kThreads = 256;
    template <class C>
    LUMEN_DEV static void run(C& c, const float* __restrict__ X, int64_t n, uint16_t* __restrict__ Y) {
        act_int8_f16_body(c, X, n, Y);
    }
};

template <int T>
struct PackedDequantF16Kernel {
    static constexpr int kThreads = 256, kMinBlocks = rows::blocks_for_regs(kThreads, rows::kDecodeRegs);
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ w, const WeightLayout& L, uint16_t* __restrict__ out) {
        dequant_f16_body<T>(c, w, L, out);
    }
};

template <int T>
struct PackedGetRowsKernel {
    static constexpr int kThreads = 64, kMinBlocks = rows::blocks_for_regs(kThreads, rows::kDecodeRegs);
    template <class C>
    LUMEN_DEV static void run(C& c, const uint8_t* __restrict__ w, const WeightLayout& L,
                              const int32_t* __restrict__ ids, float* __restrict__ out, size_t out_stride) {
        get_rows_body<T>(c, w, L, ids, out, out_stride);
    }
};

template <int T, int R>
void launch_packed_r(const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    const dim3 blocks(unsigned(t.blocks));
    switch (t.cols) {
        case 1: launch<PackedMatvecKernel<T, R, 1>>(blocks, kMatvecThreads, kMatvecSmem, s, a); break;
        case 2: launch<PackedMatvecKernel<T, R, 2>>(blocks, kMatvecThreads, kMatvecSmem, s, a); break;
        case 4: launch<PackedMatvecKernel<T, R, 4>>(blocks, kMatvecThreads, kMatvecSmem, s, a); break;
        default: launch<PackedMatvecKernel<T, R, 8>>(blocks, kMatvecThreads, kMatvecSmem, s, a); break;
    }
}

template <int T>
void launch_packed_t(const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    switch (t.rows) {
        case 1: launch_packed_r<T, 1>(a, t, s); break;
        case 2: launch_packed_r<T, 2>(a, t, s); break;
        default: launch_packed_r<T, 4>(a, t, s); break;
    }
}

void launch_packed(int type, const MatvecArgs& a, const MatvecTiling& t, cudaStream_t s) {
    switch (type) {
        case T_Q4_0: launch_packed_t<T_Q4_0>(a, t, s); break;
        case T_Q8_0: launch_packed_t<T_Q8_0>(a, t, s); break;
        case T_Q4_K: launch_packed_t<T_Q4_K>(a, t, s); break;
        case T_Q6_K: launch_packed_t<T_Q6_K>(a, t, s); break;
        case T_F16: launch_packed_t<T_F16>(a, t, s); break;
    }
}

// dispatch for the packed types.
template <class F>
void dispatch_packed(int type, F&& f) {
    switch (type) {
        case T_Q4_0: f(Tag<T_Q4_0>()); break;
        case T_Q8_0: f(Tag<T_Q8_0>()); break;
        case T_Q4_K: f(Tag<T_Q4_K>()); break;
        case T_Q6_K: f(Tag<T_Q6_K>()); break;
        case T_F16: f(Tag<T_F16>()); break;
    }
}

int sm_count() {
    static const int n = [] {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
        return v > 0 ? v : 132;
    }();
    return n;
}

}  // namespace

bool matvec_supported(int type) {
    switch (type) {
        case T_F32: case T_F16: case T_BF16: case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0:
        case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K: return true;
        default: return false;
    }
}

bool matvec_int8(const WeightLayout& L) {
    if (L.packed) return L.type != T_F16;
    const int t = L.type;
    return t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0 || t == T_Q5_1 || t == T_Q8_0;
}

// The int8 activations in the scratch: xq (M x K) then, 16-byte aligned, the blocks (M x K / 32).
ActScratch act_scratch(const void* scratch, int64_t K, int64_t M) {
    int8_t* xq = static_cast<int8_t*>(const_cast<void*>(scratch));
    return {xq, reinterpret_cast<ActBlock*>(xq + ((size_t(K) * size_t(M) + 15) & ~size_t(15)))};
}

size_t matvec_scratch_bytes(int64_t K, int64_t M) {
    return ((size_t(K) * size_t(M) + 15) & ~size_t(15)) + size_t(K / 32) * size_t(M) * sizeof(ActBlock) + 16;
}

void quantize_activations(const float* X, size_t x_stride, int64_t K, int64_t M, void* scratch, cudaStream_t s) {
    const int threads = QuantizeActKernel::kThreads;
    const dim3 grid(unsigned((K / 32 * 8 + threads - 1) / threads), unsigned(M));
    const ActScratch a = act_scratch(scratch, K, M);
    launch<QuantizeActKernel>(grid, threads, 0, s, X, x_stride, K, a.xq, a.xa);
}

void activations_int8_f16(const float* X, int64_t n, void* out_f16, cudaStream_t s) {
    const int threads = ActInt8F16Kernel::kThreads;
    launch<ActInt8F16Kernel>(unsigned((n + threads - 1) / threads), threads, 0, s, X, n, static_cast<uint16_t*>(out_f16));
}

bool matvec_can_share(const WeightLayout& a, const WeightLayout& b) {
    return a.packed && b.packed && a.type == b.type && a.K == b.K;
}

void matvec(const Matrix* w, int n, const float* X, size_t x_stride, float* const* Y, const int64_t* ldy, int64_t M,
            const void* scratch, cudaStream_t s, const float* const* R, const int64_t* ldr) {
    static_assert(kMatvecMaxWeights == kMatvecMaxParts, "kernels.h and matvec.cuh agree");
    const WeightLayout& L = w[0].layout;
    const int64_t K = L.K;
    const ActScratch act = act_scratch(scratch, K, M);
    const int8_t* xq = act.xq;
    const ActBlock* xa = act.xa;
    // Rows m0.. of weight i's output and of what is added to it.
    auto out = [&](int i, int64_t m0) {
        const float* r = R && R[i] ? R[i] + m0 * ldr[i] : nullptr;
        return rows::Out{Y[i] + m0 * ldy[i], ldy[i], r, r ? ldr[i] : 0};
    };
    if (L.packed) {
        int64_t N = 0;
        for (int i = 0; i < n; i++) N += w[i].layout.N;
        for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
            const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
            MatvecArgs a{};
            a.xq = xq + m0 * K;
            a.xa = xa + m0 * (K / 32);
            a.xf = X + size_t(m0) * x_stride;
            a.x_stride = x_stride;
            a.M = cols;
            MatvecTiling t = matvec_tiling(L.type, K, N, cols, sm_count());
            for (int i = 0; i < n; i++) {
                const rows::Out o = out(i, m0);
                t.blocks = matvec_add_part(a, t, static_cast<const uint8_t*>(w[i].data), w[i].layout, o.y, o.ldy, o.r, o.ldr);
            }
            launch_packed(L.type, a, t, s);
        }
        return;
    }
    for (int i = 0; i < n; i++) {  // GGUF rows: one launch per weight and 8 columns
        const WeightLayout& Li = w[i].layout;
        const uint8_t* W = static_cast<const uint8_t*>(w[i].data);
        const int64_t N = Li.N;
        for (int64_t m0 = 0; m0 < M; m0 += kMaxCols) {
            const int cols = int(M - m0 < kMaxCols ? M - m0 : kMaxCols);
            const rows::Out o = out(i, m0);
            const dim3 grid(unsigned((N + rows::kWarps - 1) / rows::kWarps));
            dispatch(Li.type, [&](auto tag) {
                constexpr int T = type_of(decltype(tag)());
                constexpr int threads = rows::kWarps * 32;
                if constexpr (T == T_Q4_0 || T == T_Q4_1 || T == T_Q5_0 || T == T_Q5_1 || T == T_Q8_0)
                    launch<rows::MatvecQ8Kernel<T>>(grid, threads, rows::kStageBytes, s, W, Li.stride[0], xq + m0 * K,
                                                    xa + m0 * (K / 32), o, int(K), int(N), cols);
                else
                    launch<rows::MatvecKernel<T>>(grid, threads, rows::kStageBytes, s, W, Li.stride[0],
                                                  X + m0 * x_stride, x_stride, o, int(K), int(N), cols);
            });
        }
    }
}

void dequant_rows_f16(const Matrix& w, void* out, cudaStream_t s) {
    const WeightLayout& L = w.layout;
    const int64_t chunks = L.K / 32 * L.N;
    const unsigned blocks = unsigned((chunks + 255) / 256);
    const uint8_t* W = static_cast<const uint8_t*>(w.data);
    if (L.packed) {
        dispatch_packed(L.type, [&](auto tag) {
            launch<PackedDequantF16Kernel<type_of(tag)>>(blocks, 256, 0, s, W, L, static_cast<uint16_t*>(out));
        });
        return;
    }
    dispatch(L.type, [&](auto tag) {
        launch<rows::DequantF16Kernel<type_of(tag)>>(blocks, 256, 0, s, W, L.stride[0], static_cast<uint16_t*>(out),
                                                     int(L.K), int(L.N));
    });
}

void get_rows_f32(const Matrix& w, const int32_t* ids, float* out, size_t out_stride, int64_t n_ids, cudaStream_t s) {
    const WeightLayout& L = w.layout;
    const dim3 grid(unsigned((L.K / 32 + 63) / 64), unsigned(n_ids));
    const uint8_t* W = static_cast<const uint8_t*>(w.data);
    if (L.packed) {
        dispatch_packed(L.type, [&](auto tag) {
            launch<PackedGetRowsKernel<type_of(tag)>>(grid, 64, 0, s, W, L, ids, out, out_stride);
        });
        return;
    }
    dispatch(L.type, [&](auto tag) {
        launch<rows::GetRowsKernel<type_of(tag)>>(grid, 64, 0, s, W, L.stride[0], ids, out, out_stride, int(L.K));
    });
}

}  // namespace lumen::cuda
