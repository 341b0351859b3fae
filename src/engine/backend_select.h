// Picks the backend from --device: "cpu", "cuda", or "auto" (CUDA when a GPU is usable).
#pragma once
#include <memory>
#include <string>

#include "tensor/backend.h"

namespace lumen {

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads);

}  // namespace lumen
