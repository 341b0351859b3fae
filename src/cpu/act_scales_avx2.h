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

// Byte offset of value e inside a Q8_K activation row (the K-quants' partner format).
inline size_t act_offset(DType, int64_t e) {
    return size_t(e / 256) * sizeof(BlockQ8_K) + offsetof(BlockQ8_K, qs) + size_t(e % 256);
}

// The K / sub sub-blocks (sub = 16 or 32) of one Q8_K row.
inline void act_scales(DType, const uint8_t* row, int64_t K, int sub, ActScale* out) {
    for (int64_t s = 0; s < K / sub; s++) {
        const int64_t e = s * sub;
        const BlockQ8_K& b = reinterpret_cast<const BlockQ8_K*>(row)[e / 256];
        int sum = 0;
        for (int g = int(e % 256) / 16; g < int(e % 256 + sub) / 16; g++) sum += b.bsums[g];
        out[s] = {b.d, b.d * float(sum)};
    }
}

}  // namespace lumen::cpu::avx2
