#include "engine/batch_input.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "chat/json_reader.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/json.h"

namespace lumen::batch {

namespace cj = lumen::chat::json;

std::string Id::json() const { return is_string ? json::quote(text) : std::to_string(number); }

std::string unescape_line(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '\\' && i + 1 < s.size()) {
            const char e = s[i + 1];
            if (e == 'n') { out += '\n'; i++; continue; }
            if (e == 't') { out += '\t'; i++; continue; }
            if (e == '\\') { out += '\\'; i++; continue; }
        }
        out += s[i];  // any other backslash stays, so Windows paths and the like survive
    }
    return out;
}

namespace {

// Splits into lines (without '\n' and a trailing '\r'), 1-based numbering by index + 1.
std::vector<std::string_view> split_lines(std::string_view text) {
    std::vector<std::string_view> lines;
    size_t start = 0;
    while (start < text.size()) {
        size_t nl = text.find('\n', start);
        size_t end = nl == std::string_view::npos ? text.size() : nl;
        std::string_view l = text.substr(start, end - start);
        if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
        lines.push_back(l);
        if (nl == std::string_view::npos) break;
        start = nl + 1;
    }
    return lines;
}

bool blank(std::string_view s) {
    for (char c : s)
        if (c != ' ' && c != '\t') return false;
    return true;
}

std::string_view trim_left(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    return s;
}

bool ends_with(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A bad line: thrown inside the per-line parser, caught and recorded by the caller.
struct Bad {
    std::string message;
};

template <class... Args>
[[noreturn]] void bad(const Args&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw Bad{os.str()};
}

// The reader names "<what>:<line>:<col>: msg"; a line is one document, so keep just the column.
cj::Value parse_line(std::string_view line) {
    try {
        return cj::parse(line, "");
    } catch (const Error& e) {
        std::string m = e.what();
        if (m.compare(0, 3, ":1:") == 0) {
            size_t colon = m.find(": ", 3);
            if (colon != std::string::npos) bad("invalid JSON at column ", m.substr(3, colon - 3), ": ", m.substr(colon + 2));
        }
        bad("invalid JSON: ", m);
    }
}

bool is_null(const cj::Value* v) { return v == nullptr || v->kind == cj::Value::Kind::Null; }

// An integral JSON number within [lo, hi].
int64_t get_int(const cj::Value& v, const char* key, int64_t lo, int64_t hi) {
    if (v.kind != cj::Value::Kind::Number || v.number != std::floor(v.number))
        bad("\"", key, "\" must be an integer, not ", v.kind == cj::Value::Kind::Number ? "a fraction" : cj::kind_name(v.kind));
    if (v.number < double(lo) || v.number > double(hi)) bad("\"", key, "\" is ", v.number, ", want ", lo, " to ", hi);
    return int64_t(v.number);
}

float get_float(const cj::Value& v, const char* key, double lo, double hi) {
    if (v.kind != cj::Value::Kind::Number) bad("\"", key, "\" must be a number, not ", cj::kind_name(v.kind));
    if (v.number < lo || v.number > hi) bad("\"", key, "\" is ", v.number, ", want ", lo, " to ", hi);
    return float(v.number);
}

constexpr int64_t kMaxExactInt = int64_t(1) << 53;  // JSON numbers arrive as doubles

Item parse_object(std::string_view line, int line_no) {
    const cj::Value v = parse_line(line);
    if (!v.is_object()) bad("expected a JSON object, got ", cj::kind_name(v.kind));
    Item it;
    it.line = line_no;

    const cj::Value* id = v.find("id");
    if (is_null(id)) it.id = Id::of(int64_t(line_no));
    else if (id->is_string()) {
        if (id->string.empty()) bad("\"id\" is an empty string");
        it.id = Id::of(id->string);
    } else if (id->kind == cj::Value::Kind::Number) it.id = Id::of(get_int(*id, "id", -kMaxExactInt, kMaxExactInt));
    else bad("\"id\" must be a string or an integer, not ", cj::kind_name(id->kind));

    const cj::Value* prompt = v.find("prompt");
    const cj::Value* messages = v.find("messages");
    if (!is_null(prompt) && !is_null(messages)) bad("give one of \"prompt\" or \"messages\", not both");
    if (!is_null(prompt)) {
        if (!prompt->is_string()) bad("\"prompt\" must be a string, not ", cj::kind_name(prompt->kind));
        if (prompt->string.empty()) bad("the prompt is empty");
        it.prompt = prompt->string;
    } else if (!is_null(messages)) {
        if (!messages->is_array()) bad("\"messages\" must be an array, not ", cj::kind_name(messages->kind));
        if (messages->array.empty()) bad("\"messages\" is empty");
        for (size_t k = 0; k < messages->array.size(); k++) {
            const cj::Value& m = messages->array[k];
            if (!m.is_object()) bad("messages[", k, "] must be an object, not ", cj::kind_name(m.kind));
            const cj::Value* role = m.find("role");
            const cj::Value* content = m.find("content");
            if (!role || !role->is_string()) bad("messages[", k, "] needs a string \"role\"");
            if (role->string != "system" && role->string != "user" && role->string != "assistant")
                bad("messages[", k, "]: role \"", role->string, "\" is not system, user or assistant");
            if (!content || !content->is_string()) bad("messages[", k, "] needs a string \"content\"");
            it.messages.push_back({role->string, content->string});
        }
    } else {
        bad("missing \"prompt\" (or \"messages\")");
    }

    if (const cj::Value* x = v.find("n_predict"); !is_null(x)) {
        int64_t n = get_int(*x, "n_predict", -1, 1 << 30);
        if (n == 0) bad("\"n_predict\" is 0, want -1 (until the end) or a positive count");
        it.n_predict = int(n);
    }
    if (const cj::Value* x = v.find("temperature"); !is_null(x)) it.temperature = get_float(*x, "temperature", 0, 1e6);
    if (const cj::Value* x = v.find("top_k"); !is_null(x)) it.top_k = int(get_int(*x, "top_k", 0, 1 << 30));
    if (const cj::Value* x = v.find("top_p"); !is_null(x)) it.top_p = get_float(*x, "top_p", 0, 1);
    if (const cj::Value* x = v.find("min_p"); !is_null(x)) it.min_p = get_float(*x, "min_p", 0, 1);
    if (const cj::Value* x = v.find("seed"); !is_null(x)) it.seed = uint64_t(get_int(*x, "seed", 0, kMaxExactInt));
    return it;
}

}  // namespace

Input parse_prompts(std::string_view text, const std::string& path, Format f) {
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a BOM some editors write
    const std::vector<std::string_view> lines = split_lines(text);
    Input in;
    if (f == Format::Auto) {
        bool any = false, all_objects = true;
        for (std::string_view l : lines) {
            if (blank(l)) continue;
            any = true;
            if (trim_left(l).front() != '{') all_objects = false;
        }
        in.jsonl = ends_with(path, ".jsonl") || ends_with(path, ".ndjson") || (any && all_objects);
    } else {
        in.jsonl = f == Format::Jsonl;
    }

    std::map<std::string, int> first_line;  // id key -> line
    for (size_t i = 0; i < lines.size(); i++) {
        const int line_no = int(i + 1);
        std::string_view l = lines[i];
        if (blank(l)) continue;
        try {
            Item it;
            if (in.jsonl) {
                it = parse_object(l, line_no);
            } else {
                it.line = line_no;
                it.id = Id::of(int64_t(line_no));
                it.prompt = unescape_line(l);
                if (size_t bad_at = unicode::find_invalid_utf8(it.prompt); bad_at != std::string::npos)
                    bad("not valid UTF-8 (byte ", bad_at + 1, ")");
            }
            const std::string key = it.id.json();
            auto [pos, fresh] = first_line.emplace(key, line_no);
            if (!fresh) {
                in.duplicates.push_back({line_no, "id " + key + " repeats the id of line " + std::to_string(pos->second)});
                continue;
            }
            in.items.push_back(std::move(it));
        } catch (const Bad& b) {
            in.errors.push_back({line_no, b.message});
        }
    }
    return in;
}

namespace {

void append_number(std::string& out, double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, std::isfinite(v) ? v : 0.0);
    out += buf;
}

}  // namespace

