// `lumen chat`: an interactive chat in the terminal, or, with stdin not a terminal, one user turn per
// input line with only the replies on stdout (so it can be scripted).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "chat/chat_engine.h"
#include "chat/line_editor.h"
#include "chat/reasoning.h"
#include "chat/terminal.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/spec_options.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::cli {

namespace {

struct Opts {
    RunOptions run;
    SamplingParams sampling;
    SpecOptions spec;
    std::string system, system_file, chat_template, reasoning = "show";
    int n_predict = -1;
    bool no_context_shift = false, no_kv_reuse = false, jinja = false;
};

// Set by Ctrl-C while a reply streams; a second Ctrl-C before the reply has stopped quits.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the SIGINT handler needs a lock-free flag");

extern "C" void on_sigint(int) {
    if (g_stop.load()) {
        chat::terminal::restore_original();
        _exit(130);
    }
    g_stop.store(true);
}

const char* kHelp =
    "Commands:\n"
    "  /help          this list\n"
    "  /reset         forget the conversation (the system prompt stays)\n"
    "  /system TEXT   replace the system prompt (/system alone shows it)\n"
    "  /save FILE     write the conversation as JSON\n"
    "  /load FILE     read a conversation written by /save\n"
    "  /stats         tokens in the cache and the speed of the last reply\n"
    "  /quit          leave (so do Ctrl-D, and Ctrl-C at an empty prompt)\n"
    "Enter sends; end a line with \\ to go on with the next one; start it with // to send a\n"
    "message that begins with /. Ctrl-C stops a reply.\n";

// Where the chat's words go: replies to stdout, everything else to stderr, colours where wanted.
class Screen {
public:
    explicit Screen(bool hide_reasoning)
        : hide_reasoning_(hide_reasoning),
          color_out_(chat::terminal::color_ok(STDOUT_FILENO)), color_err_(chat::terminal::color_ok(STDERR_FILENO)) {}

    // A line about the chat itself (command output, notices), on stderr.
    void note(const std::string& s) const { line(s, "\x1b[2m"); }
    void warn(const std::string& s) const { line(s, "\x1b[33m"); }
    void error(const std::string& s) const { line("lumen: error: " + s, "\x1b[31m"); }

    void begin_reply(bool in_reasoning) {
        splitter_ = chat::ReasoningSplitter(in_reasoning);
        after_hidden_ = false;
    }
    void reply_text(std::string_view s) { show(splitter_.push(s)); }
    void end_reply() {
        show(splitter_.flush());
        std::fputc('\n', stdout);
        std::fflush(stdout);
    }

private:
    void line(const std::string& s, const char* color) const {
        std::fflush(stdout);
        if (color_err_) std::fprintf(stderr, "%s%s\x1b[0m\n", color, s.c_str());
        else std::fprintf(stderr, "%s\n", s.c_str());
    }
    void show(const std::vector<chat::ReasoningSplitter::Segment>& segs) {
        for (const auto& seg : segs) {
            std::string_view text = seg.text;
            if (seg.reasoning) {
                if (hide_reasoning_) { after_hidden_ = true; continue; }
                if (color_out_) std::fputs("\x1b[2m", stdout);
                std::fwrite(text.data(), 1, text.size(), stdout);
                if (color_out_) std::fputs("\x1b[22m", stdout);
                continue;
            }
            if (after_hidden_) {  // the blank lines after a hidden <think> block go with it
                while (!text.empty() && (text[0] == '\n' || text[0] == ' ')) text.remove_prefix(1);
                if (text.empty()) continue;
                after_hidden_ = false;
            }
            std::fwrite(text.data(), 1, text.size(), stdout);
        }
        std::fflush(stdout);
    }

