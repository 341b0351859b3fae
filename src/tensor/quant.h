// Quantized block formats, bit-exact with GGUF / ggml so that existing model files load as they
// are. Every block is a packed little-endian struct; the fp16 fields are raw IEEE half bits.
//
//   legacy (32 values per block): value = d * q (+ m)
//     Q4_0  d, 16 bytes of nibbles: byte j holds value j (low nibble) and j+16 (high); q - 8
//     Q4_1  d, m, nibbles as Q4_0; q in 0..15
//     Q5_0  d, qh (bit j = 5th bit of value j), nibbles as Q4_0; q - 16
//     Q5_1  d, m, qh, nibbles; q in 0..31
//     Q8_0  d, 32 x int8
//     Q8_1  d, s = d * sum(q), 32 x int8            (activations of Q4_1 / Q5_1 dot products)
//   K-quants (256 values per super-block, split in sub-blocks with their own scales):
//     Q2_K  16 x 16: scales byte = scale (low 4 bits) | min (high 4), 2-bit q; d*sc*q - dmin*m
//     Q3_K  16 x 16: 6-bit signed scales (-32), 2 low bits in qs + high bit in hmask; q - 4
//     Q4_K   8 x 32: 6-bit scales and mins packed in 12 bytes, 4-bit q; d*sc*q - dmin*m
//     Q5_K   8 x 32: as Q4_K plus a 5th bit in qh
//     Q6_K  16 x 16: int8 scales, 4 low bits in ql + 2 high bits in qh; q - 32
//     Q8_K  float d, 256 x int8, int16 sums of each 16 values (activations of K-quant dots)
// The element order inside each block is documented next to its decoder (quant_legacy.cpp,
// quant_k.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace lumen {

constexpr int kQK = 32;    // values per legacy block
constexpr int kQK_K = 256;  // values per K-quant super-block

struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ8_1 { uint16_t d, s; int8_t qs[32]; };

struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockQ8_K { float d; int8_t qs[256]; int16_t bsums[16]; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "legacy block layout");
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "legacy block layout");
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36, "legacy block layout");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "k-quant block layout");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176, "k-quant block layout");
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292, "k-quant block layout");
static_assert(alignof(BlockQ4_0) == 2 && alignof(BlockQ8_K) == 4, "blocks are read in place");

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block, from its 12 packed bytes:
// bytes 0-3 hold scales 0-3 (+ the top 2 bits of scales 4-7), bytes 4-7 mins 0-3 (+ top bits of
// mins 4-7), bytes 8-11 the low nibbles of scales 4-7 (low) and mins 4-7 (high).
inline void k4_scale_min(const uint8_t* s, int j, uint8_t& scale, uint8_t& min) {
    if (j < 4) {
        scale = s[j] & 63;
        min = s[j + 4] & 63;
    } else {
        scale = uint8_t((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        min = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// The 16 signed 6-bit scales of a Q3_K block (already minus 32). Scale i has its low nibble in
// byte i (i < 8, low nibble) or byte i-8 (high nibble), and its top 2 bits in byte 8 + i%4 at
// bit 2*(i/4).
void q3k_scales(const uint8_t packed[12], int8_t out[16]);

// Elements of type t -> float. n must be a multiple of the type's block size.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Float -> elements of type t (the reference quantizers; see quant_legacy.cpp / quant_k.cpp for the
// scale choices). n must be a multiple of the block size. Every type except IQ*/TQ*/MXFP4.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// True when quantize_row / dequantize_row handle t.
bool can_dequantize(DType t);
bool can_quantize(DType t);

// The activation format a weight of type w is multiplied with in integer dot products:
//   Q4_0 Q5_0 Q8_0 -> Q8_0    Q4_1 Q5_1 -> Q8_1 (its stored sum pays for the min term)
//   K-quants -> Q8_K          F32 F16 BF16 -> F32 (no rounding of activations; the weights are
//                                                  widened on the fly, which costs nothing extra)
DType vec_dot_type(DType w);

}  // namespace lumen
