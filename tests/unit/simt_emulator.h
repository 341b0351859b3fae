// Runs a kernel body written against cuda/simt.cuh on the host: every thread of a block is a fiber
// on one OS thread, switched at barriers, so block barriers, warp shuffles, tensor-core
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

// A fiber's saved state. On x86-64 a switch is a few instructions (lumen_fiber_switch below: the
// callee-saved registers and the FPU control words pushed on the old stack, the stack pointer
// swapped); elsewhere ucontext's swapcontext, which also makes a system call per switch to save the
// signal mask, so it is many times slower.
#if defined(__x86_64__) && defined(__linux__)
#define LUMEN_EMU_FAST_SWITCH 1
extern "C" void lumen_fiber_switch(void** save_sp, void* load_sp);
// Weak: every file that includes this header defines it, the linker keeps one.
asm(R"(
    .text
    .weak lumen_fiber_switch
    .type lumen_fiber_switch, @function
lumen_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lumen_fiber_switch, .-lumen_fiber_switch
)");
struct Context {
    void* sp = nullptr;
};
// Makes `c` start entry() on the stack [stack, stack + size) when first switched to: a frame as
// lumen_fiber_switch leaves it, returning into entry with the stack aligned as after a call.
inline void start_context(Context& c, char* stack, size_t size, void (*entry)()) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
    uint64_t* f = reinterpret_cast<uint64_t*>(top - 72);
    f[0] = 0x1F80 | (uint64_t(0x037F) << 32);  // MXCSR and the x87 control word at their defaults
    for (int i = 1; i <= 6; i++) f[i] = 0;      // r15 r14 r13 r12 rbx rbp
    f[7] = reinterpret_cast<uint64_t>(entry);   // returned into; the stack is then top - 8
    f[8] = 0;                                   // entry's own return address: none
    c.sp = f;
}
inline void raw_switch(Context* from, Context* to) { lumen_fiber_switch(&from->sp, to->sp); }
#else
struct Context {
    ucontext_t uc{};
};
inline void start_context(Context& c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void raw_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
#endif

// Switches from `from` to `to`, whose stack is [bottom, bottom + size); fake: this side's fake
// stack, saved while away (nullptr when `from` never runs again).
inline void switch_stack(Context* from, Context* to, const void* bottom, size_t size, void** fake) {
#ifdef LUMEN_EMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
    raw_switch(from, to);
    __sanitizer_finish_switch_fiber(fake ? *fake : nullptr, nullptr, nullptr);
#else
    (void)bottom, (void)size, (void)fake;
    raw_switch(from, to);
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
    detail::Context ctx_;
    char* stack_ = nullptr;
    detail::Barrier* waiting_ = nullptr;
    uint64_t waiting_gen_ = 0;
    bool done_ = false;
    const std::function<void(Emu&)>* body_ = nullptr;
    detail::Context* scheduler_ = nullptr;
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
    // One stack per thread, kept for every block and launch after it (pages touched once, not per
    // launch); left uninitialised so untouched pages cost nothing.
    constexpr size_t kStack = 256 * 1024;
    static thread_local std::unique_ptr<char[]> stacks;
    static thread_local int n_stacks = 0;
    if (n_stacks < threads) {
        stacks.reset(new char[kStack * size_t(threads)]);
        n_stacks = threads;
    }
    for (int z = 0; z < grid.z; z++)
        for (int y = 0; y < grid.y; y++)
            for (int x = 0; x < grid.x; x++) {
                detail::BlockState bs;
                bs.block = {x, y, z};
                bs.grid = grid;
                bs.threads = threads;
                bs.smem.resize(smem_bytes + 16, char(0x5A));  // garbage, as on the GPU
                bs.bar.expected = threads;
                bs.warps.resize(threads / 32);
                for (auto& w : bs.warps) w.bar.expected = 32;
                std::vector<Emu> emus(threads);
                detail::Context sched;
                for (int t = 0; t < threads; t++) {
                    Emu& e = emus[t];
                    e.t_ = t;
                    e.b_ = &bs;
                    e.body_ = &body;
                    e.scheduler_ = &sched;
                    e.stack_ = stacks.get() + kStack * size_t(t);
                    detail::start_context(e.ctx_, e.stack_, kStack, &Emu::entry);
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
                        detail::switch_stack(&sched, &e.ctx_, e.stack_, kStack, &fake);
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
