// A small Jinja interpreter: enough of the language to run the chat templates models ship in
// tokenizer.chat_template, with the settings Hugging Face renders them with (trim_blocks,
// lstrip_blocks, loop controls, a tojson that keeps non-ASCII text).
//
//   jinja::Template t = jinja::Template::parse(source);          // syntax errors name the line
//   std::string text = t.render(context);                         // context: an Object value
//
// Supported: {{ }}, {% if/elif/else %}, {% for %} (tuple targets, `if` filters, else, loop.*),
// {% set %} (also ns.attr and block form), {% macro %}, {% break/continue %}, {% filter %},
// {% generation %}, whitespace control (- and +), comments; expressions with Python-like literals,
// attribute/index/slice access, calls with keyword arguments, the usual operators, `x if c else y`,
// filters and tests that chat templates use, and the string/dict/list methods they call.
// Not supported: template inheritance and includes, call blocks, autoescaping.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lumen::chat::jinja {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // keeps insertion order, as Python dicts do
struct CallArgs {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> named;
};
using Function = std::function<Value(CallArgs&)>;

// A template value. Arrays, objects and functions are shared (reference semantics, like Python),
// so a namespace() object can be changed by {% set ns.x = ... %} inside a loop.
class Value {
public:
    enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, Array, Object, Function };

    Value() = default;  // undefined
    static Value none();
    static Value boolean(bool b);
    static Value integer(int64_t i);
    static Value number(double f);
    static Value string(std::string s);
    static Value array(Array a = {});
    static Value object(Object o = {});
    static Value function(Function f);

    Kind kind() const { return kind_; }
    bool is_defined() const { return kind_ != Kind::Undefined; }
    bool truthy() const;
    bool as_bool() const { return b_; }
    int64_t as_int() const { return i_; }
    double as_number() const { return kind_ == Kind::Int ? double(i_) : f_; }
    const std::string& as_string() const { return s_; }
    Array& items() const { return *a_; }       // Kind::Array
    Object& members() const { return *o_; }    // Kind::Object
    const Function& call() const { return *fn_; }

    // The member `key` of an object, or undefined.
    Value get(std::string_view key) const;
    void set(const std::string& key, Value v) const;  // objects only
    // Text as Jinja prints it ({{ v }}): Python's str() for numbers, None, booleans and containers.
    std::string str() const;
    // JSON as Hugging Face's tojson filter writes it (json.dumps with ensure_ascii=False).
    std::string json(int indent = -1) const;
    bool operator==(const Value& o) const;

private:
    Kind kind_ = Kind::Undefined;
    bool b_ = false;
    int64_t i_ = 0;
    double f_ = 0;
    std::string s_;
    std::shared_ptr<Array> a_;
    std::shared_ptr<Object> o_;
    std::shared_ptr<Function> fn_;
};

struct Node;

class Template {
public:
    // Parses the source; a syntax error is a lumen::Error "chat template: line N: ...".
    static Template parse(std::string_view source);
    // Renders with `context` (an object) as the global variables; raise_exception(), namespace(),
    // range(), strftime_now() and dict() are always available. Errors (and the template's own
    // raise_exception) are lumen::Errors prefixed "chat template: ".
    std::string render(const Value& context) const;

private:
    std::shared_ptr<const Node> root_;
};

}  // namespace lumen::chat::jinja
