// The CUDA backend, seen from the CPU side: no CUDA types here, so the engine can include it.
#pragma once
#include <memory>

#include "tensor/backend.h"

namespace lumen {

// Opens device `device`. Throws lumen::Error when there is no usable GPU.
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace lumen
