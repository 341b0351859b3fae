// Per-format row converters behind quantize_row / dequantize_row (quant.cpp dispatches). `nb` is
// the number of blocks. Internal to src/tensor; other code goes through quant.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "tensor/quant.h"

namespace lumen::quant {

// Round to nearest, ties to even, as an int (the activation quantizers and K-quant fits use it;
// the legacy reference quantizers use roundf, ties away from zero, like ggml's).
inline int nearest_int(float x) { return int(std::nearbyint(x)); }

void dequant_q4_0(const BlockQ4_0* x, float* y, int64_t nb);
void dequant_q4_1(const BlockQ4_1* x, float* y, int64_t nb);
void dequant_q5_0(const BlockQ5_0* x, float* y, int64_t nb);
void dequant_q5_1(const BlockQ5_1* x, float* y, int64_t nb);
void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t nb);
void dequant_q8_1(const BlockQ8_1* x, float* y, int64_t nb);

void quant_q4_0(const float* x, BlockQ4_0* y, int64_t nb);
void quant_q4_1(const float* x, BlockQ4_1* y, int64_t nb);
void quant_q5_0(const float* x, BlockQ5_0* y, int64_t nb);
void quant_q5_1(const float* x, BlockQ5_1* y, int64_t nb);
void quant_q8_0(const float* x, BlockQ8_0* y, int64_t nb);
void quant_q8_1(const float* x, BlockQ8_1* y, int64_t nb);

void dequant_q2_k(const BlockQ2_K* x, float* y, int64_t nb);
void dequant_q3_k(const BlockQ3_K* x, float* y, int64_t nb);
void dequant_q4_k(const BlockQ4_K* x, float* y, int64_t nb);
void dequant_q5_k(const BlockQ5_K* x, float* y, int64_t nb);
void dequant_q6_k(const BlockQ6_K* x, float* y, int64_t nb);
void dequant_q8_k(const BlockQ8_K* x, float* y, int64_t nb);

void quant_q2_k(const float* x, BlockQ2_K* y, int64_t nb);
void quant_q3_k(const float* x, BlockQ3_K* y, int64_t nb);
void quant_q4_k(const float* x, BlockQ4_K* y, int64_t nb);
void quant_q5_k(const float* x, BlockQ5_K* y, int64_t nb);
void quant_q6_k(const float* x, BlockQ6_K* y, int64_t nb);
void quant_q8_k(const float* x, BlockQ8_K* y, int64_t nb);

}  // namespace lumen::quant
