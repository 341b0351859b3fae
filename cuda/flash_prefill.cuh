// FlashAttention-2 for batches of many query tokens (prefill): the body, a template over the simt
// context (cuda/simt.cuh), so the host emulator runs the same code in the unit tests.
//
// Work of one block: the query rows of one KV head for a few consecutive tokens of one sequence,
// streamed over that sequence's cached positions in tiles of BC, keeping an online softmax.
//  - GQA packing: a block's 64 rows are (token, query head) pairs, tokens x the `group` query heads
//    that share the KV head (row r: token r / group, head r % group). Each K/V tile in shared memory
//    serves every head of the group, a single decode token still fills `group` rows instead of one,
//    and a tile spans 64 / group tokens, so the causal diagonal wastes less.
//  - Which tokens: the batch is cut into chunks of 64 / group consecutive tokens (grid y; rows past
//    tokens x group stay idle when group does not divide 64); a chunk holding tokens of several
//    sequences (continuous batching) is split into runs of one sequence, run number grid z. The
//    grid is sized for the most runs a chunk can hold; blocks past the last run exit at once.
//    Chunks are taken latest first, so the longest blocks start first.
//  - Four warps of 16 rows (32 rows a warp would halve the shared-memory reads per mma, but its O,
//    S and Q fragments would not fit in 255 registers at head_dim 128). Q lives in registers as mma
//    A fragments (f16); S = Q K^T and O += P V are m16n8k16 mma with f32 accumulators; the softmax
//    runs on S's accumulator fragments, whose layout is P's A-fragment layout, so P never leaves
//    registers. exp2 with log2(e) folded into the scale; the running max is kept in raw units (one
//    FFMA per element).
//  - K and V tiles are copied with cp.async into two buffers (tile j+1 lands while tile j is
//    used); rows padded by 16 bytes so the eight row addresses of an ldmatrix fall in eight
//    different bank groups. K is read with ldmatrix (B of Q K^T), V with ldmatrix .trans (B of P V).
//  - Only tiles that some row of the block attends to are visited, and the mask is applied only
//    on tiles where some row's range [first, last] does not cover the whole tile.
// Caches: f16 only (the launcher sends F32 and Q8_0 caches to the old kernel).
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "simt.cuh"

