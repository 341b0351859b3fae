// KV-cache writes and attention on the CPU. The cache is a pool of rows of {head_dim * n_head_kv}
// elements in the cache type (F16 by default, Q8_0 as an option), in blocks; each sequence finds its
// positions through its block table (paged attention).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/attention_math.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/vec_dot.h"
#include "tensor/half.h"
#include "tensor/quant.h"
#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#endif

namespace lumen::cpu {

size_t attention_shared(const Tensor* t);
size_t attention_work(const Tensor* t);

void work_size(const Tensor* t, int n_threads, size_t& shared, size_t& per_thread) {
    shared = per_thread = 0;
    if (t->op == Op::MulMat) {
        const Tensor* w = t->src[0];
        shared = row_bytes(vec_dot_type(w->type), w->ne[0]) * size_t(t->src[1]->nrows());
    } else if (t->op == Op::Attention) {
        shared = attention_shared(t);
        per_thread = attention_work(t);
    }
}

void op_kv_write(const OpCtx& c, Tensor* t) {
    const Tensor* cache = t->src[0];
    const Tensor* k = t->src[1];
    const int32_t* rows = reinterpret_cast<const int32_t*>(c.ptr(t->src[2]));
    const int64_t width = cache->ne[0], T = t->src[2]->ne[0];
    int64_t b, e;
    c.range(T, b, e);
    for (int64_t r = b; r < e; r++) {
        const float* src = reinterpret_cast<const float*>(c.ptr(k)) + r * width;
        quantize_row(cache->type, src, c.ptr(cache) + size_t(rows[r]) * cache->nb[1], width);
    }
}

// Attention with an online softmax in f32 (attention_math.h holds the arithmetic). Each query row
// (token, head) reads its own keys first..pos in blocks of attn::kBlock at fixed absolute positions,
// grouped into chunks of kChunk keys; a chunk's partial result (max, sum, weighted V) is computed
// from scratch and the partials are merged in chunk order. The work is shared out in either of two
// ways, which give the same bits:
//   - up to kSplitTokens tokens (decoding, speculative verification): every (tile, KV head, chunk)
//     is an item, so one token at depth 4096 gives n_head_kv * 16 items to share over the threads;
//     the partials go to shared scratch and, after a barrier, each (token, head) merges its own;
//   - more tokens (prompts): an item is (tile, KV head), its thread merges each chunk as it goes.
// A tile is up to kTile consecutive tokens of one sequence; an item holds all the query heads of one
// KV head for all its tokens (group * tile rows), so each K and V row is converted to f32 once per
// item and used for every row. Masked keys never reach a row's sums (row_block skips them), so what
// else is in the tile or the batch, and how many threads there are, changes nothing.
namespace {
constexpr int64_t kTile = 16;
constexpr int64_t kChunk = 256;
constexpr int64_t kSplitTokens = 16;
static_assert(kChunk % attn::kBlock == 0, "a chunk is whole blocks");
constexpr int64_t kRecHead = 8;  // a partial result: m, s, padding (keeps acc 32-byte aligned), acc[dp]

// One head's K or V row in f32. Called once per cached row and KV head, so the common types are
// converted here inline rather than through dequantize_row's checks (every path is exact: the f16
// value, or an int8 times an f16 scale, fits a float).
inline void to_f32(DType t, const uint8_t* src, float* dst, int64_t n) {
    if (t == DType::F16) {
        const uint16_t* x = reinterpret_cast<const uint16_t*>(src);
        int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
#endif
        for (; i < n; i++) dst[i] = fp16_to_f32(x[i]);
    } else if (t == DType::Q8_0) {
        const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(src);
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = fp16_to_f32(b[i].d);
#if defined(__AVX2__) && defined(__F16C__)
            const __m256 vd = _mm256_set1_ps(d);
            for (int j = 0; j < 32; j += 8) {
                const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + j));
                _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), vd));
            }
#else
            for (int j = 0; j < 32; j++) dst[j] = float(b[i].qs[j]) * d;
#endif
        }
    } else if (t == DType::F32) {
        std::memcpy(dst, src, sizeof(float) * size_t(n));
    } else {
        dequantize_row(t, src, dst, n);
    }
}

struct RowInfo {  // one query row of an item
    int64_t first, last;
    attn::RowState st;
};

struct Dims {
    int64_t D, dp, n_head, n_head_kv, group, T, rows, n_chunks, rec;
};

