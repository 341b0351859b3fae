#include "cpu/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#define LUMEN_PAUSE() _mm_pause()
#else
#define LUMEN_PAUSE() ((void)0)
#endif

namespace lumen {

// Workers spin this many rounds for the next job before sleeping: decode steps follow each
// other closely, and waking a sleeping thread costs tens of microseconds.
static constexpr int kSpinRounds = 200000;

// Spins briefly, then gives the core away: when the machine is oversubscribed, a thread spinning
// for a descheduled partner would otherwise burn its whole time slice.
static inline void backoff(int& spins) {
    if (++spins < 2000) LUMEN_PAUSE();
    else std::this_thread::yield();
}

int physical_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    const int logical = int(std::max(1u, std::thread::hardware_concurrency()));
    if (sched_getaffinity(0, sizeof set, &set) != 0) return logical;
    std::set<std::pair<int, int>> cores;  // (package, core)
    int allowed = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        allowed++;
        const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
        std::ifstream pkg(dir + "physical_package_id"), core(dir + "core_id");
        int p = -1, k = -1;
        if (!(pkg >> p) || !(core >> k)) return allowed > 0 ? CPU_COUNT(&set) : logical;  // no topology: logical CPUs
        cores.insert({p, k});
    }
    return cores.empty() ? logical : int(cores.size());
}

ThreadPool::ThreadPool(int n_threads) : n_(n_threads < 1 ? 1 : n_threads) {
    for (int i = 1; i < n_; i++) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn, int nth) {
    if (nth <= 0 || nth > n_) nth = n_;
    if (nth == 1) {
        active_.store(1, std::memory_order_relaxed);
        fn(0, 1);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        job_ = &fn;
        active_.store(nth, std::memory_order_relaxed);
        running_.store(n_ - 1);
        generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0, nth);
    int spins = 0;
    while (running_.load(std::memory_order_acquire) != 0) backoff(spins);
}

void ThreadPool::worker(int ith) {
    uint64_t seen = 0;
    for (;;) {
        int spins = 0;
        while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinRounds) {
            LUMEN_PAUSE();
            spins++;
        }
        if (generation_.load(std::memory_order_acquire) == seen) {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return generation_.load() != seen; });
        }
        seen = generation_.load(std::memory_order_acquire);
        const std::function<void(int, int)>* job;
        int nth;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (stop_) return;
            job = job_;
            nth = active_.load(std::memory_order_relaxed);
        }
        if (ith < nth) (*job)(ith, nth);
        running_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::barrier() {
    const int nth = active_.load(std::memory_order_relaxed);
    if (n_ == 1 || nth == 1) return;
    uint64_t phase = barrier_phase_.load(std::memory_order_acquire);
    if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
        barrier_count_.store(0, std::memory_order_relaxed);
        barrier_phase_.fetch_add(1, std::memory_order_release);
        return;
    }
    int spins = 0;
    while (barrier_phase_.load(std::memory_order_acquire) == phase) backoff(spins);
}

}  // namespace lumen
