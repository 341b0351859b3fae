// The CUDA backend's plan (cuda/fused_plan.h) of real model graphs: the tiny synth models (a Llama
// layer has the same nodes at every size, so its launch count is Llama-3-8B's) planned with and
// without fusion, counting the kernel launches of one decode layer; every node is in exactly one
// step, in order.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "cpu/backend_cpu.h"
#include "fused_plan.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/synth.h"
#include "repack.h"

using namespace lumen;
namespace cu = lumen::cuda;

namespace {

// The backend's answers for weights repacked at upload (backend_cuda.cu asks the layouts through
// matvec_int8 / matvec_can_share in matvec.cu; these mirror them for the types used here).
cu::ProductInfo product_info() {
    cu::ProductInfo info;
    auto layout = [](const Tensor* t) {
        const Tensor* w = t->src[0];
        return cu::weight_layout(int(w->type), w->ne[0], w->nrows(), w->nb[1], true);
    };
    info.decode = [](const Tensor* t) { return t->src[1]->nrows() <= 8; };
    info.int8 = [layout](const Tensor* t) {
        const cu::WeightLayout L = layout(t);
        return L.packed ? L.type != cu::T_F16 : L.type == cu::T_Q4_0 || L.type == cu::T_Q8_0;
    };
    info.share = [layout](const Tensor* a, const Tensor* b) {
        const cu::WeightLayout A = layout(a), B = layout(b);
        return A.packed && B.packed && A.type == B.type && A.K == B.K;
    };
    return info;
}

struct Planned {
    int layer_launches[2];  // unfused, fused
    int total_launches[2];
    int moved = 0;            // fused steps of the graph that write their results apart (own_memory)
    std::string layer_steps;  // the fused layer's steps, for the failure message
};

Planned plan_model(const std::string& preset, DType type, int T, DType cache_type = DType::F16) {
    const std::string path = "/tmp/lumen-test-plan-" + std::to_string(getpid()) + ".gguf";
    SynthOptions so;
    so.type = type;
    synth_model(*find_preset(preset), so, path);
    auto m = Model::load(path);
    CpuBackend be(1);
    KVCache kv;
    kv.init(*m, be, 4, kKVBlockSize, cache_type);
    auto fg = build_forward(*m, kv, T, T, 1, 4);
    const std::vector<Tensor*>& nodes = fg->g.nodes();
    // Layer 0: from its attention norm to layer 1's (the third rms_norm).
    size_t norms[3], n = 0;
    for (size_t k = 0; k < nodes.size() && n < 3; k++)
        if (nodes[k]->op == Op::RmsNorm) norms[n++] = k;
    REQUIRE(n == 3);
    Planned p;
    for (int fuse = 0; fuse < 2; fuse++) {
        const cu::Plan plan = cu::make_plan(fg->g, product_info(), fuse != 0);
        size_t next = 0;  // the steps cover the nodes once, in order
        for (const cu::Step& s : plan.steps) {
            CHECK(s.first == next);
            CHECK(s.end > s.first);
            next = s.end;
            if (fuse && s.launches() > 0 && s.first >= norms[0] && s.first < norms[2])
                p.layer_steps += "\n  " + s.name() + (s.own_memory ? " (own memory)" : "");
            p.moved += s.own_memory;
        }
        CHECK(next == nodes.size());
        p.layer_launches[fuse] = plan.launches(norms[0], norms[2]);
        p.total_launches[fuse] = plan.launches();
    }
    std::remove(path.c_str());
    return p;
}

}  // namespace

// Per layer, unfused: rms_norm, mul, quantize, Q+K+V, rope, rope, kv_write, kv_write, attention,
// quantize, o, add, rms_norm, mul, quantize, gate+up, swiglu, quantize, down, add. Fused:
// rms_norm+mul+quantize, Q+K+V, rope+rope+kv_write+kv_write, attention, quantize, o+add,
// rms_norm+mul+quantize, gate+up, swiglu+quantize, down+add. (Attention adds a merge kernel when
// it splits the cache, in both.)
TEST_CASE("simt fused plan: a Llama decode layer (Q4_0) goes from 20 launches to 10") {
    for (int T : {1, 4}) {
        for (DType cache : {DType::F16, DType::Q8_0}) {
            CAPTURE(T);
            const Planned p = plan_model("tiny", DType::Q4_0, T, cache);
            INFO("fused layer:", p.layer_steps);
            CHECK(p.layer_launches[0] == 20);
            CHECK(p.layer_launches[1] == 10);
            CHECK(p.moved == 0);  // int8 products do not read X in their launch: no clash
            // The whole step: embedding, two layers, the final norm (with its mul and int8 copy), output.
            CHECK(p.total_launches[0] == 45);
            CHECK(p.total_launches[1] == 23);
        }
    }
}

// Qwen2's Q, K and V biases were adds between the products, which also kept them from sharing a
// launch: 25 launches unfused; fused, each bias is its product's epilogue.
TEST_CASE("simt fused plan: a Qwen2 decode layer (biases) goes from 25 launches to 10") {
    for (int T : {1, 4}) {
        CAPTURE(T);
        const Planned p = plan_model("tiny-qwen2", DType::Q4_0, T);
        INFO("fused layer:", p.layer_steps);
        CHECK(p.layer_launches[0] == 25);
        CHECK(p.layer_launches[1] == 10);
    }
}

// F16 weights multiply f32 activations: no quantization launches, 16 unfused. The o and down
// products read their f32 input in every block, and the graph's planner gave the add's result the
// memory of that input (freed by the product): those steps write their results apart.
TEST_CASE("simt fused plan: an F16 Llama decode layer goes from 16 launches to 9") {
    const Planned p = plan_model("tiny", DType::F16, 1);
    INFO("fused layer:", p.layer_steps);
    CHECK(p.layer_launches[0] == 16);
    CHECK(p.layer_launches[1] == 9);
}

// Prefill (tensor-core products): the row ops still fuse, the products keep their adds apart.
TEST_CASE("simt fused plan: a prompt of 64 tokens fuses the row ops only") {
    const Planned p = plan_model("tiny", DType::Q4_0, 64);
    INFO("fused layer:", p.layer_steps);
    // Unfused: rms_norm, mul, Q, K, V, rope x2, kv_write x2, attention, o, add, rms_norm, mul,
    // gate, up, swiglu, down, add, each product two launches (f16 conversion, GEMM) = 26; fused:
    // the norms take their muls, the ropes the writes.
    CHECK(p.layer_launches[0] == 26);
    CHECK(p.layer_launches[1] == 21);
}
