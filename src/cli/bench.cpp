// `lumen bench`: llama-bench-style timings with the same flags, plus the share of the hardware
// limit reached: GB/s for generation (every weight is read once per token), TFLOP/s for prompts.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "../../cuda/device.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "util/error.h"
#include "util/json.h"

namespace lumen::cli {

namespace {

struct Opts {
    std::string models;
    std::vector<int> n_prompt{512}, n_gen{128}, depth{0};
    std::vector<std::string> pg;
    int reps = 5, n_batch = 2048, n_ubatch = 512, n_threads = 0;
    std::string device = "auto", output = "md", cache_type = "f16";
};

struct Test { int n_prompt, n_gen, depth; };

struct Result {
    std::string model, backend;
    uint64_t model_size, n_params;
    Test test;
    double avg_ts, stddev_ts, gbps, tflops;
};

// Peak figures of known GPUs (datasheet HBM bandwidth, dense bf16 tensor-core rate).
bool device_peak(const std::string& name, double& gbps, double& tflops) {
    if (name.find("H100") != std::string::npos) { gbps = 3350; tflops = 989; return true; }
    if (name.find("H200") != std::string::npos) { gbps = 4800; tflops = 989; return true; }
    return false;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) if (!item.empty()) out.push_back(item);
    return out;
}

Result run_test(const Model& m, const std::string& path, const Opts& o, const Test& t) {
    RunOptions ro;
    ro.model = path;
    ro.device = o.device;
    ro.n_threads = o.n_threads;
    ro.n_batch = std::min(o.n_batch, o.n_ubatch);
    ro.cache_type = o.cache_type;
    ro.n_ctx = t.depth + t.n_prompt + t.n_gen + 16;
    auto session = open_session(m, ro, 0);  // like llama-bench: logits out, no sampling
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> tok(0, m.hp.n_vocab - 1);
    auto random_tokens = [&](int n) {
        std::vector<int32_t> v(static_cast<size_t>(n));
        for (auto& x : v) x = tok(rng);
        return v;
    };
    std::vector<double> ts;
    for (int r = -1; r < o.reps; r++) {  // r = -1: warm-up, not counted
        session->truncate(0);
        if (t.depth > 0) session->eval(random_tokens(t.depth));
        auto t0 = std::chrono::steady_clock::now();
        if (t.n_prompt > 0) session->eval(random_tokens(t.n_prompt));
        for (int i = 0; i < t.n_gen; i++) session->eval({tok(rng)});
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r >= 0) ts.push_back(double(t.n_prompt + t.n_gen) / s);
    }
    double mean = 0, var = 0;
    for (double x : ts) mean += x;
    mean /= double(ts.size());
    for (double x : ts) var += (x - mean) * (x - mean);
    const double sd = ts.size() > 1 ? std::sqrt(var / double(ts.size() - 1)) : 0.0;

    Result res;
    res.model = m.hp.name.empty() ? path : m.hp.name;
    res.backend = session->backend().name();
    res.model_size = m.weight_bytes();
    res.n_params = uint64_t(m.hp.n_params);
    res.test = t;
    res.avg_ts = mean;
    res.stddev_ts = sd;
    // Bytes read per generated token: every weight except the embedding table (only a row is
    // gathered, unless it doubles as the output matrix), plus the K and V cache up to this depth.
    const double embd = m.output == m.tok_embd ? 0.0 : double(m.tok_embd->nbytes);
    const double kv_row = 2.0 * m.hp.n_layer * m.hp.head_dim * m.hp.n_head_kv * 2.0;  // f16 K+V per position
    const double ctx = t.depth + t.n_prompt + t.n_gen / 2.0;
    res.gbps = t.n_gen > 0 && t.n_prompt == 0 ? mean * ((double(res.model_size) - embd) + kv_row * ctx) / 1e9 : 0.0;
    // FLOPs per prompt token: 2 per matrix weight (the embedding table is a lookup) + attention.
    const double mat_params = double(m.hp.n_params) - (m.output == m.tok_embd ? 0.0 : double(m.tok_embd->n_elements()));
    const double att = 4.0 * m.hp.n_layer * m.hp.n_head * m.hp.head_dim * (t.depth + t.n_prompt / 2.0);
    res.tflops = t.n_prompt > 0 && t.n_gen == 0 ? mean * (2.0 * mat_params + att) / 1e12 : 0.0;
    return res;
}

std::string test_name(const Test& t) {
    std::string s = t.n_prompt && t.n_gen ? "pp" + std::to_string(t.n_prompt) + "+tg" + std::to_string(t.n_gen)
                    : t.n_prompt ? "pp" + std::to_string(t.n_prompt) : "tg" + std::to_string(t.n_gen);
    if (t.depth) s += " @ d" + std::to_string(t.depth);
    return s;
}

