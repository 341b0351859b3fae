// The emulated CUDA runtime and cuBLAS (include/*.h): what the backend's host code asks of the
// driver, answered on the host with the checks the driver makes, so that mistakes in it (a copy in
// the wrong direction, a launch with too many threads or too much shared memory, an allocation or
// a synchronisation inside a graph capture, a free of something never allocated) fail the tests
// here instead of on the GPU.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "simt_host.h"
#include "tensor/half.h"

struct CUstream_st {
    bool capturing = false;
    std::vector<std::function<void()>> recorded;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
struct CUevent_st {};
struct cublasContext {
    cudaStream_t stream = nullptr;
};

namespace {

constexpr size_t kSmemPerBlock = 227 * 1024;  // with the opt-in, as an H100

struct Device {
    size_t total = size_t(80) << 30;
    std::map<uintptr_t, size_t> device;  // base -> bytes
    std::map<uintptr_t, size_t> pinned;
    size_t used = 0;
    size_t launches = 0;
    cudaError_t last = cudaSuccess;
    int captures = 0;  // streams capturing now
};
Device& dev() {
    static Device d;
    return d;
}

cudaError_t fail(cudaError_t e) {
    dev().last = e;
    return e;
}

// Whether [p, p + n) lies inside one allocation of `in`.
bool inside(const std::map<uintptr_t, size_t>& in, const void* p, size_t n) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = in.upper_bound(a);
    if (it == in.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second;
}
bool on_device(const void* p, size_t n) { return inside(dev().device, p, n); }

[[noreturn]] void misuse(const std::string& what) { throw std::runtime_error("emulated CUDA: " + what); }

// Runs an operation on a stream: now, or at each launch of the graph being captured.
void enqueue(cudaStream_t s, std::function<void()> op) {
    if (s && s->capturing) s->recorded.push_back(std::move(op));
    else op();
}

cudaError_t copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    const bool dst_dev = on_device(dst, n), src_dev = on_device(src, n);
    const bool want_dst = kind != cudaMemcpyDeviceToHost, want_src = kind != cudaMemcpyHostToDevice;
    if (n && (dst_dev != want_dst || src_dev != want_src))
        misuse("cudaMemcpy of " + std::to_string(n) + " bytes, kind " + std::to_string(int(kind)) + ": destination " +
               (dst_dev ? "is" : "is not") + " device memory, source " + (src_dev ? "is" : "is not"));
    if (n) std::memmove(dst, src, n);
    return cudaSuccess;
}

}  // namespace

const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError() {
    const cudaError_t e = dev().last;
    dev().last = cudaSuccess;
    return e;
}

cudaError_t cudaGetDeviceCount(int* n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    if (device != 0) return fail(cudaErrorInvalidValue);
    std::memset(p, 0, sizeof *p);
    std::snprintf(p->name, sizeof p->name, "simt emulator");
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidValue); }
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
    switch (attr) {
        case cudaDevAttrMultiProcessorCount: *v = 132; return cudaSuccess;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = int(kSmemPerBlock); return cudaSuccess;
    }
    return fail(cudaErrorInvalidValue);
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
    Device& d = dev();
    if (d.captures) misuse("cudaMalloc while a stream is being captured");
    *p = nullptr;
    if (bytes == 0) return cudaSuccess;
    if (d.used + bytes > d.total) return fail(cudaErrorMemoryAllocation);
    // Exactly `bytes` (256-aligned as the driver's): under AddressSanitizer a kernel that reads or
    // writes past its buffer is reported, as compute-sanitizer's memcheck would.
    void* q = nullptr;
    if (posix_memalign(&q, 256, bytes) != 0) return fail(cudaErrorMemoryAllocation);
    std::memset(q, 0xA5, bytes);  // device memory starts as garbage, not zeros
    d.device[reinterpret_cast<uintptr_t>(q)] = bytes;
    d.used += bytes;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    Device& d = dev();
    if (!p) return cudaSuccess;
    auto it = d.device.find(reinterpret_cast<uintptr_t>(p));
    if (it == d.device.end()) misuse("cudaFree of a pointer cudaMalloc did not return");
    d.used -= it->second;
    d.device.erase(it);
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
    *p = std::malloc(bytes ? bytes : 1);
    dev().pinned[reinterpret_cast<uintptr_t>(*p)] = bytes;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
    if (!p) return cudaSuccess;
    if (!dev().pinned.erase(reinterpret_cast<uintptr_t>(p))) misuse("cudaFreeHost of a pointer cudaMallocHost did not return");
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    *free_bytes = dev().total - dev().used;
    *total_bytes = dev().total;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    *s = new CUstream_st;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s && s->capturing) dev().captures--;
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (s && s->capturing) misuse("cudaStreamSynchronize on a stream being captured");
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
    if (!s) misuse("capture of the legacy default stream");
    if (s->capturing) misuse("cudaStreamBeginCapture on a stream already capturing");
    s->capturing = true;
    s->recorded.clear();
    dev().captures++;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
    if (!s || !s->capturing) misuse("cudaStreamEndCapture without a capture");
    s->capturing = false;
    dev().captures--;
    *g = new CUgraph_st{std::move(s->recorded)};
    s->recorded.clear();
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
    *exec = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (s && s->capturing) misuse("cudaGraphLaunch into a capture");
    for (auto& op : exec->ops) op();
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    if (dev().captures) misuse("synchronous cudaMemcpy while a stream is being captured");
    return copy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    enqueue(s, [=] { copy(dst, src, bytes, kind); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
    if (dev().captures) misuse("cudaMemset while a stream is being captured");
    if (bytes && !on_device(p, bytes)) misuse("cudaMemset of memory that is not the device's");
    std::memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = new CUevent_st;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
    *ms = 0;
    return cudaSuccess;
}

namespace lumen::simt_host {

int blocks_per_sm(int threads, size_t smem) {
    if (threads <= 0 || threads > 1024 || smem > kSmemPerBlock) return 0;
    int n = 2048 / threads;
    if (smem) n = std::min<int>(n, int((228 * 1024) / (smem + 1024)));
    return std::min(n, 32);
}

void launch(cudaStream_t s, Kernel* k, int max_threads, dim3 grid, dim3 block, size_t smem,
            std::function<void(simt::Emu&)> body) {
    auto refuse = [&](const std::string& why) {
        misuse(std::string("launch of ") + k->name + " refused: " + why + " (grid " + std::to_string(grid.x) + "x" +
               std::to_string(grid.y) + "x" + std::to_string(grid.z) + ", " + std::to_string(block.x) + " threads, " +
               std::to_string(smem) + " bytes of shared memory)");
    };
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) refuse("an empty grid");
    if (grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535) refuse("grid larger than the device allows");
    if (block.y != 1 || block.z != 1) refuse("blocks must be 1-D (simt.cuh)");
    if (block.x == 0 || int(block.x) > max_threads) refuse("more threads than the kernel's __launch_bounds__");
    if (smem > kSmemPerBlock) refuse("more shared memory than a block can have");
    const simt::Dim g{int(grid.x), int(grid.y), int(grid.z)};
    const int threads = int(block.x);
    const std::string name = k->name;
    enqueue(s, [=] {
        dev().launches++;
        try {
            simt::Emu::launch(g, threads, smem, body);
        } catch (const std::exception& e) {
            throw std::runtime_error(name + ": " + e.what());
        }
    });
}

void set_memory(size_t total_bytes) { dev().total = total_bytes; }
size_t memory_used() { return dev().used; }
size_t launches() { return dev().launches; }

}  // namespace lumen::simt_host

