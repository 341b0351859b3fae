// `lumen perplexity`: llama.cpp's method, so numbers compare. The text is tokenized once (with
// BOS when the model adds one) and cut into chunks of n_ctx tokens; each chunk starts with BOS
// and is evaluated from an empty cache; only the second half of each chunk is scored.
//
// llama.cpp's KL-divergence workflow on top: --kl-divergence-base FILE alone also writes the
// scored positions' log-probabilities to FILE (llama.cpp's format, engine/logits_file.h); with
// --kl-divergence it reads such a file instead, evaluates this model on the file's tokens and
// compares the two distributions position by position (engine/kl_divergence.h).
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "engine/kl_divergence.h"
#include "engine/logits_file.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace lumen::cli {

namespace {

struct Opts {
    RunOptions run;
    std::string text_file;
    int chunks = -1;
    std::string kld_base;
    bool kld = false;
};

// The logits of every position of chunk c of `ids`, its first token replaced by BOS where the
// model wants one (llama.cpp does the same, so the stored tokens stay the text's own).
const std::vector<float>& eval_chunk(Session& session, const tokenizer::Tokenizer& tok, const std::vector<int32_t>& ids,
                                     int c, int n_ctx) {
    std::vector<int32_t> chunk(ids.begin() + int64_t(c) * n_ctx, ids.begin() + int64_t(c + 1) * n_ctx);
    if (tok.add_bos_default()) chunk[0] = tok.bos();
    session.truncate(0);
    return session.eval(chunk, true);
}

void run_perplexity(Opts& o) {
    if (o.run.n_ctx <= 0) o.run.n_ctx = 512;
    const int n_ctx = o.run.n_ctx;
    std::string text = read_file(o.text_file, "-f");
    auto model = load_model(o.run);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    std::vector<int32_t> ids = tok.encode(text, true, false);
    int n_chunk = int(ids.size()) / n_ctx;
    if (n_chunk == 0)
        fail("-f ", o.text_file, ": ", ids.size(), " tokens is less than one chunk of ", n_ctx, " (use a smaller -c)");
    if (o.chunks > 0 && o.chunks < n_chunk) n_chunk = o.chunks;
    auto session = open_session(*model, o.run, 0);
    const int V = model->hp.n_vocab, first = scored_first(n_ctx);
    std::unique_ptr<LogitsFileWriter> base;
    if (!o.kld_base.empty()) base = std::make_unique<LogitsFileWriter>(o.kld_base, n_ctx, V, n_chunk, ids.data());
    std::fprintf(stderr, "perplexity: %zu tokens, %d chunks of %d, scoring the last %d of each (%s)\n", ids.size(),
                 n_chunk, n_ctx, scored_per_chunk(n_ctx), session->backend().name().c_str());

    double nll = 0, nll2 = 0;
    int64_t count = 0;
    Progress progress("perplexity", n_chunk, "chunks");
    for (int c = 0; c < n_chunk; c++) {
        const std::vector<float>& logits = eval_chunk(*session, tok, ids, c, n_ctx);
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
        if (base) base->write_chunk(logits.data() + size_t(first) * size_t(V));
        char buf[64];
        std::snprintf(buf, sizeof buf, "PPL %.4f", std::exp(nll / double(count)));
        std::printf("[%d]%.4f,", c + 1, std::exp(nll / double(count)));
        std::fflush(stdout);
        progress.update(c + 1, buf);
    }
    progress.finish();
    if (base) {
        base->close();
        std::fprintf(stderr, "perplexity: wrote the log-probabilities of %d chunks to %s\n", n_chunk, o.kld_base.c_str());
    }
    const double mean = nll / double(count), var = nll2 / double(count) - mean * mean;
    const double ppl = std::exp(mean);
    const double err = count > 1 && var > 0 ? ppl * std::sqrt(var / double(count - 1)) : 0.0;
    std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, err);
}

