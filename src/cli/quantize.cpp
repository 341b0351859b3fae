// `lumen quantize IN.gguf OUT.gguf TYPE`: requantize every matrix of a model. Metadata is copied;
// 1-D tensors (norms, biases) stay F32. Q4_K_M and Q5_K_M follow llama.cpp's mixes: the output
// matrix and some attn_v / ffn_down layers get Q6_K.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "tensor/quant.h"
#include "util/error.h"
#include "util/progress.h"

namespace lumen::cli {

namespace {

struct Opts {
    std::string in, out, type;
    int n_threads = 0;
};

// Layers that get more bits in llama.cpp's _M mixes: the first and last eighth, and every third.
bool more_bits(int layer, int n_layer) {
    return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

int layer_of(const std::string& name) {
    if (name.rfind("blk.", 0) != 0) return -1;
    return std::atoi(name.c_str() + 4);
}

bool is_quantize_target(DType t) {
    switch (t) {
        case DType::F16: case DType::BF16: case DType::F32: case DType::Q8_0: case DType::Q4_0: case DType::Q4_1:
        case DType::Q5_0: case DType::Q5_1: case DType::Q4_K: case DType::Q6_K: return true;
        default: return false;
    }
}

void run(const Opts& o) {
    std::string base = o.type;
    for (char& c : base) c = char(std::toupper(static_cast<unsigned char>(c)));
    bool mix_m = false;
    if (base == "Q4_K_M" || base == "Q5_K_M") { mix_m = true; base = base.substr(0, 4); }
    DType target;
    if (!dtype_from_name(base, target) || !is_quantize_target(target))
        fail("TYPE ", o.type, ": use f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k, q4_k_m or q5_k_m");
    auto in = gguf::File::open(o.in);
    const int n_layer = int(in->get_int(in->get_str("general.architecture") + ".block_count", 0));

    gguf::Writer w;
    for (const auto& kv : in->kvs()) {
        if (kv.key == "general.alignment") continue;
        w.set(kv.key, gguf::MetaValue::copy_of(kv.value));
    }
    w.remove("general.file_type");  // no longer describes the file

    const int n_threads = o.n_threads > 0 ? o.n_threads : std::max(1, int(std::thread::hardware_concurrency()));
    size_t total = 0;
    for (const auto& t : in->tensors()) total += size_t(t.n_elements());
    auto progress = std::make_shared<Progress>("quantize", int64_t(total >> 20), "M weights");
    auto done = std::make_shared<size_t>(0);

    for (const auto& t : in->tensors()) {
        const gguf::TensorInfo* src = &t;
        if (!dtype_info(t.type).supported)
            in->error("tensor '" + t.name + "': quant type " + dtype_name(t.type) + " is not supported");
        DType dt = target;
        const int layer = layer_of(t.name);
        if (t.n_dims < 2) dt = DType::F32;
        else if (mix_m && (t.name == "output.weight" ||
                           ((t.name.find("attn_v.weight") != std::string::npos ||
                             t.name.find("ffn_down.weight") != std::string::npos) && layer >= 0 && more_bits(layer, n_layer))))
            dt = DType::Q6_K;
        if (t.ne[0] % int64_t(dtype_info(dt).block_size) != 0) dt = t.ne[0] % 32 == 0 ? DType::Q8_0 : DType::F16;
        if (t.ne[0] % int64_t(dtype_info(dt).block_size) != 0) dt = DType::F32;
        std::vector<int64_t> shape(t.ne, t.ne + t.n_dims);
        w.add_tensor_fill(t.name, dt, shape, [src, dt, n_threads, progress, done, total](uint8_t* dst, size_t) {
            const int64_t K = src->ne[0], rows = src->n_elements() / K;
            const size_t in_row = row_bytes(src->type, K), out_row = row_bytes(dt, K);
            std::vector<std::thread> th;
            for (int k = 0; k < n_threads; k++)
                th.emplace_back([&, k] {
                    std::vector<float> buf(static_cast<size_t>(K));
                    for (int64_t r = k; r < rows; r += n_threads) {
                        dequantize_row(src->type, src->data + size_t(r) * in_row, buf.data(), K);
                        quantize_row(dt, buf.data(), dst + size_t(r) * out_row, K);
                    }
                });
            for (auto& x : th) x.join();
            *done += size_t(src->n_elements());
            progress->update(int64_t(*done >> 20));
        });
    }
    auto t0 = std::chrono::steady_clock::now();
    w.write_file(o.out);
    progress->finish();
    std::fprintf(stderr, "wrote %s in %.1f s\n", o.out.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace

void add_quantize(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("quantize", "Requantize a GGUF model: lumen quantize IN.gguf OUT.gguf TYPE");
    cmd->add_option("input", o->in, "Input GGUF")->required();
    cmd->add_option("output", o->out, "Output GGUF")->required();
    cmd->add_option("type", o->type, "f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k, q4_k_m, q5_k_m")->required();
    cmd->add_option("-t,--threads", o->n_threads, "Threads");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
