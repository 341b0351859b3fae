// Writes small seed GGUFs for the fuzzer into a folder: writer-made models with tensors of
// several types, every metadata value type, and "mini" copies of real vocab files (all their
// keys, arrays cut short) so the fuzzer starts from real structure at a fraction of the size.
// Usage: make_seeds OUT_DIR [VOCAB.gguf ...]
#include <cstdio>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

using namespace lumen;
using gguf::MetaValue;

namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> b(n);
    for (size_t k = 0; k < n; k++) b[k] = uint8_t(k * 37 + seed);
    return b;
}

void write_small_model(const std::string& dir) {
    gguf::Writer w;
    w.set("general.architecture", MetaValue::string("llama"));
    w.set("llama.block_count", MetaValue::u32(1));
    w.set("llama.embedding_length", MetaValue::u32(32));
    w.set("tokenizer.ggml.tokens", MetaValue::strings({"<unk>", "<s>", "</s>", "a", "b"}));
    w.set("tokenizer.ggml.scores", MetaValue::array(std::vector<float>{0, 0, 0, -1, -2}));
    w.add_tensor("token_embd.weight", DType::Q8_0, {32, 5}, pattern(34 * 5, 1));
    w.add_tensor("output_norm.weight", DType::F32, {32}, pattern(128, 2));
    w.add_tensor("blk.0.attn_q.weight", DType::Q4_0, {32, 32}, pattern(18 * 32, 3));
    w.write_file(dir + "/model-small.gguf");
}

void write_all_types(const std::string& dir) {
    gguf::Writer w;
    w.set_alignment(64);
    w.set("u8", MetaValue::u8(1));
    w.set("i8", MetaValue::i8(-1));
    w.set("u16", MetaValue::u16(2));
    w.set("i16", MetaValue::i16(-2));
    w.set("u32", MetaValue::u32(3));
    w.set("i32", MetaValue::i32(-3));
    w.set("u64", MetaValue::u64(4));
    w.set("i64", MetaValue::i64(-4));
    w.set("f32", MetaValue::f32(0.5f));
    w.set("f64", MetaValue::f64(0.25));
    w.set("bool", MetaValue::boolean(true));
    w.set("str", MetaValue::string("text"));
    w.set("arr.i16", MetaValue::array(std::vector<int16_t>{1, -1}));
    w.set("arr.f64", MetaValue::array(std::vector<double>{1e300, -0.0}));
    w.set("arr.bool", MetaValue::bools({true, false}));
    w.set("arr.nested", MetaValue::arrays({MetaValue::strings({"x"}),
                                           MetaValue::arrays({MetaValue::array(std::vector<uint64_t>{9})})}));
    w.add_tensor("q4k", DType::Q4_K, {256, 1}, pattern(144, 4));
    w.add_tensor("q6k", DType::Q6_K, {256}, pattern(210, 5));
    w.add_tensor("f16", DType::F16, {2, 2, 2, 2}, pattern(32, 6));
    w.add_tensor("bf16", DType::BF16, {3}, pattern(6, 7));
    w.write_file(dir + "/model-all-types.gguf");
}

// All the keys of a real vocab file, each array cut to its first `keep` elements.
void write_mini_vocab(const std::string& src, const std::string& dir, uint64_t keep) {
    auto f = gguf::File::open(src);
    gguf::Writer w;
    for (const gguf::KV& kv : f->kvs()) {
        MetaValue v = MetaValue::copy_of(kv.value);
        if (v.type == gguf::VType::ARRAY && v.count > keep) {
            if (v.elem == gguf::VType::STRING) v.strs.resize(keep);
            else if (v.elem == gguf::VType::ARRAY) v.items.resize(keep);
            else v.raw.resize(v.raw.size() / v.count * keep);
            v.count = keep;
        }
        w.set(kv.key, std::move(v));
    }
    std::string base = src.substr(src.find_last_of('/') + 1);
    w.write_file(dir + "/mini-" + base);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: make_seeds OUT_DIR [VOCAB.gguf ...]\n");
        return 2;
    }
    try {
        std::string dir = argv[1];
        write_small_model(dir);
        write_all_types(dir);
        for (int k = 2; k < argc; k++) write_mini_vocab(argv[k], dir, 40);
    } catch (const Error& e) {
        std::fprintf(stderr, "make_seeds: %s\n", e.what());
        return 1;
    }
    return 0;
}