void run(Opts& o) {
    if (o.reps < 1) fail("-r ", o.reps, ": need at least one repetition");
    if (o.output != "md" && o.output != "csv" && o.output != "json" && o.output != "jsonl")
        fail("-o ", o.output, ": use md, csv, json or jsonl");
    std::vector<Test> tests;
    for (int d : o.depth) {
        for (int p : o.n_prompt) if (p > 0) tests.push_back({p, 0, d});
        for (int n : o.n_gen) if (n > 0) tests.push_back({0, n, d});
        for (const std::string& s : o.pg) {
            int p = 0, n = 0;
            if (std::sscanf(s.c_str(), "%d,%d", &p, &n) != 2 || p < 0 || n < 0) fail("-pg ", s, ": expected PP,TG");
            tests.push_back({p, n, d});
        }
    }
    double peak_gbps = 0, peak_tflops = 0;
    bool known_peak = false;
    if (o.device != "cpu" && cuda::device_count() > 0) known_peak = device_peak(cuda::device_info(0).name, peak_gbps, peak_tflops);

    bool first = true;
    if (o.output == "md") {
        std::printf("| model | size | params | backend | test | t/s | GB/s | TFLOP/s |\n");
        std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n");
    } else if (o.output == "csv") {
        std::printf("model_type,model_size,model_n_params,backends,n_prompt,n_gen,n_depth,avg_ts,stddev_ts,gbps,tflops\n");
    } else if (o.output == "json") {
        std::printf("[\n");
    }
    for (const std::string& path : split(o.models)) {
        auto m = Model::load(path);
        for (const Test& t : tests) {
            Result r = run_test(*m, path, o, t);
            auto pct = [&](double v, double peak) {
                char b[48];
                if (v <= 0) return std::string("");
                if (known_peak) std::snprintf(b, sizeof b, "%.1f (%.0f%%)", v, 100 * v / peak);
                else std::snprintf(b, sizeof b, "%.1f", v);
                return std::string(b);
            };
            if (o.output == "md") {
                std::printf("| %s | %.2f GiB | %.2f B | %s | %s | %.2f ± %.2f | %s | %s |\n", r.model.c_str(),
                            double(r.model_size) / (1 << 30), double(r.n_params) / 1e9, r.backend.c_str(),
                            test_name(t).c_str(), r.avg_ts, r.stddev_ts, pct(r.gbps, peak_gbps).c_str(),
                            pct(r.tflops, peak_tflops).c_str());
            } else if (o.output == "csv") {
                std::printf("%s,%llu,%llu,%s,%d,%d,%d,%.4f,%.4f,%.2f,%.3f\n", json::quote(r.model).c_str(),
                            (unsigned long long)r.model_size, (unsigned long long)r.n_params,
                            json::quote(r.backend).c_str(), t.n_prompt, t.n_gen, t.depth, r.avg_ts, r.stddev_ts,
                            r.gbps, r.tflops);
            } else {
                std::ostringstream js;
                js << "{\"model_type\": " << json::quote(r.model) << ", \"model_size\": " << r.model_size
                   << ", \"model_n_params\": " << r.n_params << ", \"backends\": " << json::quote(r.backend)
                   << ", \"n_prompt\": " << t.n_prompt << ", \"n_gen\": " << t.n_gen << ", \"n_depth\": " << t.depth
                   << ", \"avg_ts\": " << r.avg_ts << ", \"stddev_ts\": " << r.stddev_ts << ", \"gbps\": " << r.gbps
                   << ", \"tflops\": " << r.tflops;
                if (known_peak)
                    js << ", \"gbps_fraction\": " << r.gbps / peak_gbps << ", \"tflops_fraction\": " << r.tflops / peak_tflops;
                js << "}";
                if (o.output == "json") std::printf("%s  %s", first ? "" : ",\n", js.str().c_str());
                else std::printf("%s\n", js.str().c_str());
            }
            first = false;
            std::fflush(stdout);
        }
    }
    if (o.output == "json") std::printf("\n]\n");
}

}  // namespace

void add_bench(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("bench", "Time prompt processing and generation (llama-bench's flags)");
    cmd->add_option("-m,--model", o->models, "GGUF file(s), comma separated")->required();
    cmd->add_option("-p,--n-prompt", o->n_prompt, "Prompt sizes")->delimiter(',');
    cmd->add_option("-n,--n-gen", o->n_gen, "Generation lengths")->delimiter(',');
    cmd->add_option("--pg", o->pg, "Prompt then generation: PP,TG (also -pg)");
    cmd->add_option("-d,--n-depth", o->depth, "Tokens already in the cache")->delimiter(',');
    cmd->add_option("-r,--repetitions", o->reps, "Repetitions (after one warm-up)");
    cmd->add_option("-b,--batch-size", o->n_batch, "Logical batch size");
    cmd->add_option("--ubatch-size", o->n_ubatch, "Physical batch size (also -ub)");
    cmd->add_option("-t,--threads", o->n_threads, "CPU threads");
    cmd->add_option("--device", o->device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
    cmd->add_option("--cache-type", o->cache_type, "KV cache type");
    cmd->add_option("-o,--output", o->output, "md, csv, json or jsonl");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
