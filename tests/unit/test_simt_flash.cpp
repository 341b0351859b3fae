// The FlashAttention-2 prefill body (cuda/flash_prefill.cuh) run by the simt emulator against a
// plain softmax in double on the same f16-rounded q, K and V: single and chunked prefill, several
// sequences in one batch through shuffled block tables, decode tokens mixed with a prefill run,
// GQA groups, sliding window, softcap, head sizes 64 / 128 / 256.
//
// Tolerance: the kernel rounds P (softmax weights in [0, 1]) to f16 before P V, a relative error
// of at most 2^-11 per weight, and sums in f32; with |v| <= 2 that moves an output by ~1e-3 at
// most, and by ~3e-4 in these cases. 2e-3 (absolute, or relative above 1) leaves room and still
// catches a wrong index, a missed position (weights are spread over many positions) or a wrong mask.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "flash_prefill.cuh"
#include "simt_emulator.h"

using lumen::simt::Emu;

namespace {

struct Run {  // consecutive tokens of one sequence: positions first .. first + n - 1
    int seq, first, n;
};

struct Case {
    int D = 64, n_head = 4, n_head_kv = 1, window = 0, block_size = 8;
    float softcap = 0.0f;
    std::vector<Run> runs;
};

float round_f16(float x) { return lumen::simt::h2f(lumen::simt::f2h(x)); }

// Builds caches, block tables and a batch for `cs`, runs the emulated kernel, compares with the
// reference; returns the number of outputs checked.
template <int D>
int check_case(const Case& cs, uint32_t seed) {
    REQUIRE(cs.D == D);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> uni(-2.0f, 2.0f);
    const int H = cs.n_head, HK = cs.n_head_kv, group = H / HK, bs = cs.block_size;

    // Sequences: each holds positions 0 .. the last any of its tokens reaches.
    int n_seqs = 0;
    for (const Run& r : cs.runs) n_seqs = std::max(n_seqs, r.seq + 1);
    std::vector<int> seq_len(n_seqs, 0);
    for (const Run& r : cs.runs) seq_len[r.seq] = std::max(seq_len[r.seq], r.first + r.n);
    int max_blocks = 0;
    for (int l : seq_len) max_blocks = std::max(max_blocks, (l + bs - 1) / bs);
    // Physical blocks shuffled across sequences, plus two spare blocks that nobody owns.
    int n_phys = 2;
    for (int l : seq_len) n_phys += (l + bs - 1) / bs;
    std::vector<int> phys(n_phys);
    std::iota(phys.begin(), phys.end(), 0);
    std::shuffle(phys.begin(), phys.end(), rng);
    std::vector<int32_t> table(size_t(n_seqs) * max_blocks, -1);
    int next = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < (seq_len[s] + bs - 1) / bs; b++) table[size_t(s) * max_blocks + b] = phys[next++];

    // Caches: NaN wherever no sequence has a position, so a read of an unused row shows up.
    const int width = D * HK, rows = n_phys * bs;
    const uint16_t nan_h = 0x7E00;
    std::vector<uint16_t> kc(size_t(rows) * width, nan_h), vc(size_t(rows) * width, nan_h);
    auto cache_row = [&](int s, int p) { return size_t(table[size_t(s) * max_blocks + p / bs]) * bs + p % bs; };
    for (int s = 0; s < n_seqs; s++)
        for (int p = 0; p < seq_len[s]; p++)
            for (int e = 0; e < width; e++) {
                kc[cache_row(s, p) * width + e] = lumen::simt::f2h(uni(rng));
                vc[cache_row(s, p) * width + e] = lumen::simt::f2h(uni(rng));
            }

