// Runs a kernel body written against cuda/simt.cuh on the host: every thread of a block is a fiber
// (ucontext) on one OS thread, switched at barriers, so block barriers, warp shuffles, tensor-core
// fragments (in the layouts the PTX ISA defines) and asynchronous copies behave as on the GPU and
// a kernel's results can be compared with the CPU's. Blocks run one after another.
//
// What it checks beyond the arithmetic: a warp-wide member called by only some lanes of a warp, or
// a sync() not reached by every thread, stops with "deadlock"; cp.async data lands only at the
// matching cp_async_wait, so a missing wait reads stale shared memory. What it does not: races
// between threads on shared memory without a sync() in between (fibers switch only at barriers).
#pragma once
#include <ucontext.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "simt.cuh"

// Under AddressSanitizer every switch between stacks is announced, so it keeps track of which stack
// is live (otherwise it may report errors that are not there).
#if defined(__SANITIZE_ADDRESS__)
#define LUMEN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LUMEN_EMU_ASAN 1
#endif
#endif
#ifdef LUMEN_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace lumen::simt {

namespace detail {
// swapcontext from `from` to `to`, whose stack is [bottom, bottom + size); fake: this side's fake
// stack, saved while away (nullptr when `from` never runs again).
inline void switch_stack(ucontext_t* from, ucontext_t* to, const void* bottom, size_t size, void** fake) {
#ifdef LUMEN_EMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
    swapcontext(from, to);
    __sanitizer_finish_switch_fiber(fake ? *fake : nullptr, nullptr, nullptr);
#else
    (void)bottom, (void)size, (void)fake;
    swapcontext(from, to);
#endif
}
}  // namespace detail

class Emu;

namespace detail {

struct Barrier {
    int expected = 0, arrived = 0;
    uint64_t generation = 0;
    // Returns true when this arrival completed the phase (the caller need not wait).
    bool arrive() {
        if (++arrived < expected) return false;
        arrived = 0;
        generation++;
        return true;
    }
    void drop() {  // a thread that has exited no longer takes part
        expected--;
        if (arrived > 0 && arrived >= expected) {
            arrived = 0;
            generation++;
        }
    }
};

struct Warp {
    Barrier bar;
    alignas(16) uint8_t slot[32][64];  // each lane's contribution to a warp-wide exchange
};

struct BlockState {
    Dim block, grid;
    int threads = 0;
    std::vector<char> smem;
    Barrier bar;
    std::vector<Warp> warps;
};

struct Copy {
    void* dst;
    const void* src;
    bool valid;
};

}  // namespace detail

// The context one emulated thread sees (the host twin of Gpu).
class Emu {
public:
    int thread() const { return t_; }
    int threads() const { return b_->threads; }
    int lane() const { return t_ & 31; }
    int warp() const { return t_ >> 5; }
    Dim block() const { return b_->block; }
    Dim grid() const { return b_->grid; }
    char* smem() const { return b_->smem.data(); }
    void sync() { wait(b_->bar); }
    void sync_warp() { wait(warp_state().bar); }
    int atomic_add(int* p, int v) {  // fibers switch only at barriers: a plain add is atomic
        const int old = *p;
        *p += v;
        return old;
    }

    template <class T> T shfl_xor(T v, int mask) { return exchange(v, lane() ^ mask); }
    template <class T> T shfl(T v, int src) { return exchange(v, src & 31); }

