// The decode attention kernel (cuda/attention_decode.cuh) run by the host emulator against a plain
// double-precision reference on the values the kernel sees (query and K/V rounded to f16): paged
// caches with shuffled block tables, GQA groups, runs of verification tokens, windows, softcap,
// head sizes, f16/f32/q8_0 caches, splits (empty ones included) and their combine.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "attention_decode.cuh"
#include "simt_emulator.h"

using lumen::simt::Dim;
using lumen::simt::Emu;
namespace dec = lumen::cuda::decode;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float round_f16(float x) { return lumen::simt::h2f(lumen::simt::f2h(x)); }

struct Case {
    int D = 128, n_head = 8, n_kv = 2, ct = dec::kF16, bs = 8;
    std::vector<int> seq_len;           // positions cached per sequence
    std::vector<int> tok_seq, tok_pos;  // the query tokens
    int window = 0, splits = 1;
    int stages = 0;  // pipeline stages; 0: what an H100 runs (f16: kMaxStages, converted caches: 1)
    float scale = 0.0f, softcap = 0.0f;  // scale 0: 1 / sqrt(D)
    uint32_t seed = 1;
};

// A paged cache holding seq_len[s] positions of each sequence in shuffled physical blocks, plus
// spare blocks; everything not holding a cached position is NaN, so a stray read shows.
struct Data {
    int max_blocks = 0;
    size_t row_bytes = 0;
    std::vector<int32_t> table, pos, seq;
    std::vector<uint8_t> kc, vc;
    std::vector<float> kv_ref[2];  // [row][D * n_kv]: the values the kernel computes with
    std::vector<float> q;          // [T][n_head + 1][D] (a spare head between tokens: q_nb2 > n_head * q_nb1)
};

void encode_row(int ct, const float* x, int n, uint8_t* dst, float* ref) {
    if (ct == dec::kF16) {
        for (int i = 0; i < n; i++) {
            const uint16_t h = lumen::simt::f2h(x[i]);
            std::memcpy(dst + 2 * i, &h, 2);
            ref[i] = lumen::simt::h2f(h);
        }
    } else if (ct == dec::kF32) {
        std::memcpy(dst, x, size_t(n) * 4);
        for (int i = 0; i < n; i++) ref[i] = round_f16(x[i]);
    } else {  // q8_0
        for (int b = 0; b < n / 32; b++) {
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[32 * b + i]));
            const uint16_t dh = lumen::simt::f2h(amax / 127.0f);
            const float d = lumen::simt::h2f(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
            uint8_t* blk = dst + 34 * b;
            std::memcpy(blk, &dh, 2);
            for (int i = 0; i < 32; i++) {
                const int8_t v = int8_t(std::lround(x[32 * b + i] * id));
                blk[2 + i] = uint8_t(v);
                ref[32 * b + i] = round_f16(d * float(v));
            }
        }
    }
}

size_t type_row_bytes(int ct, int n) { return ct == dec::kF16 ? 2 * n : ct == dec::kF32 ? 4 * n : n / 32 * 34; }

Data make_data(const Case& k) {
    Data d;
    std::mt19937 rng(k.seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int n_seqs = int(k.seq_len.size()), width = k.D * k.n_kv;
    for (int len : k.seq_len) d.max_blocks = std::max(d.max_blocks, (len + k.bs - 1) / k.bs);
    d.max_blocks += 1;
    const int n_phys = n_seqs * d.max_blocks + 3;
    std::vector<int32_t> perm(static_cast<size_t>(n_phys));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    d.table.assign(size_t(n_seqs) * d.max_blocks, -1);
    int next = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < (k.seq_len[s] + k.bs - 1) / k.bs; b++) d.table[size_t(s) * d.max_blocks + b] = perm[next++];
    d.row_bytes = type_row_bytes(k.ct, width);
    const size_t n_rows = size_t(n_phys) * k.bs;
    // NaN everywhere first: f16 0x7E00 bytes, f32 NaN, q8_0 scale NaN.
    for (auto* c : {&d.kc, &d.vc}) {
        c->assign(n_rows * d.row_bytes, 0);
        std::vector<float> nan(static_cast<size_t>(width), kNaN), junk(static_cast<size_t>(width));
        for (size_t r = 0; r < n_rows; r++) encode_row(k.ct, nan.data(), width, c->data() + r * d.row_bytes, junk.data());
    }
    d.kv_ref[0].assign(n_rows * width, kNaN);
    d.kv_ref[1].assign(n_rows * width, kNaN);
    std::vector<float> x(static_cast<size_t>(width));
    for (int s = 0; s < n_seqs; s++)
        for (int p = 0; p < k.seq_len[s]; p++) {
            const size_t row = size_t(d.table[size_t(s) * d.max_blocks + p / k.bs]) * k.bs + p % k.bs;
            for (int i = 0; i < 2; i++) {
                for (float& v : x) v = u(rng);
                encode_row(k.ct, x.data(), width, (i ? d.vc : d.kc).data() + row * d.row_bytes,
                           d.kv_ref[i].data() + row * width);
            }
        }
    const int T = int(k.tok_seq.size());
    d.pos.assign(k.tok_pos.begin(), k.tok_pos.end());
    d.seq.assign(k.tok_seq.begin(), k.tok_seq.end());
    d.q.resize(size_t(T) * (k.n_head + 1) * k.D);
    for (float& v : d.q) v = 2.0f * u(rng);
    return d;
}

