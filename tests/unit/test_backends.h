// The backends tests run on, by name: "cpu", "cuda" (needs a GPU) and "simt": the CUDA backend with
// its kernels on the host emulator (tests/simt_host), which every machine has. The GPU parity tests
// run on "simt" in CI and on "cuda" where there is a GPU.
#pragma once
#include <memory>
#include <string>

#include "tensor/backend.h"

namespace lumen {

std::unique_ptr<Backend> test_backend(const std::string& device, int n_threads = 2);

}  // namespace lumen
