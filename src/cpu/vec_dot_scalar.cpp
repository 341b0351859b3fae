// Portable dot-product kernels for every weight type. Each block's quants are multiplied in
// integers and the block's scales applied once, so the result is what the SIMD kernels compute up
// to float summation order.
#include <cstring>

#include "cpu/vec_dot_impl.h"
#include "tensor/half.h"
#include "tensor/quant.h"

namespace lumen::cpu::scalar {

namespace {

int dot_i8(const int8_t* a, const int8_t* b, int n) {
    int s = 0;
    for (int i = 0; i < n; i++) s += int(a[i]) * int(b[i]);
    return s;
}

// The signed 32 values of a legacy 4/5-bit block (offset removed or not, as asked).
void unpack_nibbles(const uint8_t qs[16], uint32_t qh, int offset, int8_t out[32]) {
    for (int j = 0; j < 16; j++) {
        out[j] = int8_t(((qs[j] & 0x0F) | int((qh >> j) & 1) << 4) - offset);
        out[j + 16] = int8_t(((qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4) - offset);
    }
}

uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

float dot_q4_0(int64_t n, const void* wv, const void* av) {
    const BlockQ4_0* w = static_cast<const BlockQ4_0*>(wv);
    const BlockQ8_0* a = static_cast<const BlockQ8_0*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; i++) {
        int8_t q[32];
        unpack_nibbles(w[i].qs, 0, 8, q);
        sum += fp16_to_f32(w[i].d) * fp16_to_f32(a[i].d) * float(dot_i8(q, a[i].qs, 32));
    }
    return sum;
}

float dot_q4_1(int64_t n, const void* wv, const void* av) {
    const BlockQ4_1* w = static_cast<const BlockQ4_1*>(wv);
    const BlockQ8_1* a = static_cast<const BlockQ8_1*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; i++) {
        int8_t q[32];
        unpack_nibbles(w[i].qs, 0, 0, q);
        // sum((d*q + m) * a) = d*da*sum(q*qa) + m*s, with s = da*sum(qa) stored in the Q8_1 block.
        sum += fp16_to_f32(w[i].d) * fp16_to_f32(a[i].d) * float(dot_i8(q, a[i].qs, 32)) +
               fp16_to_f32(w[i].m) * fp16_to_f32(a[i].s);
    }
    return sum;
}

float dot_q5_0(int64_t n, const void* wv, const void* av) {
    const BlockQ5_0* w = static_cast<const BlockQ5_0*>(wv);
    const BlockQ8_0* a = static_cast<const BlockQ8_0*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; i++) {
        int8_t q[32];
        unpack_nibbles(w[i].qs, load_u32(w[i].qh), 16, q);
        sum += fp16_to_f32(w[i].d) * fp16_to_f32(a[i].d) * float(dot_i8(q, a[i].qs, 32));
    }
    return sum;
}

float dot_q5_1(int64_t n, const void* wv, const void* av) {
    const BlockQ5_1* w = static_cast<const BlockQ5_1*>(wv);
    const BlockQ8_1* a = static_cast<const BlockQ8_1*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; i++) {
        int8_t q[32];
        unpack_nibbles(w[i].qs, load_u32(w[i].qh), 0, q);
        sum += fp16_to_f32(w[i].d) * fp16_to_f32(a[i].d) * float(dot_i8(q, a[i].qs, 32)) +
               fp16_to_f32(w[i].m) * fp16_to_f32(a[i].s);
    }
    return sum;
}

float dot_q8_0(int64_t n, const void* wv, const void* av) {
    const BlockQ8_0* w = static_cast<const BlockQ8_0*>(wv);
    const BlockQ8_0* a = static_cast<const BlockQ8_0*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; i++)
        sum += fp16_to_f32(w[i].d) * fp16_to_f32(a[i].d) * float(dot_i8(w[i].qs, a[i].qs, 32));
    return sum;
}

// K-quants: the 256 values of a block as small signed ints, with one integer scale per sub-block of
// `sub` values and an optional integer min per sub-block (value = d*scale*q - dmin*min).
struct KBlock {
    int8_t q[256];
    int scale[16], min[16];
    int sub;  // 16 or 32
    float d, dmin;
};

// sum over the block of (d*scale*q - dmin*min) * (da*qa), using the Q8_K group sums for the mins.
float dot_kblock(const KBlock& k, const BlockQ8_K& a) {
    int qsum = 0, msum = 0;
    for (int j = 0; j < 256 / k.sub; j++) {
        qsum += k.scale[j] * dot_i8(k.q + j * k.sub, a.qs + j * k.sub, k.sub);
        int asum = 0;
        for (int g = j * k.sub / 16; g < (j + 1) * k.sub / 16; g++) asum += a.bsums[g];
        msum += k.min[j] * asum;
    }
    return a.d * (k.d * float(qsum) - k.dmin * float(msum));
}

