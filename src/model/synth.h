// Random-weight GGUF models with the exact shapes of real ones (`lumen synth`). Quantized blocks
// are written directly (random quants, small positive scales), so a multi-GB file takes seconds.
#pragma once
#include <cstdint>
#include <string>

#include "model/presets.h"
#include "tensor/dtype.h"

namespace lumen {

struct SynthOptions {
    DType type = DType::Q4_0;   // matrices; norms stay F32
    DType output_type;          // output.weight (and tied embedding): defaults per type, see synth.cpp
    bool output_type_set = false;
    uint64_t seed = 42;
    int n_threads = 0;
};

// Writes the model to `path` (atomically). Throws lumen::Error on bad options or I/O failure.
void synth_model(const Preset& p, const SynthOptions& o, const std::string& path);

// Fills `bytes` bytes of tensor data of type t with random but well-formed values.
void fill_random(DType t, uint8_t* dst, size_t bytes, uint64_t seed);

}  // namespace lumen