    void mma_f16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
        auto& w = warp_state();
        std::memcpy(w.slot[lane()], a, 16);
        std::memcpy(w.slot[lane()] + 16, b, 8);
        wait(w.bar);
        auto A = [&](int r, int k) {  // the element of A at row r, column k, from the lane holding it
            const int g = r % 8, t = (k % 8) / 2, reg = (r / 8) + 2 * (k / 8);
            uint32_t v;
            std::memcpy(&v, w.slot[4 * g + t] + 4 * reg, 4);
            return k % 2 ? h2_hi(v) : h2_lo(v);
        };
        auto B = [&](int k, int n) {
            const int t = (k % 8) / 2, reg = k / 8;
            uint32_t v;
            std::memcpy(&v, w.slot[4 * n + t] + 16 + 4 * reg, 4);
            return k % 2 ? h2_hi(v) : h2_lo(v);
        };
        const int g = lane() / 4, t = lane() % 4;
        for (int i = 0; i < 4; i++) {
            const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
            float s = d[i];
            for (int k = 0; k < 16; k++) s += A(r, k) * B(k, n);
            d[i] = s;
        }
        wait(w.bar);
    }

    void mma_s8(int d[4], const uint32_t a[4], const uint32_t b[2]) {
        auto& w = warp_state();
        std::memcpy(w.slot[lane()], a, 16);
        std::memcpy(w.slot[lane()] + 16, b, 8);
        wait(w.bar);
        auto A = [&](int r, int k) {
            const int g = r % 8, t = (k % 16) / 4, reg = (r / 8) + 2 * (k / 16);
            return int(int8_t(w.slot[4 * g + t][4 * reg + k % 4]));
        };
        auto B = [&](int k, int n) {
            const int t = (k % 16) / 4, reg = k / 16;
            return int(int8_t(w.slot[4 * n + t][16 + 4 * reg + k % 4]));
        };
        const int g = lane() / 4, t = lane() % 4;
        for (int i = 0; i < 4; i++) {
            const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
            int s = d[i];
            for (int k = 0; k < 32; k++) s += A(r, k) * B(k, n);
            d[i] = s;
        }
        wait(w.bar);
    }

    void ldmatrix_x4(uint32_t r[4], const void* row) { ldmatrix(r, 4, row, false); }
    void ldmatrix_x4_trans(uint32_t r[4], const void* row) { ldmatrix(r, 4, row, true); }
    void ldmatrix_x2(uint32_t r[2], const void* row) { ldmatrix(r, 2, row, false); }
    void ldmatrix_x2_trans(uint32_t r[2], const void* row) { ldmatrix(r, 2, row, true); }

    void cp_async16(void* dst, const void* src, bool valid = true) {
        check_smem(dst, 16, "cp_async16 destination");
        pending_.push_back({dst, src, valid});
    }
    void cp_async_commit() {
        groups_.push_back(std::move(pending_));
        pending_.clear();
    }
    // cp_async_wait<N>(c): the copies land here, not before: a body that reads them without waiting sees old data.
    template <int N> void wait_group() {
        while (int(groups_.size()) > N) {
            for (const detail::Copy& c : groups_.front()) {
                if (c.valid) std::memcpy(c.dst, c.src, 16);
                else std::memset(c.dst, 0, 16);
            }
            groups_.erase(groups_.begin());
        }
    }

    // Runs `body` once per thread of every block of `grid`, `threads` threads per block, with
    // `smem_bytes` of shared memory (filled with a pattern, as the GPU's is not zeroed).
    static void launch(Dim grid, int threads, size_t smem_bytes, const std::function<void(Emu&)>& body);

private:
    int t_ = 0;
    detail::BlockState* b_ = nullptr;
    std::vector<detail::Copy> pending_;
    std::vector<std::vector<detail::Copy>> groups_;
    ucontext_t ctx_{};
    detail::Barrier* waiting_ = nullptr;
    uint64_t waiting_gen_ = 0;
    bool done_ = false;
    const std::function<void(Emu&)>* body_ = nullptr;
    ucontext_t* scheduler_ = nullptr;
    std::string error_;

    void wait(detail::Barrier& bar) {
        const uint64_t gen = bar.generation;
        if (bar.arrive()) return;
        waiting_ = &bar;
        waiting_gen_ = gen;
        to_scheduler(false);  // back when the phase completed
        waiting_ = nullptr;
    }
    bool runnable() const { return !done_ && (!waiting_ || waiting_->generation != waiting_gen_); }

    template <class T> T exchange(T v, int src) {
        static_assert(sizeof(T) <= 64);
        auto& w = warp_state();
        std::memcpy(w.slot[lane()], &v, sizeof(T));
        wait(w.bar);
        T r;
        std::memcpy(&r, w.slot[src], sizeof(T));
        wait(w.bar);
        return r;
    }

    // The warp's exchange area, for a warp-wide op: every lane must still be running.
    detail::Warp& warp_state() {
        detail::Warp& w = b_->warps[warp()];
        if (w.bar.expected != 32) throw std::runtime_error("warp-wide op after some lanes of the warp exited");
        return w;
    }

    void check_smem(const void* p, size_t n, const char* what) const {
        const char* c = static_cast<const char*>(p);
        if (c < b_->smem.data() || c + n > b_->smem.data() + b_->smem.size())
            throw std::runtime_error(std::string(what) + " outside shared memory");
        if (reinterpret_cast<uintptr_t>(c) % 16 != 0 && n == 16)
            throw std::runtime_error(std::string(what) + " not 16-byte aligned");
    }

    void ldmatrix(uint32_t* r, int n, const void* row, bool trans) {
        check_smem(row, 16, "ldmatrix row address");
        auto& w = warp_state();
        std::memcpy(w.slot[lane()], &row, sizeof(row));
        wait(w.bar);
        auto at = [&](int m, int rr, int c) {  // element (rr, c) of matrix m
            const uint8_t* p;
            std::memcpy(&p, w.slot[8 * m + rr], sizeof(p));
            uint16_t h;
            std::memcpy(&h, p + 2 * c, 2);
            return uint32_t(h);
        };
        const int i = lane();
        for (int m = 0; m < n; m++) {
            if (trans) r[m] = at(m, 2 * (i % 4), i / 4) | (at(m, 2 * (i % 4) + 1, i / 4) << 16);
            else r[m] = at(m, i / 4, 2 * (i % 4)) | (at(m, i / 4, 2 * (i % 4) + 1) << 16);
        }
        wait(w.bar);
    }

    static void entry();
    static inline Emu* current_ = nullptr;
    // The scheduler's stack (for the sanitizer), learnt when a fiber first starts.
    static inline const void* sched_bottom_ = nullptr;
    static inline size_t sched_size_ = 0;
    void* fake_ = nullptr;
    void to_scheduler(bool exiting) {
        detail::switch_stack(&ctx_, scheduler_, sched_bottom_, sched_size_, exiting ? nullptr : &fake_);
    }
};

