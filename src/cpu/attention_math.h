// The arithmetic of CPU attention: every operation whose rounding decides the result, in one place.
// Written twice, portable C++ and AVX2 (FMA, F16C), with the same operations in the same order lane
// by lane, so both builds give the same bits (tests/unit/test_cpu_attention.cpp compares them).
// This file is compiled with -ffp-contract=off (CMakeLists.txt): a multiply and an add the compiler
// fused on its own would make the two versions part.
//
// The softmax of one query row is computed over blocks of kBlock keys at fixed absolute positions:
// scores for the block, their maximum, p = exp(s - max) and p.V added to an f32 accumulator.
// ops_attention.cpp cuts the keys into chunks of whole blocks and merges the chunks' partial
// results in order (fold), so a row's bits depend only on its own keys.
#pragma once
#include <cstdint>

namespace lumen::cpu::attn {

constexpr int kBlock = 32;  // keys per softmax block (a multiple of 8: scores come in groups of 8)

// The running softmax of one query row inside a chunk: the largest score so far and the sum of p
// kept in 8 lanes (key j in lane j % 8), reduced once at the chunk's end by sum8.
struct RowState {
    float m;
    float sv[8];
};

// exp(x) for x <= 88, relative error about 1e-7; exactly 1 at 0 and 0 below -87 (and at -inf).
float exp1(float x);
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)): the lanes of RowState::sv.
float sum8(const float* sv);

// The same three functions in each namespace. row_block arguments:
//   q: one query row, dp floats (head_dim rounded up to 8, zero padded);
//   k, v: the block's keys and values in f32, key i at row i (stride dp);
//   [ra, re]: the keys of the block this row attends to (0 <= ra <= re < kBlock); the other keys'
//     scores are replaced by -inf and their values never read, whatever the rows hold;
//   softcap > 0: s = softcap * tanh(s * (scale / softcap)), else s = s * scale;
//   acc: the row's dp-float accumulator; p: kBlock floats of scratch.
// fold merges a partial result (m, s, a) into (M, S, acc), both over dp floats; m = -inf: empty.
// exp8 is exp1 on 8 values, as row_block computes it (for the tests).
namespace portable {
void row_block(const float* q, const float* k, const float* v, int64_t dp, int ra, int re, float scale,
               float softcap, RowState& st, float* acc, float* p);
void fold(float& M, float& S, float* acc, float m, float s, const float* a, int64_t dp);
void exp8(const float* x, float* y);
}  // namespace portable

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LUMEN_ATTN_AVX2 1
namespace avx2 {
void row_block(const float* q, const float* k, const float* v, int64_t dp, int ra, int re, float scale,
               float softcap, RowState& st, float* acc, float* p);
void fold(float& M, float& S, float* acc, float m, float s, const float* a, int64_t dp);
void exp8(const float* x, float* y);
}  // namespace avx2
namespace best = avx2;
#else
namespace best = portable;
#endif

}  // namespace lumen::cpu::attn
