// Picks the backend from --device: "cpu", "cuda", or "auto" (CUDA when a GPU is usable).
#pragma once
#include <memory>
#include <string>

#include "tensor/backend.h"

namespace lumen {

// n_threads (0: the physical cores) for generation, n_threads_batch (0: as n_threads) for passes of
// several tokens; both for the CPU only.
std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, int n_threads_batch = 0);

}  // namespace lumen
