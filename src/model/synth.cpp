#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "gguf/writer.h"
#include "util/error.h"

namespace lumen {

namespace {

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint16_t f32_to_f16_bits(float f) {
    // Enough for the small normal values written here (no NaN/Inf/subnormal handling needed).
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const int exp = int((x >> 23) & 0xFF) - 127 + 15;
    if (exp <= 0) return uint16_t(sign);
    return uint16_t(sign | (uint32_t(exp) << 10) | ((x >> 13) & 0x3FF));
}

// Byte offsets of the fp16 scale fields inside a block; everything else is random quants.
struct ScaleFields { int offs[2]; int n; float magnitude; };
ScaleFields scale_fields(DType t) {
    switch (t) {
        case DType::Q4_0: case DType::Q5_0: return {{0, 0}, 1, 0.004f};
        case DType::Q8_0: return {{0, 0}, 1, 0.0005f};
        case DType::Q4_1: case DType::Q5_1: return {{0, 2}, 2, 0.004f};
        case DType::Q4_K: case DType::Q5_K: return {{0, 2}, 2, 0.0008f};
        case DType::Q2_K: return {{80, 82}, 2, 0.003f};
        case DType::Q3_K: return {{108, 0}, 1, 0.0015f};
        case DType::Q6_K: return {{208, 0}, 1, 0.0002f};
        default: return {{0, 0}, 0, 0.0f};
    }
}

void fill_range(DType t, uint8_t* dst, size_t bytes, uint64_t seed) {
    uint64_t s = seed;
    const DTypeInfo& info = dtype_info(t);
    if (t == DType::F32 || t == DType::F16 || t == DType::BF16) {
        const size_t esz = info.block_bytes;
        for (size_t i = 0; i + esz <= bytes; i += esz) {
            // Roughly uniform in [-0.03, 0.03]: the scale of trained transformer weights.
            const float v = (float(splitmix(s) >> 40) / float(1 << 24) - 0.5f) * 0.06f;
            if (t == DType::F32) std::memcpy(dst + i, &v, 4);
            else if (t == DType::F16) { uint16_t h = f32_to_f16_bits(v); std::memcpy(dst + i, &h, 2); }
            else { uint32_t x; std::memcpy(&x, &v, 4); uint16_t b = uint16_t(x >> 16); std::memcpy(dst + i, &b, 2); }
        }
        return;
    }
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t r = splitmix(s);
        std::memcpy(dst + i, &r, 8);
    }
    for (; i < bytes; i++) dst[i] = uint8_t(splitmix(s));
    const ScaleFields f = scale_fields(t);
    for (size_t b = 0; b + info.block_bytes <= bytes; b += info.block_bytes)
        for (int k = 0; k < f.n; k++) {
            const float v = f.magnitude * (0.5f + float(splitmix(s) >> 40) / float(1 << 24));
            const uint16_t h = f32_to_f16_bits(v);
            std::memcpy(dst + b + size_t(f.offs[k]), &h, 2);
        }
}

}  // namespace

void fill_random(DType t, uint8_t* dst, size_t bytes, uint64_t seed) {
    const size_t block = dtype_info(t).block_bytes;
    const unsigned n_threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    const size_t blocks = bytes / block, per = (blocks + n_threads - 1) / n_threads;
    std::vector<std::thread> th;
    for (unsigned k = 0; k < n_threads; k++) {
        const size_t b0 = std::min(blocks, k * per), b1 = std::min(blocks, b0 + per);
        if (b0 == b1) continue;
        th.emplace_back([=] { fill_range(t, dst + b0 * block, (b1 - b0) * block, seed * 1000003 + k); });
    }
    for (auto& x : th) x.join();
}

