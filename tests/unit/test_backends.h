// The backends tests run on, by name: "cpu", "cuda" (needs a GPU) and "simt": the CUDA backend with
// its kernels on the host emulator (tests/simt_host), which every machine has. The GPU parity tests
// run on "simt" in CI and on "cuda" where there is a GPU.
#pragma once
#include <memory>
#include <string>

#include "tensor/backend.h"

namespace lumen {

std::unique_ptr<Backend> test_backend(const std::string& device, int n_threads = 2);
// The emulated GPU's memory in bytes (default 80 GiB), and what is allocated of it now.
void simt_set_memory(size_t total_bytes);
size_t simt_memory_used();

}  // namespace lumen