inline void Emu::entry() {
    Emu* e = current_;
#ifdef LUMEN_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom_, &sched_size_);
#endif
    try {
        (*e->body_)(*e);
    } catch (const std::exception& ex) {
        e->error_ = ex.what();
    }
    e->done_ = true;
    e->b_->bar.drop();
    e->b_->warps[e->warp()].bar.drop();
    e->to_scheduler(true);
}

inline void Emu::launch(Dim grid, int threads, size_t smem_bytes, const std::function<void(Emu&)>& body) {
    if (threads <= 0 || threads % 32 != 0 || threads > 1024)
        throw std::runtime_error("emulated launch: threads per block must be a multiple of 32 up to 1024");
    // One stack per thread, reused by every block; left uninitialised so untouched pages cost nothing.
    constexpr size_t kStack = 256 * 1024;
    std::unique_ptr<char[]> stacks(new char[kStack * size_t(threads)]);
    for (int z = 0; z < grid.z; z++)
        for (int y = 0; y < grid.y; y++)
            for (int x = 0; x < grid.x; x++) {
                detail::BlockState bs;
                bs.block = {x, y, z};
                bs.grid = grid;
                bs.threads = threads;
                bs.smem.assign(smem_bytes + 16, char(0x5A));
                bs.bar.expected = threads;
                bs.warps.resize(threads / 32);
                for (auto& w : bs.warps) w.bar.expected = 32;
                std::vector<Emu> emus(threads);
                ucontext_t sched{};
                for (int t = 0; t < threads; t++) {
                    Emu& e = emus[t];
                    e.t_ = t;
                    e.b_ = &bs;
                    e.body_ = &body;
                    e.scheduler_ = &sched;
                    getcontext(&e.ctx_);
                    e.ctx_.uc_stack.ss_sp = stacks.get() + kStack * size_t(t);
                    e.ctx_.uc_stack.ss_size = kStack;
                    e.ctx_.uc_link = nullptr;
                    makecontext(&e.ctx_, &Emu::entry, 0);
                }
                // Round robin over the runnable fibers until all are done.
                for (;;) {
                    bool any = false, all_done = true;
                    for (int t = 0; t < threads; t++) {
                        Emu& e = emus[t];
                        if (e.done_) continue;
                        all_done = false;
                        if (!e.runnable()) continue;
                        any = true;
                        current_ = &e;
                        void* fake = nullptr;
                        detail::switch_stack(&sched, &e.ctx_, e.ctx_.uc_stack.ss_sp, kStack, &fake);
                        if (!e.error_.empty())
                            throw std::runtime_error("emulated kernel, block (" + std::to_string(x) + "," +
                                                     std::to_string(y) + "," + std::to_string(z) + ") thread " +
                                                     std::to_string(t) + ": " + e.error_);
                    }
                    if (all_done) break;
                    if (!any)
                        throw std::runtime_error("emulated kernel deadlock in block (" + std::to_string(x) + "," +
                                                 std::to_string(y) + "," + std::to_string(z) +
                                                 "): a barrier or warp-wide op not reached by every thread");
                }
            }
}

}  // namespace lumen::simt
