// Which CUDA devices this process can use. Safe to call on machines without a GPU or driver.
#pragma once
#include <cstddef>
#include <string>

namespace lumen::cuda {

struct DeviceInfo {
    std::string name;
    int sm_major = 0, sm_minor = 0, n_sm = 0;
    size_t mem_total = 0, mem_free = 0;
};

// Number of usable devices; 0 when there is no GPU, no driver, or CUDA was not compiled in.
int device_count();
// Why device_count() is 0, in words ("no CUDA driver found", "built without CUDA").
std::string unavailable_reason();
DeviceInfo device_info(int device);

}  // namespace lumen::cuda