std::string format_result(const Result& r) {
    std::string s = "{\"id\":" + r.id.json();
    if (r.sample >= 0) s += ",\"sample\":" + std::to_string(r.sample);
    s += ",\"n_prompt\":" + std::to_string(r.n_prompt);
    s += ",\"n_prompt_cached\":" + std::to_string(r.n_prompt_cached);
    s += ",\"n_completion\":" + std::to_string(r.n_completion);
    s += ",\"finish_reason\":" + json::quote(r.finish_reason);
    if (r.speculative) {
        s += ",\"drafted\":" + std::to_string(r.drafted) + ",\"accepted\":" + std::to_string(r.accepted) +
             ",\"acceptance\":";
        append_number(s, r.drafted > 0 ? double(r.accepted) / r.drafted : 0.0, 3);
    }
    s += ",\"timings\":{\"prompt_ms\":";
    append_number(s, r.prompt_s * 1e3, 3);
    s += ",\"gen_ms\":";
    append_number(s, r.gen_s * 1e3, 3);
    s += ",\"tokens_per_s\":";
    append_number(s, r.gen_s > 0 ? r.n_completion / r.gen_s : 0.0, 2);
    s += "},\"text\":" + json::quote(r.text) + "}\n";
    return s;
}

Resume read_output(std::string_view text, const std::string& path) {
    Resume r;
    size_t pos = 0;
    int line_no = 0;
    while (pos < text.size()) {
        line_no++;
        const size_t nl = text.find('\n', pos);
        const bool last = nl == std::string_view::npos || nl + 1 == text.size();
        std::string_view l = text.substr(pos, (nl == std::string_view::npos ? text.size() : nl) - pos);
        if (nl == std::string_view::npos) {  // no newline: the write was cut short
            r.torn_line = line_no;
            break;
        }
        if (!blank(l)) {
            cj::Value v;
            try {
                v = cj::parse(l, "");
            } catch (const Error&) {
                if (last) { r.torn_line = line_no; break; }
                fail(path, ":", line_no, ": not valid JSON, and not the last line (so not a torn write): fix or remove it");
            }
            const cj::Value* id = v.find("id");
            const cj::Value* reason = v.find("finish_reason");
            if (!v.is_object() || !id || !reason || !reason->is_string())
                fail(path, ":", line_no, ": not a lumen batch record (want an object with \"id\" and \"finish_reason\")");
            Id key;
            if (id->is_string()) key = Id::of(id->string);
            else if (id->kind == cj::Value::Kind::Number && id->number == std::floor(id->number)) key = Id::of(int64_t(id->number));
            else fail(path, ":", line_no, ": \"id\" must be a string or an integer");
            int sample = 0;
            if (const cj::Value* s = v.find("sample"); s && s->kind == cj::Value::Kind::Number) sample = int(s->number);
            r.done.insert({key.json(), sample});
            r.records++;
        }
        pos = nl + 1;
        r.keep_bytes = pos;
    }
    return r;
}

}  // namespace lumen::batch
