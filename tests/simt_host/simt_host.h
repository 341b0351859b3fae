// Kernel launches of the emulated build (cuda/launch.cuh with LUMEN_SIMT_HOST): each launch is
// checked as the driver would check it, then its blocks run on the simt emulator, now or when the
// graph it was captured into is launched.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

#include "simt_emulator.h"

namespace lumen::simt_host {

// One per kernel instantiation (launch.cuh's kernel_entry<K, A...>): its name, for messages.
struct Kernel {
    const char* name;
};
template <class K, class... A>
Kernel* kernel_id() {
    static Kernel k{__PRETTY_FUNCTION__};
    return &k;
}

// As an H100 would answer (2048 threads, 228 KiB of shared memory, 32 blocks per SM).
int blocks_per_sm(int threads, size_t smem);
// Throws std::runtime_error, naming the kernel, for a launch the driver would refuse, and for any
// error of the body (a deadlock, shared memory out of range, ...).
void launch(cudaStream_t s, Kernel* k, int max_threads, dim3 grid, dim3 block, size_t smem,
            std::function<void(simt::Emu&)> body);

// The emulated device's memory (default 80 GiB), so tests can run out of it.
void set_memory(size_t total_bytes);
// Bytes of device memory allocated now, and launches run so far (graphs' replays included).
size_t memory_used();
size_t launches();

}  // namespace lumen::simt_host
