// llama.cpp's KL-divergence workflow: the logits file (compression, write and read, damaged files)
// and the statistics (KLD, PPLs, Δp, same top, the entropy gap) against values worked out by hand.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/kl_divergence.h"
#include "engine/logits_file.h"
#include "util/error.h"

using namespace lumen;

namespace {

std::string temp_path(const std::string& stem) {
    return "/tmp/lumen-test-kld-" + std::to_string(getpid()) + "-" + stem;
}

std::vector<float> random_logits(size_t n, float spread, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, spread);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

// The exact log-softmax in double.
std::vector<double> log_softmax(const float* x, int n) {
    double mx = x[0];
    for (int i = 1; i < n; i++) mx = std::max(mx, double(x[i]));
    double sum = 0;
    for (int i = 0; i < n; i++) sum += std::exp(double(x[i]) - mx);
    std::vector<double> out(size_t(n), 0.0);
    for (int i = 0; i < n; i++) out[size_t(i)] = double(x[i]) - mx - std::log(sum);
    return out;
}

std::vector<char> slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

// A small file: 2 chunks of 8 tokens over an odd vocabulary of 5 (so rows carry the padding).
struct SmallFile {
    static constexpr int n_ctx = 8, n_vocab = 5, n_chunk = 2;
    std::string path = temp_path("small.kld");
    std::vector<int32_t> tokens;
    std::vector<float> logits;  // per chunk: scored_per_chunk rows of n_vocab
    SmallFile() {
        for (int i = 0; i < n_ctx * n_chunk; i++) tokens.push_back((i * 3) % n_vocab);
        logits = random_logits(size_t(n_chunk) * scored_per_chunk(n_ctx) * n_vocab, 3.f, 1);
        LogitsFileWriter w(path, n_ctx, n_vocab, n_chunk, tokens.data());
        for (int c = 0; c < n_chunk; c++) w.write_chunk(logits.data() + size_t(c) * scored_per_chunk(n_ctx) * n_vocab);
        w.close();
    }
    ~SmallFile() { std::remove(path.c_str()); }
};

}  // namespace

TEST_CASE("kl divergence: row layout and scored positions are llama.cpp's") {
    CHECK(logits_row_width(5) == 10);  // 4 for two floats, 5 rounded up to 6
    CHECK(logits_row_width(49152) == 49156);
    CHECK(scored_first(512) == 256);
    CHECK(scored_per_chunk(512) == 255);
    CHECK(scored_per_chunk(128) == 63);
}

TEST_CASE("kl divergence: compression stays within half a step of the exact log-probabilities") {
    const int V = 1001;
    for (float spread : {0.5f, 3.f, 10.f}) {
        CAPTURE(spread);
        std::vector<float> x = random_logits(V, spread, 7);
        std::vector<uint16_t> row(size_t(logits_row_width(V)), 0xffff);
        compress_log_probs(x.data(), V, row.data());
        const float scale = row_scale(row.data()), lo = row_min_log_prob(row.data());
        CHECK(scale > 0);
        CHECK(scale <= 16.f / 65535.f * 1.0001f);
        CHECK(row.back() == 0);  // the padding of an odd vocabulary
        std::vector<double> exact = log_softmax(x.data(), V);
        const double top = *std::max_element(exact.begin(), exact.end());
        for (int i = 0; i < V; i++) {
            const double stored = stored_log_prob(row.data(), scale, lo, i);
            if (exact[size_t(i)] > top - 16 + 1e-4) {
                CHECK(std::fabs(stored - exact[size_t(i)]) <= 0.5 * scale + 2e-5);
            } else {
                // Below the kept range everything is stored as its floor, never below the truth.
                CHECK(stored == doctest::Approx(lo));
                CHECK(stored >= exact[size_t(i)] - 2e-5);
            }
        }
    }
    // A flat row: scale 0, every entry ln(1/V).
    std::vector<float> flat(16, 2.5f);
    std::vector<uint16_t> row(size_t(logits_row_width(16)));
    compress_log_probs(flat.data(), 16, row.data());
    CHECK(row_scale(row.data()) == 0.f);
    CHECK(stored_log_prob(row.data(), 0.f, row_min_log_prob(row.data()), 3) == doctest::Approx(-std::log(16.0)));
}