    // The batch: q in f32 with a padded head stride (q_nb1 > D * 4), as a view would have.
    std::vector<int32_t> pos, seq;
    for (const Run& r : cs.runs)
        for (int i = 0; i < r.n; i++) pos.push_back(r.first + i), seq.push_back(r.seq);
    const int T = int(pos.size());
    const size_t q_nb1 = size_t(D + 4) * 4, q_nb2 = q_nb1 * H;
    std::vector<float> q(size_t(T) * H * (D + 4));
    for (float& x : q) x = uni(rng);
    const size_t out_nb1 = size_t(H * D + 8) * 4;
    std::vector<float> out(size_t(T) * (H * D + 8), NAN);

    const float scale = 1.0f / std::sqrt(float(D));
    lumen::flash::Args a{q.data(), q_nb1, q_nb2, kc.data(), vc.data(), size_t(width) * 2, pos.data(), seq.data(),
                         table.data(), max_blocks, bs, out.data(), out_nb1, T, group, cs.window, scale, cs.softcap};
    Emu::launch(lumen::flash::grid(T, HK, group, n_seqs), lumen::flash::kThreads, lumen::flash::smem_bytes<D>(),
                [&](Emu& c) { lumen::flash::prefill_body<D>(c, a); });

    int checked = 0;
    std::vector<double> w;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const int hk = h / group, last = pos[t], first = cs.window > 0 ? std::max(0, last - cs.window + 1) : 0;
            const float* qr = q.data() + size_t(t) * H * (D + 4) + size_t(h) * (D + 4);
            w.assign(size_t(last - first + 1), 0.0);
            double mx = -INFINITY;
            for (int p = first; p <= last; p++) {
                const uint16_t* kr = kc.data() + cache_row(seq[t], p) * width + size_t(hk) * D;
                double s = 0;
                for (int e = 0; e < D; e++) s += double(round_f16(qr[e])) * double(lumen::simt::h2f(kr[e]));
                s *= scale;
                if (cs.softcap > 0) s = cs.softcap * std::tanh(s / cs.softcap);
                w[size_t(p - first)] = s;
                mx = std::max(mx, s);
            }
            double sum = 0;
            for (double& x : w) sum += (x = std::exp(x - mx));
            for (int e = 0; e < D; e++) {
                double ref = 0;
                for (int p = first; p <= last; p++)
                    ref += w[size_t(p - first)] *
                           double(lumen::simt::h2f(vc[cache_row(seq[t], p) * width + size_t(hk) * D + e]));
                ref /= sum;
                const float got = out[size_t(t) * (H * D + 8) + size_t(h) * D + e];
                if (!(std::fabs(got - ref) <= 2e-3 * std::max(1.0, std::fabs(ref)))) {
                    FAIL_CHECK("token " << t << " (seq " << seq[t] << ", pos " << pos[t] << ") head " << h
                                        << " dim " << e << ": got " << got << ", want " << ref);
                    return checked;
                }
                checked++;
            }
        }
    // Nothing written outside the rows' heads (the padding of each output row stays NaN).
    for (int t = 0; t < T; t++)
        for (int e = H * D; e < H * D + 8; e++) CHECK(std::isnan(out[size_t(t) * (H * D + 8) + e]));
    return checked;
}

}  // namespace

TEST_CASE("flash prefill: one sequence from position 0, T not a multiple of the tile") {
    Case cs;
    cs.D = 64, cs.n_head = 4, cs.n_head_kv = 1;  // group 4: 16 tokens per chunk
    cs.runs = std::vector<Run>{{0, 0, 83}};
    CHECK(check_case<64>(cs, 1) == 83 * 4 * 64);
}

TEST_CASE("flash prefill: chunked continuation (positions from 100), head_dim 128") {
    Case cs;
    cs.D = 128, cs.n_head = 2, cs.n_head_kv = 2;  // group 1: 64 tokens per chunk
    cs.runs = std::vector<Run>{{0, 100, 70}};
    CHECK(check_case<128>(cs, 2) == 70 * 2 * 128);
}

