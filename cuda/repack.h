// How a weight matrix lies in GPU memory (its layout descriptor), and the host-side repacking of
// GGUF rows into the decode-friendly layout. Plain C++ (no CUDA types): the backend and the
// kernels read the descriptor, and the unit tests repack on the host.
//
// Why repack: GGUF blocks are 18 (Q4_0), 34 (Q8_0), 144 (Q4_K) or 210 (Q6_K) bytes, so a block's
// quants straddle 16-byte boundaries and its scale sits in the middle of the stream. Decode reads
// every weight once per token, at HBM speed only if each lane issues aligned 16-byte loads whose
// warp-wide footprint is contiguous. So the quants of a row become one contiguous, 16-byte
// aligned plane in which every 16 bytes is one "chunk" a lane decodes alone, and the scales go to
// planes of their own (small loads that 8-32 lanes share). Bytes per weight stay those of GGUF.
//
// Planes of a packed weight (row n of plane p at off[p] + n * stride[p]; one chunk = 16 bytes of
// plane 0, E weights):
//   Q4_0  E=32  0: quants, block b at 16b, byte j = element j (low nibble) | element j+16 (high)
//               1: f16 scale of block b at 2b
//   Q8_0  E=16  0: the int8 quants, as in GGUF minus the scales   1: f16 scale of block b at 2b
//   Q4_K  E=32  0: quants of sub-block s (32 elements) at 16s, nibbles ordered as Q4_0's
//               1: the first 16 bytes of each GGUF super-block (d, dmin, 12 bytes of 6-bit scales
//                  and mins) at 16 * (s / 8)
//   Q6_K  E=32  0: low 4 bits of sub-block s at 16s, nibbles ordered as Q4_0's
//               1: high 2 bits of sub-block s at 8s: two words; element 4i+b (i, b in 0..3) of the
//                  first 16 at bits 8b+2i of word 0, element 16+4i+b at bits 8b+2i of word 1, so
//                  (word >> 2i) & 0x03030303 lines up with nibble word i
//               2: the int8 scales (one per 16 elements) at 2s   3: f16 super-block scale at 2 * (s / 8)
//   F16   E=8   0: the row as it is (GGUF's F16 rows already are such a plane)
// Other types keep GGUF's rows (packed = false; stride[0] = GGUF row bytes, off[0] = 0) and their
// original kernels.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lumen::cuda {

// ggml type ids (as lumen::DType), for kernels templated on the type.
enum : int {
    T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
    T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30,
};

struct WeightLayout {
    int type = 0;
    int64_t K = 0, N = 0;   // row length, rows
    bool packed = false;    // planes as above; false: GGUF rows
    size_t bytes = 0;       // device bytes to allocate
    size_t off[4] = {}, stride[4] = {};
};

// The types that have a packed layout and the kernels in matvec.cuh.
inline bool packable(int type) {
    return type == T_Q4_0 || type == T_Q8_0 || type == T_Q4_K || type == T_Q6_K || type == T_F16;
}

// Weights per 16-byte chunk of plane 0.
constexpr int chunk_elems(int type) { return type == T_Q8_0 ? 16 : type == T_F16 ? 8 : 32; }

// The layout of a K x N weight whose GGUF rows are `row_bytes` apart. Packs when the type has a
// packed layout, `pack` is set and K suits it (a multiple of the block: 32 or 256; 8 for F16).
inline WeightLayout weight_layout(int type, int64_t K, int64_t N, size_t row_bytes, bool pack) {
    WeightLayout L;
    L.type = type;
    L.K = K;
    L.N = N;
    const int64_t block = (type == T_Q4_K || type == T_Q6_K) ? 256 : type == T_F16 ? 8 : 32;
    L.packed = pack && packable(type) && K > 0 && K % block == 0;
    if (!L.packed) {
        L.stride[0] = row_bytes;
        L.bytes = size_t(N) * row_bytes + 16;  // the GGUF-row kernels may read 15 bytes past a row
        return L;
    }
    const size_t k = size_t(K);
    switch (type) {
        case T_Q4_0: L.stride[0] = k / 2; L.stride[1] = k / 16; break;
        case T_Q8_0: L.stride[0] = k; L.stride[1] = k / 16; break;
        case T_Q4_K: L.stride[0] = k / 2; L.stride[1] = k / 16; break;
        case T_Q6_K: L.stride[0] = k / 2; L.stride[1] = k / 4; L.stride[2] = k / 16; L.stride[3] = k / 128; break;
        case T_F16: L.stride[0] = 2 * k; break;
    }
    size_t at = 0;
    for (int p = 0; p < 4; p++) {  // planes 256-byte aligned (whole DRAM bursts)
        L.off[p] = at;
        at = (at + size_t(N) * L.stride[p] + 255) & ~size_t(255);
    }
    L.bytes = at;
    return L;
}