TEST_CASE("kl divergence: a written file reads back byte for byte") {
    SmallFile f;
    const int width = logits_row_width(f.n_vocab), rows = scored_per_chunk(f.n_ctx);
    // The exact length: header, tokens, then the rows.
    CHECK(slurp(f.path).size() == size_t(20 + f.n_chunk * f.n_ctx * 4 + f.n_chunk * rows * width * 2));
    LogitsFileReader r(f.path);
    CHECK(r.header().n_ctx == f.n_ctx);
    CHECK(r.header().n_vocab == f.n_vocab);
    CHECK(r.header().n_chunk == f.n_chunk);
    CHECK(r.header().tokens == f.tokens);
    for (int c = 0; c < f.n_chunk; c++) {
        const std::vector<uint16_t>& got = r.read_chunk();
        REQUIRE(got.size() == size_t(rows * width));
        std::vector<uint16_t> want(static_cast<size_t>(width));
        for (int j = 0; j < rows; j++) {
            compress_log_probs(f.logits.data() + size_t(c * rows + j) * f.n_vocab, f.n_vocab, want.data());
            CHECK(std::memcmp(got.data() + size_t(j) * width, want.data(), size_t(width) * 2) == 0);
        }
    }
    CHECK_THROWS_WITH_AS(r.read_chunk(), doctest::Contains("no chunk 3"), Error);
}

TEST_CASE("kl divergence: damaged files are errors naming the file and what is wrong") {
    SmallFile f;
    const std::vector<char> good = slurp(f.path);
    const std::string bad = temp_path("bad.kld"), named = bad + ": ";
    auto expect = [&](std::vector<char> bytes, const char* what) {
        CAPTURE(what);
        spit(bad, bytes);
        CHECK_THROWS_WITH_AS(LogitsFileReader{bad}, doctest::Contains(named.c_str()), Error);
        CHECK_THROWS_WITH_AS(LogitsFileReader{bad}, doctest::Contains(what), Error);
    };
    expect(std::vector<char>(good.begin(), good.end() - 1), "(truncated)");
    expect(std::vector<char>(good.begin(), good.begin() + 30), "(truncated)");
    expect(std::vector<char>(good.begin(), good.begin() + 10), "too short for the header");
    std::vector<char> longer = good;
    longer.push_back(0);
    expect(longer, "(trailing bytes)");
    std::vector<char> magic = good;
    magic[1] = 'L';
    expect(magic, "_logits_");
    std::vector<char> vocab = good;
    const int32_t minus = -3;
    std::memcpy(vocab.data() + 12, &minus, 4);
    expect(vocab, "n_vocab -3");
    std::vector<char> token = good;
    const int32_t big = 99;
    std::memcpy(token.data() + 20 + 4 * 5, &big, 4);
    expect(token, "token 5 is 99");
    CHECK_THROWS_WITH_AS(LogitsFileReader{temp_path("missing.kld")}, doctest::Contains("cannot open"), Error);

    // A row whose scale is no scale: found when its chunk is read.
    std::vector<char> row = good;
    const float nan = std::nanf("");
    const size_t second_row = 20 + size_t(f.n_chunk * f.n_ctx * 4) + size_t(logits_row_width(f.n_vocab)) * 2;
    std::memcpy(row.data() + second_row, &nan, 4);
    spit(bad, row);
    LogitsFileReader r(bad);
    CHECK_THROWS_WITH_AS(r.read_chunk(), doctest::Contains("chunk 1, position 5"), Error);
    std::remove(bad.c_str());
}

TEST_CASE("kl divergence: a model against its own stored rows") {
    const int V = 300;
    KldStats stats(V);
    std::vector<uint16_t> row(size_t(logits_row_width(V)));
    for (int k = 0; k < 120; k++) {
        std::vector<float> x = random_logits(V, 2.f + 0.05f * float(k), uint32_t(100 + k));
        compress_log_probs(x.data(), V, row.data());
        // A next token inside the stored range (below it the base keeps only the floor).
        const float top = *std::max_element(x.begin(), x.end());
        std::vector<int> kept;
        for (int i = 0; i < V; i++)
            if (x[size_t(i)] > top - 10) kept.push_back(i);
        stats.add(x.data(), row.data(), kept[size_t(k) % kept.size()]);
    }
    KldReport r = stats.report();
    CHECK(r.count == 120);
    CHECK(std::fabs(r.kld.value) < 1e-4);
    CHECK(std::fabs(r.kld_max) < 1e-3);
    CHECK(r.same_top.value == 1.0);
    CHECK(r.same_top.error == 0.0);
    CHECK(r.ppl.value == doctest::Approx(r.ppl_base.value).epsilon(1e-4));
    CHECK(std::fabs(r.log_ppl_ratio.value) < 1e-4);
    CHECK(r.log_ppl_cor > 0.999);
    CHECK(r.p_diff_rms.value < 1e-4);
    const std::string text = format_kld_report(r);
    CHECK(text.find("Mean    KLD:") != std::string::npos);
    CHECK(text.find("99.9%   KLD:") != std::string::npos);
    CHECK(text.find(" 0.1%   Δp:") != std::string::npos);
    CHECK(text.find("Same top p: 100.000 ± 0.000 %") != std::string::npos);
    CHECK(text.find("Mean ln(vocab) - entropy(base):") != std::string::npos);
}

