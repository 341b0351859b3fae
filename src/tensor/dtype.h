// The element types a GGUF tensor may have (ggml's type ids) and their block layouts.
// Quantized types store blocks of `block_size` elements in `block_bytes` bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lumen {

enum class DType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
    IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct DTypeInfo {
    const char* name;     // as llama.cpp prints it, e.g. "Q4_K"
    uint32_t block_size;  // elements per block (1 for plain types)
    uint32_t block_bytes; // bytes per block
    bool supported;       // lumen can compute with it (dequantize / dot product)
};

// nullptr for ids that are not ggml types at all.
const DTypeInfo* dtype_info(uint32_t id);
const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
// Parses "q4_0", "Q4_K", "f16"... Returns false if unknown.
bool dtype_from_name(const std::string& name, DType& out);

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(DType t, int64_t n) {
    const DTypeInfo& i = dtype_info(t);
    return size_t(n / i.block_size) * i.block_bytes;
}

}  // namespace lumen
