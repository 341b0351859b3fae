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

// Byte offset of value e inside an activation row of vt: Q8_K (the K-quants' partner), Q8_0 or
// Q8_1 (the legacy formats').
inline size_t act_offset(DType vt, int64_t e) {
    switch (vt) {
        case DType::Q8_K: return size_t(e / 256) * sizeof(BlockQ8_K) + offsetof(BlockQ8_K, qs) + size_t(e % 256);
        case DType::Q8_0: return size_t(e / 32) * sizeof(BlockQ8_0) + offsetof(BlockQ8_0, qs) + size_t(e % 32);
        default: return size_t(e / 32) * sizeof(BlockQ8_1) + offsetof(BlockQ8_1, qs) + size_t(e % 32);
    }
}

// The K / sub sub-blocks of one activation row of vt (sub = 16 or 32 for Q8_K, 32 for Q8_0 and
// Q8_1). The sum is taken from the quants themselves (not Q8_1's rounded s), so that both
// partners of a legacy format give the same figures.
inline void act_scales(DType vt, const uint8_t* row, int64_t K, int sub, ActScale* out) {
    if (vt != DType::Q8_K) {
        const size_t bytes = vt == DType::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ8_1);
        for (int64_t s = 0; s < K / 32; s++) {
            const uint8_t* b = row + size_t(s) * bytes;
            const __m256i q = loadu(b + act_offset(vt, 0));
            const int sum = hsum_i32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1)));
            const float d = load_f16(b);
            out[s] = {d, d * float(sum)};
        }
        return;
    }
    for (int64_t s = 0; s < K / sub; s++) {
        const int64_t e = s * sub;
        const BlockQ8_K& b = reinterpret_cast<const BlockQ8_K*>(row)[e / 256];
        int sum = 0;
        for (int g = int(e % 256) / 16; g < int(e % 256 + sub) / 16; g++) sum += b.bsums[g];
        out[s] = {b.d, b.d * float(sum)};
    }
}

}  // namespace lumen::cpu::avx2
