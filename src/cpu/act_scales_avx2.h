// Per-block float scales and sums of quantized activation rows, computed once per matmul call and
// shared by the AVX2 matmul kernels (so the inner loops neither convert fp16 nor sum quants).
// Include only inside the AVX2 guard, after simd_avx2.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cpu/simd_avx2.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::avx2 {

// One sub-block of an activation row: its scale and scale * (sum of its quants).
struct ActScale { float d, s; };

// Byte offset of value e inside an activation row of type vt (Q8_0, Q8_1 or Q8_K).
inline size_t act_offset(DType vt, int64_t e) {
    if (vt == DType::Q8_0) return size_t(e / 32) * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, qs) + size_t(e % 32);
    if (vt == DType::Q8_1) return size_t(e / 32) * sizeof(BlockQ8_1) + offsetof(BlockQ8_1, qs) + size_t(e % 32);
    return size_t(e / 256) * sizeof(BlockQ8_K) + offsetof(BlockQ8_K, qs) + size_t(e % 256);
}

// The K / sub sub-blocks of one row (sub = 16 or 32; Q8_0 / Q8_1 rows need sub = 32).
inline void act_scales(DType vt, const uint8_t* row, int64_t K, int sub, ActScale* out) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t s = 0; s < K / sub; s++) {
        const int64_t e = s * sub;
        if (vt == DType::Q8_0) {
            const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[e / 32];
            const float d = fp16_to_f32(b.d);
            out[s] = {d, d * float(hsum_i32(dot_u8_i8(ones, loadu(b.qs))))};
        } else if (vt == DType::Q8_1) {
            // The stored sum (fp16), as the scalar and vec_dot kernels use it.
            const BlockQ8_1& b = reinterpret_cast<const BlockQ8_1*>(row)[e / 32];
            out[s] = {fp16_to_f32(b.d), fp16_to_f32(b.s)};
        } else {
            const BlockQ8_K& b = reinterpret_cast<const BlockQ8_K*>(row)[e / 256];
            int sum = 0;
            for (int g = int(e % 256) / 16; g < int(e % 256 + sub) / 16; g++) sum += b.bsums[g];
            out[s] = {b.d, b.d * float(sum)};
        }
    }
}

}  // namespace lumen::cpu::avx2
