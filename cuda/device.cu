#include <cuda_runtime.h>

#include "device.h"
#include "util/error.h"

namespace lumen::cuda {

namespace {
cudaError_t probe(int& n) {
    static cudaError_t err = cudaGetDeviceCount(&n);
    static int count = n;
    n = err == cudaSuccess ? count : 0;
    return err;
}
}  // namespace

int device_count() {
    int n = 0;
    probe(n);
    return n;
}

std::string unavailable_reason() {
    int n = 0;
    cudaError_t err = probe(n);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    return n == 0 ? "no CUDA device found" : "";
}

DeviceInfo device_info(int device) {
    cudaDeviceProp p;
    cudaError_t err = cudaGetDeviceProperties(&p, device);
    if (err != cudaSuccess) fail("CUDA device ", device, ": ", cudaGetErrorString(err));
    DeviceInfo d;
    d.name = p.name;
    d.sm_major = p.major;
    d.sm_minor = p.minor;
    d.n_sm = p.multiProcessorCount;
    if (cudaSetDevice(device) == cudaSuccess) cudaMemGetInfo(&d.mem_free, &d.mem_total);
    return d;
}

}  // namespace lumen::cuda