// ---- cuBLAS ----------------------------------------------------------------------------------------

cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void* ws, size_t bytes) {
    if (bytes && !on_device(ws, bytes)) misuse("cuBLAS workspace is not device memory");
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt,
                            int ldb, const void* beta, void* C, cudaDataType ct, int ldc, cublasComputeType_t,
                            cublasGemmAlgo_t) {
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    auto size = [](cudaDataType t) { return t == CUDA_R_16F ? size_t(2) : size_t(4); };
    // Every element the GEMM touches must be device memory.
    const size_t a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
    if (m && n && k) {
        if (!on_device(A, (size_t(lda) * (a_cols - 1) + (ta == CUBLAS_OP_N ? m : k)) * size(at)))
            misuse("cublasGemmEx: A is not device memory of its size");
        if (!on_device(B, (size_t(ldb) * (b_cols - 1) + (tb == CUBLAS_OP_N ? k : n)) * size(bt)))
            misuse("cublasGemmEx: B is not device memory of its size");
        if (!on_device(C, (size_t(ldc) * (n - 1) + m) * size(ct))) misuse("cublasGemmEx: C is not device memory of its size");
    }
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    enqueue(h->stream, [=] {
        auto get = [](const void* p, cudaDataType t, size_t i) {
            return t == CUDA_R_16F ? lumen::fp16_to_f32_scalar(static_cast<const uint16_t*>(p)[i])
                                   : static_cast<const float*>(p)[i];
        };
        // op(A) as m rows of k and op(B) as n rows of k, in f32: every dot product then reads two
        // contiguous rows (prompt-sized GEMMs of a real model take seconds, not minutes).
        std::vector<float> a(size_t(m) * k), b(size_t(n) * k);
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) a[size_t(i) * k + p] = get(A, at, ta == CUBLAS_OP_N ? size_t(p) * lda + i : size_t(i) * lda + p);
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++) b[size_t(j) * k + p] = get(B, bt, tb == CUBLAS_OP_N ? size_t(j) * ldb + p : size_t(p) * ldb + j);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const float* x = &a[size_t(i) * k];
                const float* y = &b[size_t(j) * k];
                float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // independent sums the compiler keeps in one vector
                int p = 0;
                for (; p + 8 <= k; p += 8)
                    for (int l = 0; l < 8; l++) part[l] += x[p + l] * y[p + l];
                float acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
                for (; p < k; p++) acc += x[p] * y[p];
                const size_t c = size_t(j) * ldc + i;
                if (ct == CUDA_R_16F) {
                    uint16_t* cp = static_cast<uint16_t*>(C);
                    cp[c] = lumen::f32_to_fp16_scalar(al * acc + (be != 0 ? be * get(C, ct, c) : 0.0f));
                } else {
                    float* cp = static_cast<float*>(C);
                    cp[c] = al * acc + (be != 0 ? be * cp[c] : 0.0f);
                }
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