void synth_model(const Preset& p, const SynthOptions& o, const std::string& path) {
    if (!dtype_info(o.type).supported || o.type == DType::F32)
        fail("--type ", dtype_name(o.type), ": synth writes F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or K-quants");
    // As llama.cpp's Q4_K_M and similar mixes: the output matrix one step more precise.
    DType out = o.output_type_set ? o.output_type
              : (o.type == DType::Q4_K || o.type == DType::Q5_K || o.type == DType::Q3_K || o.type == DType::Q2_K)
                    ? DType::Q6_K : o.type;
    const int64_t E = p.n_embd, V = p.n_vocab, F = p.n_ff, D = p.n_embd / p.n_head;
    const int64_t kv = D * p.n_head_kv;
    const int32_t bs = int32_t(dtype_info(o.type).block_size);
    if (E % bs || F % bs || kv % bs) fail("preset ", p.name, " shapes are not multiples of the ", dtype_name(o.type), " block size");

    gguf::Writer w;
    using MV = gguf::MetaValue;
    const std::string a = p.arch;
    w.set("general.architecture", MV::string(a));
    w.set("general.name", MV::string(std::string("lumen synth ") + p.name + " " + dtype_name(o.type)));
    w.set("general.file_type", MV::u32(0));
    w.set(a + ".block_count", MV::u32(uint32_t(p.n_layer)));
    w.set(a + ".context_length", MV::u32(uint32_t(p.n_ctx)));
    w.set(a + ".embedding_length", MV::u32(uint32_t(E)));
    w.set(a + ".feed_forward_length", MV::u32(uint32_t(F)));
    w.set(a + ".attention.head_count", MV::u32(uint32_t(p.n_head)));
    w.set(a + ".attention.head_count_kv", MV::u32(uint32_t(p.n_head_kv)));
    w.set(a + ".attention.layer_norm_rms_epsilon", MV::f32(p.norm_eps));
    w.set(a + ".rope.freq_base", MV::f32(p.rope_base));
    w.set(a + ".vocab_size", MV::u32(uint32_t(V)));

    // A SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then filler pieces.
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    const char* specials[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) { tokens.push_back(specials[i]); scores.push_back(0); types.push_back(i == 0 ? 2 : 3); }
    char buf[16];
    for (int b = 0; b < 256; b++) {
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        tokens.push_back(buf); scores.push_back(0); types.push_back(6);
    }
    for (int64_t i = int64_t(tokens.size()); i < V; i++) {
        tokens.push_back("\xE2\x96\x81t" + std::to_string(i)); scores.push_back(-float(i)); types.push_back(1);
    }
    w.set("tokenizer.ggml.model", MV::string("llama"));
    w.set("tokenizer.ggml.tokens", MV::strings(std::move(tokens)));
    w.set("tokenizer.ggml.scores", MV::array(scores));
    w.set("tokenizer.ggml.token_type", MV::array(types));
    w.set("tokenizer.ggml.bos_token_id", MV::u32(1));
    w.set("tokenizer.ggml.eos_token_id", MV::u32(2));
    w.set("tokenizer.ggml.unknown_token_id", MV::u32(0));

    uint64_t seed = o.seed;
    auto matrix = [&](const std::string& name, DType t, int64_t cols, int64_t rows) {
        const uint64_t s = ++seed;
        w.add_tensor_fill(name, t, {cols, rows}, [t, s](uint8_t* dst, size_t n) { fill_random(t, dst, n, s); });
    };
    auto ones = [&](const std::string& name, int64_t n) {
        const uint64_t s = ++seed;
        w.add_tensor_fill(name, DType::F32, {n}, [s](uint8_t* dst, size_t bytes) {
            uint64_t st = s;
            for (size_t i = 0; i + 4 <= bytes; i += 4) {
                const float v = 1.0f + (float(splitmix(st) >> 40) / float(1 << 24) - 0.5f) * 0.1f;
                std::memcpy(dst + i, &v, 4);
            }
        });
    };
    matrix("token_embd.weight", p.tied ? out : o.type, E, V);
    for (int il = 0; il < p.n_layer; il++) {
        const std::string b = "blk." + std::to_string(il) + ".";
        ones(b + "attn_norm.weight", E);
        matrix(b + "attn_q.weight", o.type, E, E);
        matrix(b + "attn_k.weight", o.type, E, kv);
        matrix(b + "attn_v.weight", o.type, E, kv);
        if (p.qkv_bias) {
            ones(b + "attn_q.bias", E);
            ones(b + "attn_k.bias", kv);
            ones(b + "attn_v.bias", kv);
        }
        matrix(b + "attn_output.weight", o.type, E, E);
        ones(b + "ffn_norm.weight", E);
        matrix(b + "ffn_gate.weight", o.type, E, F);
        matrix(b + "ffn_up.weight", o.type, E, F);
        matrix(b + "ffn_down.weight", o.type, F, E);
    }
    ones("output_norm.weight", E);
    if (!p.tied) matrix("output.weight", out, E, V);
    w.write_file(path);
}

}  // namespace lumen
