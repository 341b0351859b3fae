// `lumen tokenize`: text to token ids with a model's tokenizer, printed like llama-tokenize
// (`   ID -> 'piece'` per token, or one `[id, id, ...]` line with --ids).
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::cli {

namespace {

struct Opts {
    std::string model;
    std::string prompt;
    bool prompt_given = false;  // -p "" is a valid (empty) prompt
    std::string file;
    bool use_stdin = false;
    bool ids = false;
    bool no_bos = false;
    bool no_parse_special = false;
    bool show_count = false;
    bool timing = false;
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open: ", std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail(path, ": read error");
    return ss.str();
}

void write_out(const std::string& s) {
    if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) fail("cannot write to standard output");
}

void run(const Opts& o) {
    int sources = int(o.prompt_given) + int(!o.file.empty()) + int(o.use_stdin);
    if (sources != 1) fail("give exactly one of -p TEXT, -f FILE or --stdin");

    auto f = gguf::File::open(o.model);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(*f);

    std::string text, source;
    if (o.use_stdin) {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        if (std::cin.bad()) fail("standard input: read error");
        source = "standard input";
    } else if (!o.file.empty()) {
        text = read_file(o.file);
        source = o.file;
    } else {
        text = o.prompt;
        source = "prompt (-p)";
    }
    size_t bad = unicode::find_invalid_utf8(text);
    if (bad != std::string::npos) fail(source, ": invalid UTF-8 at byte offset ", bad);

    const bool add_special = tok.add_bos_default() && !o.no_bos;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = tok.encode(text, add_special, !o.no_parse_special);
    auto t1 = std::chrono::steady_clock::now();

    std::string out;
    if (o.ids) {
        out.reserve(ids.size() * 7 + 3);
        out += '[';
        for (size_t i = 0; i < ids.size(); i++) {
            if (i) out += ", ";
            out += std::to_string(ids[i]);
        }
        out += "]\n";
    } else {
        for (int32_t id : ids) {
            std::string num = std::to_string(id);  // printf("%6d") without its cost per token
            if (num.size() < 6) out.append(6 - num.size(), ' ');
            out += num;
            out += " -> '";
            out += tok.piece(id, true);
            out += "'\n";
        }
    }
    if (o.show_count) out += "Total number of tokens: " + std::to_string(ids.size()) + "\n";
    write_out(out);
    std::fflush(stdout);

    if (o.timing) {
        double s = std::chrono::duration<double>(t1 - t0).count();
        std::fprintf(stderr, "tokenize: %zu bytes -> %zu tokens in %.3f s (%.2f MB/s)\n", text.size(), ids.size(), s,
                     s > 0 ? double(text.size()) / 1e6 / s : 0.0);
    }
}

}  // namespace

void add_tokenize(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Turn text into token ids with a model's tokenizer");
    cmd->add_option("-m,--model", o->model, "GGUF file (a vocab-only file is enough)")->required();
    CLI::Option* prompt = cmd->add_option("-p,--prompt", o->prompt, "Text to tokenize");
    cmd->add_option("-f,--file", o->file, "Read the text from this file (bytes as they are)");
    cmd->add_flag("--stdin", o->use_stdin, "Read the text from standard input");
    cmd->add_flag("--ids", o->ids, "Print only the ids, as one line [a, b, c]");
    cmd->add_flag("--no-bos", o->no_bos, "Do not add BOS even if the model asks for it");
    cmd->add_flag("--no-parse-special", o->no_parse_special,
                  "Treat control tokens written in the text (e.g. <|im_start|>) as plain text");
    cmd->add_flag("--show-count", o->show_count, "Print the number of tokens at the end");
    cmd->add_flag("--timing", o->timing, "Print the tokenization speed on standard error")->group("");
    cmd->callback([o, prompt] {
        o->prompt_given = prompt->count() > 0;
        run(*o);
    });
}

}  // namespace lumen::cli
