// IEEE half (fp16) and bfloat16 <-> float conversions. The scalar versions are exact and always
// compiled (tests compare them with the hardware); fp16_to_f32 / f32_to_fp16 use the F16C
// instructions when the build targets them. Float -> half rounds to nearest, ties to even.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace lumen {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
inline float fp16_to_f32_scalar(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    if (exp == 0x1F)  // inf, or nan (made quiet, as the hardware does)
        return f32_from_bits(sign | 0x7F800000 | (man ? 0x400000 | (man << 13) : 0));
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return f32_from_bits(sign);                                // +-0
    // Subnormal half: normalise into a float exponent.
    int e = 113;
    while (!(man & 0x400)) { man <<= 1; e--; }
    return f32_from_bits(sign | (uint32_t(e) << 23) | ((man & 0x3FF) << 13));
}

inline uint16_t f32_to_fp16_scalar(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000);
    const uint32_t abs = u & 0x7FFFFFFF;
    if (abs > 0x7F800000) return uint16_t(sign | 0x7E00 | ((abs >> 13) & 0x3FF));  // nan stays quiet nan
    if (abs >= 0x477FF000) return uint16_t(sign | 0x7C00);  // rounds to >= 65520: inf
    if (abs >= 0x38800000) {                                 // normal half (>= 2^-14)
        // Rebias the exponent, then round the 13 dropped mantissa bits to nearest even; a carry
        // out of the mantissa correctly bumps the exponent.
        const uint32_t r = abs - (112u << 23);
        const uint32_t round = 0xFFF + ((r >> 13) & 1);
        return uint16_t(sign | ((r + round) >> 13));
    }
    if (abs < 0x33000000) return sign;  // below half the smallest subnormal (2^-25): zero
    // Subnormal half: value = man * 2^-24. Shift the full 24-bit significand down and round.
    const uint32_t exp = abs >> 23;
    const uint32_t sig = (abs & 0x7FFFFF) | 0x800000;
    const uint32_t shift = 126 - exp;  // 14..24
    uint32_t q = sig >> shift;
    const uint32_t rem = sig & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return uint16_t(sign | q);
}

inline float fp16_to_f32(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return fp16_to_f32_scalar(h);
#endif
}

inline uint16_t f32_to_fp16(float f) {
#if defined(__F16C__)
    return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#else
    return f32_to_fp16_scalar(f);
#endif
}

// bfloat16: the top 16 bits of a float.
inline float bf16_to_f32(uint16_t b) { return f32_from_bits(uint32_t(b) << 16); }

inline uint16_t f32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return uint16_t((u >> 16) | 0x40);  // keep nan a (quiet) nan
    return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);                // round to nearest even
}

// Reads a little-endian fp16 field that may sit at any alignment inside a block.
inline float load_fp16(const void* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_f32(h);
}

}  // namespace lumen
