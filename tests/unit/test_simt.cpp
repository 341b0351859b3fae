// The host emulator of cuda/simt.cuh: shuffles, barriers, tensor-core fragments composed the way
// kernels compose them (ldmatrix into mma), asynchronous copies, and the errors it reports.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "simt_emulator.h"

using lumen::simt::Dim;
using lumen::simt::Emu;

namespace {

std::vector<float> random_halves(int n, uint32_t seed) {  // values exactly representable in f16
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> d(-64, 64);
    std::vector<float> v(n);
    for (float& x : v) x = float(d(rng)) / 16.0f;
    return v;
}

}  // namespace

TEST_CASE("simt emulator: warp shuffles and block barriers") {
    std::vector<float> out(2 * 64);
    Emu::launch(Dim{2, 1, 1}, 64, 64 * sizeof(float), [&](Emu& c) {
        float v = float(c.thread() + 100 * c.block().x);
        for (int o = 16; o > 0; o >>= 1) v += c.shfl_xor(v, o);  // warp sum
        float* s = reinterpret_cast<float*>(c.smem());
        s[c.thread()] = v;
        c.sync();
        out[c.block().x * 64 + c.thread()] = s[63 - c.thread()] + c.shfl(float(c.lane()), 3);
    });
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) {
            const int w = (63 - t) / 32;  // the warp whose sum thread t read
            const float sum = float(32 * 100 * b + (w * 32) * 32 + 31 * 32 / 2);
            CHECK(out[b * 64 + t] == sum + 3.0f);
        }
}

TEST_CASE("simt emulator: ldmatrix then mma f16 computes A x B") {
    // A 16x16 row-major and B stored n-major (B^T row-major, as K rows of an attention tile are),
    // loaded with ldmatrix x4 / x2 as a kernel does; and B stored k-major, loaded with .trans.
    const auto A = random_halves(16 * 16, 1), B = random_halves(16 * 8, 2);  // B[k][n] = B[k * 8 + n]
    std::vector<float> ref(16 * 8, 0.0f);
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++)
            for (int k = 0; k < 16; k++) ref[r * 8 + n] += A[r * 16 + k] * B[k * 8 + n];
    for (bool trans : {false, true}) {
        CAPTURE(trans);
        std::vector<float> out(16 * 8, -1.0f);
        Emu::launch(Dim{}, 32, 16 * 16 * 2 + 16 * 16 * 2, [&](Emu& c) {
            uint16_t* sa = reinterpret_cast<uint16_t*>(c.smem());
            uint16_t* sb = sa + 16 * 16;
            if (c.thread() == 0) {
                for (int i = 0; i < 256; i++) sa[i] = lumen::simt::f2h(A[i]);
                for (int k = 0; k < 16; k++)
                    for (int n = 0; n < 8; n++) {
                        if (trans) sb[k * 8 + n] = lumen::simt::f2h(B[k * 8 + n]);  // [k][n]
                        else sb[n * 16 + k] = lumen::simt::f2h(B[k * 8 + n]);      // [n][k]
                    }
            }
            c.sync();
            const int l = c.lane();
            // x4 over A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
            uint32_t a[4], b[2];
            c.ldmatrix_x4(a, sa + (l % 16) * 16 + (l / 16) * 8);
            if (trans) c.ldmatrix_x2_trans(b, sb + (l % 16) * 8);  // rows k 0-7 then 8-15
            else c.ldmatrix_x2(b, sb + (l % 8) * 16 + ((l / 8) % 2) * 8);
            float d[4] = {0, 0, 0, 0};
            c.mma_f16(d, a, b);
            const int g = l / 4, t = l % 4;
            out[g * 8 + 2 * t] = d[0];
            out[g * 8 + 2 * t + 1] = d[1];
            out[(g + 8) * 8 + 2 * t] = d[2];
            out[(g + 8) * 8 + 2 * t + 1] = d[3];
        });
        for (int i = 0; i < 16 * 8; i++) CHECK(out[i] == doctest::Approx(ref[i]).epsilon(1e-6));
    }
}