    bool hide_reasoning_, color_out_, color_err_;
    chat::ReasoningSplitter splitter_;
    bool after_hidden_ = false;
};

std::string trim_trailing_newlines(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

std::string base_name(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

class ChatCommand {
public:
    ChatCommand(chat::ChatEngine& engine, Screen& screen, bool interactive, const Speculation& spec)
        : engine_(engine), screen_(screen), interactive_(interactive), spec_(spec) {}

    // Handles a "/..." line; returns false for /quit.
    bool command(const std::string& line) {
        const size_t sp = line.find(' ');
        const std::string name = line.substr(0, sp);
        std::string arg = sp == std::string::npos ? "" : line.substr(sp + 1);
        while (!arg.empty() && arg[0] == ' ') arg.erase(0, 1);
        while (!arg.empty() && (arg.back() == ' ' || arg.back() == '\n')) arg.pop_back();

        if (name == "/help" || name == "/?") {
            std::fflush(stdout);
            std::fputs(kHelp, stderr);
        } else if (name == "/quit" || name == "/exit") {
            return false;
        } else if (name == "/reset") {
            engine_.reset();
            screen_.note("conversation cleared");
        } else if (name == "/system") {
            if (arg.empty()) {
                const std::string& s = engine_.conversation().system;
                screen_.note(s.empty() ? "no system prompt" : "system prompt: " + s);
            } else {
                check_utf8(arg);
                engine_.set_system(arg);
                screen_.note("system prompt set");
            }
        } else if (name == "/save") {
            if (arg.empty()) fail("/save: give a file name");
            std::ofstream out(arg, std::ios::binary);
            const std::string text = engine_.conversation().to_json();
            if (!out || !out.write(text.data(), std::streamsize(text.size())) || !out.flush())
                fail("/save ", arg, ": cannot write the file");
            screen_.note("saved " + std::to_string(engine_.conversation().messages().size()) + " messages to " + arg);
        } else if (name == "/load") {
            if (arg.empty()) fail("/load: give a file name");
            chat::Conversation c = chat::Conversation::from_json(read_file(arg, "/load"), arg);
            const size_t n = c.messages().size();
            engine_.set_conversation(std::move(c));
            screen_.note("loaded " + std::to_string(n) + " messages from " + arg);
            if (interactive_) show_conversation();
        } else if (name == "/stats") {
            stats();
        } else {
            fail(name, ": unknown command (/help lists them)");
        }
        return true;
    }

    // One input: a command, or (also "//..." with one slash dropped) a message to answer.
    // Returns false for /quit.
    bool input(const std::string& text, const Opts& o) {
        if (text[0] == '/' && text.compare(0, 2, "//") != 0) return command(text);
        turn(text[0] == '/' ? text.substr(1) : text, o);
        return true;
    }

    // Answers one user message.
    void turn(const std::string& text, const Opts& o) {
        check_utf8(text);
        g_stop.store(false);
        screen_.begin_reply(engine_.reply_opens_in_reasoning(text));
        chat::ReplyStats st;
        {
            std::unique_ptr<chat::terminal::EchoOff> quiet;
            if (interactive_) quiet = std::make_unique<chat::terminal::EchoOff>(STDIN_FILENO);
            st = engine_.reply(
                text, [this](std::string_view s) { screen_.reply_text(s); },
                [this](const std::string& s) {
                    std::fflush(stdout);
                    screen_.warn(s);
                },
                &g_stop);
        }
        screen_.end_reply();
        g_stop.store(false);
        if (!interactive_ && spec_.get()) screen_.note(spec_stats_line(spec_, st.gen));
        using End = chat::ReplyStats::End;
        if (st.end == End::Interrupted) screen_.note("[stopped]");
        if (st.end == End::ContextFull) {
            if (o.no_context_shift)
                fail("context full after ", st.generated, " tokens of the reply (", engine_.n_ctx(),
                     " tokens; raise -c, /reset, or drop --no-context-shift)");
            screen_.warn("context full: this message and its reply fill the whole context (raise -c)");
        }
    }

private:
    static void check_utf8(const std::string& s) {
        const size_t bad = unicode::find_invalid_utf8(s);
        if (bad != std::string::npos) fail("the input is not valid UTF-8 (byte ", bad, ")");
    }

    void show_conversation() {
        for (const chat::Message& m : engine_.conversation().messages()) {
            std::string first = m.content.substr(0, m.content.find('\n'));
            if (first.size() > 72) first = first.substr(0, 69) + "...";
            screen_.note("  " + m.role + ": " + first);
        }
    }

    void stats() {
        const chat::ReplyStats& s = engine_.last_stats();
        char buf[512];
        std::snprintf(buf, sizeof buf, "cache: %d of %d tokens | %zu messages | template %s", engine_.cached_tokens(),
                      engine_.n_ctx(), engine_.conversation().messages().size(), engine_.chat_template().name());
        screen_.note(buf);
        if (s.prompt_tokens == 0) {
            screen_.note("no reply yet");
            return;
        }
        std::snprintf(buf, sizeof buf,
                      "last reply: %d tokens in %.2f s (%.1f t/s) | prompt: %d tokens, %d evaluated in %.2f s (%.1f t/s)",
                      s.generated, s.gen_s, s.gen_s > 0 ? s.generated / s.gen_s : 0.0, s.prompt_tokens, s.evaluated,
                      s.prompt_s, s.prompt_s > 0 ? s.evaluated / s.prompt_s : 0.0);
        screen_.note(buf);
        if (spec_.get()) screen_.note(spec_stats_line(spec_, s.gen));
    }

    chat::ChatEngine& engine_;
    Screen& screen_;
    bool interactive_;
    const Speculation& spec_;
};

void run(Opts& o) {
    if (!o.system.empty() && !o.system_file.empty()) fail("give the system prompt with at most one of --system or --system-file");
    std::string system = o.system_file.empty() ? o.system : trim_trailing_newlines(read_file(o.system_file, "--system-file"));
    if (unicode::find_invalid_utf8(system) != std::string::npos) fail("the system prompt is not valid UTF-8");
    if (o.n_predict == 0 || o.n_predict < -1) fail("-n ", o.n_predict, ": want a positive count or -1");
    if (o.jinja && !o.chat_template.empty()) fail("give at most one of --jinja or --chat-template");

    auto model = load_model(o.run);
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*model->file);
    std::string notice;
    auto token_text = [&tok](int32_t id) { return id >= 0 ? tok.token_text(id) : std::string(); };
    const chat::ChatTemplate tmpl =
        o.jinja ? chat::ChatTemplate::jinja_for_model(*model->file, token_text(tok.bos()), token_text(tok.eos()))
                : chat::ChatTemplate::for_model(*model->file, o.chat_template, &notice);
    auto session = open_session(*model, o.run);
    const Speculation spec = make_speculation(o.spec, o.run, tok, o.sampling, session->n_ctx());

    chat::ChatOptions co;
    co.n_predict = o.n_predict;
    co.context_shift = !o.no_context_shift;
    co.kv_reuse = !o.no_kv_reuse;
    chat::ChatEngine engine(*session, tok, tmpl, o.sampling, co);
    engine.set_system(system);
    engine.set_drafter(spec.get(), spec.params);

    const bool interactive = chat::terminal::is_tty(STDIN_FILENO);
    Screen screen(o.reasoning == "hide");
    if (!notice.empty()) screen.warn(notice);
    ChatCommand chat_cmd(engine, screen, interactive, spec);

    if (!interactive) {
        // Scripted: one user turn (or command) per line; any error ends the run.
        std::string line;
        while (std::getline(std::cin, line)) {
            line = trim_trailing_newlines(line);
            if (blank(line)) continue;
            if (!chat_cmd.input(line, o)) break;
        }
        return;
    }

    chat::terminal::save_original(STDIN_FILENO);
    struct sigaction sa{};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);

    const int ui_fd = chat::terminal::is_tty(STDOUT_FILENO) ? STDOUT_FILENO : STDERR_FILENO;
    const bool color = chat::terminal::color_ok(ui_fd);
    chat::LineEditor editor = chat::LineEditor::on_terminal(STDIN_FILENO, ui_fd);
    screen.note("lumen chat: " + base_name(o.run.model) + " | template " + tmpl.name() + " | context " +
                std::to_string(engine.n_ctx()) + " | " + session->backend().name());
    screen.note("/help lists the commands; Ctrl-C stops a reply; Ctrl-D quits");
    const std::string prompt = color ? "\x1b[1;32m>\x1b[0m " : "> ";
    const std::string more = color ? "\x1b[2m.\x1b[0m " : ". ";
    for (;;) {
        std::string text;
        const chat::LineEditor::Result r = editor.read(prompt, more, text);
        if (r != chat::LineEditor::Result::Line) break;
        editor.add_history(text);
        text = trim_trailing_newlines(text);
        if (blank(text)) continue;
        try {
            if (!chat_cmd.input(text, o)) break;
        } catch (const Error& e) {
            screen.error(e.what());  // the chat goes on
        }
    }
}

}  // namespace