Dims dims(const Tensor* t) {
    Dims d;
    d.D = t->src[0]->ne[0];
    d.dp = (d.D + 7) / 8 * 8;
    d.n_head = t->src[0]->ne[1];
    d.T = t->src[0]->ne[2];
    d.n_head_kv = t->ip[0];
    d.group = d.n_head / d.n_head_kv;
    d.rows = d.group * kTile;
    d.n_chunks = (t->src[5]->ne[0] * t->ip[2] + kChunk - 1) / kChunk;  // max_blocks * block_size positions
    d.rec = kRecHead + d.dp;
    return d;
}

// Byte offsets in a thread's scratch.
struct Layout {
    size_t k, v, p, q, run, part, info, tiles, total;
};

Layout layout(const Dims& d) {
    Layout l;
    size_t at = 0;
    auto take = [&](size_t bytes) {
        const size_t o = at;
        at += (bytes + 63) / 64 * 64;
        return o;
    };
    l.k = take(sizeof(float) * size_t(attn::kBlock * d.dp));
    l.v = take(sizeof(float) * size_t(attn::kBlock * d.dp));
    l.p = take(sizeof(float) * size_t(attn::kBlock));
    l.q = take(sizeof(float) * size_t(d.rows * d.dp));
    l.run = take(sizeof(float) * size_t(d.rows * d.rec));
    l.part = take(sizeof(float) * size_t(d.rows * d.rec));
    l.info = take(sizeof(RowInfo) * size_t(d.rows));
    l.tiles = take(sizeof(int32_t) * size_t(d.T + 1));
    l.total = at;
    return l;
}

// What every thread needs to run items; the same on all threads.
struct Job {
    Dims d;
    const uint8_t *q, *kc, *vc;
    size_t q_nb1, q_nb2, k_nb1, v_nb1, head_bytes;
    DType kt, vt;
    const int32_t *pos, *seq, *table;
    int64_t max_blocks, bs;
    int window;
    float scale, softcap;
    uint8_t* out;
    size_t out_nb1;
    // this thread's scratch
    float *k, *v, *p, *qr, *run, *part;
    RowInfo* info;
    int32_t* tiles;

    int64_t first(int64_t tok) const { return window > 0 ? std::max<int64_t>(0, pos[tok] - window + 1) : 0; }
    // Loads the query rows of (tile t0..t1, KV head hk): row (tok - t0) * group + g is head hk * group + g.
    void load_rows(int64_t t0, int64_t t1, int64_t hk) {
        for (int64_t tok = t0; tok < t1; tok++)
            for (int64_t g = 0; g < d.group; g++) {
                const int64_t r = (tok - t0) * d.group + g;
                const float* src = reinterpret_cast<const float*>(q + size_t(tok) * q_nb2 + size_t(hk * d.group + g) * q_nb1);
                std::copy(src, src + d.D, qr + r * d.dp);
                std::fill(qr + r * d.dp + d.D, qr + (r + 1) * d.dp, 0.0f);
                info[r].first = first(tok);
                info[r].last = pos[tok];
            }
    }
    // f(j, physical row of position j) for j in [from, to): one division per call, not per row.
    template <class F>
    void for_rows(const int32_t* blocks, int64_t from, int64_t to, F f) const {
        int64_t page = from / bs, off = from % bs;
        for (int64_t j = from; j < to; j++) {
            f(j, size_t(blocks[page]) * size_t(bs) + size_t(off));
            if (++off == bs) {
                off = 0;
                page++;
            }
        }
    }
    // K and V rows of positions ka..kb (one block, starting at b0) into the f32 scratch; keys of the
    // block outside ka..kb (no row here attends to them, their scores are discarded) get zeros.
    // The next block's rows up to `ahead` (the last position of the item) are prefetched: the
    // cache is read from memory once per token, in pieces of head_bytes scattered over the pages of
    // the block table, which the hardware prefetcher follows poorly.
    void load_block(int64_t seq_id, int64_t hk, int64_t b0, int64_t ka, int64_t kb, int64_t ahead) {
        const int32_t* blocks = table + seq_id * max_blocks;
        const size_t head = size_t(hk) * head_bytes;
        for_rows(blocks, b0 + attn::kBlock, std::min(b0 + 2 * attn::kBlock, ahead + 1), [&](int64_t, size_t row) {
            for (size_t o = 0; o < head_bytes; o += 64) {
                __builtin_prefetch(kc + row * k_nb1 + head + o);
                __builtin_prefetch(vc + row * v_nb1 + head + o);
            }
        });
        for (int64_t j = b0; j < b0 + attn::kBlock; j++)
            if (j < ka || j > kb) std::fill(k + (j - b0) * d.dp, k + (j - b0 + 1) * d.dp, 0.0f);
        for_rows(blocks, ka, kb + 1, [&](int64_t j, size_t row) {
            to_f32(kt, kc + row * k_nb1 + head, k + (j - b0) * d.dp, d.D);
            to_f32(vt, vc + row * v_nb1 + head, v + (j - b0) * d.dp, d.D);
        });
    }
    // The partial results of chunk ci for the rows of (tile t0..t1, KV head hk), whose query rows are
    // loaded; rec(r) is where row r's goes.
    template <class Rec>
    void chunk(int64_t t0, int64_t t1, int64_t hk, int64_t lo, int64_t hi, int64_t ci, Rec rec) {
        const int64_t R = (t1 - t0) * d.group;
        const int64_t cs = std::max(ci * kChunk, lo), ce = std::min(ci * kChunk + kChunk - 1, hi);
        for (int64_t r = 0; r < R; r++) {
            info[r].st = {-INFINITY, {}};
            std::fill(rec(r) + kRecHead, rec(r) + d.rec, 0.0f);
        }
        for (int64_t b0 = cs - cs % attn::kBlock; b0 <= ce; b0 += attn::kBlock) {
            const int64_t ka = std::max(b0, cs), kb = std::min(b0 + attn::kBlock - 1, ce);
            load_block(seq[t0], hk, b0, ka, kb, hi);
            for (int64_t r = 0; r < R; r++) {
                const int64_t ra = std::max(b0, info[r].first), re = std::min(b0 + attn::kBlock - 1, info[r].last);
                if (ra > re) continue;
                attn::best::row_block(qr + r * d.dp, k, v, d.dp, int(ra - b0), int(re - b0), scale, softcap, info[r].st,
                                      rec(r) + kRecHead, p);
            }
        }
        for (int64_t r = 0; r < R; r++) {
            rec(r)[0] = info[r].st.m;
            rec(r)[1] = info[r].st.m == -INFINITY ? 0.0f : attn::sum8(info[r].st.sv);
        }
    }
    // The result of a merged record into the output row of (tok, h).
    void write(int64_t tok, int64_t h, const float* rec) const {
        float* o = reinterpret_cast<float*>(out + size_t(tok) * out_nb1) + h * d.D;
        const float inv = rec[1] == 0.0f ? 0.0f : 1.0f / rec[1];
        for (int64_t i = 0; i < d.D; i++) o[i] = rec[kRecHead + i] * inv;
    }
};

