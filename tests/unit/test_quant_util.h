// Helpers shared by the quant and vec_dot tests: random rows and blocks of every format.
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::testq {

inline std::vector<float> gaussian(size_t n, uint64_t seed, float sigma = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// The weight types with dot products, and the element counts to test them with (block multiples
// chosen to hit the SIMD loops' odd tails).
inline const std::vector<DType>& weight_types() {
    static const std::vector<DType> t = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                                         DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                                         DType::F32,  DType::F16,  DType::BF16};
    return t;
}

inline std::vector<int64_t> test_lengths(DType t) {
    const int64_t bs = dtype_info(t).block_size;
    if (bs == 256) return {256, 512, 768, 1536};
    if (bs == 32) return {32, 64, 96, 576, 1536};
    return {1, 7, 8, 33, 64, 576};
}

// Byte offsets of the fp16 scale fields in a block; random bytes elsewhere are all valid quants.
inline std::vector<int> fp16_fields(DType t) {
    switch (t) {
        case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return {0};
        case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: return {0, 2};
        case DType::Q2_K: return {80, 82};
        case DType::Q3_K: return {108};
        case DType::Q6_K: return {208};
        default: return {};
    }
}

// A row of n elements of t made of random bytes (every quant level and sub-block scale occurs),
// with sane fp16 scales. Float types get gaussian values.
inline std::vector<uint8_t> random_row(DType t, int64_t n, uint64_t seed) {
    std::vector<uint8_t> row(row_bytes(t, n));
    if (dtype_info(t).block_size == 1) {
        quantize_row(t, gaussian(size_t(n), seed).data(), row.data(), n);
        return row;
    }
    std::mt19937_64 rng(seed);
    for (uint8_t& b : row) b = uint8_t(rng());
    std::uniform_real_distribution<float> scale(0.001f, 0.02f);
    const size_t bb = dtype_info(t).block_bytes;
    for (size_t off = 0; off < row.size(); off += bb)
        for (int f : fp16_fields(t)) {
            const uint16_t h = f32_to_fp16_scalar((rng() & 1 ? -1.0f : 1.0f) * scale(rng));
            std::memcpy(row.data() + off + size_t(f), &h, 2);
        }
    return row;
}

inline std::vector<uint8_t> quantized_row(DType t, const std::vector<float>& x) {
    std::vector<uint8_t> row(row_bytes(t, int64_t(x.size())));
    quantize_row(t, x.data(), row.data(), int64_t(x.size()));
    return row;
}

inline std::vector<float> dequantized(DType t, const void* row, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_row(t, row, y.data(), n);
    return y;
}

}  // namespace lumen::testq