// The plain reference: out [T][n_head][D].
std::vector<double> reference(const Case& k, const Data& d) {
    const int T = int(k.tok_seq.size()), G = k.n_head / k.n_kv, width = k.D * k.n_kv;
    const double scale = k.scale > 0 ? k.scale : 1.0 / std::sqrt(double(k.D));
    std::vector<double> out(size_t(T) * k.n_head * k.D, 0.0);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < k.n_head; h++) {
            const int hk = h / G, last = d.pos[t], first = k.window > 0 ? std::max(0, last - k.window + 1) : 0;
            const float* qr = d.q.data() + (size_t(t) * (k.n_head + 1) + h) * k.D;
            std::vector<double> s;
            std::vector<size_t> rows;
            for (int p = first; p <= last; p++) {
                const size_t row = size_t(d.table[size_t(d.seq[t]) * d.max_blocks + p / k.bs]) * k.bs + p % k.bs;
                double dot = 0.0;
                for (int i = 0; i < k.D; i++) dot += double(round_f16(qr[i])) * d.kv_ref[0][row * width + hk * k.D + i];
                dot *= scale;
                if (k.softcap > 0) dot = k.softcap * std::tanh(dot / k.softcap);
                s.push_back(dot);
                rows.push_back(row);
            }
            const double mx = *std::max_element(s.begin(), s.end());
            double sum = 0.0;
            for (double& v : s) sum += (v = std::exp(v - mx));
            double* o = out.data() + (size_t(t) * k.n_head + h) * k.D;
            for (size_t j = 0; j < s.size(); j++)
                for (int i = 0; i < k.D; i++) o[i] += s[j] / sum * d.kv_ref[1][rows[j] * width + hk * k.D + i];
        }
    return out;
}

template <int CT, int D, int NS>
void launch(const Case& k, const Data& d, std::vector<float>& out, size_t out_nb1) {
    const int T = int(k.tok_seq.size()), G = k.n_head / k.n_kv;
    std::vector<float> partial(k.splits > 1 ? size_t(T) * k.n_head * k.splits * (D + 2) : 0, kNaN);
    dec::Args a{d.q.data(), size_t(D) * 4, size_t(k.n_head + 1) * D * 4, d.kc.data(), d.vc.data(), d.row_bytes,
                d.pos.data(), d.seq.data(), d.table.data(), d.max_blocks, k.bs, out.data(), out_nb1, k.n_head, k.n_kv,
                T, k.window, k.scale > 0 ? k.scale : 1.0f / std::sqrt(float(D)), k.softcap,
                k.splits > 1 ? partial.data() : nullptr};
    const Dim grid{k.n_kv * ((G + dec::kRows - 1) / dec::kRows), T, k.splits};
    Emu::launch(grid, dec::kThreads, dec::kSmemBytes<D, NS>, [&](Emu& c) { dec::attention_decode<CT, D, NS>(c, a); });
    if (k.splits > 1)
        Emu::launch(Dim{k.n_head, T, 1}, D, 0, [&](Emu& c) {
            dec::attention_combine(c, partial.data(), out.data(), out_nb1, k.n_head, D, k.splits);
        });
}