TEST_CASE("flash prefill: several sequences in one batch, shuffled block tables") {
    SUBCASE("two sequences, the boundary inside a chunk") {
        Case cs;
        cs.n_head = 8, cs.n_head_kv = 2;  // group 4
        cs.runs = std::vector<Run>{{1, 0, 21}, {0, 37, 30}};
        CHECK(check_case<64>(cs, 3) == 51 * 8 * 64);
    }
    SUBCASE("three sequences, block size 16, one of them a single token") {
        Case cs;
        cs.n_head = 4, cs.n_head_kv = 4, cs.block_size = 16;  // group 1
        cs.runs = std::vector<Run>{{2, 5, 40}, {0, 70, 1}, {1, 0, 33}};
        CHECK(check_case<64>(cs, 4) == 74 * 4 * 64);
    }
}

TEST_CASE("flash prefill: decode tokens of several sequences mixed with a prefill run") {
    Case cs;
    cs.n_head = 8, cs.n_head_kv = 1;  // group 8: 8 tokens per chunk, up to 5 runs in one chunk
    cs.runs = std::vector<Run>{{3, 50, 1}, {0, 9, 1}, {4, 130, 1}, {1, 0, 12}, {2, 75, 1}, {5, 3, 1}};
    CHECK(check_case<64>(cs, 5) == 17 * 8 * 64);
}

TEST_CASE("flash prefill: GQA groups 1, 4 and 8") {
    for (int group : {1, 4, 8}) {
        CAPTURE(group);
        Case cs;
        cs.n_head = 8, cs.n_head_kv = 8 / group;
        cs.runs = std::vector<Run>{{0, 20, 24}};
        CHECK(check_case<64>(cs, 6 + group) == 24 * 8 * 64);
    }
    SUBCASE("head_dim 128, group 4 (Llama 3 8B's shape), a prefill run after a decode token") {
        Case cs;
        cs.D = 128, cs.n_head = 4, cs.n_head_kv = 1;
        cs.runs = std::vector<Run>{{1, 64, 1}, {0, 3, 40}};
        CHECK(check_case<128>(cs, 15) == 41 * 4 * 128);
    }
}

TEST_CASE("flash prefill: sliding window, including a window of one position") {
    SUBCASE("window 20 over a run longer than the window") {
        Case cs;
        cs.n_head = 4, cs.n_head_kv = 2, cs.window = 20;
        cs.runs = std::vector<Run>{{0, 0, 90}};
        CHECK(check_case<64>(cs, 20) == 90 * 4 * 64);
    }
    SUBCASE("window 1: every token sees only itself") {
        Case cs;
        cs.n_head = 2, cs.n_head_kv = 1, cs.window = 1;
        cs.runs = std::vector<Run>{{1, 30, 10}, {0, 0, 5}};
        CHECK(check_case<64>(cs, 21) == 15 * 2 * 64);
    }
}

TEST_CASE("flash prefill: softcap") {
    Case cs;
    cs.n_head = 4, cs.n_head_kv = 2, cs.softcap = 1.5f;  // small enough that the cap bends most scores
    cs.runs = std::vector<Run>{{0, 10, 40}};
    CHECK(check_case<64>(cs, 30) == 40 * 4 * 64);
}

TEST_CASE("flash prefill: head_dim 256 (16-position tiles), with window and softcap") {
    Case cs;
    cs.D = 256, cs.n_head = 2, cs.n_head_kv = 1, cs.window = 40, cs.softcap = 30.0f;
    cs.runs = std::vector<Run>{{0, 0, 20}, {1, 60, 9}};
    CHECK(check_case<256>(cs, 40) == 29 * 2 * 256);
}

TEST_CASE("flash prefill: grid covers every run of every chunk") {
    using lumen::flash::grid;
    const auto g1 = grid(2048, 8, 4, 1);  // one long prompt: no spare blocks
    CHECK(g1.x == 8);
    CHECK(g1.y == 128);
    CHECK(g1.z == 1);
    const auto g2 = grid(40, 2, 8, 0);  // sequence count unknown: a chunk's token count bounds its runs
    CHECK(g2.y == 5);
    CHECK(g2.z == 8);
    CHECK(grid(3, 1, 1, 16).z == 3);
}
