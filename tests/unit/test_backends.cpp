#include "test_backends.h"

#include "engine/backend_select.h"

namespace lumen {

std::unique_ptr<Backend> make_simt_backend(int device);  // tests/simt_host: cuda/backend_cuda.cu, renamed
namespace simt_host {
void set_memory(size_t total_bytes);
size_t memory_used();
}  // namespace simt_host

void simt_set_memory(size_t total_bytes) { simt_host::set_memory(total_bytes); }
size_t simt_memory_used() { return simt_host::memory_used(); }

std::unique_ptr<Backend> test_backend(const std::string& device, int n_threads) {
    if (device == "simt") return make_simt_backend(0);
    return make_backend(device, n_threads);
}

}  // namespace lumen
