// The CPU thread pool: every thread of a job runs once, barriers hold all of them, a job may use
// fewer threads than the pool has (-t for generation below -tb for prompts), and the CPU backend's
// results do not depend on how many threads computed them.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"

using namespace lumen;

TEST_SUITE("thread_pool") {

TEST_CASE("physical_cores counts at least one core and no more than the logical CPUs") {
    const int n = physical_cores();
    CHECK(n >= 1);
    CHECK(n <= int(std::max(1u, std::thread::hardware_concurrency())));
}

TEST_CASE("a job on fewer threads than the pool: each of them once, barriers among them only") {
    ThreadPool pool(4);
    for (int nth : {1, 2, 3, 4, 0}) {
        const int expect = nth == 0 ? 4 : nth;
        std::vector<std::atomic<int>> runs(4);
        std::atomic<int> seen_nth{0}, before{0}, after_ok{1};
        pool.run(
            [&](int ith, int n) {
                runs[size_t(ith)]++;
                seen_nth = n;
                before++;
                pool.barrier();  // everyone must have counted before anyone reads
                if (before.load() != expect) after_ok = 0;
                pool.barrier();
            },
            nth);
        CAPTURE(nth);
        CHECK(seen_nth.load() == expect);
        CHECK(after_ok.load() == 1);
        for (int i = 0; i < 4; i++) CHECK(runs[size_t(i)].load() == (i < expect ? 1 : 0));
    }
}

}  // TEST_SUITE
