// `lumen info`: what a GGUF file holds: architecture, hyperparameters, tokenizer, tensors.
#include <cstdio>
#include <map>
#include <sstream>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "model/hparams.h"
#include "util/json.h"

namespace lumen::cli {

namespace {

struct Opts {
    std::string model;
    bool tensors = false;
    bool json = false;
};

struct Special { const char* label; const char* key; };
const Special kSpecials[] = {
    {"bos", "tokenizer.ggml.bos_token_id"},       {"eos", "tokenizer.ggml.eos_token_id"},
    {"eot", "tokenizer.ggml.eot_token_id"},       {"eom", "tokenizer.ggml.eom_token_id"},
    {"unk", "tokenizer.ggml.unknown_token_id"},   {"sep", "tokenizer.ggml.seperator_token_id"},
    {"pad", "tokenizer.ggml.padding_token_id"},
};

std::string fmt_bytes(double b) {
    char buf[32];
    if (b >= 1 << 30) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
    else std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
    return buf;
}

std::string fmt_count(int64_t n) {
    char buf[32];
    if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
    else std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
    return buf;
}

void run(const Opts& o) {
    auto f = gguf::File::open(o.model);
    HParams h = read_hparams(*f);
    size_t tensor_bytes = 0;
    std::map<std::string, int> type_counts;
    for (const auto& t : f->tensors()) {
        tensor_bytes += t.nbytes;
        type_counts[dtype_name(t.type)]++;
    }
    double bpw = h.n_params ? 8.0 * double(tensor_bytes) / double(h.n_params) : 0.0;
    const gguf::Value* tokens = f->get_array("tokenizer.ggml.tokens", gguf::VType::STRING);
    auto token_text = [&](int64_t id) -> std::string {
        if (!tokens || id < 0 || uint64_t(id) >= tokens->count) return "?";
        return std::string(tokens->strs[size_t(id)]);
    };
    bool has_template = f->find("tokenizer.chat_template") != nullptr;
    std::string tok_model = f->get_str("tokenizer.ggml.model"), tok_pre = f->get_str("tokenizer.ggml.pre");

    if (o.json) {
        std::ostringstream js;
        js << "{\"file\": " << json::quote(o.model) << ", \"file_size\": " << f->file_size()
           << ", \"gguf_version\": " << f->version() << ", \"architecture\": " << json::quote(h.arch)
           << ", \"supported\": " << (arch_supported(h.arch) ? "true" : "false")
           << ", \"name\": " << json::quote(h.name) << ", \"n_layer\": " << h.n_layer
           << ", \"n_embd\": " << h.n_embd << ", \"n_head\": " << h.n_head << ", \"n_head_kv\": " << h.n_head_kv
           << ", \"n_ff\": " << h.n_ff << ", \"head_dim\": " << h.head_dim << ", \"n_vocab\": " << h.n_vocab
           << ", \"n_ctx_train\": " << h.n_ctx_train << ", \"norm_eps\": " << h.norm_eps
           << ", \"rope\": {\"type\": \"" << (h.rope_neox ? "neox" : "normal") << "\", \"n_rot\": " << h.n_rot
           << ", \"freq_base\": " << h.rope_freq_base << ", \"scaling\": \"" << rope_scaling_name(h.rope_scaling)
           << "\", \"factor\": " << h.rope_scale_factor << ", \"original_context\": " << h.rope_orig_ctx << "}"
           << ", \"tied_embeddings\": " << (h.tied_embeddings ? "true" : "false")
           << ", \"n_params\": " << h.n_params << ", \"bits_per_weight\": " << bpw
           << ", \"tokenizer\": {\"model\": " << json::quote(tok_model) << ", \"pre\": " << json::quote(tok_pre)
           << ", \"chat_template\": " << (has_template ? "true" : "false") << ", \"special\": {";
        bool first = true;
        for (const Special& s : kSpecials) {
            if (!f->find(s.key)) continue;
            int64_t id = f->get_int(s.key, -1);
            js << (first ? "" : ", ") << "\"" << s.label << "\": {\"id\": " << id
               << ", \"text\": " << json::quote(token_text(id)) << "}";
            first = false;
        }
        js << "}}";
        if (o.tensors) {
            js << ", \"tensors\": [";
            for (size_t k = 0; k < f->tensors().size(); k++) {
                const auto& t = f->tensors()[k];
                js << (k ? ", " : "") << "{\"name\": " << json::quote(t.name) << ", \"type\": \""
                   << dtype_name(t.type) << "\", \"shape\": " << t.shape_string() << ", \"offset\": " << t.offset
                   << ", \"bytes\": " << t.nbytes << "}";
            }
            js << "]";
        }
        js << "}\n";
        std::fputs(js.str().c_str(), stdout);
        return;
    }

    std::printf("file:            %s (%s, GGUF v%u)\n", o.model.c_str(), fmt_bytes(double(f->file_size())).c_str(),
                f->version());
    std::printf("architecture:    %s%s\n", h.arch.c_str(), arch_supported(h.arch) ? "" : "  (not supported by lumen)");
    if (!h.name.empty()) std::printf("name:            %s\n", h.name.c_str());
    std::printf("layers:          %d\n", h.n_layer);
    std::printf("embedding:       %d\n", h.n_embd);
    std::printf("heads:           %d (KV heads %d, head dim %d)\n", h.n_head, h.n_head_kv, h.head_dim);
    std::printf("feed-forward:    %d\n", h.n_ff);
    std::printf("vocab:           %d\n", h.n_vocab);
    std::printf("context length:  %d\n", h.n_ctx_train);
    std::printf("rms norm eps:    %g\n", h.norm_eps);
    std::printf("rope:            %s, %d dims, base %g, scaling %s", h.rope_neox ? "neox" : "normal", h.n_rot,
                h.rope_freq_base, rope_scaling_name(h.rope_scaling));
    if (h.rope_scaling != RopeScaling::None) std::printf(" x%g (original context %d)", h.rope_scale_factor, h.rope_orig_ctx);
    std::printf("\n");
    std::printf("tied embeddings: %s\n", h.tied_embeddings ? "yes" : "no");
    std::printf("parameters:      %s (%lld)\n", fmt_count(h.n_params).c_str(), (long long)h.n_params);
    std::printf("tensor data:     %s, %.2f bits per weight\n", fmt_bytes(double(tensor_bytes)).c_str(), bpw);
    std::string types;
    for (const auto& [name, n] : type_counts) types += (types.empty() ? "" : ", ") + name + " x" + std::to_string(n);
    std::printf("tensor types:    %s\n", types.empty() ? "(no tensors: vocab only)" : types.c_str());
    std::printf("tokenizer:       %s, pre-tokenizer %s\n", tok_model.empty() ? "(none)" : tok_model.c_str(),
                tok_pre.empty() ? "default" : tok_pre.c_str());
    for (const Special& s : kSpecials) {
        if (!f->find(s.key)) continue;
        int64_t id = f->get_int(s.key, -1);
        std::printf("  %-4s token:     %lld %s\n", s.label, (long long)id, json::quote(token_text(id)).c_str());
    }
    std::printf("chat template:   %s\n", has_template ? "present" : "absent");
    if (o.tensors) {
        std::printf("\n%-48s %-8s %-28s %14s\n", "tensor", "type", "shape", "bytes");
        for (const auto& t : f->tensors())
            std::printf("%-48s %-8s %-28s %14zu\n", t.name.c_str(), dtype_name(t.type), t.shape_string().c_str(),
                        t.nbytes);
    }
}

}  // namespace

void add_info(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("info", "Show a GGUF model's architecture, hyperparameters, tokenizer and tensors");
    cmd->add_option("-m,--model", o->model, "GGUF file")->required();
    cmd->add_flag("--tensors", o->tensors, "List every tensor");
    cmd->add_flag("--json", o->json, "Print one JSON object");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