void fold(float* run, const float* part, int64_t dp) {
    attn::best::fold(run[0], run[1], run + kRecHead, part[0], part[1], part + kRecHead, dp);
}

void clear(float* rec) {
    rec[0] = -INFINITY;
    rec[1] = 0.0f;
}
}  // namespace

size_t attention_shared(const Tensor* t) {
    const Dims d = dims(t);
    return d.T <= kSplitTokens ? sizeof(float) * size_t(d.T * d.n_head * d.n_chunks * d.rec) : 0;
}

size_t attention_work(const Tensor* t) { return layout(dims(t)).total; }

void op_attention(const OpCtx& c, Tensor* t) {
    Job j;
    j.d = dims(t);
    const Dims& d = j.d;
    const Tensor *q = t->src[0], *kc = t->src[1], *vc = t->src[2];
    j.q = c.ptr(q);
    j.q_nb1 = q->nb[1];
    j.q_nb2 = q->nb[2];
    j.kc = c.ptr(kc);
    j.vc = c.ptr(vc);
    j.k_nb1 = kc->nb[1];
    j.v_nb1 = vc->nb[1];
    j.head_bytes = row_bytes(kc->type, d.D);
    j.kt = kc->type;
    j.vt = vc->type;
    j.pos = reinterpret_cast<const int32_t*>(c.ptr(t->src[3]));
    j.seq = reinterpret_cast<const int32_t*>(c.ptr(t->src[4]));
    j.table = reinterpret_cast<const int32_t*>(c.ptr(t->src[5]));
    j.max_blocks = t->src[5]->ne[0];
    j.bs = t->ip[2];
    j.window = t->ip[1];
    j.scale = t->fp[0];
    j.softcap = t->fp[1];
    j.out = c.ptr(t);
    j.out_nb1 = t->nb[1];
    const Layout l = layout(d);
    uint8_t* w = c.thread_work();
    j.k = reinterpret_cast<float*>(w + l.k);
    j.v = reinterpret_cast<float*>(w + l.v);
    j.p = reinterpret_cast<float*>(w + l.p);
    j.qr = reinterpret_cast<float*>(w + l.q);
    j.run = reinterpret_cast<float*>(w + l.run);
    j.part = reinterpret_cast<float*>(w + l.part);
    j.info = reinterpret_cast<RowInfo*>(w + l.info);
    j.tiles = reinterpret_cast<int32_t*>(w + l.tiles);
    std::fill(j.k, j.k + attn::kBlock * d.dp, 0.0f);  // the padding columns (head_dim to dp) stay zero
    std::fill(j.v, j.v + attn::kBlock * d.dp, 0.0f);

    // Every thread cuts the batch the same way: a new tile at each change of sequence or every kTile tokens.
    int32_t* tiles = j.tiles;
    int64_t n_tiles = 0;
    for (int64_t tok = 0; tok < d.T; tok++)
        if (tok == 0 || j.seq[tok] != j.seq[tok - 1] || tok - tiles[n_tiles - 1] == kTile) tiles[n_tiles++] = int32_t(tok);
    tiles[n_tiles] = int32_t(d.T);
    auto span = [&](int64_t ti, int64_t& lo, int64_t& hi) {  // the positions any token of the tile attends to
        lo = INT64_MAX;
        hi = -1;
        for (int64_t tok = tiles[ti]; tok < tiles[ti + 1]; tok++) {
            lo = std::min(lo, j.first(tok));
            hi = std::max<int64_t>(hi, j.pos[tok]);
        }
    };

    if (d.T <= kSplitTokens) {
        // Items (tile, chunk, KV head) in that order, so that a thread's run of items reads whole
        // cache rows (all heads) of consecutive positions; partial results to shared scratch.
        float* parts = reinterpret_cast<float*>(c.work);
        auto rec_of = [&](int64_t tok, int64_t h, int64_t ci) { return parts + ((tok * d.n_head + h) * d.n_chunks + ci) * d.rec; };
        int64_t n_items = 0;
        for (int64_t ti = 0; ti < n_tiles; ti++) {
            int64_t lo, hi;
            span(ti, lo, hi);
            n_items += d.n_head_kv * (hi / kChunk - lo / kChunk + 1);
        }
        int64_t b, e;
        c.range(n_items, b, e);
        int64_t item = 0;
        for (int64_t ti = 0; ti < n_tiles && item < e; ti++) {
            int64_t lo, hi;
            span(ti, lo, hi);
            const int64_t t0 = tiles[ti], t1 = tiles[ti + 1], nc = hi / kChunk - lo / kChunk + 1;
            if (item + nc * d.n_head_kv <= b) {
                item += nc * d.n_head_kv;
                continue;
            }
            for (int64_t ci = lo / kChunk; ci <= hi / kChunk; ci++)
                for (int64_t hk = 0; hk < d.n_head_kv; hk++, item++) {
                    if (item < b || item >= e) continue;
                    j.load_rows(t0, t1, hk);
                    j.chunk(t0, t1, hk, lo, hi, ci, [&](int64_t r) {
                        return rec_of(t0 + r / d.group, hk * d.group + r % d.group, ci);
                    });
                }
        }
        c.barrier();
        // Each (token, head) merges its own chunks in order.
        c.range(d.T * d.n_head, b, e);
        for (int64_t i = b; i < e; i++) {
            const int64_t tok = i / d.n_head, h = i % d.n_head;
            float* run = j.run;
            clear(run);
            for (int64_t ci = j.first(tok) / kChunk; ci <= j.pos[tok] / kChunk; ci++) fold(run, rec_of(tok, h, ci), d.dp);
            j.write(tok, h, run);
        }
        return;
    }

    // Items (tile, KV head), dealt out in turn so that early (short) and late tiles mix on every thread.
    for (int64_t item = c.ith; item < n_tiles * d.n_head_kv; item += c.nth) {
        const int64_t ti = item / d.n_head_kv, hk = item % d.n_head_kv, t0 = tiles[ti], t1 = tiles[ti + 1];
        const int64_t R = (t1 - t0) * d.group;
        int64_t lo, hi;
        span(ti, lo, hi);
        j.load_rows(t0, t1, hk);
        for (int64_t r = 0; r < R; r++) clear(j.run + r * d.rec);
        for (int64_t ci = lo / kChunk; ci <= hi / kChunk; ci++) {
            j.chunk(t0, t1, hk, lo, hi, ci, [&](int64_t r) { return j.part + r * d.rec; });
            for (int64_t r = 0; r < R; r++) fold(j.run + r * d.rec, j.part + r * d.rec, d.dp);
        }
        for (int64_t r = 0; r < R; r++) j.write(t0 + r / d.group, hk * d.group + r % d.group, j.run + r * d.rec);
    }
}

}  // namespace lumen::cpu
