// `lumen batch`: generate for a file of prompts through the scheduler (continuous batching), one JSONL
// record per finished generation, written in order of completion and flushed at once so that a killed
// run can be resumed without losing or repeating anything.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "chat/template.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spec_options.h"
#include "engine/backend_select.h"
#include "engine/batch_input.h"
#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/progress.h"

namespace lumen::cli {

namespace {

struct Opts {
    RunOptions run;
    SamplingParams sampling;
    SpecOptions spec;
    std::string prompts, output, system, system_file, chat_template, input_format = "auto";
    int n_parallel = 8, n_predict = -1, n_samples = 1;
    int64_t kv_tokens = 0;
    bool chat = false, jinja = false, resume = false, strict = false, ignore_eos = false;
};

// The output: a file opened for appending, or stdout. Each record goes out in one write() so a kill
// can tear at most the line being written, which --resume then drops.
class Output {
public:
    explicit Output(const std::string& path) : path_(path) {
        if (path.empty()) return;
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd_ < 0) fail("-o ", path, ": cannot open for writing: ", std::strerror(errno));
    }
    ~Output() {
        if (fd_ > STDOUT_FILENO) ::close(fd_);
    }
    Output(const Output&) = delete;
    Output& operator=(const Output&) = delete;

    void write(const std::string& line) {
        size_t off = 0;
        while (off < line.size()) {
            ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail(path_.empty() ? std::string("stdout") : "-o " + path_, ": write failed: ", std::strerror(errno));
            off += size_t(n);
        }
    }
    bool is_stdout() const { return fd_ == STDOUT_FILENO; }

private:
    std::string path_;
    int fd_ = STDOUT_FILENO;
};

bool file_size(const std::string& path, off_t& size, struct stat* st_out = nullptr) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return false;
    size = st.st_size;
    if (st_out) *st_out = st;
    return true;
}

// Ctrl-C or SIGTERM: stop after the current step, with the summary and a hint to --resume. The
// handler resets itself, so a second signal kills at once (records already written stay whole or torn,
// which --resume handles either way).
volatile sig_atomic_t g_stop = 0;
void on_stop(int sig) { g_stop = sig; }

void catch_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

struct Job {
    size_t item;  // index into the parsed items
    int sample;
};

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

void check_flags(const Opts& o) {
    if (o.n_parallel < 1) fail("-np ", o.n_parallel, ": want at least 1 sequence");
    if (o.n_samples < 1) fail("--n-samples ", o.n_samples, ": want at least 1");
    if (o.n_predict == 0 || o.n_predict < -1) fail("-n ", o.n_predict, ": want a positive count or -1");
    if (o.kv_tokens < 0) fail("--kv-tokens ", o.kv_tokens, ": must not be negative");
    check_threads(o.run);
    if (o.run.n_batch < 1) fail("-b ", o.run.n_batch, ": want at least 1");
    if (o.jinja && !o.chat_template.empty()) fail("give at most one of --jinja or --chat-template");
    if (o.resume && o.output.empty()) fail("--resume needs -o OUT.jsonl (it continues what a previous run wrote there)");
    if (o.sampling.temp < 0) fail("--temp ", o.sampling.temp, ": must not be negative");
}

// Prints every line error; with `fatal` the last one becomes the thrown error (one line when one error).
void report(const std::vector<batch::LineError>& errs, const std::string& path, bool fatal) {
    for (size_t i = 0; i < errs.size(); i++) {
        const std::string where = path + ":" + std::to_string(errs[i].line) + ": ";
        if (fatal && i + 1 == errs.size()) fail(where, errs[i].message);
        std::fprintf(stderr, "lumen: %s%s%s%s\n", fatal ? "error: " : "warning: ", where.c_str(), errs[i].message.c_str(),
                     fatal ? "" : " (line skipped)");
    }
}

