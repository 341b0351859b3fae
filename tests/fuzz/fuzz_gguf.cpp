// libFuzzer target for the GGUF reader: any input must either parse into values that are all
// safe to read, or end in a lumen::Error. A file that parses is also copied through the writer,
// and the copy must parse back to the same metadata and tensors. Built and run by tools/run-fuzz.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

using namespace lumen;

namespace {

// Folds what it reads into a sink the optimiser cannot drop, so every read really happens.
volatile uint64_t g_sink;

void touch(const gguf::Value& v) {
    uint64_t h = uint64_t(v.type) + v.u + uint64_t(v.i) + v.str.size();
    if (!v.str.empty()) h += uint8_t(v.str.front()) + uint8_t(v.str.back());
    if (v.type == gguf::VType::ARRAY) {
        if (v.elem == gguf::VType::STRING) {
            for (std::string_view s : v.strs)
                if (!s.empty()) h += uint8_t(s.front()) + uint8_t(s.back());
        } else if (v.elem == gguf::VType::ARRAY) {
            for (const gguf::Value& item : v.items) touch(item);
        } else {
            for (uint64_t k = 0; k < v.count; k++) h += uint64_t(v.int_at(k)) + uint64_t(v.num_at(k) != 0);
        }
    }
    g_sink = g_sink + h;
}

void touch_all(const gguf::File& f) {
    for (const gguf::KV& kv : f.kvs()) {
        g_sink = g_sink + kv.key.size() + kv.value.to_string().size() + (f.find(kv.key) == &kv.value);
        touch(kv.value);
    }
    for (const gguf::TensorInfo& t : f.tensors()) {
        std::string s = t.name + t.shape_string() + dtype_name(t.type);
        g_sink = g_sink + s.size() + uint64_t(t.n_elements()) + t.offset + t.nbytes + (f.find_tensor(t.name) == &t);
        // The data range must lie inside the input: ASan flags these reads otherwise.
        if (t.nbytes) g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1];
    }
    // The typed getters on keys every model has; a wrong type is a lumen::Error.
    for (const char* key : {"general.architecture", "general.alignment", "tokenizer.ggml.model",
                            "tokenizer.ggml.bos_token_id", "llama.block_count"}) {
        try {
            g_sink = g_sink + f.get_str(key).size();
        } catch (const Error&) {}
        try {
            g_sink = g_sink + uint64_t(f.get_int(key, 0)) + uint64_t(f.get_float(key, 0) != 0) + f.get_bool(key, false);
        } catch (const Error&) {}
    }
    try {
        if (const gguf::Value* a = f.get_array("tokenizer.ggml.tokens", gguf::VType::STRING)) g_sink = g_sink + a->count;
    } catch (const Error&) {}
    g_sink = g_sink + f.version() + f.alignment() + f.data_offset();
}

size_t elem_bytes(gguf::VType t) {
    switch (t) {
        case gguf::VType::UINT16: case gguf::VType::INT16: return 2;
        case gguf::VType::UINT32: case gguf::VType::INT32: case gguf::VType::FLOAT32: return 4;
        case gguf::VType::UINT64: case gguf::VType::INT64: case gguf::VType::FLOAT64: return 8;
        default: return 1;
    }
}

// Exact equality of two parsed values (NaN equals NaN).
bool same(const gguf::Value& a, const gguf::Value& b) {
    if (a.type != b.type || a.u != b.u || a.i != b.i || a.str != b.str || a.elem != b.elem || a.count != b.count)
        return false;
    if (std::memcmp(&a.f, &b.f, sizeof a.f) != 0 && !(std::isnan(a.f) && std::isnan(b.f))) return false;
    if (a.type != gguf::VType::ARRAY) return true;
    if (a.strs != b.strs || a.items.size() != b.items.size()) return false;
    for (size_t k = 0; k < a.items.size(); k++)
        if (!same(a.items[k], b.items[k])) return false;
    if (a.elem == gguf::VType::STRING || a.elem == gguf::VType::ARRAY) return true;
    return a.count == 0 || std::memcmp(a.raw, b.raw, a.count * elem_bytes(a.elem)) == 0;
}

// Writes the parsed file again with the writer and checks the copy reads back the same.
// The writer may refuse what the reader accepts (e.g. ggml's 63-byte tensor name limit).
void check_rewrite(const gguf::File& f) {
    gguf::Writer w;
    std::vector<uint8_t> bytes;
    try {
        for (const gguf::KV& kv : f.kvs()) w.set(kv.key, gguf::MetaValue::copy_of(kv.value));
        for (const gguf::TensorInfo& t : f.tensors())
            w.add_tensor_view(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data);
        bytes = w.write_memory();
    } catch (const Error&) {
        return;
    }
    std::unique_ptr<gguf::File> g;
    try {
        g = gguf::File::from_memory(bytes.data(), bytes.size(), "rewrite.gguf");
    } catch (const Error& e) {
        std::fprintf(stderr, "the reader rejects the writer's copy: %s\n", e.what());
        __builtin_trap();
    }
    if (g->kvs().size() != f.kvs().size() || g->tensors().size() != f.tensors().size()) __builtin_trap();
    for (size_t k = 0; k < f.kvs().size(); k++)
        if (g->kvs()[k].key != f.kvs()[k].key || !same(g->kvs()[k].value, f.kvs()[k].value)) __builtin_trap();
    for (size_t k = 0; k < f.tensors().size(); k++) {
        const gguf::TensorInfo &a = f.tensors()[k], &b = g->tensors()[k];
        if (a.name != b.name || a.type != b.type || a.nbytes != b.nbytes || a.shape_string() != b.shape_string() ||
            std::memcmp(a.data, b.data, a.nbytes) != 0)
            __builtin_trap();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = gguf::File::from_memory(data, size, "fuzz.gguf");
        touch_all(*f);
        check_rewrite(*f);
    } catch (const Error&) {
        // A clean rejection is the expected outcome for most inputs.
    }
    return 0;
}