void add_chat(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("chat", "Chat with an instruction-tuned model in the terminal");
    add_run_options(cmd, o->run);
    cmd->add_option("--system", o->system, "System prompt");
    cmd->add_option("--system-file", o->system_file, "Read the system prompt from a file");
    cmd->add_option("-n,--n-predict", o->n_predict, "Most tokens per reply (-1: until the model ends its turn)");
    cmd->add_option("--chat-template", o->chat_template,
                    "Template family instead of the model's (" + chat::ChatTemplate::known_names() + ")");
    cmd->add_flag("--jinja", o->jinja, "Run the model's own chat template (a Jinja subset) instead of the built-in family");
    cmd->add_flag("--no-context-shift", o->no_context_shift,
                  "When the context fills, stop with an error instead of forgetting the oldest turns");
    cmd->add_option("--reasoning", o->reasoning, "<think> blocks: show (dimmed) or hide")
        ->check(CLI::IsMember({"show", "hide"}));
    // For tests: re-read the whole conversation every turn instead of reusing the KV cache.
    cmd->add_flag("--no-kv-reuse", o->no_kv_reuse)->group("");
    add_sampling_options(cmd, o->sampling);
    add_spec_options(cmd, o->spec);
    cmd->callback([o] { run(*o); });
}

}  // namespace lumen::cli