void run(Opts& o) {
    check_flags(o);
    batch::Format format = batch::Format::Auto;
    if (o.input_format == "text") format = batch::Format::Text;
    else if (o.input_format == "jsonl") format = batch::Format::Jsonl;

    batch::Input in = batch::parse_prompts(read_file(o.prompts, "-f"), o.prompts, format);
    std::vector<batch::LineError> malformed = in.errors;
    if (!in.duplicates.empty()) {
        report(in.errors, o.prompts, false);
        report(in.duplicates, o.prompts, true);
    }
    if (o.strict && !malformed.empty()) report(malformed, o.prompts, true);
    if (in.items.empty()) {
        report(malformed, o.prompts, false);
        fail("-f ", o.prompts, ": no usable prompts in the file");
    }
    const bool any_messages =
        std::any_of(in.items.begin(), in.items.end(), [](const batch::Item& it) { return !it.messages.empty(); });
    if (!o.system_file.empty()) {
        if (!o.system.empty()) fail("give the system prompt with at most one of --system or --system-file");
        o.system = read_file(o.system_file, "--system-file");
        while (!o.system.empty() && (o.system.back() == '\n' || o.system.back() == '\r')) o.system.pop_back();
        if (o.system.empty()) fail("--system-file ", o.system_file, ": the file is empty");
    }
    if (unicode::find_invalid_utf8(o.system) != std::string::npos) fail("the system prompt is not valid UTF-8");
    if (!o.system.empty() && !o.chat && !any_messages)
        fail("--system applies to chat prompts: pass --chat (or give \"messages\" in JSONL)");

    // What a previous run already finished.
    batch::Resume done;
    off_t out_size = 0, in_size = 0;
    struct stat out_st {}, in_st {};
    if (!o.output.empty() && file_size(o.output, out_size, &out_st)) {
        if (file_size(o.prompts, in_size, &in_st) && in_st.st_dev == out_st.st_dev && in_st.st_ino == out_st.st_ino)
            fail("-o ", o.output, ": is the prompts file itself");
        if (out_size > 0 && !o.resume)
            fail("-o ", o.output, ": the file exists and is not empty; pass --resume to continue that run, or remove it");
        if (o.resume) done = batch::read_output(read_file(o.output, "-o"), o.output);
    }

    std::vector<Job> jobs;
    int64_t already = 0;
    for (size_t i = 0; i < in.items.size(); i++)
        for (int s = 0; s < o.n_samples; s++) {
            if (done.done.count({in.items[i].id.json(), s})) already++;
            else jobs.push_back({i, s});
        }

    auto truncate_torn = [&] {
        if (done.torn_line == 0) return;
        if (::truncate(o.output.c_str(), off_t(done.keep_bytes)) != 0)
            fail("-o ", o.output, ": cannot drop the torn last line: ", std::strerror(errno));
        std::fprintf(stderr, "lumen: %s:%d: dropped a torn last line (from a killed run)\n", o.output.c_str(), done.torn_line);
    };

    if (jobs.empty()) {
        if (!o.strict) report(malformed, o.prompts, false);
        truncate_torn();
        if (!o.output.empty()) {
            Output touch(o.output);  // the file exists after a run, even an empty one
        }
        std::fprintf(stderr, "lumen batch: nothing to do: %lld of %lld generations already in %s\n", (long long)already,
                     (long long)(in.items.size() * size_t(o.n_samples)), o.output.empty() ? "the output" : o.output.c_str());
        return;
    }

    auto model = load_model(o.run);
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    SchedulerOptions so;
    so.n_parallel = o.n_parallel;
    so.n_ctx = o.run.n_ctx;
    so.n_batch = o.run.n_batch;
    so.n_threads = o.run.n_threads;
    so.kv_tokens = o.kv_tokens;
    if (!dtype_from_name(o.run.cache_type, so.cache_type)) fail("--cache-type ", o.run.cache_type, ": unknown type");

    // The chat template, only when some prompt needs it.
    std::optional<chat::ChatTemplate> tmpl;
    std::string notice;
    if (o.chat || any_messages) {
        auto token_text = [&tok](int32_t id) { return id >= 0 ? tok.token_text(id) : std::string(); };
        tmpl = o.jinja ? chat::ChatTemplate::jinja_for_model(*model->file, token_text(tok.bos()), token_text(tok.eos()))
                       : chat::ChatTemplate::for_model(*model->file, o.chat_template, &notice);
        if (!notice.empty()) std::fprintf(stderr, "lumen: %s\n", notice.c_str());
    }

    Scheduler sched(*model, make_backend(o.run.device, o.run.n_threads, o.run.n_threads_batch), so,
                    [&tok](int32_t t) { return tok.is_eog(t); });
    const int n_ctx = sched.n_ctx();
    Speculation spec = make_batch_speculation(o.spec, o.run, tok, so, n_ctx, sched.backend());
    sched.set_drafter(spec.get_batch(), spec.params);

    // Tokenize each prompt needed (once for all its samples) and check it fits.
    std::vector<std::vector<int32_t>> ids(in.items.size());
    std::vector<bool> usable(in.items.size(), false), wanted(in.items.size(), false);
    for (const Job& j : jobs) wanted[j.item] = true;
    for (size_t i = 0; i < in.items.size(); i++) {
        if (!wanted[i]) continue;
        const batch::Item& it = in.items[i];
        std::string text = it.prompt;
        bool add_special = true;
        if (tmpl && (!it.messages.empty() || o.chat)) {
            std::vector<chat::Message> msgs = it.messages;
            if (msgs.empty()) msgs.push_back({"user", it.prompt});
            if (!o.system.empty() && msgs.front().role != "system") msgs.insert(msgs.begin(), {"system", o.system});
            text = tmpl->format(msgs, true);
            // A template that writes the BOS itself (Jinja) must not get a second one.
            if (tok.bos() >= 0) {
                const std::string& bos = tok.token_text(tok.bos());
                if (!bos.empty() && text.compare(0, bos.size(), bos) == 0) add_special = false;
            }
        }
        ids[i] = tok.encode(text, add_special, true);
        if (ids[i].empty()) malformed.push_back({it.line, "the prompt is empty"});
        else if (int(ids[i].size()) >= n_ctx)
            malformed.push_back({it.line, "the prompt has " + std::to_string(ids[i].size()) + " tokens, the context holds " +
                                              std::to_string(n_ctx) + " (raise -c)"});
        else usable[i] = true;
    }
    std::stable_sort(malformed.begin(), malformed.end(),
                     [](const batch::LineError& a, const batch::LineError& b) { return a.line < b.line; });
    report(malformed, o.prompts, o.strict);
    jobs.erase(std::remove_if(jobs.begin(), jobs.end(), [&](const Job& j) { return !usable[j.item]; }), jobs.end());

    for (size_t k = 0; k < jobs.size(); k++) {
        const batch::Item& it = in.items[jobs[k].item];
        Request r;
        r.id = int64_t(k);
        r.prompt = ids[jobs[k].item];
        const int n = it.n_predict ? *it.n_predict : o.n_predict;
        r.n_predict = n < 0 ? n_ctx - int(r.prompt.size()) : n;
        r.ignore_eos = o.ignore_eos;
        r.sampling = o.sampling;
        if (it.temperature) r.sampling.temp = *it.temperature;
        if (it.top_k) r.sampling.top_k = *it.top_k;
        if (it.top_p) r.sampling.top_p = *it.top_p;
        if (it.min_p) r.sampling.min_p = *it.min_p;
        if (it.seed) r.sampling.seed = *it.seed;
        // Samples of one prompt differ by seed; a fixed seed stays reproducible per (id, sample).
        if (r.sampling.seed != 0xFFFFFFFF && jobs[k].sample > 0) {
            r.sampling.seed += uint64_t(jobs[k].sample);
            if (r.sampling.seed == 0xFFFFFFFF) r.sampling.seed++;
        }
        sched.submit(std::move(r));
    }

    truncate_torn();
    Output out(o.output);
    const bool clear_bar = out.is_stdout() && stderr_is_tty() && isatty(STDOUT_FILENO);
    Progress progress("batch", int64_t(jobs.size()));
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    int64_t n_done = 0, gen_tokens = 0, prompt_tokens = 0, cached_tokens = 0;
    auto rate = [&] {
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        return s > 0 ? double(gen_tokens) / s : 0.0;
    };
    catch_stop_signals();
    while (!sched.idle() && !g_stop) {
        for (Finished& f : sched.step()) {
            const Job& j = jobs[size_t(f.id)];
            const batch::Item& it = in.items[j.item];
            batch::Result r;
            r.id = it.id;
            r.sample = o.n_samples > 1 ? j.sample : -1;
            // The whole token list at once, so characters split across tokens come out whole.
            for (int32_t t : f.tokens) r.text += tok.piece(t);
            r.n_prompt = f.n_prompt;
            r.n_prompt_cached = f.n_prompt_cached;
            r.n_completion = int(f.tokens.size());
            r.finish_reason = finish_reason_name(f.reason);
            r.prompt_s = f.prompt_s;
            r.gen_s = f.gen_s;
            r.speculative = spec.on();
            r.drafted = f.drafted;
            r.accepted = f.accepted;
            if (clear_bar) std::fputs("\r\033[K", stderr);
            out.write(batch::format_result(r));
            n_done++;
            gen_tokens += r.n_completion;
            prompt_tokens += f.n_prompt;
            cached_tokens += f.n_prompt_cached;
        }
        if (n_done < int64_t(jobs.size())) progress.update(n_done, fmt("%.1f t/s", rate()));  // finish() draws 100%
    }
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    if (g_stop) std::fputc('\n', stderr);
    else progress.finish(fmt("%.1f t/s", rate()));

    // The summary.
    const SchedulerStats& st = sched.stats();
    std::string line = "lumen batch: " + std::to_string(n_done) + (n_done == 1 ? " generation" : " generations");
    if (already > 0) line += ", " + std::to_string(already) + " already in " + o.output;
    if (!malformed.empty()) line += ", " + std::to_string(malformed.size()) + " malformed lines skipped";
    line += " | prompts " + std::to_string(prompt_tokens) + " tokens";
    if (cached_tokens > 0) line += " (" + std::to_string(cached_tokens) + " from shared prefix blocks)";
    line += " | generated " + std::to_string(gen_tokens) + " tokens in " + fmt("%.2f", secs) + " s, " +
            fmt("%.1f", secs > 0 ? double(gen_tokens) / secs : 0.0) + " t/s aggregate";
    line += " | " + std::to_string(st.steps) + (st.steps == 1 ? " step, " : " steps, ") + sched.backend().name();
    if (st.block_size > 0 && st.kv_blocks_total > 0) {
        line += " | KV blocks peak " + std::to_string(st.kv_blocks_peak) + " of " + std::to_string(st.kv_blocks_total) +
                " (" + std::to_string(st.block_size) + " tokens each)";
        if (st.kv_bytes_per_block > 0)
            line += ", " + fmt("%.1f", double(st.kv_blocks_peak * st.kv_bytes_per_block) / (1024.0 * 1024.0)) + " MiB";
    }
    std::fprintf(stderr, "%s\n", line.c_str());
    if (spec.on()) {
        // complete's statistics line over all sequences: a "target pass" is one sequence's part of a
        // forward pass, the time is the run's.
        GenerateStats gs;
        gs.generated = int(st.gen_tokens);
        gs.target_evals = int(st.target_evals);
        gs.rounds = int(st.rounds);
        gs.drafted = int(st.drafted);
        gs.accepted = int(st.accepted);
        gs.seconds = secs;
        gs.draft_seconds = st.draft_s;
        print_spec_stats(spec, gs);
    }
    if (g_stop) {
        std::fprintf(stderr, "lumen batch: stopped by %s after %lld of %zu%s\n", g_stop == SIGINT ? "Ctrl-C" : "SIGTERM",
                     (long long)n_done, jobs.size(),
                     o.output.empty() ? "" : "; run the same command with --resume to finish");
        std::exit(128 + g_stop);
    }
}

}  // namespace

