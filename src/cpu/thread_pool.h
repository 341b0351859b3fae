// A fixed set of worker threads that run one function together ("fork-join"): the caller is
// thread 0. Inside, threads synchronise with a spinning barrier, which costs well under a
// microsecond, so a whole graph can run in one dispatch with a barrier between ops.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lumen {

// The processor cores this process may run on, counting each physical core once (SMT siblings
// share one core's arithmetic units, so a second thread on a core rarely helps memory-bound work).
int physical_cores();

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    int size() const { return n_; }
    // Runs fn(ith, nth) on the first nth threads (nth <= 0 or > size(): all) and returns when all
    // are done.
    void run(const std::function<void(int ith, int nth)>& fn, int nth = 0);
    // Called by all nth threads inside run(): returns when every thread has arrived.
    void barrier();

private:
    void worker(int ith);
    int n_;
    std::vector<std::thread> threads_;
    const std::function<void(int, int)>* job_ = nullptr;
    std::mutex mu_;
    std::condition_variable cv_;
    std::atomic<uint64_t> generation_{0};  // bumped per run()
    std::atomic<int> running_{0};          // workers still inside the current job
    std::atomic<int> active_{0};           // threads taking part in the current job
    std::atomic<int> barrier_count_{0};
    std::atomic<uint64_t> barrier_phase_{0};
    bool stop_ = false;
};

}  // namespace lumen