namespace lumen::flash {

// Everything the body reads; pointers are device pointers (host pointers in the emulator).
struct Args {
    const float* q;              // [head_dim] per (head, token): q + t * q_nb2 + h * q_nb1 (bytes)
    size_t q_nb1, q_nb2;
    const uint16_t* k;           // f16 cache rows of head_dim * n_head_kv
    const uint16_t* v;
    size_t row_bytes;
    const int32_t* pos;          // [T] position of each token in its sequence
    const int32_t* seq;          // [T] sequence of each token; a sequence's tokens are consecutive
    const int32_t* table;        // [n_seqs][max_blocks] cache blocks of each sequence
    int max_blocks, block_size;
    float* out;                  // row t at out + t * out_nb1 (bytes), head h at h * head_dim
    size_t out_nb1;
    int T, group, window;        // group: query heads per KV head; window > 0: sliding window
    float scale, softcap;
};

constexpr int kWarps = 4, kThreads = 32 * kWarps, kRows = 16 * kWarps;
constexpr int kHeaderBytes = 128;  // ints that find the block's tokens, ahead of the K/V tiles

// Positions per K/V tile: 64; 16 for head_dim 256, whose O and Q fragments take 192 registers a
// thread (at 32 ptxas spills).
template <int D> constexpr int kKvTile = D >= 256 ? 16 : 64;
// Halves per shared-memory row: 16 bytes of padding move consecutive rows to different banks.
template <int D> constexpr int kSmemRow = D + 8;
// Two buffers of K and two of V.
template <int D> constexpr size_t smem_bytes() { return kHeaderBytes + 4 * size_t(kKvTile<D>) * kSmemRow<D> * 2; }

constexpr int tokens_per_chunk(int group) { return kRows / group; }

// x: KV head; y: chunk of tokens_per_chunk consecutive tokens; z: run of one sequence in the chunk
// (at most one per sequence of the batch; n_seqs <= 0: unknown).
inline simt::Dim grid(int T, int n_head_kv, int group, int n_seqs) {
    const int tc = tokens_per_chunk(group);
    int runs = tc < T ? tc : T;
    if (n_seqs > 0 && n_seqs < runs) runs = n_seqs;
    return {n_head_kv, (T + tc - 1) / tc, runs};
}

namespace detail {
using simt::fmax2;
using simt::imax;
using simt::imin;
using simt::tanh_f;
}  // namespace detail

template <int D, class C>
LUMEN_DEV void prefill_body(C& c, const Args& a) {
    using namespace detail;
    constexpr int BC = kKvTile<D>, LD = kSmemRow<D>;
    constexpr int KSTEPS = D / 16;  // k-steps of Q K^T
    constexpr int NT = BC / 8;      // n-tiles of S (8 positions each)
    constexpr int ND = D / 8;       // n-tiles of O (8 dims each)
    constexpr int CPR = D / 8;      // 16-byte pieces per cached row of one head
    constexpr int RPP = kThreads / CPR;  // rows one pass of cp.async covers
    static_assert(BC % RPP == 0 && NT % 2 == 0 && ND % 2 == 0, "tile shapes");
    constexpr float kNone = -INFINITY;
    constexpr int kBig = 0x7fffffff;

    const int th = c.thread(), lane = c.lane(), warp = c.warp();
    const int g = lane / 4, tq = lane % 4;  // fragment row group and column pair
    const int hk = c.block().x, chunk = c.grid().y - 1 - c.block().y, run = c.block().z;
    const int tc = kRows / a.group;
    int* hdr = reinterpret_cast<int*>(c.smem());

    // 1. The block's tokens: run number `run` of one sequence inside the chunk. Thread i looks at
    //    token chunk * tc + i; a run starts where the sequence changes; an inclusive count of the
    //    starts (warp scan, then the warps before) gives each token's run number.
    const int t = chunk * tc + th;
    const bool in = th < tc && t < a.T;
    const int sq = in ? a.seq[t] : -1, my_pos = in ? a.pos[t] : 0;  // both loads issued up front
    const bool starts = in && (th == 0 || a.seq[t - 1] != sq);
    int rank = starts ? 1 : 0;
    for (int d = 1; d < 32; d <<= 1) {
        const int u = c.shfl(rank, lane >= d ? lane - d : lane);
        if (lane >= d) rank += u;
    }
    if (lane == 31) hdr[warp] = rank;
    c.sync();
    for (int w = 0; w < warp; w++) rank += hdr[w];
    // Minima over the run's tokens of t, -t, first, -first, last, -last (first/last: the range of
    // positions a token attends to; the maxima as minima of the negatives) and of the sequence.
    constexpr int R = 7;
    static_assert((1 + R) * kWarps * 4 <= kHeaderBytes, "header room");
    int red[R] = {kBig, kBig, kBig, kBig, kBig, kBig, kBig};
    if (in && rank == run + 1) {
        const int first = a.window > 0 ? imax(0, my_pos - a.window + 1) : 0;
        red[0] = t, red[1] = -t, red[2] = first, red[3] = -first, red[4] = my_pos, red[5] = -my_pos, red[6] = sq;
    }
    for (int i = 0; i < R; i++)
        for (int o = 16; o > 0; o >>= 1) red[i] = imin(red[i], c.shfl_xor(red[i], o));
    if (lane == 0)
        for (int i = 0; i < R; i++) hdr[kWarps + R * warp + i] = red[i];
    c.sync();
    for (int w = 0; w < kWarps; w++)
        for (int i = 0; i < R; i++) red[i] = imin(red[i], hdr[kWarps + R * w + i]);
    if (red[0] == kBig) return;  // the chunk has fewer runs (the whole block leaves together)
    const int t0 = red[0], n_tok = -red[1] - t0 + 1;
    const int lo_min = red[2], lo_max = -red[3], hi_min = red[4], hi_max = -red[5];
    const int32_t* blocks = a.table + size_t(red[6]) * a.max_blocks;

    // 2. This lane's two rows (g and g + 8 of the warp's 16): their positions and Q fragments.
    //    a[i] / a[i + 2] of the A fragment hold row g + 8i, columns 2tq.. and 2tq + 8.. of a k-step.
    //    Row r is token t0 + r / group, query head hk * group + r % group; -1: a padding row.
    auto row_token = [&](int i) {
        const int r = 16 * warp + g + 8 * i, k = r / a.group;
        return r < tc * a.group && k < n_tok ? t0 + k : -1;
    };
    auto row_head = [&](int i) { return hk * a.group + (16 * warp + g + 8 * i) % a.group; };
    int row_first[2], row_last[2];
    uint32_t qf[KSTEPS][4];
    for (int i = 0; i < 2; i++) {
        const int tok = row_token(i);
        row_first[i] = kBig, row_last[i] = -1;  // padding rows attend to nothing
        const float* qr = nullptr;
        if (tok >= 0) {
            row_last[i] = a.pos[tok];
            row_first[i] = a.window > 0 ? imax(0, row_last[i] - a.window + 1) : 0;
            qr = reinterpret_cast<const float*>(reinterpret_cast<const char*>(a.q) + size_t(tok) * a.q_nb2 +
                                                size_t(row_head(i)) * a.q_nb1);
        }
        for (int ks = 0; ks < KSTEPS; ks++) {
            const int col = 16 * ks + 2 * tq;
            qf[ks][i] = qr ? simt::pack_h2(qr[col], qr[col + 1]) : 0u;
            qf[ks][i + 2] = qr ? simt::pack_h2(qr[col + 8], qr[col + 9]) : 0u;
        }
    }

    // 3. K/V tiles: positions lo_min.. hi_max in tiles of BC. Thread th copies the 16-byte piece
    //    th % CPR of rows th / CPR + n * RPP; K and V rows share the block-table lookup.
    uint16_t* k_s = reinterpret_cast<uint16_t*>(c.smem() + kHeaderBytes);  // [2][BC][LD]
    uint16_t* v_s = k_s + 2 * BC * LD;
    const int n_tiles = (hi_max - lo_min) / BC + 1;
    const int piece = th % CPR, row0 = th / CPR;
    const size_t head_off = size_t(hk) * D * 2 + size_t(piece) * 16;
    const char* kc = reinterpret_cast<const char*>(a.k) + head_off;
    const char* vc = reinterpret_cast<const char*>(a.v) + head_off;
    const int bs = a.block_size;
    auto stage = [&](int tile, int buf) {
        int p = lo_min + tile * BC + row0;
        int blk = p / bs, in_blk = p - blk * bs;  // one division per tile; then steps of RPP positions
        for (int rr = row0; rr < BC; rr += RPP, p += RPP) {
            const bool ok = p <= hi_max;  // past the end: zeros (never garbage: 0 * NaN would leak)
            const size_t off = ok ? (size_t(blocks[blk]) * bs + in_blk) * a.row_bytes : 0;
            for (in_blk += RPP; in_blk >= bs; in_blk -= bs) blk++;
            const int at = (buf * BC + rr) * LD + piece * 8;
            c.cp_async16(k_s + at, kc + off, ok);
            c.cp_async16(v_s + at, vc + off, ok);
        }
    };

    // S is multiplied by `to_log2` to get log2 units; with a softcap, S is first capped in natural units.
    const bool capped = a.softcap > 0.0f;
    const float to_log2 = 1.4426950408889634f * (capped ? 1.0f : a.scale);
    const float cap_in = capped ? a.scale / a.softcap : 0.0f;

    float o[ND][4];
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {kNone, kNone}, l[2] = {0.0f, 0.0f};  // running max (S units), this lane's share of the sum
    const int mi = lane / 8, mr = lane % 8;  // which 8x8 matrix of an ldmatrix x4 this lane addresses, which row

    auto tile_step = [&](const uint16_t* kt, const uint16_t* vt, int p0, auto masked) {
        // S = Q K^T: x4 loads (positions 16n.. +15) x (dims 16ks.. +15); matrices 0/1 the two k halves
        // for positions 16n..+7, 2/3 for 16n+8..
        float s[NT][4];
        for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        for (int ks = 0; ks < KSTEPS; ks++)
            for (int n = 0; n < NT; n += 2) {
                uint32_t b[4];
                c.ldmatrix_x4(b, kt + (8 * n + 8 * (mi >> 1) + mr) * LD + 16 * ks + 8 * (mi & 1));
                c.mma_f16(s[n], qf[ks], b);
                c.mma_f16(s[n + 1], qf[ks], b + 2);
            }
        // Softcap (its own loop, so a kernel without one never evaluates tanh), mask, row maxima (a
        // row's 4 lanes, tq = 0..3, share it).
        if (capped)
            for (int n = 0; n < NT; n++)
                for (int e = 0; e < 4; e++) s[n][e] = a.softcap * tanh_f(s[n][e] * cap_in);
        float mx[2] = {kNone, kNone};
        for (int n = 0; n < NT; n++)
            for (int e = 0; e < 4; e++) {
                float x = s[n][e];
                if constexpr (decltype(masked)::value) {
                    const int p = p0 + 8 * n + 2 * tq + (e & 1);
                    if (p < row_first[e >> 1] || p > row_last[e >> 1]) x = kNone;
                }
                s[n][e] = x;
                mx[e >> 1] = fmax2(mx[e >> 1], x);
            }
        float base[2], corr[2];
        for (int i = 0; i < 2; i++) {
            mx[i] = fmax2(mx[i], c.shfl_xor(mx[i], 1));
            mx[i] = fmax2(mx[i], c.shfl_xor(mx[i], 2));
            const float m_new = fmax2(m[i], mx[i]);
            const float m_use = m_new == kNone ? 0.0f : m_new;  // a row with nothing yet: no NaN from -inf - -inf
            corr[i] = simt::exp2_fast((m[i] - m_use) * to_log2);
            base[i] = m_use * to_log2;
            m[i] = m_new;
            l[i] *= corr[i];
        }
        for (int n = 0; n < ND; n++)
            for (int e = 0; e < 4; e++) o[n][e] *= corr[e >> 1];
        for (int n = 0; n < NT; n++)
            for (int e = 0; e < 4; e++) {
                const float p = simt::exp2_fast(s[n][e] * to_log2 - base[e >> 1]);
                s[n][e] = p;
                l[e >> 1] += p;
            }
        // O += P V: S's accumulators of n-tiles 2kk, 2kk+1 are P's A fragment for positions 16kk..+15.
        // V by x4 .trans: matrices 0/1 positions 16kk..+7 / +8..+15 of dims 8n..+7, 2/3 of dims 8n+8..
        for (int kk = 0; kk < BC / 16; kk++) {
            const uint32_t pa[4] = {simt::pack_h2(s[2 * kk][0], s[2 * kk][1]), simt::pack_h2(s[2 * kk][2], s[2 * kk][3]),
                                    simt::pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    simt::pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            for (int n = 0; n < ND; n += 2) {
                uint32_t b[4];
                c.ldmatrix_x4_trans(b, vt + (16 * kk + 8 * (mi & 1) + mr) * LD + 8 * n + 8 * (mi >> 1));
                c.mma_f16(o[n], pa, b);
                c.mma_f16(o[n + 1], pa, b + 2);
            }
        }
    };

    // 4. The pipeline: tile j + 1 is in flight while tile j is used; an empty group at the end
    //    keeps the wait count constant.
    stage(0, 0);
    c.cp_async_commit();
    for (int j = 0; j < n_tiles; j++) {
        if (j + 1 < n_tiles) stage(j + 1, (j + 1) & 1);
        c.cp_async_commit();
        simt::cp_async_wait<1>(c);
        c.sync();  // tile j visible to every warp
        const int p0 = lo_min + j * BC;
        const uint16_t* kt = k_s + (j & 1) * BC * LD;
        const uint16_t* vt = v_s + (j & 1) * BC * LD;
        // Unmasked when every row of the block attends to every position of the tile.
        if (p0 < lo_max || p0 + BC - 1 > hi_min) tile_step(kt, vt, p0, std::true_type{});
        else tile_step(kt, vt, p0, std::false_type{});
        c.sync();  // every warp done with buffer j & 1 before tile j + 2 is copied into it
    }

    // 5. Normalise and store: each lane holds columns 8n + 2tq, +1 of its two rows.
    for (int i = 0; i < 2; i++) {
        l[i] += c.shfl_xor(l[i], 1);
        l[i] += c.shfl_xor(l[i], 2);
        const int tok = row_token(i);
        if (tok < 0) continue;
        float* out = reinterpret_cast<float*>(reinterpret_cast<char*>(a.out) + size_t(tok) * a.out_nb1) + row_head(i) * D;
        const float inv = 1.0f / l[i];  // > 0: a row's own position is always in range
        for (int n = 0; n < ND; n++) {
            out[8 * n + 2 * tq] = o[n][2 * i] * inv;
            out[8 * n + 2 * tq + 1] = o[n][2 * i + 1] * inv;
        }
    }
}

}  // namespace lumen::flash
