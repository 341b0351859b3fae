// A tiny random model (the synth preset "tiny") in a file under /tmp that lives as long as the object.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "model/model.h"
#include "model/synth.h"

namespace lumen {

struct TinyModel {
    std::string path;
    std::unique_ptr<Model> m;
    explicit TinyModel(DType type = DType::F16, uint64_t seed = 42) {
        static int serial = 0;  // several per process may exist at once
        path = "/tmp/lumen-test-tiny-" + std::to_string(getpid()) + "-" + std::to_string(serial++) + ".gguf";
        SynthOptions so;
        so.type = type;
        so.seed = seed;
        synth_model(*find_preset("tiny"), so, path);
        m = Model::load(path);
    }
    ~TinyModel() { std::remove(path.c_str()); }
    TinyModel(const TinyModel&) = delete;
    TinyModel& operator=(const TinyModel&) = delete;
};

}  // namespace lumen