// With -f, the text must give the tokens the base file holds (the same text and tokenizer).
void check_text(const Opts& o, const std::string& text, const tokenizer::Tokenizer& tok, const LogitsFileHeader& h) {
    std::vector<int32_t> ids = tok.encode(text, true, false);
    if (ids.size() < h.tokens.size())
        fail("-f ", o.text_file, ": ", ids.size(), " tokens, but the base file ", o.kld_base, " holds ", h.tokens.size());
    for (size_t i = 0; i < h.tokens.size(); i++)
        if (ids[i] != h.tokens[i])
            fail("-f ", o.text_file, ": token ", i, " is ", ids[i], " in the text but ", h.tokens[i], " in the base file ",
                 o.kld_base, " (another text or tokenizer)");
}

void run_kl_divergence(Opts& o) {
    // Everything about the file is checked before the model loads.
    LogitsFileReader base(o.kld_base);
    const LogitsFileHeader& h = base.header();
    const int n_ctx = h.n_ctx;
    if (o.run.n_ctx > 0 && o.run.n_ctx < n_ctx)
        fail("-c ", o.run.n_ctx, ": the base file ", o.kld_base, " holds chunks of ", n_ctx, " tokens");
    o.run.n_ctx = n_ctx;
    const std::string text = o.text_file.empty() ? std::string() : read_file(o.text_file, "-f");
    auto model = load_model(o.run);
    const int V = model->hp.n_vocab;
    if (V != h.n_vocab)
        fail("--kl-divergence-base ", o.kld_base, ": n_vocab ", h.n_vocab, ", but the model ", o.run.model, " has ", V);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    if (!o.text_file.empty()) check_text(o, text, tok, h);
    int n_chunk = h.n_chunk;
    if (o.chunks > 0 && o.chunks < n_chunk) n_chunk = o.chunks;
    auto session = open_session(*model, o.run, 0);
    const int first = scored_first(n_ctx), width = logits_row_width(V);
    std::fprintf(stderr, "kl-divergence: %d chunks of %d from %s, scoring the last %d of each (%s)\n", n_chunk, n_ctx,
                 o.kld_base.c_str(), scored_per_chunk(n_ctx), session->backend().name().c_str());

    KldStats stats(V);
    std::printf("%s", KldStats::chunk_header().c_str());
    Progress progress("kl-divergence", n_chunk, "chunks");
    for (int c = 0; c < n_chunk; c++) {
        const std::vector<float>& logits = eval_chunk(*session, tok, h.tokens, c, n_ctx);
        const std::vector<uint16_t>& rows = base.read_chunk();
        for (int j = 0; j < scored_per_chunk(n_ctx); j++) {
            const size_t pos = size_t(first + j);
            stats.add(logits.data() + pos * size_t(V), rows.data() + size_t(j) * size_t(width),
                      h.tokens[size_t(c) * size_t(n_ctx) + pos + 1]);
        }
        std::printf("%s", stats.chunk_line(c + 1).c_str());
        std::fflush(stdout);
        progress.update(c + 1);
    }
    progress.finish();
    // As llama.cpp: percentiles and standard errors of fewer positions say little.
    if (stats.count() < 100) {
        std::fprintf(stderr,
                     "kl-divergence: %zu positions, too few for the statistics (they need 100: more chunks or a "
                     "larger context)\n",
                     stats.count());
        return;
    }
    std::printf("\n%s", format_kld_report(stats.report()).c_str());
}

void run(Opts& o) {
    if (o.kld && o.kld_base.empty())
        fail("--kl-divergence: needs --kl-divergence-base FILE, the base model's log-probabilities");
    if (o.kld) return run_kl_divergence(o);
    if (o.text_file.empty())
        fail("-f: a text file is required (except with --kl-divergence, where the base file holds the tokens)");
    run_perplexity(o);
}

}  // namespace

void add_perplexity(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("perplexity", "Measure a model's perplexity on a text file (llama.cpp's method)");
    add_run_options(cmd, o->run);
    cmd->add_option("-f,--file", o->text_file,
                    "Text file (optional with --kl-divergence: then checked against the base file's tokens)");
    cmd->add_option("--chunks", o->chunks, "Score at most this many chunks");
    cmd->add_option("--kl-divergence-base", o->kld_base,
                    "Write the log-probabilities of the scored positions to this file (llama.cpp's format); with "
                    "--kl-divergence, read them from it");
    cmd->add_flag("--kl-divergence", o->kld,
                  "Compare this model with the base file's log-probabilities (KL divergence, llama.cpp's statistics)");
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
