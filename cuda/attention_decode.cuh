// Decode attention (a few query tokens per sequence) as kernel bodies over a simt context (see
// simt.cuh): attention.cu runs them on the GPU, tests/unit/test_simt_attention.cpp on the host.
//
// Decode is a stream over the KV cache, so the design goal is that every K/V row of a KV head is
// read once, at full bandwidth, by one block:
// - A block owns one KV head, a run of consecutive tokens of one sequence (one decode token, or the
//   few tokens of a speculative verification) and a split of the cached positions. Its 16 query rows
//   are the (token, query head) pairs that share the KV head, so one K/V row serves all of them
//   (GQA: 4 heads x 4 tokens fill the 16 rows of an mma tile exactly).
// - K/V rows of 64 positions per stage are copied to shared memory with 16-byte cp.async copies, a
//   few stages in flight; f32 and q8_0 caches are converted to f16 on the way in instead.
// - Each of the 4 warps takes 16 positions of a stage: S = Q K^T and O += P V on tensor cores (f16
//   in, f32 accumulate), online softmax per row on the S fragments, its own running (max, sum, O);
//   the warps are merged once at the end.
// - With several splits each block leaves (max, sum, unnormalised O) per row and attention_combine
//   merges them; a split with no positions for a row leaves max = -inf and is skipped.
// The maxima are kept in the log2 domain (scores times log2 e) so every exponential is one exp2.
#pragma once
#include <cstddef>
#include <cstdint>

#include "simt.cuh"

namespace lumen::cuda::decode {

// Cache element types (the values of lumen::DType).
enum : int { kF32 = 0, kF16 = 1, kQ8_0 = 8 };

constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kRows = 16;           // query rows per block: one mma tile of (token, query head) pairs
constexpr int kTile = 16 * kWarps;  // positions per pipeline stage, 16 per warp
constexpr int kMinChunk = 128;      // the fewest positions a split is given (fewer splits at small depth)
constexpr int kMaxSplits = 128;

// Pipeline stages (buffers of kTile K and V rows): on an H100 about 96 KB of K/V per block for
// D <= 128 (two blocks per SM) and 192 KB for 256. GPUs with less shared memory per block take
// fewer (attention.cu picks); f32 and q8_0 caches, converted through registers, take one.
template <int D> constexpr int kMaxStages = D == 64 ? 4 : 3;
template <int D, int NS> constexpr size_t kSmemBytes = size_t(NS) * 2 * kTile * D * 2 + size_t(kRows) * D * 2;

struct Args {
    const float* q;  // [D, n_head, T], strides in bytes
    size_t q_nb1, q_nb2;
    const uint8_t* kc;
    const uint8_t* vc;
    size_t row_bytes;     // of one cache row (all KV heads)
    const int32_t* pos;   // [T]
    const int32_t* seq;   // [T]
    const int32_t* table; // [n_seqs][max_blocks]
    int max_blocks, block_size;
    float* out;  // [D * n_head, T], row stride out_nb1 bytes
    size_t out_nb1;
    int n_head, n_head_kv, T, window;
    float scale, softcap;
    float* partial;  // [T][n_head][splits][D + 2] when gridDim.z > 1, else null
};

// The split count for a launch: enough blocks with work to fill the `resident` blocks the GPU holds
// at once, splits of at least kMinChunk of the n_ctx positions. Blocks with work per split are
// counted as if the batch were runs of one sequence (verification); a batch of distinct sequences
// has up to 16/group times more, which only adds waves.
inline int splits_for(int64_t n_head, int64_t n_head_kv, int64_t T, int64_t n_ctx, int64_t resident) {
    const int64_t G = n_head / n_head_kv, gq = G < kRows ? G : kRows, R = kRows / gq;
    const int64_t per_split = n_head_kv * ((G + kRows - 1) / kRows) * ((T + R - 1) / R);
    if (per_split >= resident) return 1;
    int64_t s = (resident + per_split - 1) / per_split;
    const int64_t by_ctx = (n_ctx + kMinChunk - 1) / kMinChunk;
    if (s > by_ctx) s = by_ctx;
    if (s > kMaxSplits) s = kMaxSplits;
    return s < 1 ? 1 : int(s);
}

using simt::imax;
using simt::imin;
using simt::tanh_f;
constexpr float kNegInf = -__builtin_huge_valf();

// Byte offset of 16-byte chunk `ch` of row `r` in a [rows][D] f16 tile: the chunk index is XORed
// with the row so that ldmatrix's eight rows (same chunk) fall in eight different bank groups.
template <int D> LUMEN_DEV int swz(int r, int ch) { return r * D * 2 + ((ch ^ (r & 7)) << 4); }

// Eight elements [8 ch, 8 ch + 8) of one KV head's row, converted to f16 (f32 and q8_0 caches).
template <int CT, int D> LUMEN_DEV simt::u32x4 load8_f16(const uint8_t* head, int ch) {
    float x[8];
    if constexpr (CT == kF32) {
        const float* p = reinterpret_cast<const float*>(head) + ch * 8;
        for (int i = 0; i < 8; i++) x[i] = p[i];
    } else {  // q8_0: blocks of 32 elements, an f16 scale then 32 int8
        const uint8_t* b = head + (ch / 4) * 34;
        const float d = simt::h2f(uint16_t(b[0] | (b[1] << 8)));
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2) + (ch % 4) * 8;
        for (int i = 0; i < 8; i++) x[i] = d * float(qs[i]);
    }
    return {simt::pack_h2(x[0], x[1]), simt::pack_h2(x[2], x[3]), simt::pack_h2(x[4], x[5]),
            simt::pack_h2(x[6], x[7])};
}