template <int D> void launch_d(const Case& k, const Data& d, std::vector<float>& out, size_t out_nb1) {
    if (k.ct == dec::kF32) return launch<dec::kF32, D, 1>(k, d, out, out_nb1);
    if (k.ct == dec::kQ8_0) return launch<dec::kQ8_0, D, 1>(k, d, out, out_nb1);
    switch (k.stages ? k.stages : dec::kMaxStages<D>) {
        case 1: return launch<dec::kF16, D, 1>(k, d, out, out_nb1);
        case 2: return launch<dec::kF16, D, 2>(k, d, out, out_nb1);
        case 3: return launch<dec::kF16, D, 3>(k, d, out, out_nb1);
        default: return launch<dec::kF16, D, dec::kMaxStages<D>>(k, d, out, out_nb1);
    }
}

// Runs the case through the kernel and compares every output with the reference. The kernel
// rounds P to f16 for the P V product (relative 2^-11 per weight), so outputs, weighted means of
// values in [-1, 1], differ by up to ~1.5e-4 here; 5e-4 leaves room and still catches a lost or
// doubled position.
void check(const Case& k) {
    const Data d = make_data(k);
    const int T = int(k.tok_seq.size()), row = k.n_head * k.D + 16;  // 16 floats of padding per output row
    std::vector<float> out(size_t(T) * row, kNaN);
    const size_t out_nb1 = size_t(row) * 4;
    if (k.D == 64) launch_d<64>(k, d, out, out_nb1);
    else if (k.D == 128) launch_d<128>(k, d, out, out_nb1);
    else launch_d<256>(k, d, out, out_nb1);
    const std::vector<double> ref = reference(k, d);
    double worst = 0.0;
    int bad = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < k.n_head * k.D; i++) {
            const double r = ref[size_t(t) * k.n_head * k.D + i], g = out[size_t(t) * row + i];
            const double err = std::fabs(g - r);
            if (!(err <= 5e-4)) {  // NaN fails too
                if (bad++ < 5) MESSAGE("token ", t, " head ", i / k.D, " dim ", i % k.D, ": ", g, " vs ", r);
            }
            if (err > worst || std::isnan(err)) worst = err;
        }
        for (int i = k.n_head * k.D; i < row; i++) CHECK(std::isnan(out[size_t(t) * row + i]));  // padding untouched
    }
    CAPTURE(worst);
    CHECK(bad == 0);
}

// One sequence of `len` positions, query tokens at its last `n_tok` positions.
Case one_seq(int len, int n_tok, int D = 128, int n_head = 8, int n_kv = 2) {
    Case k;
    k.D = D;
    k.n_head = n_head;
    k.n_kv = n_kv;
    k.seq_len = {len};
    for (int i = 0; i < n_tok; i++) {
        k.tok_seq.push_back(0);
        k.tok_pos.push_back(len - n_tok + i);
    }
    return k;
}

}  // namespace

TEST_CASE("decode attention: one token at block boundaries, with and without splits") {
    for (int len : {1, 7, 8, 9, 300})
        for (int splits : {1, 4}) {
            CAPTURE(len);
            CAPTURE(splits);
            Case k = one_seq(len, 1);
            k.splits = splits;
            k.seed = uint32_t(len * 10 + splits);
            check(k);
        }
}

TEST_CASE("decode attention: GQA groups 1, 3, 4, 8 and 24, one token and a run of three") {
    const int shapes[][2] = {{8, 8}, {6, 2}, {8, 2}, {8, 1}, {24, 1}};  // {n_head, n_kv}
    for (const auto& s : shapes)
        for (int n_tok : {1, 3}) {
            CAPTURE(s[0]);
            CAPTURE(s[1]);
            CAPTURE(n_tok);
            Case k = one_seq(40, n_tok, 64, s[0], s[1]);
            k.splits = 2;
            check(k);
        }
}

TEST_CASE("decode attention: several sequences through a shuffled block table") {
    for (int bs : {4, 8, 16})
        for (int splits : {1, 3}) {
            CAPTURE(bs);
            CAPTURE(splits);
            Case k;
            k.bs = bs;
            k.seq_len = {20, 75, 130};
            k.tok_seq = {2, 0, 1};
            k.tok_pos = {129, 19, 74};
            k.splits = splits;
            k.seed = uint32_t(bs + splits);
            check(k);
        }
}

TEST_CASE("decode attention: consecutive tokens of one sequence (verification), alone and in a mixed batch") {
    for (int splits : {1, 2}) {
        CAPTURE(splits);
        Case k = one_seq(100, 4);
        k.splits = splits;
        check(k);
        // Runs that do not start at multiples of the run length: A | B B B B B | C (R = 4).
        Case m;
        m.seq_len = {51, 65, 11};
        m.tok_seq = {0, 1, 1, 1, 1, 1, 2};
        m.tok_pos = {50, 60, 61, 62, 63, 64, 10};
        m.splits = splits;
        check(m);
    }
}