// True when the packed image is GGUF's bytes unchanged (F16; every unpacked layout): upload copies.
inline bool layout_is_gguf(const WeightLayout& L) { return !L.packed || L.type == T_F16; }

namespace detail {

inline void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Q4_K: 64 elements in 32 bytes, byte l = element l (low nibble) | element 32+l (high): two
// sub-blocks; each becomes 16 bytes in Q4_0's order.
inline void repack_q4k_pair(const uint8_t* qs, uint8_t* lo_sub, uint8_t* hi_sub) {
    for (int j = 0; j < 16; j++) {
        lo_sub[j] = uint8_t((qs[j] & 0x0F) | (qs[j + 16] << 4));
        hi_sub[j] = uint8_t((qs[j] >> 4) | (qs[j + 16] & 0xF0));
    }
}

// Q6_K super-block (ql[128], qh[64], scales[16], d) -> its 8 sub-blocks in planes 0-3.
inline void repack_q6k_block(const uint8_t* b, uint8_t* low, uint8_t* high, uint8_t* scales, uint8_t* d) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    uint8_t q[256];  // the 6-bit values, without the -32
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        const uint8_t lb = ql[64 * h + l + 32 * (k & 1)];
        q[e] = uint8_t((k < 2 ? lb & 0x0F : lb >> 4) | (((qh[32 * h + l] >> (2 * k)) & 3) << 4));
    }
    for (int s = 0; s < 8; s++) {
        const uint8_t* v = q + 32 * s;
        for (int j = 0; j < 16; j++) low[16 * s + j] = uint8_t((v[j] & 0xF) | ((v[j + 16] & 0xF) << 4));
        for (int w = 0; w < 2; w++) {
            uint32_t word = 0;
            for (int i = 0; i < 4; i++)
                for (int bb = 0; bb < 4; bb++) word |= uint32_t(v[16 * w + 4 * i + bb] >> 4) << (8 * bb + 2 * i);
            put_u32(high + 8 * s + 4 * w, word);
        }
    }
    std::memcpy(scales, b + 192, 16);
    std::memcpy(d, b + 208, 2);
}

}  // namespace detail

// Rows [r0, r1) of a GGUF matrix (row n at src + n * row_bytes) into their places in `dst`, the
// packed image of the whole weight (L.bytes). Rows are independent: callers may split the range
// across threads.
inline void repack_rows(const WeightLayout& L, const void* src, size_t row_bytes, int64_t r0, int64_t r1,
                        uint8_t* dst) {
    const size_t K = size_t(L.K);
    for (int64_t n = r0; n < r1; n++) {
        const uint8_t* row = static_cast<const uint8_t*>(src) + size_t(n) * row_bytes;
        uint8_t* p[4];
        for (int i = 0; i < 4; i++) p[i] = dst + L.off[i] + size_t(n) * L.stride[i];
        switch (L.type) {
            case T_Q4_0:
                for (size_t b = 0; b < K / 32; b++) {
                    std::memcpy(p[0] + 16 * b, row + 18 * b + 2, 16);
                    std::memcpy(p[1] + 2 * b, row + 18 * b, 2);
                }
                break;
            case T_Q8_0:
                for (size_t b = 0; b < K / 32; b++) {
                    std::memcpy(p[0] + 32 * b, row + 34 * b + 2, 32);
                    std::memcpy(p[1] + 2 * b, row + 34 * b, 2);
                }
                break;
            case T_Q4_K:
                for (size_t i = 0; i < K / 256; i++) {
                    const uint8_t* b = row + 144 * i;
                    std::memcpy(p[1] + 16 * i, b, 16);
                    for (int c = 0; c < 4; c++)
                        detail::repack_q4k_pair(b + 16 + 32 * c, p[0] + 128 * i + 32 * c, p[0] + 128 * i + 32 * c + 16);
                }
                break;
            case T_Q6_K:
                for (size_t i = 0; i < K / 256; i++)
                    detail::repack_q6k_block(row + 210 * i, p[0] + 128 * i, p[1] + 64 * i, p[2] + 16 * i, p[3] + 2 * i);
                break;
            default:  // F16 and every unpacked layout: the bytes as they are
                std::memcpy(p[0], row, L.stride[0]);
                break;
        }
    }
}

}  // namespace lumen::cuda