TEST_CASE("kl divergence: a known pair gives the analytic KLD, PPLs, Δp and entropy gap") {
    // Base p = softmax(b), model q = softmax(x), next token 2; every ln p_base above -16.
    const int V = 4;
    const float b[V] = {2.f, 1.f, 0.f, -1.f}, x[V] = {0.f, 1.f, 2.f, 0.5f};
    std::vector<uint16_t> row(size_t(logits_row_width(V)));
    compress_log_probs(b, V, row.data());
    const std::vector<double> lp = log_softmax(b, V), lq = log_softmax(x, V);
    double kld = 0, entropy = 0;
    for (int i = 0; i < V; i++) {
        kld += std::exp(lp[size_t(i)]) * (lp[size_t(i)] - lq[size_t(i)]);
        entropy -= std::exp(lp[size_t(i)]) * lp[size_t(i)];
    }
    KldStats stats(V);
    for (int k = 0; k < 20; k++) stats.add(x, row.data(), 2);
    KldReport r = stats.report();
    // The stored rows are rounded by at most half a step of 3/65535 nats.
    CHECK(r.kld.value == doctest::Approx(kld).epsilon(1e-4));
    CHECK(r.kld.error == doctest::Approx(0.0).epsilon(1e-6));
    CHECK(r.kld_median == doctest::Approx(kld).epsilon(1e-4));
    CHECK(r.ppl.value == doctest::Approx(std::exp(-lq[2])).epsilon(1e-5));
    CHECK(r.ppl_base.value == doctest::Approx(std::exp(-lp[2])).epsilon(1e-4));
    CHECK(r.log_ppl_ratio.value == doctest::Approx(lp[2] - lq[2]).epsilon(1e-4));
    CHECK(r.p_diff.value == doctest::Approx(std::exp(lq[2]) - std::exp(lp[2])).epsilon(1e-4));
    CHECK(r.p_diff_rms.value == doctest::Approx(std::fabs(std::exp(lq[2]) - std::exp(lp[2]))).epsilon(1e-4));
    CHECK(r.same_top.value == 0.0);  // the base's top is token 0, the model's token 2
    CHECK(r.entropy_gap.value == doctest::Approx(std::log(4.0) - entropy).epsilon(1e-4));

    // A uniform base is 0 nats from uniform.
    const float flat[V] = {1.f, 1.f, 1.f, 1.f};
    compress_log_probs(flat, V, row.data());
    KldStats uniform(V);
    uniform.add(x, row.data(), 0);
    CHECK(std::fabs(uniform.report().entropy_gap.value) < 1e-6);
}

TEST_CASE("kl divergence: percentiles and medians interpolate as llama.cpp's") {
    // KLD values 0, 1, ..., 100 (in some order): the p-th percentile is 100 p, the median 50.
    const int V = 2;
    KldStats stats(V);
    std::vector<uint16_t> row(size_t(logits_row_width(V)));
    const float base[V] = {0.f, -8.f};
    compress_log_probs(base, V, row.data());
    const std::vector<double> lp = log_softmax(base, V);
    for (int k = 0; k <= 100; k++) {
        // Solve for model logits whose KLD from the base is k/1000: vary token 1's logit.
        const double target = (k * 37 % 101) / 1000.0;
        double lo = -8, hi = 30;
        for (int it = 0; it < 200; it++) {
            const double mid = 0.5 * (lo + hi);
            const float xm[V] = {0.f, float(mid)};
            std::vector<double> lq = log_softmax(xm, V);
            const double kl = std::exp(lp[0]) * (lp[0] - lq[0]) + std::exp(lp[1]) * (lp[1] - lq[1]);
            (kl < target ? lo : hi) = mid;
        }
        const float xk[V] = {0.f, float(lo)};
        stats.add(xk, row.data(), 0);
    }
    KldReport r = stats.report();
    auto near = [](double got, double want) { return std::fabs(got - want) < 2e-4; };
    CHECK(near(r.kld_min, 0.0));
    CHECK(near(r.kld_max, 0.1));
    CHECK(near(r.kld_median, 0.05));
    REQUIRE(r.kld_percentiles.size() == 8);
    CHECK(r.kld_percentiles[0].first == doctest::Approx(0.999));
    CHECK(near(r.kld_percentiles[0].second, 0.0999));
    CHECK(near(r.kld_percentiles[1].second, 0.099));
    CHECK(near(r.kld_percentiles[5].second, 0.005));
    CHECK(near(r.kld_percentiles[7].second, 0.0001));
}
