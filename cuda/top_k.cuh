// The k largest logits of a row, for sampling on the host from k candidates instead of the whole
// vocabulary (the CPU twin is op_top_k in src/cpu/ops_basic.cpp; same order, same ties).
//
// One block per row. Floats map to unsigned keys that order the same way; a radix select over the
// keys (11 + 11 + 10 bits, a shared-memory histogram per round) finds the k-th largest key T and how
// many elements equal to T still belong in (ties at the threshold go to the lower indices, found by
// a second radix select over the indices of the tied elements). The chosen k are then ranked by
// (value descending, index ascending) and written as indices, then values.
#pragma once
#include "simt.cuh"

namespace lumen::simt {

constexpr int kTopKThreads = 512;
constexpr int kTopKMax = 256;  // the most candidates a row can ask for
constexpr int kTopKBins = 2048;

// Shared memory: the histogram, the scan of the threads' partial sums, the chosen candidates.
struct TopKShared {
    int hist[kTopKBins];
    int warp_sum[kTopKThreads / 32];
    int found_bin, found_remaining, n_above, n_tied;
    uint32_t cand_key[kTopKMax];
    int32_t cand_id[kTopKMax];
};

LUMEN_DEV uint32_t order_key(float f) {  // a > b as floats <=> key(a) > key(b) (NaN aside)
    const uint32_t u = float_bits(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

LUMEN_DEV uint32_t key_bits(uint32_t k) { return (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k; }  // the float's

// Radix select: among the elements e with pick(e, key) true, the one of rank `want` (1-based) from the
// top (largest key first) when `from_top`, else from the bottom. `key_of(i)` gives element i's key.
// Returns that key; on return s.found_remaining holds how many elements equal to it are within rank.
template <class C, class KeyOf>
LUMEN_DEV uint32_t radix_select(C& c, TopKShared& s, int n, int want, bool from_top, KeyOf key_of) {
    uint32_t prefix = 0, mask = 0;
    const int shifts[3] = {21, 10, 0}, widths[3] = {11, 11, 10};
    for (int round = 0; round < 3; round++) {
        const int shift = shifts[round], bins = 1 << widths[round];
        for (int b = c.thread(); b < kTopKBins; b += c.threads()) s.hist[b] = 0;
        c.sync();
        for (int i = c.thread(); i < n; i += c.threads()) {
            const uint32_t k = key_of(i);
            if ((k & mask) == prefix) c.atomic_add(&s.hist[(k >> shift) & uint32_t(bins - 1)], 1);
        }
        c.sync();
        // Thread t owns bins_per_thread bins, in scan order (largest bins first when from_top).
        const int per = kTopKBins / kTopKThreads;  // 4
        auto bin_at = [&](int j) { return from_top ? bins - 1 - j : j; };  // j-th bin in scan order
        int own = 0;
        for (int j = c.thread() * per; j < c.thread() * per + per; j++)
            if (j < bins) own += s.hist[bin_at(j)];
        // Inclusive prefix sum of `own` over the threads, in scan order.
        int incl = own;
        for (int o = 1; o < 32; o <<= 1) {
            const int v = c.shfl(incl, c.lane() >= o ? c.lane() - o : 0);
            if (c.lane() >= o) incl += v;
        }
        if (c.lane() == 31) s.warp_sum[c.warp()] = incl;
        c.sync();
        int before = 0;
        for (int w = 0; w < c.warp(); w++) before += s.warp_sum[w];
        incl += before;
        const int excl = incl - own;
        if (excl < want && want <= incl) {  // the wanted rank falls in this thread's bins
            int cum = excl;
            for (int j = c.thread() * per; j < c.thread() * per + per; j++) {
                const int h = s.hist[bin_at(j)];
                if (cum + h >= want) {
                    s.found_bin = bin_at(j);
                    s.found_remaining = want - cum;
                    break;
                }
                cum += h;
            }
        }
        c.sync();
        prefix |= uint32_t(s.found_bin) << shift;
        mask |= uint32_t(bins - 1) << shift;
        want = s.found_remaining;
        c.sync();  // everyone has read found_* before the next round overwrites them
    }
    return prefix;
}

// out: k indices then the k values' float bits, largest first, ties by lower index. k <= kTopKMax,
// k <= n. Run with kTopKThreads threads and sizeof(TopKShared) bytes of shared memory.
template <class C>
LUMEN_DEV void top_k_row(C& c, const float* x, int n, int k, int32_t* out) {
    TopKShared& s = *reinterpret_cast<TopKShared*>(c.smem());
    const uint32_t T = radix_select(c, s, n, k, true, [&](int i) { return order_key(x[i]); });
    const int tied_wanted = s.found_remaining;  // elements equal to T that belong in the k
    if (c.thread() == 0) { s.n_above = 0; s.n_tied = 0; }
    c.sync();
    for (int i = c.thread(); i < n; i += c.threads()) {
        const uint32_t key = order_key(x[i]);
        if (key > T) {
            const int slot = c.atomic_add(&s.n_above, 1);
            s.cand_key[slot] = key;
            s.cand_id[slot] = i;
        } else if (key == T) {
            c.atomic_add(&s.n_tied, 1);
        }
    }
    c.sync();
    const int above = s.n_above, tied = s.n_tied;
    // Among the tied, the tied_wanted lowest indices: all of them, or a second select by index.
    uint32_t last_id = 0xFFFFFFFFu;
    if (tied > tied_wanted)
        last_id = radix_select(c, s, n, tied_wanted, false,
                               [&](int i) { return order_key(x[i]) == T ? uint32_t(i) : 0xFFFFFFFFu; });
    c.sync();
    if (c.thread() == 0) s.n_tied = 0;
    c.sync();
    for (int i = c.thread(); i < n; i += c.threads()) {
        if (order_key(x[i]) == T && uint32_t(i) <= last_id) {
            const int slot = above + c.atomic_add(&s.n_tied, 1);
            s.cand_key[slot] = T;
            s.cand_id[slot] = i;
        }
    }
    c.sync();
    // Rank each candidate among the k: larger key first, then lower index.
    for (int j = c.thread(); j < k; j += c.threads()) {
        const uint32_t kj = s.cand_key[j];
        const int32_t ij = s.cand_id[j];
        int rank = 0;
        for (int i = 0; i < k; i++)
            rank += s.cand_key[i] > kj || (s.cand_key[i] == kj && s.cand_id[i] < ij);
        out[rank] = ij;
        out[k + rank] = int32_t(key_bits(kj));
    }
}

}  // namespace lumen::simt