void add_batch(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("batch", "Generate for a file of prompts, many sequences at once, as JSONL");
    add_run_options(cmd, o->run);
    cmd->add_option("-f,--file", o->prompts, "Prompts: one per line (\\n escapes) or JSONL objects")->required();
    cmd->add_option("-o,--output", o->output, "JSONL output file (default: stdout)");
    cmd->add_option("--parallel", o->n_parallel, "Sequences decoded together (-np)");
    cmd->add_option("-n,--n-predict", o->n_predict, "Most new tokens per prompt (-1: until end of text or context)");
    cmd->add_option("--n-samples", o->n_samples, "Generations per prompt (records carry a \"sample\" index)");
    cmd->add_flag("--chat", o->chat, "Apply the model's chat template to plain prompts (one user turn)");
    cmd->add_option("--system", o->system, "System prompt for templated prompts that have none");
    cmd->add_option("--system-file", o->system_file, "Read the system prompt from a file");
    cmd->add_option("--chat-template", o->chat_template,
                    "Template family instead of the model's (" + chat::ChatTemplate::known_names() + ")");
    cmd->add_flag("--jinja", o->jinja, "Run the model's own chat template (a Jinja subset)");
    cmd->add_flag("--resume", o->resume, "Continue a run: skip generations already complete in -o");
    cmd->add_flag("--strict", o->strict, "Stop (exit 1) on a malformed prompt line instead of skipping it");
    cmd->add_option("--input-format", o->input_format, "auto, text or jsonl")
        ->check(CLI::IsMember({"auto", "text", "jsonl"}));
    cmd->add_option("--kv-tokens", o->kv_tokens, "KV cache size in tokens over all sequences (0: -np times -c)");
    cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
    add_sampling_options(cmd, o->sampling);
    add_spec_options(cmd, o->spec);
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