TEST_CASE("simt emulator: mma s8 computes A x B in int32") {
    std::mt19937 rng(3);
    std::uniform_int_distribution<int> d(-128, 127);
    int8_t A[16][32], B[32][8];
    for (auto& row : A) for (auto& x : row) x = int8_t(d(rng));
    for (auto& row : B) for (auto& x : row) x = int8_t(d(rng));
    std::vector<int> out(16 * 8);
    Emu::launch(Dim{}, 32, 0, [&](Emu& c) {
        const int g = c.lane() / 4, t = c.lane() % 4;
        auto pack = [](const int8_t* p, int stride) {
            uint32_t v = 0;
            for (int i = 0; i < 4; i++) v |= uint32_t(uint8_t(p[i * stride])) << (8 * i);
            return v;
        };
        const uint32_t a[4] = {pack(&A[g][4 * t], 1), pack(&A[g + 8][4 * t], 1), pack(&A[g][16 + 4 * t], 1),
                               pack(&A[g + 8][16 + 4 * t], 1)};
        const uint32_t b[2] = {pack(&B[4 * t][g], 8), pack(&B[16 + 4 * t][g], 8)};
        int acc[4] = {1, 2, 3, 4};
        c.mma_s8(acc, a, b);
        out[g * 8 + 2 * t] = acc[0] - 1;
        out[g * 8 + 2 * t + 1] = acc[1] - 2;
        out[(g + 8) * 8 + 2 * t] = acc[2] - 3;
        out[(g + 8) * 8 + 2 * t + 1] = acc[3] - 4;
    });
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            int s = 0;
            for (int k = 0; k < 32; k++) s += int(A[r][k]) * int(B[k][n]);
            CHECK(out[r * 8 + n] == s);
        }
}

TEST_CASE("simt emulator: cp.async lands at the wait, zero-filled when invalid") {
    alignas(16) uint32_t src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint32_t before = 0, after[8] = {};
    Emu::launch(Dim{}, 32, 32, [&](Emu& c) {
        uint32_t* s = reinterpret_cast<uint32_t*>(c.smem());
        if (c.thread() == 0) {
            s[0] = 0;
            c.cp_async16(s, src);
            c.cp_async_commit();
            c.cp_async16(s + 4, src + 4, false);
            c.cp_async_commit();
            before = s[0];
            lumen::simt::cp_async_wait<1>(c);  // the first group only
            after[0] = s[0];
            lumen::simt::cp_async_wait<0>(c);
            for (int i = 1; i < 8; i++) after[i] = s[i];
        }
    });
    CHECK(before == 0);
    for (int i = 0; i < 4; i++) CHECK(after[i] == src[i]);
    for (int i = 4; i < 8; i++) CHECK(after[i] == 0);
}

TEST_CASE("simt emulator: divergent warp ops and barriers are reported, not hung") {
    CHECK_THROWS_WITH_AS(Emu::launch(Dim{}, 64, 0,
                                     [](Emu& c) {
                                         if (c.thread() < 16) c.shfl_xor(1.0f, 1);
                                         else c.sync();
                                     }),
                         doctest::Contains("deadlock"), std::runtime_error);
    CHECK_THROWS_WITH_AS(Emu::launch(Dim{}, 32, 0,
                                     [](Emu& c) {
                                         if (c.lane() < 16) return;
                                         c.shfl_xor(1.0f, 1);
                                     }),
                         doctest::Contains("lanes of the warp exited"), std::runtime_error);
    CHECK_THROWS_WITH_AS(Emu::launch(Dim{}, 32, 0, [](Emu& c) { c.cp_async16(c.smem() + 1000, nullptr); }),
                         doctest::Contains("outside shared memory"), std::runtime_error);
}
