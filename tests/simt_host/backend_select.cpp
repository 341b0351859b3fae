// make_backend for the lumen-simt binary (CMakeLists.txt): the whole CLI, with `--device cuda` (and
// auto) running the CUDA backend on the host emulator, to try the CUDA code path end to end on a
// machine without a GPU (slowly: every GPU thread is a fiber). This definition takes the place of
// src/engine/backend_select.cpp's, which the linker then leaves out of the archive.
#include "engine/backend_select.h"

#include "cpu/backend_cpu.h"
#include "util/error.h"

namespace lumen {

std::unique_ptr<Backend> make_simt_backend(int device);

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, int n_threads_batch) {
    if (n_threads <= 0) n_threads = physical_cores();
    if (device == "cpu") return std::make_unique<CpuBackend>(n_threads, n_threads_batch);
    if (device == "cuda" || device == "auto") return make_simt_backend(0);
    fail("--device ", device, ": unknown device (use cpu, cuda or auto)");
}

}  // namespace lumen
