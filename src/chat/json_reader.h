// A small JSON reader (RFC 8259) for the files the chat saves and loads. Strings are returned as
// UTF-8 with escapes resolved; numbers as doubles. Malformed input, nesting deeper than 64 levels and
// unpaired surrogates are errors naming the line and column.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lumen::chat::json {

struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<Value> array;
    std::vector<std::pair<std::string, Value>> object;  // in file order, repeats included

    // The member `key` of an object (the last one if repeated), or nullptr (also when this is not an object).
    const Value* find(std::string_view key) const;
    bool is_string() const { return kind == Kind::String; }
    bool is_array() const { return kind == Kind::Array; }
    bool is_object() const { return kind == Kind::Object; }
};

// Parses a whole document (one value, surrounded only by whitespace). `what` names the input in
// errors, e.g. the file path: "chat.json:3:14: expected ',' or '}'".
Value parse(std::string_view text, const std::string& what);

const char* kind_name(Value::Kind k);

}  // namespace lumen::chat::json
