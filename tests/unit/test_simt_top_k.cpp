// The CUDA top-k body (cuda/top_k.cuh) on the host emulator against a plain sort: the same indices in
// the same order, ties at the threshold resolved to the lower indices.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "simt_emulator.h"
#include "top_k.cuh"

using namespace lumen::simt;

namespace {

std::vector<int32_t> emulated(const std::vector<float>& x, int n, int rows, int k) {
    std::vector<int32_t> out(size_t(rows) * 2 * k, -7);
    Emu::launch(Dim{rows, 1, 1}, kTopKThreads, sizeof(TopKShared), [&](Emu& c) {
        top_k_row(c, x.data() + size_t(c.block().x) * n, n, k, out.data() + size_t(c.block().x) * 2 * k);
    });
    return out;
}

void check_row(const float* x, int n, int k, const int32_t* got) {
    std::vector<int32_t> idx(size_t(n), 0);
    for (int i = 0; i < n; i++) idx[size_t(i)] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
    for (int j = 0; j < k; j++) {
        CAPTURE(j);
        CHECK(got[j] == idx[size_t(j)]);
        float v;
        std::memcpy(&v, &got[k + j], 4);
        CHECK(v == x[idx[size_t(j)]]);
    }
}

}  // namespace

TEST_CASE("simt top_k: random logits, several k, two rows") {
    std::mt19937 rng(11);
    std::normal_distribution<float> d(0.0f, 3.0f);
    for (int n : {300, 20000}) {
        std::vector<float> x(size_t(n) * 2);
        for (float& v : x) v = d(rng);
        for (int k : {1, 40, 256}) {
            CAPTURE(n);
            CAPTURE(k);
            const auto out = emulated(x, n, 2, k);
            for (int r = 0; r < 2; r++) check_row(x.data() + size_t(r) * n, n, k, out.data() + size_t(r) * 2 * k);
        }
    }
}

TEST_CASE("simt top_k: ties at the threshold, -inf and all-equal rows") {
    const int n = 5000;
    std::vector<float> x(size_t(n) * 3);
    std::mt19937 rng(5);
    for (int i = 0; i < n; i++) x[size_t(i)] = float(int(rng() % 7)) - 3.0f;  // row 0: 7 distinct values
    for (int i = 0; i < n; i++)  // row 1: mostly -inf (a masked vocabulary), a few finite
        x[size_t(n + i)] = i % 997 == 3 ? float(i % 5) : -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n; i++) x[size_t(2 * n + i)] = 0.25f;  // row 2: all equal
    for (int k : {1, 9, 64}) {
        CAPTURE(k);
        const auto out = emulated(x, n, 3, k);
        for (int r = 0; r < 3; r++) {
            CAPTURE(r);
            check_row(x.data() + size_t(r) * n, n, k, out.data() + size_t(r) * 2 * k);
        }
    }
}
