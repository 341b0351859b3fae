#include "test_backends.h"

#include "engine/backend_select.h"

namespace lumen {

std::unique_ptr<Backend> make_simt_backend(int device);  // tests/simt_host: cuda/backend_cuda.cu, renamed

std::unique_ptr<Backend> test_backend(const std::string& device, int n_threads) {
    if (device == "simt") return make_simt_backend(0);
    return make_backend(device, n_threads);
}

}  // namespace lumen
