// quantize_row / dequantize_row: checks, the float formats, and dispatch to the block formats
// (quant_legacy.cpp, quant_k.cpp).
#include "tensor/quant.h"

#include <cstring>

#include "tensor/half.h"
#include "tensor/quant_impl.h"
#include "util/error.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace lumen {

namespace {

// The type's name, also for ids that are not ggml types (dtype_name would dereference null).
const char* type_name(DType t) {
    const DTypeInfo* info = dtype_info(uint32_t(t));
    return info ? info->name : "(unknown)";
}

// Number of blocks in a row of n elements, or a lumen::Error naming the problem.
int64_t blocks_of(DType t, int64_t n, const char* what) {
    const DTypeInfo* info = dtype_info(uint32_t(t));
    if (!info) fail(what, ": unknown type id ", uint32_t(t));
    if (n < 0 || n % info->block_size != 0)
        fail(what, ": ", n, " elements of ", info->name, " (rows must be a multiple of ", info->block_size, ")");
    return n / info->block_size;
}

void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
#endif
    for (; i < n; i++) y[i] = fp16_to_f32(x[i]);
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) y[i] = f32_to_fp16(x[i]);
}

}  // namespace

bool can_dequantize(DType t) {
    switch (t) {
        case DType::F32: case DType::F16: case DType::BF16:
        case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0: case DType::Q8_1:
        case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::Q8_K:
            return true;
        default:
            return false;
    }
}

bool can_quantize(DType t) { return can_dequantize(t); }

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
    using namespace quant;
    const int64_t nb = blocks_of(t, n, "dequantize");
    switch (t) {
        case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case DType::F16: f16_to_f32_row(static_cast<const uint16_t*>(src), dst, n); return;
        case DType::BF16: {
            const uint16_t* x = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(x[i]);
            return;
        }
        case DType::Q4_0: dequant_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb); return;
        case DType::Q4_1: dequant_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb); return;
        case DType::Q5_0: dequant_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb); return;
        case DType::Q5_1: dequant_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb); return;
        case DType::Q8_0: dequant_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb); return;
        case DType::Q8_1: dequant_q8_1(static_cast<const BlockQ8_1*>(src), dst, nb); return;
        case DType::Q2_K: dequant_q2_k(static_cast<const BlockQ2_K*>(src), dst, nb); return;
        case DType::Q3_K: dequant_q3_k(static_cast<const BlockQ3_K*>(src), dst, nb); return;
        case DType::Q4_K: dequant_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb); return;
        case DType::Q5_K: dequant_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb); return;
        case DType::Q6_K: dequant_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb); return;
        case DType::Q8_K: dequant_q8_k(static_cast<const BlockQ8_K*>(src), dst, nb); return;
        default: fail("dequantize: type ", type_name(t), " is not supported");
    }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
    using namespace quant;
    const int64_t nb = blocks_of(t, n, "quantize");
    switch (t) {
        case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case DType::F16: f32_to_f16_row(src, static_cast<uint16_t*>(dst), n); return;
        case DType::BF16: {
            uint16_t* y = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; i++) y[i] = f32_to_bf16(src[i]);
            return;
        }
        case DType::Q4_0: quant_q4_0(src, static_cast<BlockQ4_0*>(dst), nb); return;
        case DType::Q4_1: quant_q4_1(src, static_cast<BlockQ4_1*>(dst), nb); return;
        case DType::Q5_0: quant_q5_0(src, static_cast<BlockQ5_0*>(dst), nb); return;
        case DType::Q5_1: quant_q5_1(src, static_cast<BlockQ5_1*>(dst), nb); return;
        case DType::Q8_0: quant_q8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
        case DType::Q8_1: quant_q8_1(src, static_cast<BlockQ8_1*>(dst), nb); return;
        case DType::Q2_K: quant_q2_k(src, static_cast<BlockQ2_K*>(dst), nb); return;
        case DType::Q3_K: quant_q3_k(src, static_cast<BlockQ3_K*>(dst), nb); return;
        case DType::Q4_K: quant_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); return;
        case DType::Q5_K: quant_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); return;
        case DType::Q6_K: quant_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); return;
        case DType::Q8_K: quant_q8_k(src, static_cast<BlockQ8_K*>(dst), nb); return;
        default: fail("quantize: type ", type_name(t), " is not supported");
    }
}

DType vec_dot_type(DType w) {
    switch (w) {
        case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return DType::Q8_0;
        case DType::Q4_1: case DType::Q5_1: return DType::Q8_1;
        case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return DType::Q8_K;
        case DType::F32: case DType::F16: case DType::BF16: return DType::F32;
        default: fail("matrix multiply: weight type ", type_name(w), " is not supported");
    }
}

}  // namespace lumen
