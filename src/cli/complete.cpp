// `lumen complete`: continue a prompt, streaming the new text to stdout.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spec_options.h"
#include "engine/generator.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::cli {

namespace {

struct Opts {
    RunOptions run;
    SamplingParams sampling;
    SpecOptions spec;
    std::string prompt, prompt_file;
    int n_predict = -1;
    bool ignore_eos = false, echo = false;
};

void run(Opts& o) {
    if (o.prompt.empty() == o.prompt_file.empty()) fail("give the prompt with exactly one of -p or -f");
    std::string prompt = o.prompt_file.empty() ? o.prompt : read_file(o.prompt_file, "-f");
    auto model = load_model(o.run);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    std::vector<int32_t> ids = tok.encode(prompt, true, true);
    if (ids.empty()) fail("the prompt is empty");
    auto session = open_session(*model, o.run);
    const int n_ctx = session->n_ctx();
    if (int(ids.size()) >= n_ctx)
        fail("the prompt has ", ids.size(), " tokens, more than the context size ", n_ctx, " allows (raise -c)");
    int n_predict = o.n_predict < 0 ? n_ctx - int(ids.size()) : o.n_predict;
    if (int(ids.size()) + n_predict > n_ctx)
        fail("-n ", n_predict, ": prompt (", ids.size(), " tokens) + generation exceeds the context size ", n_ctx,
             " (raise -c)");
    Speculation spec = make_speculation(o.spec, o.run, tok, o.sampling, n_ctx);

    Sampler sampler(o.sampling, model->hp.n_vocab);
    for (int32_t t : ids) sampler.accept(t);
    unicode::Utf8Stream out;
    if (o.echo) {
        std::string text = out.push(tok.decode(ids));
        std::fwrite(text.data(), 1, text.size(), stdout);
    }

    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    session->decode(ids);
    auto t1 = clock::now();
    Generator gen(*session, sampler, [&tok](int32_t t) { return tok.is_eog(t); });
    gen.set_drafter(spec.get(), spec.params);
    GenerateOptions go;
    go.n_predict = n_predict;
    go.ignore_eos = o.ignore_eos;
    std::vector<int32_t> context = ids;
    if (n_predict > 0) {
        gen.run(context, *session, go, [&](int32_t t) {
            std::string text = out.push(tok.piece(t));
            std::fwrite(text.data(), 1, text.size(), stdout);
            std::fflush(stdout);
        });
    }
    std::string rest = out.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    auto t2 = clock::now();
    const int n_gen = gen.stats().generated;
    double pp = std::chrono::duration<double>(t1 - t0).count(), tg = std::chrono::duration<double>(t2 - t1).count();
    std::fprintf(stderr, "\nprompt: %zu tokens in %.3f s, %.2f t/s | generated: %d tokens in %.3f s, %.2f t/s (%s)\n",
                 ids.size(), pp, double(ids.size()) / pp, n_gen, tg, n_gen > 0 ? double(n_gen) / tg : 0.0,
                 session->backend().name().c_str());
    print_spec_stats(spec, gen.stats());
}

}  // namespace

void add_complete(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("complete", "Continue a prompt and stream the new text");
    add_run_options(cmd, o->run);
    cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
    cmd->add_option("-f,--file", o->prompt_file, "Read the prompt from a file");
    cmd->add_option("-n,--n-predict", o->n_predict, "Tokens to generate (-1: until end of text or context)");
    cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
    cmd->add_flag("--echo", o->echo, "Print the prompt before the continuation");
    add_sampling_options(cmd, o->sampling);
    add_spec_options(cmd, o->spec);
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