TEST_CASE("decode attention: a prompt chunk of 40 tokens (the kernel serves every batch size)") {
    for (int splits : {1, 2}) {
        CAPTURE(splits);
        Case k = one_seq(60, 40, 64);
        k.window = 25;
        k.splits = splits;
        check(k);
    }
}

TEST_CASE("decode attention: sliding window and softcap") {
    for (int splits : {1, 4}) {
        CAPTURE(splits);
        Case w = one_seq(300, 3);
        w.window = 50;
        w.splits = splits;
        check(w);
        Case s = one_seq(90, 2);
        s.scale = 1.0f;  // large scores, so the cap bites
        s.softcap = 5.0f;
        s.splits = splits;
        check(s);
    }
}

TEST_CASE("decode attention: head sizes 64, 128 and 256") {
    for (int D : {64, 128, 256}) {
        CAPTURE(D);
        Case k = one_seq(150, 4, D);
        k.splits = 2;
        check(k);
    }
}

TEST_CASE("decode attention: fewer pipeline stages (GPUs with less shared memory)") {
    for (int D : {128, 256})
        for (int stages : {1, 2}) {
            CAPTURE(D);
            CAPTURE(stages);
            Case k = one_seq(200, 3, D);
            k.stages = stages;
            k.splits = 2;
            check(k);
        }
}

TEST_CASE("decode attention: f32 and q8_0 caches") {
    for (int ct : {int(dec::kF32), int(dec::kQ8_0)})
        for (int D : {64, 128}) {
            CAPTURE(ct);
            CAPTURE(D);
            Case k = one_seq(200, 2, D);
            k.ct = ct;
            k.splits = 2;
            check(k);
        }
}

TEST_CASE("decode attention: the combine skips empty splits") {
    const int D = 64, n_head = 2, T = 2, splits = 3;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> partial(size_t(T) * n_head * splits * (D + 2));
    for (float& v : partial) v = u(rng);
    for (int r = 0; r < T * n_head; r++) {
        float* p = partial.data() + size_t(r) * splits * (D + 2);
        for (int s = 0; s < splits; s++) p[s * (D + 2) + 1] = 1.0f + std::fabs(p[s * (D + 2) + 1]);  // sums > 0
        const int empty = r % splits;  // one empty split per row, its outputs garbage
        p[empty * (D + 2)] = dec::kNegInf;
        for (int i = 0; i < D; i++) p[empty * (D + 2) + 2 + i] = kNaN;
    }
    std::vector<float> out(size_t(T) * n_head * D, kNaN);
    Emu::launch(Dim{n_head, T, 1}, D, 0, [&](Emu& c) {
        dec::attention_combine(c, partial.data(), out.data(), size_t(n_head) * D * 4, n_head, D, splits);
    });
    for (int r = 0; r < T * n_head; r++) {
        const float* p = partial.data() + size_t(r) * splits * (D + 2);
        double mx = -INFINITY;
        for (int s = 0; s < splits; s++) mx = std::max(mx, double(p[s * (D + 2)]));
        for (int i = 0; i < D; i++) {
            double num = 0.0, den = 0.0;
            for (int s = 0; s < splits; s++) {
                if (s == r % splits) continue;
                const double f = std::exp2(p[s * (D + 2)] - mx);
                den += p[s * (D + 2) + 1] * f;
                num += p[s * (D + 2) + 2 + i] * f;
            }
            CHECK(out[size_t(r) * D + i] == doctest::Approx(num / den).epsilon(1e-5));
        }
    }
}

TEST_CASE("decode attention: split count rule") {
    // Llama-3-8B on an H100 (2 blocks per SM): one token fills 264 blocks with 8 KV heads x 33.
    CHECK(dec::splits_for(32, 8, 1, 32768, 264) == 33);
    CHECK(dec::splits_for(32, 8, 4, 32768, 264) == 33);  // a verification run of 4 is one block per KV head
    CHECK(dec::splits_for(32, 8, 8, 32768, 264) == 17);
    CHECK(dec::splits_for(32, 8, 1, 1000, 264) == 8);    // splits of at least kMinChunk positions
    CHECK(dec::splits_for(32, 8, 512, 32768, 264) == 1); // a prompt fills the GPU by itself
    CHECK(dec::splits_for(4, 1, 1, 1 << 20, 100000) == dec::kMaxSplits);
}
