// read-bandwidth: how fast this machine's cores can stream memory, the limit token generation on
// the CPU runs against (every weight is read once per token). Sums a buffer far larger than the
// caches with T threads, each over its own slice, and prints the best of several passes.
//
//   build/read-bandwidth [-t THREADS] [-s GiB] [-r PASSES]      (defaults: all cores, 2 GiB, 5)
//
// BENCHMARKS.md gives each generation figure as a share of this number.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// The sum of n bytes as 64-bit lanes (so the loads cannot be optimised away), 4 registers deep so
// the adds never wait on each other.
uint64_t sum_slice(const uint8_t* p, size_t n) {
#if defined(__AVX2__)
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (size_t i = 0; i + 128 <= n; i += 128)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_add_epi64(acc[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32 * k)));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]),
                                                                           _mm256_add_epi64(acc[2], acc[3])));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
#else
    uint64_t s = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        s += v;
    }
    return s;
#endif
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "read-bandwidth: error: %s\nusage: read-bandwidth [-t THREADS] [-s GiB] [-r PASSES]\n", why);
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    int threads = int(std::max(1u, std::thread::hardware_concurrency())), passes = 5;
    double gib = 2;
    for (int i = 1; i < argc; i++) {
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!std::strcmp(argv[i], "-t") && v) threads = std::atoi(v);
        else if (!std::strcmp(argv[i], "-s") && v) gib = std::atof(v);
        else if (!std::strcmp(argv[i], "-r") && v) passes = std::atoi(v);
        else usage((std::string("unknown or incomplete flag ") + argv[i]).c_str());
        i++;
    }
    if (threads < 1 || threads > 1024) usage("-t must be 1..1024");
    if (!(gib > 0 && gib <= 64)) usage("-s must be more than 0 and at most 64 (GiB)");
    if (passes < 1) usage("-r must be at least 1");

    const size_t bytes = size_t(gib * double(1ull << 30)) / (128 * size_t(threads)) * 128 * size_t(threads);
    auto* buf = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
    if (!buf) usage("not enough memory for the buffer (use a smaller -s)");
    const size_t slice = bytes / size_t(threads);
    // Each thread touches its own slice first, so on a multi-socket machine the pages sit near it.
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++)
        pool.emplace_back([=] { std::memset(buf + slice * size_t(t), t + 1, slice); });
    for (auto& th : pool) th.join();

    double best = 0;
    uint64_t check = 0;
    for (int r = 0; r < passes; r++) {
        std::vector<uint64_t> sums(static_cast<size_t>(threads), 0);
        pool.clear();
        const auto t0 = std::chrono::steady_clock::now();
        for (int t = 0; t < threads; t++)
            pool.emplace_back([&, t] { sums[size_t(t)] = sum_slice(buf + slice * size_t(t), slice); });
        for (auto& th : pool) th.join();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, double(bytes) / s / 1e9);
        for (uint64_t v : sums) check += v;
    }
    std::printf("read bandwidth: %.1f GB/s (%d threads, %.2f GiB buffer, best of %d passes; checksum %llu)\n", best,
                threads, double(bytes) / double(1ull << 30), passes, static_cast<unsigned long long>(check % 1000));
    std::free(buf);
    return 0;
}