void decode_q2_k(const BlockQ2_K& b, KBlock& k) {
    k.sub = 16;
    k.d = fp16_to_f32(b.d);
    k.dmin = fp16_to_f32(b.dmin);
    for (int j = 0; j < 16; j++) { k.scale[j] = b.scales[j] & 0x0F; k.min[j] = b.scales[j] >> 4; }
    for (int e = 0; e < 256; e++) k.q[e] = int8_t((b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
}

void decode_q3_k(const BlockQ3_K& b, KBlock& k) {
    k.sub = 16;
    k.d = fp16_to_f32(b.d);
    k.dmin = 0;
    int8_t sc[16];
    q3k_scales(b.scales, sc);
    for (int j = 0; j < 16; j++) { k.scale[j] = sc[j]; k.min[j] = 0; }
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, j = (e % 128) / 32, l = e % 32;
        const int low = (b.qs[32 * h + l] >> (2 * j)) & 3, high = (b.hmask[l] >> (4 * h + j)) & 1;
        k.q[e] = int8_t(low + 4 * high - 4);
    }
}

void decode_q4_k(const BlockQ4_K& b, KBlock& k) {
    k.sub = 32;
    k.d = fp16_to_f32(b.d);
    k.dmin = fp16_to_f32(b.dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        k4_scale_min(b.scales, j, s, m);
        k.scale[j] = s;
        k.min[j] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            k.q[64 * c + l] = int8_t(b.qs[32 * c + l] & 0x0F);
            k.q[64 * c + 32 + l] = int8_t(b.qs[32 * c + l] >> 4);
        }
}

void decode_q5_k(const BlockQ5_K& b, KBlock& k) {
    k.sub = 32;
    k.d = fp16_to_f32(b.d);
    k.dmin = fp16_to_f32(b.dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        k4_scale_min(b.scales, j, s, m);
        k.scale[j] = s;
        k.min[j] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            k.q[64 * c + l] = int8_t((b.qs[32 * c + l] & 0x0F) | (((b.qh[l] >> (2 * c)) & 1) << 4));
            k.q[64 * c + 32 + l] = int8_t((b.qs[32 * c + l] >> 4) | (((b.qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

void decode_q6_k(const BlockQ6_K& b, KBlock& k) {
    k.sub = 16;
    k.d = fp16_to_f32(b.d);
    k.dmin = 0;
    for (int j = 0; j < 16; j++) { k.scale[j] = b.scales[j]; k.min[j] = 0; }
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, kk = (e % 128) / 32, l = e % 32;
        const uint8_t ql = b.ql[64 * h + l + 32 * (kk & 1)];
        const int low = kk < 2 ? ql & 0x0F : ql >> 4, high = (b.qh[32 * h + l] >> (2 * kk)) & 3;
        k.q[e] = int8_t((low | (high << 4)) - 32);
    }
}

template <class Block, void (*Decode)(const Block&, KBlock&)>
float dot_k(int64_t n, const void* wv, const void* av) {
    const Block* w = static_cast<const Block*>(wv);
    const BlockQ8_K* a = static_cast<const BlockQ8_K*>(av);
    float sum = 0;
    KBlock k;
    for (int64_t i = 0; i < n / kQK_K; i++) {
        Decode(w[i], k);
        sum += dot_kblock(k, a[i]);
    }
    return sum;
}

float dot_f32(int64_t n, const void* wv, const void* av) {
    const float* w = static_cast<const float*>(wv);
    const float* a = static_cast<const float*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += w[i] * a[i];
    return sum;
}

float dot_f16(int64_t n, const void* wv, const void* av) {
    const uint16_t* w = static_cast<const uint16_t*>(wv);
    const float* a = static_cast<const float*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += fp16_to_f32(w[i]) * a[i];
    return sum;
}

float dot_bf16(int64_t n, const void* wv, const void* av) {
    const uint16_t* w = static_cast<const uint16_t*>(wv);
    const float* a = static_cast<const float*>(av);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += bf16_to_f32(w[i]) * a[i];
    return sum;
}

}  // namespace

VecDotFn kernel(DType w) {
    switch (w) {
        case DType::Q4_0: return dot_q4_0;
        case DType::Q4_1: return dot_q4_1;
        case DType::Q5_0: return dot_q5_0;
        case DType::Q5_1: return dot_q5_1;
        case DType::Q8_0: return dot_q8_0;
        case DType::Q2_K: return dot_k<BlockQ2_K, decode_q2_k>;
        case DType::Q3_K: return dot_k<BlockQ3_K, decode_q3_k>;
        case DType::Q4_K: return dot_k<BlockQ4_K, decode_q4_k>;
        case DType::Q5_K: return dot_k<BlockQ5_K, decode_q5_k>;
        case DType::Q6_K: return dot_k<BlockQ6_K, decode_q6_k>;
        case DType::F32: return dot_f32;
        case DType::F16: return dot_f16;
        case DType::BF16: return dot_bf16;
        default: return nullptr;
    }
}

}  // namespace lumen::cpu::scalar
