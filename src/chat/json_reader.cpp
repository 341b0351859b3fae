#include "chat/json_reader.h"

#include <cmath>
#include <cstdlib>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::chat::json {

namespace {

constexpr int kMaxDepth = 64;

class Parser {
public:
    Parser(std::string_view s, const std::string& what) : s_(s), what_(what) {}

    Value document() {
        skip_ws();
        Value v = value(0);
        skip_ws();
        if (pos_ != s_.size()) error("unexpected text after the JSON value");
        return v;
    }

private:
    [[noreturn]] void error(const std::string& msg) const {
        int line = 1, col = 1;
        for (size_t i = 0; i < pos_ && i < s_.size(); i++) {
            if (s_[i] == '\n') { line++; col = 1; }
            else col++;
        }
        fail(what_, ":", line, ":", col, ": ", msg);
    }

    void skip_ws() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            pos_++;
    }

    bool eat(char c) {
        if (pos_ < s_.size() && s_[pos_] == c) { pos_++; return true; }
        return false;
    }

    void expect_word(std::string_view w) {
        if (s_.substr(pos_, w.size()) != w) error("invalid value");
        pos_ += w.size();
    }

    Value value(int depth) {
        if (depth >= kMaxDepth) error("nesting deeper than 64 levels");
        if (pos_ >= s_.size()) error("unexpected end of input");
        Value v;
        switch (s_[pos_]) {
            case '{': object(v, depth); break;
            case '[': array(v, depth); break;
            case '"': v.kind = Value::Kind::String; v.string = string(); break;
            case 't': expect_word("true"); v.kind = Value::Kind::Bool; v.boolean = true; break;
            case 'f': expect_word("false"); v.kind = Value::Kind::Bool; break;
            case 'n': expect_word("null"); break;
            default: v.kind = Value::Kind::Number; v.number = number(); break;
        }
        return v;
    }

    void object(Value& v, int depth) {
        v.kind = Value::Kind::Object;
        pos_++;  // '{'
        skip_ws();
        if (eat('}')) return;
        for (;;) {
            skip_ws();
            if (pos_ >= s_.size() || s_[pos_] != '"') error("expected a string key");
            std::string key = string();
            skip_ws();
            if (!eat(':')) error("expected ':' after the key");
            skip_ws();
            Value member = value(depth + 1);
            v.object.emplace_back(std::move(key), std::move(member));  // find() takes the last of repeats
            skip_ws();
            if (eat('}')) return;
            if (!eat(',')) error("expected ',' or '}'");
        }
    }

    void array(Value& v, int depth) {
        v.kind = Value::Kind::Array;
        pos_++;  // '['
        skip_ws();
        if (eat(']')) return;
        for (;;) {
            skip_ws();
            v.array.push_back(value(depth + 1));
            skip_ws();
            if (eat(']')) return;
            if (!eat(',')) error("expected ',' or ']'");
        }
    }

    unsigned hex4() {
        if (pos_ + 4 > s_.size()) error("truncated \\u escape");
        unsigned u = 0;
        for (int k = 0; k < 4; k++) {
            char c = s_[pos_++];
            u <<= 4;
            if (c >= '0' && c <= '9') u |= unsigned(c - '0');
            else if (c >= 'a' && c <= 'f') u |= unsigned(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') u |= unsigned(c - 'A' + 10);
            else error("invalid hex digit in a \\u escape");
        }
        return u;
    }

    std::string string() {
        pos_++;  // opening quote
        std::string out;
        for (;;) {
            if (pos_ >= s_.size()) error("unterminated string");
            const unsigned char c = static_cast<unsigned char>(s_[pos_]);
            if (c == '"') { pos_++; break; }
            if (c < 0x20) error("control character in a string (escape it)");
            if (c != '\\') {
                // Copy a run of plain bytes at once; UTF-8 validity is checked at the end.
                size_t end = pos_;
                while (end < s_.size() && s_[end] != '"' && s_[end] != '\\' && static_cast<unsigned char>(s_[end]) >= 0x20)
                    end++;
                out.append(s_.substr(pos_, end - pos_));
                pos_ = end;
                continue;
            }
            pos_++;
            if (pos_ >= s_.size()) error("unterminated string");
            const char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xDC00 && cp <= 0xDFFF) error("unpaired low surrogate in a \\u escape");
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (s_.substr(pos_, 2) != "\\u") error("unpaired high surrogate in a \\u escape");
                        pos_ += 2;
                        unsigned lo = hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) error("unpaired high surrogate in a \\u escape");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    unicode::append_utf8(out, cp);
                    break;
                }
                default: pos_--; error("invalid escape in a string");
            }
        }
        if (unicode::find_invalid_utf8(out) != std::string::npos) error("string is not valid UTF-8");
        return out;
    }

    double number() {
        const size_t start = pos_;
        auto digits = [this] {
            size_t n = 0;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') { pos_++; n++; }
            return n;
        };
        eat('-');
        if (pos_ < s_.size() && s_[pos_] == '0') pos_++;
        else if (digits() == 0) { pos_ = start; error("invalid value"); }
        if (eat('.') && digits() == 0) error("expected digits after '.'");
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            pos_++;
            if (!eat('+')) eat('-');
            if (digits() == 0) error("expected digits in the exponent");
        }
        const std::string text(s_.substr(start, pos_ - start));
        const double d = std::strtod(text.c_str(), nullptr);
        if (!std::isfinite(d)) { pos_ = start; error("number out of range"); }
        return d;
    }

    std::string_view s_;
    const std::string& what_;
    size_t pos_ = 0;
};

}  // namespace

const Value* Value::find(std::string_view key) const {
    if (kind != Kind::Object) return nullptr;
    for (auto it = object.rbegin(); it != object.rend(); ++it)
        if (it->first == key) return &it->second;
    return nullptr;
}

Value parse(std::string_view text, const std::string& what) { return Parser(text, what).document(); }

const char* kind_name(Value::Kind k) {
    switch (k) {
        case Value::Kind::Null: return "null";
        case Value::Kind::Bool: return "a boolean";
        case Value::Kind::Number: return "a number";
        case Value::Kind::String: return "a string";
        case Value::Kind::Array: return "an array";
        case Value::Kind::Object: return "an object";
    }
    return "?";
}

}  // namespace lumen::chat::json
