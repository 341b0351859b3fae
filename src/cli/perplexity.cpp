// `lumen perplexity`: llama.cpp's method, so numbers compare. The text is tokenized once (with
// BOS when the model adds one) and cut into chunks of n_ctx tokens; each chunk starts with BOS
// and is evaluated from an empty cache; only the second half of each chunk is scored.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace lumen::cli {

namespace {

struct Opts {
    RunOptions run;
    std::string text_file;
    int chunks = -1;
};

void run(Opts& o) {
    if (o.run.n_ctx <= 0) o.run.n_ctx = 512;
    const int n_ctx = o.run.n_ctx;
    std::string text = read_file(o.text_file, "-f");
    auto model = load_model(o.run);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    const bool add_bos = tok.add_bos_default();
    std::vector<int32_t> ids = tok.encode(text, true, false);
    int n_chunk = int(ids.size()) / n_ctx;
    if (n_chunk == 0)
        fail("-f ", o.text_file, ": ", ids.size(), " tokens is less than one chunk of ", n_ctx, " (use a smaller -c)");
    if (o.chunks > 0 && o.chunks < n_chunk) n_chunk = o.chunks;
    auto session = open_session(*model, o.run, 0);
    const int V = model->hp.n_vocab, first = n_ctx / 2;
    std::fprintf(stderr, "perplexity: %zu tokens, %d chunks of %d, scoring the last %d of each (%s)\n", ids.size(),
                 n_chunk, n_ctx, n_ctx - 1 - first, session->backend().name().c_str());

    double nll = 0, nll2 = 0;
    int64_t count = 0;
    Progress progress("perplexity", n_chunk, "chunks");
    for (int c = 0; c < n_chunk; c++) {
        std::vector<int32_t> chunk(ids.begin() + int64_t(c) * n_ctx, ids.begin() + int64_t(c + 1) * n_ctx);
        if (add_bos) chunk[0] = tok.bos();
        session->truncate(0);
        const std::vector<float>& logits = session->eval(chunk, true);
        for (int j = first; j < n_ctx - 1; j++) {
            const float* row = logits.data() + size_t(j) * size_t(V);
            float mx = row[0];
            for (int i = 1; i < V; i++) mx = std::max(mx, row[i]);
            double sum = 0;
            for (int i = 0; i < V; i++) sum += std::exp(double(row[i] - mx));
            const double lp = double(row[ids[size_t(int64_t(c) * n_ctx + j + 1)]] - mx) - std::log(sum);
            nll -= lp;
            nll2 += lp * lp;
            count++;
        }
        char buf[64];
        std::snprintf(buf, sizeof buf, "PPL %.4f", std::exp(nll / double(count)));
        std::printf("[%d]%.4f,", c + 1, std::exp(nll / double(count)));
        std::fflush(stdout);
        progress.update(c + 1, buf);
    }
    progress.finish();
    const double mean = nll / double(count), var = nll2 / double(count) - mean * mean;
    const double ppl = std::exp(mean);
    const double err = count > 1 && var > 0 ? ppl * std::sqrt(var / double(count - 1)) : 0.0;
    std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, err);
}

}  // namespace

void add_perplexity(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("perplexity", "Measure a model's perplexity on a text file (llama.cpp's method)");
    add_run_options(cmd, o->run);
    cmd->add_option("-f,--file", o->text_file, "Text file")->required();
    cmd->add_option("--chunks", o->chunks, "Score at most this many chunks");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
