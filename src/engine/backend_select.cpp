#include "engine/backend_select.h"

#include "../../cuda/device.h"
#include "../../cuda/backend_cuda.h"
#include "cpu/backend_cpu.h"
#include "util/error.h"

namespace lumen {

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, int n_threads_batch) {
    if (n_threads <= 0) n_threads = physical_cores();
    if (device == "cpu" || (device == "auto" && cuda::device_count() == 0))
        return std::make_unique<CpuBackend>(n_threads, n_threads_batch);
    if (device == "cuda" || device == "auto") return make_cuda_backend(0);
    fail("--device ", device, ": unknown device (use cpu, cuda or auto)");
}

}  // namespace lumen
