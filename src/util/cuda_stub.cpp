// Without nvcc the CUDA backend is absent; these answer "no device" so callers need no #ifdefs.
#ifndef LUMEN_HAVE_CUDA
#include "../../cuda/device.h"
#include "../../cuda/backend_cuda.h"
#include "util/error.h"

namespace lumen::cuda {
int device_count() { return 0; }
std::string unavailable_reason() { return "lumen was built without CUDA (nvcc not found at build time)"; }
DeviceInfo device_info(int) { fail("lumen was built without CUDA"); }
}  // namespace lumen::cuda

namespace lumen {
std::unique_ptr<Backend> make_cuda_backend(int) { fail("--device cuda: ", cuda::unavailable_reason()); }
}  // namespace lumen
#endif