// Grid: x = KV head * head chunks (groups over 16 query heads take several), y = token (only the
// first token of each run has work), z = split. kThreads threads, kSmemBytes<D, NS> shared memory.
template <int CT, int D, int NS, class C>
LUMEN_DEV void attention_decode(C& c, const Args& a) {
    constexpr int CH = D / 8;  // 16-byte chunks of an f16 row
    static_assert(NS >= 1 && (CT == kF16 || NS == 1), "a converted cache is written synchronously: one stage");
    static_assert(kSmemBytes<D, NS> >= size_t(kWarps) * kRows * (D + 2) * 4, "room to merge the warps");
    constexpr size_t kHead = CT == kF16 ? D * 2 : CT == kF32 ? D * 4 : D / 32 * 34;  // bytes of one head
    const int G = a.n_head / a.n_head_kv, gq = imin(G, kRows), R = kRows / gq, hchunks = (G + kRows - 1) / kRows;
    const int hk = c.block().x / hchunks, hc = c.block().x % hchunks;
    const int h0 = hk * G + hc * kRows, nh = imin(G - hc * kRows, kRows);  // this block's query heads
    const int t0 = c.block().y, split = c.block().z, splits = c.grid().z;

    // Runs: consecutive tokens of one sequence, cut at multiples of R; the run's first token's block
    // does all of it. Row r is token t0 + r / gq, query head h0 + r % gq.
    if (t0 % R != 0 && a.seq[t0] == a.seq[t0 - 1]) return;
    int t1 = t0 + 1;
    while (t1 < a.T && t1 % R != 0 && a.seq[t1] == a.seq[t0]) t1++;
    int lo = 1 << 30, hi = -1;  // positions any token of the run attends to
    for (int t = t0; t < t1; t++) {
        hi = imax(hi, a.pos[t]);
        lo = imin(lo, a.window > 0 ? imax(0, a.pos[t] - a.window + 1) : 0);
    }
    auto row_valid = [&](int r) { return r / gq < t1 - t0 && r % gq < nh; };
    auto partial_row = [&](int r) {
        return a.partial + ((size_t(t0 + r / gq) * a.n_head + h0 + r % gq) * splits + split) * (D + 2);
    };

    // This split's positions [begin, end): equal shares of the run's range, whole tiles.
    int chunk = imax((hi - lo + splits) / splits, kMinChunk);
    chunk = (chunk + kTile - 1) / kTile * kTile;
    const int begin = lo + split * chunk, end = imin(hi + 1, begin + chunk);
    if (begin >= end) {  // nothing here: tell the combine so
        if (c.thread() < kRows && row_valid(c.thread())) {
            partial_row(c.thread())[0] = kNegInf;
            partial_row(c.thread())[1] = 0.0f;
        }
        return;
    }

    uint8_t* Ks = reinterpret_cast<uint8_t*>(c.smem());  // [NS][kTile][D] f16, swizzled
    uint8_t* Vs = Ks + NS * kTile * D * 2;
    uint8_t* Qs = Vs + NS * kTile * D * 2;  // [kRows][D] f16, swizzled

    // The queries in f16 (as the CPU rounds them for an f16 cache); rows past the run are zero.
    for (int i = c.thread(); i < kRows * CH; i += kThreads) {
        const int r = i / CH, ch = i % CH;
        simt::u32x4 v{0, 0, 0, 0};
        if (row_valid(r)) {
            const float* qr = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(a.q) +
                                                             size_t(t0 + r / gq) * a.q_nb2 +
                                                             size_t(h0 + r % gq) * a.q_nb1) + ch * 8;
            v = {simt::pack_h2(qr[0], qr[1]), simt::pack_h2(qr[2], qr[3]), simt::pack_h2(qr[4], qr[5]),
                 simt::pack_h2(qr[6], qr[7])};
        }
        *reinterpret_cast<simt::u32x4*>(Qs + swz<D>(r, ch)) = v;
    }

    // Stage i of the split: positions begin + 64 i ... into buffer i % NS. Past `end` is zero-filled
    // (and masked), so no stale bytes, NaN included, reach the mma.
    const int32_t* blocks = a.table + size_t(a.seq[t0]) * a.max_blocks;
    const int bs = a.block_size;
    const size_t hoff = size_t(hk) * kHead;
    auto load_tile = [&](int i) {
        const int p0 = begin + i * kTile, buf = i % NS;
        for (int k = 0; k < kTile * CH / kThreads; k++) {
            const int idx = c.thread() + k * kThreads, j = idx / CH, ch = idx % CH, p = p0 + j;
            const bool ok = p < end;
            const size_t row = ok ? size_t(blocks[p / bs]) * size_t(bs) + size_t(p % bs) : 0;
            const size_t off = row * a.row_bytes + hoff;
            uint8_t* kd = Ks + size_t(buf) * kTile * D * 2 + swz<D>(j, ch);
            uint8_t* vd = Vs + size_t(buf) * kTile * D * 2 + swz<D>(j, ch);
            if constexpr (CT == kF16) {
                c.cp_async16(kd, a.kc + off + ch * 16, ok);
                c.cp_async16(vd, a.vc + off + ch * 16, ok);
            } else {
                const simt::u32x4 z{0, 0, 0, 0};
                *reinterpret_cast<simt::u32x4*>(kd) = ok ? load8_f16<CT, D>(a.kc + off, ch) : z;
                *reinterpret_cast<simt::u32x4*>(vd) = ok ? load8_f16<CT, D>(a.vc + off, ch) : z;
            }
        }
    };

    // This lane's two rows (g and g + 8 of the mma fragments) and the positions each attends to.
    const int lane = c.lane(), warp = c.warp(), g = lane / 4, tq = lane % 4;
    int first[2], last[2];
    for (int i = 0; i < 2; i++) {
        const int r = g + 8 * i;
        first[i] = 1, last[i] = 0;  // an empty range for rows past the run
        if (row_valid(r)) {
            last[i] = a.pos[t0 + r / gq];
            first[i] = a.window > 0 ? imax(0, last[i] - a.window + 1) : 0;
        }
    }
    constexpr float kLog2e = 1.4426950408889634f;
    float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};  // l: this lane's columns only, summed at the end
    float o[D / 8][4];
    LUMEN_UNROLL
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    // One warp's 16 positions of stage i (all of them before the split's end).
    auto compute_tile = [&](int i) {
        const int pw = begin + i * kTile + 16 * warp;  // this warp's first position
        const uint8_t* K = Ks + size_t(i % NS) * kTile * D * 2;
        const uint8_t* V = Vs + size_t(i % NS) * kTile * D * 2;
        const int kr = 16 * warp;  // this warp's first row of the stage

        // S = Q K^T: 16 rows x 16 positions, as two n-tiles of 8 positions.
        float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
        LUMEN_UNROLL
        for (int ks = 0; ks < D / 16; ks++) {
            uint32_t qa[4], kb[4];
            c.ldmatrix_x4(qa, Qs + swz<D>(lane % 16, 2 * ks + lane / 16));
            // matrices: positions 0-7 x dims 0-7, 0-7 x 8-15, 8-15 x 0-7, 8-15 x 8-15
            c.ldmatrix_x4(kb, K + swz<D>(kr + (lane / 16) * 8 + lane % 8, 2 * ks + (lane / 8) % 2));
            c.mma_f16(s[0], qa, kb);
            c.mma_f16(s[1], qa, kb + 2);
        }

        // Online softmax on the fragments: s[n][e] is row g + 8 (e / 2), position pw + 8 n + 2 tq + e % 2.
        float p[2][4];
        LUMEN_UNROLL
        for (int n = 0; n < 2; n++)
            LUMEN_UNROLL
            for (int e = 0; e < 4; e++) {
                const int ps = pw + 8 * n + 2 * tq + (e & 1), ri = e >> 1;
                float x = s[n][e] * a.scale;
                if (a.softcap > 0.0f) x = a.softcap * tanh_f(x / a.softcap);
                p[n][e] = ps < first[ri] || ps > last[ri] ? kNegInf : x * kLog2e;
            }
        LUMEN_UNROLL
        for (int ri = 0; ri < 2; ri++) {
            float mx = fmaxf(fmaxf(p[0][2 * ri], p[0][2 * ri + 1]), fmaxf(p[1][2 * ri], p[1][2 * ri + 1]));
            mx = fmaxf(mx, c.shfl_xor(mx, 1));  // the row's four lanes
            mx = fmaxf(mx, c.shfl_xor(mx, 2));
            const float m_new = fmaxf(m[ri], mx);
            const float mu = m_new == kNegInf ? 0.0f : m_new;  // a row with nothing yet stays at zero
            const float corr = simt::exp2_fast(m[ri] - mu);
            float sum = 0.0f;
            LUMEN_UNROLL
            for (int n = 0; n < 2; n++)
                LUMEN_UNROLL
                for (int e = 2 * ri; e < 2 * ri + 2; e++) {
                    p[n][e] = simt::exp2_fast(p[n][e] - mu);
                    sum += p[n][e];
                }
            l[ri] = l[ri] * corr + sum;
            m[ri] = m_new;
            LUMEN_UNROLL
            for (int n = 0; n < D / 8; n++) {
                o[n][2 * ri] *= corr;
                o[n][2 * ri + 1] *= corr;
            }
        }

        // O += P V: P (16 rows x 16 positions, f16) is the A operand straight from the S layout.
        const uint32_t pa[4] = {simt::pack_h2(p[0][0], p[0][1]), simt::pack_h2(p[0][2], p[0][3]),
                                simt::pack_h2(p[1][0], p[1][1]), simt::pack_h2(p[1][2], p[1][3])};
        LUMEN_UNROLL
        for (int nd = 0; nd < D / 16; nd++) {
            uint32_t vb[4];  // positions 0-7 / 8-15 x dims 16 nd .. +7, then dims 16 nd + 8 .. +15
            c.ldmatrix_x4_trans(vb, V + swz<D>(kr + lane % 16, 2 * nd + lane / 16));
            c.mma_f16(o[2 * nd], pa, vb);
            c.mma_f16(o[2 * nd + 1], pa, vb + 2);
        }
    };

    const int n_tiles = (end - begin + kTile - 1) / kTile;
    for (int i = 0; i < NS - 1; i++) {
        if (i < n_tiles) load_tile(i);
        c.cp_async_commit();  // empty groups too: the wait below counts groups
    }
    for (int i = 0; i < n_tiles; i++) {
        if constexpr (NS == 1) {
            load_tile(i);
            c.cp_async_commit();
        }
        simt::cp_async_wait<(NS > 1 ? NS - 2 : 0)>(c);  // stage i has landed (this thread's copies) ...
        c.sync();  // ... every thread's, and stage i - 1's buffer is free again
        if constexpr (NS > 1) {
            if (i + NS - 1 < n_tiles) load_tile(i + NS - 1);
            c.cp_async_commit();
        }
        if (begin + i * kTile + 16 * warp < end) compute_tile(i);  // else the warp is past the split's end
        if constexpr (NS == 1) c.sync();  // the only buffer is refilled next
    }
    simt::cp_async_wait<0>(c);  // only empty groups remain, but the buffers are reused below
    c.sync();

    // Merge the warps through shared memory (the stage buffers are free now).
    float* Ms = reinterpret_cast<float*>(c.smem());  // [kWarps][kRows]
    float* Ls = Ms + kWarps * kRows;
    float* Os = Ls + kWarps * kRows;  // [kWarps][kRows][D]
    LUMEN_UNROLL
    for (int ri = 0; ri < 2; ri++) {
        l[ri] += c.shfl_xor(l[ri], 1);
        l[ri] += c.shfl_xor(l[ri], 2);
        const int r = warp * kRows + g + 8 * ri;
        if (tq == 0) {
            Ms[r] = m[ri];
            Ls[r] = l[ri];
        }
        LUMEN_UNROLL
        for (int n = 0; n < D / 8; n++) {
            Os[r * D + 8 * n + 2 * tq] = o[n][2 * ri];
            Os[r * D + 8 * n + 2 * tq + 1] = o[n][2 * ri + 1];
        }
    }
    c.sync();
    for (int i = c.thread(); i < kRows * D; i += kThreads) {
        const int r = i / D, d = i % D;
        if (!row_valid(r)) continue;
        float mx = kNegInf;
        for (int w = 0; w < kWarps; w++) mx = fmaxf(mx, Ms[w * kRows + r]);
        float sum = 0.0f, v = 0.0f;
        for (int w = 0; w < kWarps; w++) {
            const float mw = Ms[w * kRows + r];
            if (mw == kNegInf) continue;
            const float f = simt::exp2_fast(mw - mx);
            sum += Ls[w * kRows + r] * f;
            v += Os[(w * kRows + r) * D + d] * f;
        }
        if (a.partial) {
            float* pr = partial_row(r);
            if (d == 0) {
                pr[0] = mx;
                pr[1] = sum;
            }
            pr[2 + d] = v;
        } else {
            float* orow = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(a.out) + size_t(t0 + r / gq) * a.out_nb1);
            orow[size_t(h0 + r % gq) * D + d] = v / sum;
        }
    }
}

// Merges the splits: grid (n_head, T), D threads, one output element each. Splits whose max is
// -inf saw none of the row's positions and are skipped; every row has at least one that did.
template <class C>
LUMEN_DEV void attention_combine(C& c, const float* partial, float* out, size_t out_nb1, int n_head, int D, int splits) {
    const int h = c.block().x, t = c.block().y, d = c.thread();
    const float* p = partial + (size_t(t) * n_head + h) * splits * (D + 2);
    float mx = kNegInf;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, p[s * (D + 2)]);
    float sum = 0.0f, v = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float* ps = p + s * (D + 2);
        if (ps[0] == kNegInf) continue;
        const float f = simt::exp2_fast(ps[0] - mx);
        sum += ps[1] * f;
        v += ps[2 + d] * f;
    }
    reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out) + size_t(t) * out_nb1)[size_t(h) * D + d] = v / sum;
}

}  // namespace lumen::cuda::decode
