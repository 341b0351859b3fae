// Operations on Jinja values: operators, attribute and item access, slices, and the filters, tests
// and string/mapping/list methods that chat templates use, with Python's semantics.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "chat/jinja_internal.h"
#include "util/error.h"

namespace lumen::chat::jinja {

[[noreturn]] void runtime(int line, const std::string& msg) { fail("chat template: line ", line, ": ", msg); }

const char* kind_name(Value::Kind k) {
    switch (k) {
        case Value::Kind::Undefined: return "undefined";
        case Value::Kind::None: return "none";
        case Value::Kind::Bool: return "a boolean";
        case Value::Kind::Int: return "an integer";
        case Value::Kind::Float: return "a float";
        case Value::Kind::String: return "a string";
        case Value::Kind::Array: return "a list";
        case Value::Kind::Object: return "a mapping";
        case Value::Kind::Function: return "a function";
    }
    return "?";
}

int64_t inum(const Value& v) { return v.kind() == Value::Kind::Bool ? int64_t(v.as_bool()) : v.as_int(); }

bool is_int(const Value& v) { return v.kind() == Value::Kind::Int || v.kind() == Value::Kind::Bool; }

// The items a for loop or filter walks: list items, string characters, mapping keys.
Array iterate(const Value& v, int line) {
    switch (v.kind()) {
        case Value::Kind::Array: return v.items();
        case Value::Kind::Object: {
            Array keys;
            for (const auto& kv : v.members()) keys.push_back(Value::string(kv.first));
            return keys;
        }
        case Value::Kind::String: {
            Array chars;
            for (char c : v.as_string()) chars.push_back(Value::string(std::string(1, c)));
            return chars;
        }
        case Value::Kind::Undefined: case Value::Kind::None: return {};
        default: runtime(line, std::string("cannot iterate over ") + kind_name(v.kind()));
    }
}

const Value* arg(CallArgs& a, size_t pos, const char* name) {
    if (pos < a.positional.size()) return &a.positional[pos];
    for (auto& kv : a.named)
        if (kv.first == name) return &kv.second;
    return nullptr;
}

namespace {

bool is_number(const Value& v) {
    return v.kind() == Value::Kind::Int || v.kind() == Value::Kind::Float || v.kind() == Value::Kind::Bool;
}

double num(const Value& v) { return v.kind() == Value::Kind::Bool ? double(v.as_bool()) : v.as_number(); }

bool py_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string strip(const std::string& s, const std::string* chars, bool left, bool right) {
    auto drop = [&](char c) { return chars ? chars->find(c) != std::string::npos : py_space(c); };
    size_t b = 0, e = s.size();
    if (left) while (b < e && drop(s[b])) b++;
    if (right) while (e > b && drop(s[e - 1])) e--;
    return s.substr(b, e - b);
}

std::string upper(std::string s) { for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c))); return s; }

std::string lower(std::string s) { for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c))); return s; }

std::string title(std::string s) {
    bool start = true;
    for (char& c : s) {
        const bool alpha = std::isalpha(static_cast<unsigned char>(c));
        c = char(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        start = !alpha;
    }
    return s;
}

std::string capitalize(std::string s) {
    s = lower(std::move(s));
    if (!s.empty()) s[0] = char(std::toupper(static_cast<unsigned char>(s[0])));
    return s;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count = -1) {
    if (from.empty()) return s;
    std::string out;
    size_t pos = 0;
    for (int64_t n = 0; count < 0 || n < count; n++) {
        const size_t at = s.find(from, pos);
        if (at == std::string::npos) break;
        out.append(s, pos, at - pos);
        out += to;
        pos = at + from.size();
    }
    return out + s.substr(pos);
}

Array split(const std::string& s, const Value* sep, int64_t maxsplit) {
    Array out;
    if (!sep || !sep->is_defined() || sep->kind() == Value::Kind::None) {  // runs of whitespace
        size_t i = 0;
        while (i < s.size()) {
            while (i < s.size() && py_space(s[i])) i++;
            if (i >= s.size()) break;
            if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
                out.push_back(Value::string(strip(s.substr(i), nullptr, false, true)));
                break;
            }
            size_t j = i;
            while (j < s.size() && !py_space(s[j])) j++;
            out.push_back(Value::string(s.substr(i, j - i)));
            i = j;
        }
        return out;
    }
    const std::string& d = sep->as_string();
    if (d.empty()) fail("chat template: split() with an empty separator");
    size_t pos = 0;
    for (;;) {
        const size_t at = s.find(d, pos);
        if (at == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) break;
        out.push_back(Value::string(s.substr(pos, at - pos)));
        pos = at + d.size();
    }
    out.push_back(Value::string(s.substr(pos)));
    return out;
}

// Python-style index normalisation for a sequence of length n; false when out of range.
bool norm_index(int64_t& i, size_t n) {
    if (i < 0) i += int64_t(n);
    return i >= 0 && i < int64_t(n);
}

size_t length_of(const Value& v, int line) {
    switch (v.kind()) {
        case Value::Kind::String: return v.as_string().size();
        case Value::Kind::Array: return v.items().size();
        case Value::Kind::Object: return v.members().size();
        case Value::Kind::Undefined: return 0;
        default: runtime(line, std::string("cannot take the length of ") + kind_name(v.kind()));
    }
}

int compare(const Value& a, const Value& b, int line) {
    if (is_number(a) && is_number(b)) return num(a) < num(b) ? -1 : num(a) > num(b) ? 1 : 0;
    if (a.kind() == Value::Kind::String && b.kind() == Value::Kind::String) return a.as_string().compare(b.as_string());
    if (a.kind() == Value::Kind::Array && b.kind() == Value::Kind::Array) {
        for (size_t i = 0; i < a.items().size() && i < b.items().size(); i++)
            if (int c = compare(a.items()[i], b.items()[i], line)) return c;
        return a.items().size() < b.items().size() ? -1 : a.items().size() > b.items().size() ? 1 : 0;
    }
    runtime(line, std::string("cannot compare ") + kind_name(a.kind()) + " with " + kind_name(b.kind()));
}

bool contains(const Value& hay, const Value& needle, int line) {
    switch (hay.kind()) {
        case Value::Kind::String:
            if (needle.kind() != Value::Kind::String) runtime(line, "'in <string>' needs a string on the left");
            return hay.as_string().find(needle.as_string()) != std::string::npos;
        case Value::Kind::Array:
            return std::any_of(hay.items().begin(), hay.items().end(), [&](const Value& x) { return x == needle; });
        case Value::Kind::Object: return needle.kind() == Value::Kind::String && hay.get(needle.as_string()).is_defined();
        case Value::Kind::Undefined: case Value::Kind::None: return false;
        default: runtime(line, std::string("'in' on ") + kind_name(hay.kind()));
    }
}

// Methods of strings, mappings and lists, bound to their value.
Value method(const Value& self, const std::string& name, int line) {
    using K = Value::Kind;
    auto bind = [](Function f) { return Value::function(std::move(f)); };
    if (self.kind() == K::String) {
        const std::string s = self.as_string();
        auto opt_chars = [](CallArgs& a) -> const std::string* {
            return !a.positional.empty() && a.positional[0].kind() == Value::Kind::String ? &a.positional[0].as_string()
                                                                                          : nullptr;
        };
        if (name == "strip") return bind([s, opt_chars](CallArgs& a) { return Value::string(strip(s, opt_chars(a), true, true)); });
        if (name == "lstrip") return bind([s, opt_chars](CallArgs& a) { return Value::string(strip(s, opt_chars(a), true, false)); });
        if (name == "rstrip") return bind([s, opt_chars](CallArgs& a) { return Value::string(strip(s, opt_chars(a), false, true)); });
        if (name == "upper") return bind([s](CallArgs&) { return Value::string(upper(s)); });
        if (name == "lower") return bind([s](CallArgs&) { return Value::string(lower(s)); });
        if (name == "title") return bind([s](CallArgs&) { return Value::string(title(s)); });
        if (name == "capitalize") return bind([s](CallArgs&) { return Value::string(capitalize(s)); });
        if (name == "split") return bind([s](CallArgs& a) {
            const Value* sep = arg(a, 0, "sep");
            const Value* max = arg(a, 1, "maxsplit");
            return Value::array(split(s, sep, max && is_int(*max) ? inum(*max) : -1));
        });
        if (name == "startswith" || name == "endswith") {
            const bool starts = name == "startswith";
            return bind([s, starts](CallArgs& a) {
                if (a.positional.empty()) fail("chat template: startswith/endswith need an argument");
                Array options = a.positional[0].kind() == Value::Kind::Array ? a.positional[0].items() : Array{a.positional[0]};
                for (const Value& o : options) {
                    const std::string& p = o.as_string();
                    if (p.size() <= s.size() && (starts ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0))
                        return Value::boolean(true);
                }
                return Value::boolean(false);
            });
        }
        if (name == "replace") return bind([s](CallArgs& a) {
            if (a.positional.size() < 2) fail("chat template: replace() needs two arguments");
            const int64_t count = a.positional.size() > 2 && is_int(a.positional[2]) ? inum(a.positional[2]) : -1;
            return Value::string(replace_all(s, a.positional[0].str(), a.positional[1].str(), count));
        });
        if (name == "find") return bind([s](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: find() needs an argument");
            const size_t at = s.find(a.positional[0].str());
            return Value::integer(at == std::string::npos ? -1 : int64_t(at));
        });
        if (name == "count") return bind([s](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: count() needs an argument");
            const std::string sub = a.positional[0].str();
            int64_t n = 0;
            for (size_t at = sub.empty() ? std::string::npos : s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) n++;
            return Value::integer(n);
        });
        if (name == "join") return bind([s, line](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: join() needs an argument");
            std::string out;
            const Array items = iterate(a.positional[0], line);
            for (size_t i = 0; i < items.size(); i++) out += (i ? s : "") + items[i].str();
            return Value::string(out);
        });
        if (name == "format") return bind([s](CallArgs& a) {  // "{}" and "{0}" placeholders
            std::string out;
            size_t next = 0;
            for (size_t i = 0; i < s.size(); i++) {
                if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') { out += '{'; i++; continue; }
                if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') { out += '}'; i++; continue; }
                if (s[i] != '{') { out += s[i]; continue; }
                const size_t close = s.find('}', i);
                if (close == std::string::npos) fail("chat template: format(): unmatched '{'");
                const std::string field = s.substr(i + 1, close - i - 1);
                size_t index = field.empty() ? next++ : size_t(std::strtoul(field.c_str(), nullptr, 10));
                if (index >= a.positional.size()) fail("chat template: format(): not enough arguments");
                out += a.positional[index].str();
                i = close;
            }
            return Value::string(out);
        });
        return Value();
    }
    if (self.kind() == K::Object) {
        if (name == "get") return bind([self](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: get() needs a key");
            const Value v = self.get(a.positional[0].str());
            if (v.is_defined()) return v;
            return a.positional.size() > 1 ? a.positional[1] : Value::none();
        });
        if (name == "items") return bind([self](CallArgs&) {
            Array out;
            for (const auto& kv : self.members()) out.push_back(Value::array({Value::string(kv.first), kv.second}));
            return Value::array(std::move(out));
        });
        if (name == "keys") return bind([self](CallArgs&) {
            Array out;
            for (const auto& kv : self.members()) out.push_back(Value::string(kv.first));
            return Value::array(std::move(out));
        });
        if (name == "values") return bind([self](CallArgs&) {
            Array out;
            for (const auto& kv : self.members()) out.push_back(kv.second);
            return Value::array(std::move(out));
        });
        if (name == "pop") return bind([self](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: pop() needs a key");
            const std::string key = a.positional[0].str();
            Object& m = self.members();
            for (auto it = m.begin(); it != m.end(); ++it)
                if (it->first == key) { Value v = it->second; m.erase(it); return v; }
            if (a.positional.size() > 1) return a.positional[1];
            fail("chat template: pop(): no key '", key, "'");
        });
        return Value();
    }
    if (self.kind() == K::Array) {
        if (name == "append") return bind([self](CallArgs& a) {
            if (a.positional.empty()) fail("chat template: append() needs an argument");
            self.items().push_back(a.positional[0]);
            return Value::none();
        });
        if (name == "pop") return bind([self](CallArgs& a) {
            Array& items = self.items();
            int64_t i = a.positional.empty() ? -1 : inum(a.positional[0]);
            if (!norm_index(i, items.size())) fail("chat template: pop(): index out of range");
            Value v = items[size_t(i)];
            items.erase(items.begin() + long(i));
            return v;
        });
    }
    return Value();
}

// Values of attribute `attr` (dotted: "function.name") of an item, for map/selectattr.
Value attr_path(const Value& v, const std::string& path, int line) {
    Value cur = v;
    size_t pos = 0;
    while (pos <= path.size()) {
        const size_t dot = path.find('.', pos);
        const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
        if (!cur.is_defined()) return Value();
        cur = cur.kind() == Value::Kind::Array ? item(cur, Value::integer(std::stoll(part)), line) : cur.get(part);
        if (dot == std::string::npos) break;
        pos = dot + 1;
    }
    return cur;
}

}  // namespace

Value attribute(const Value& v, const std::string& name, int line) {
    if (!v.is_defined()) runtime(line, "'" + name + "' of an undefined value");
    if (v.kind() == Value::Kind::Object) {
        for (const auto& kv : v.members())
            if (kv.first == name) return kv.second;
    }
    Value m = method(v, name, line);
    if (m.is_defined()) return m;
    if (v.kind() == Value::Kind::Array && !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])))
        return item(v, Value::integer(std::stoll(name)), line);
    return Value();
}

Value item(const Value& v, const Value& key, int line) {
    switch (v.kind()) {
        case Value::Kind::Object:
            if (key.kind() == Value::Kind::String) return v.get(key.as_string());
            return v.get(key.str());
        case Value::Kind::Array: case Value::Kind::String: {
            if (!is_int(key)) runtime(line, std::string("index must be an integer, not ") + kind_name(key.kind()));
            int64_t i = inum(key);
            const size_t n = v.kind() == Value::Kind::Array ? v.items().size() : v.as_string().size();
            if (!norm_index(i, n)) return Value();
            if (v.kind() == Value::Kind::Array) return v.items()[size_t(i)];
            return Value::string(std::string(1, v.as_string()[size_t(i)]));
        }
        case Value::Kind::Undefined: runtime(line, "indexing an undefined value");
        default: runtime(line, std::string("cannot index ") + kind_name(v.kind()));
    }
}

Value slice_of(const Value& v, const Value* start_v, const Value* stop_v, const Value* step_v, int line) {
    auto bound = [&](const Value* b, int64_t dflt, bool& given) -> int64_t {
        given = b && b->kind() != Value::Kind::None && b->is_defined();
        if (!given) return dflt;
        if (!is_int(*b)) runtime(line, "slice bounds must be integers");
        return inum(*b);
    };
    bool has_start, has_stop, has_step;
    const int64_t step = bound(step_v, 1, has_step);
    if (step == 0) runtime(line, "slice step cannot be zero");
    const bool is_str = v.kind() == Value::Kind::String;
    if (!is_str && v.kind() != Value::Kind::Array) runtime(line, std::string("cannot slice ") + kind_name(v.kind()));
    const int64_t n = int64_t(is_str ? v.as_string().size() : v.items().size());
    auto clamp = [&](int64_t i, bool given, int64_t dflt) {
        if (!given) return dflt;
        if (i < 0) i += n;
        if (step > 0) return std::clamp<int64_t>(i, 0, n);
        return std::clamp<int64_t>(i, -1, n - 1);
    };
    const int64_t start_raw = bound(start_v, 0, has_start), stop_raw = bound(stop_v, 0, has_stop);
    const int64_t start = clamp(start_raw, has_start, step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(stop_raw, has_stop, step > 0 ? n : -1);
    Array items;
    std::string text;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (is_str) text += v.as_string()[size_t(i)];
        else items.push_back(v.items()[size_t(i)]);
    }
    return is_str ? Value::string(text) : Value::array(std::move(items));
}

Value binary(const std::string& op, const Value& a, const Value& b, int line) {
    constexpr size_t kMaxString = size_t(64) << 20;  // a runaway template is an error, not an OOM
    auto joined = [&](std::string x, const std::string& y) {
        if (x.size() + y.size() > kMaxString) runtime(line, "string longer than 64 MiB");
        return Value::string(x + y);
    };
    if (op == "~") return joined(a.str(), b.str());
    if (op == "==") return Value::boolean(a == b);
    if (op == "!=") return Value::boolean(!(a == b));
    if (op == "<") return Value::boolean(compare(a, b, line) < 0);
    if (op == "<=") return Value::boolean(compare(a, b, line) <= 0);
    if (op == ">") return Value::boolean(compare(a, b, line) > 0);
    if (op == ">=") return Value::boolean(compare(a, b, line) >= 0);
    if (op == "in" || op == "not in") return Value::boolean(contains(b, a, line) == (op == "in"));
    if (op == "+") {
        if (a.kind() == Value::Kind::String && b.kind() == Value::Kind::String) return joined(a.as_string(), b.as_string());
        if (a.kind() == Value::Kind::Array && b.kind() == Value::Kind::Array) {
            Array c = a.items();
            c.insert(c.end(), b.items().begin(), b.items().end());
            return Value::array(std::move(c));
        }
    }
    if (op == "*" && a.kind() == Value::Kind::String && is_int(b)) {
        std::string s;
        for (int64_t i = 0; i < inum(b) && s.size() < (1u << 24); i++) s += a.as_string();
        return Value::string(s);
    }
    if (!is_number(a) || !is_number(b))
        runtime(line, std::string("cannot apply '") + op + "' to " + kind_name(a.kind()) + " and " + kind_name(b.kind()));
    const bool ints = is_int(a) && is_int(b);
    const double x = num(a), y = num(b);
    if (op == "+") return ints ? Value::integer(inum(a) + inum(b)) : Value::number(x + y);
    if (op == "-") return ints ? Value::integer(inum(a) - inum(b)) : Value::number(x - y);
    if (op == "*") return ints ? Value::integer(inum(a) * inum(b)) : Value::number(x * y);
    if (op == "**") return ints && inum(b) >= 0 ? Value::integer(int64_t(std::pow(x, y))) : Value::number(std::pow(x, y));
    if (y == 0) runtime(line, "division by zero");
    if (op == "/") return Value::number(x / y);
    if (op == "//") {
        if (ints) {
            const int64_t q = inum(a) / inum(b), r = inum(a) % inum(b);
            return Value::integer((r != 0 && ((r < 0) != (inum(b) < 0))) ? q - 1 : q);
        }
        return Value::number(std::floor(x / y));
    }
    if (op == "%") {
        if (ints) {
            const int64_t r = inum(a) % inum(b);
            return Value::integer((r != 0 && ((r < 0) != (inum(b) < 0))) ? r + inum(b) : r);
        }
        const double r = std::fmod(x, y);
        return Value::number((r != 0 && ((r < 0) != (y < 0))) ? r + y : r);
    }
    runtime(line, "unknown operator " + op);
}

Value apply_filter(const std::string& f, const Value& v, CallArgs& a, int line) {
    using K = Value::Kind;
    auto need_string = [&](const char* what) -> const std::string& {
        if (v.kind() != K::String) runtime(line, std::string(what) + " needs a string, not " + kind_name(v.kind()));
        return v.as_string();
    };
    if (f == "trim") {
        const Value* chars = arg(a, 0, "chars");
        return Value::string(strip(v.str(), chars && chars->kind() == K::String ? &chars->as_string() : nullptr, true, true));
    }
    if (f == "tojson") {
        const Value* indent = arg(a, 0, "indent");
        return Value::string(v.json(indent && is_int(*indent) ? int(inum(*indent)) : -1));
    }
    if (f == "length" || f == "count") return Value::integer(int64_t(length_of(v, line)));
    if (f == "upper") return Value::string(upper(v.str()));
    if (f == "lower") return Value::string(lower(v.str()));
    if (f == "capitalize") return Value::string(capitalize(v.str()));
    if (f == "title") return Value::string(title(v.str()));
    if (f == "string") return Value::string(v.str());
    if (f == "safe") return v;
    if (f == "escape" || f == "e") {
        std::string out;
        for (char c : v.str()) {
            switch (c) {
                case '&': out += "&amp;"; break;
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '"': out += "&#34;"; break;
                case '\'': out += "&#39;"; break;
                default: out += c;
            }
        }
        return Value::string(out);
    }
    if (f == "default" || f == "d") {
        const Value* dflt = arg(a, 0, "default_value");
        const Value* boolean = arg(a, 1, "boolean");
        const bool use = boolean && boolean->truthy() ? !v.truthy() : !v.is_defined();
        return use ? (dflt ? *dflt : Value::string("")) : v;
    }
    if (f == "first" || f == "last") {
        const Array items = iterate(v, line);
        if (items.empty()) return Value();
        return f == "first" ? items.front() : items.back();
    }
    if (f == "join") {
        const Value* sep = arg(a, 0, "d");
        const Value* attr = arg(a, 1, "attribute");
        std::string out;
        const Array items = iterate(v, line);
        for (size_t i = 0; i < items.size(); i++) {
            if (i && sep) out += sep->str();
            out += (attr ? attr_path(items[i], attr->str(), line) : items[i]).str();
        }
        return Value::string(out);
    }
    if (f == "replace") {
        if (a.positional.size() < 2) runtime(line, "replace needs two arguments");
        const int64_t count = a.positional.size() > 2 && is_int(a.positional[2]) ? inum(a.positional[2]) : -1;
        return Value::string(replace_all(v.str(), a.positional[0].str(), a.positional[1].str(), count));
    }
    if (f == "int") {
        if (is_number(v)) return Value::integer(int64_t(num(v)));
        if (v.kind() == K::String) {
            char* end = nullptr;
            const long long i = std::strtoll(v.as_string().c_str(), &end, 10);
            if (end && *end == 0 && !v.as_string().empty()) return Value::integer(i);
        }
        const Value* dflt = arg(a, 0, "default");
        return dflt ? *dflt : Value::integer(0);
    }
    if (f == "float") {
        if (is_number(v)) return Value::number(num(v));
        if (v.kind() == K::String) return Value::number(std::strtod(v.as_string().c_str(), nullptr));
        return Value::number(0);
    }
    if (f == "abs") {
        if (is_int(v)) return Value::integer(std::llabs(inum(v)));
        if (is_number(v)) return Value::number(std::fabs(num(v)));
        runtime(line, "abs needs a number");
    }
    if (f == "round") {
        const Value* prec = arg(a, 0, "precision");
        const double p = std::pow(10.0, prec && is_int(*prec) ? double(inum(*prec)) : 0.0);
        return Value::number(std::round(num(v) * p) / p);
    }
    if (f == "list") return Value::array(iterate(v, line));
    if (f == "reverse") {
        if (v.kind() == K::String) return Value::string(std::string(v.as_string().rbegin(), v.as_string().rend()));
        Array items = iterate(v, line);
        std::reverse(items.begin(), items.end());
        return Value::array(std::move(items));
    }
    if (f == "unique") {
        Array out;
        for (const Value& x : iterate(v, line))
            if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return x == y; })) out.push_back(x);
        return Value::array(std::move(out));
    }
    if (f == "sort") {
        Array items = iterate(v, line);
        const Value* rev = arg(a, 0, "reverse");
        const Value* attr = arg(a, 2, "attribute");
        std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
            const Value kx = attr ? attr_path(x, attr->str(), line) : x, ky = attr ? attr_path(y, attr->str(), line) : y;
            return compare(kx, ky, line) < 0;
        });
        if (rev && rev->truthy()) std::reverse(items.begin(), items.end());
        return Value::array(std::move(items));
    }
    if (f == "items" || f == "dictsort") {
        if (v.kind() != K::Object) {
            if (!v.is_defined()) return Value::array();
            runtime(line, f + " needs a mapping");
        }
        Array out;
        for (const auto& kv : v.members()) out.push_back(Value::array({Value::string(kv.first), kv.second}));
        if (f == "dictsort")
            std::stable_sort(out.begin(), out.end(), [&](const Value& x, const Value& y) {
                return lower(x.items()[0].as_string()) < lower(y.items()[0].as_string());
            });
        return Value::array(std::move(out));
    }
    if (f == "map") {
        const Value* attr = arg(a, 99, "attribute");
        Array out;
        for (const Value& x : iterate(v, line)) {
            if (attr) {
                out.push_back(attr_path(x, attr->str(), line));
            } else {
                if (a.positional.empty()) runtime(line, "map needs a filter name or attribute=");
                CallArgs rest;
                rest.positional.assign(a.positional.begin() + 1, a.positional.end());
                out.push_back(apply_filter(a.positional[0].str(), x, rest, line));
            }
        }
        return Value::array(std::move(out));
    }
    if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr") {
        const bool by_attr = f == "selectattr" || f == "rejectattr";
        const bool keep_if = f == "select" || f == "selectattr";
        size_t k = 0;
        std::string attr;
        if (by_attr) {
            if (a.positional.empty()) runtime(line, f + " needs an attribute name");
            attr = a.positional[k++].str();
        }
        const bool has_test = k < a.positional.size();
        const std::string test = has_test ? a.positional[k++].str() : "";
        CallArgs test_args;
        test_args.positional.assign(a.positional.begin() + long(std::min(k, a.positional.size())), a.positional.end());
        Array out;
        for (const Value& x : iterate(v, line)) {
            const Value subject = by_attr ? attr_path(x, attr, line) : x;
            const bool ok = has_test ? apply_test(test, subject, test_args, line) : subject.truthy();
            if (ok == keep_if) out.push_back(x);
        }
        return Value::array(std::move(out));
    }
    if (f == "indent") {
        const Value* width = arg(a, 0, "width");
        const Value* first = arg(a, 1, "first");
        const std::string pad = width && width->kind() == K::String ? width->as_string()
                                                                    : std::string(size_t(width ? inum(*width) : 4), ' ');
        const std::string& s = need_string("indent");
        std::string out;
        size_t start = 0;
        bool first_line = true;
        while (start <= s.size()) {
            const size_t nl = s.find('\n', start);
            const std::string ln = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
            if ((!first_line || (first && first->truthy())) && !ln.empty()) out += pad;
            out += ln;
            if (nl == std::string::npos) break;
            out += '\n';
            start = nl + 1;
            first_line = false;
        }
        return Value::string(out);
    }
    if (f == "wordcount") return Value::integer(int64_t(split(v.str(), nullptr, -1).size()));
    runtime(line, "unknown filter '" + f + "'");
}

bool apply_test(const std::string& t, const Value& v, CallArgs& a, int line) {
    using K = Value::Kind;
    const Value* other = arg(a, 0, "other");
    if (t == "defined") return v.is_defined();
    if (t == "undefined") return !v.is_defined();
    if (t == "none") return v.kind() == K::None;
    if (t == "string") return v.kind() == K::String;
    if (t == "number") return v.kind() == K::Int || v.kind() == K::Float;
    if (t == "integer") return v.kind() == K::Int;
    if (t == "float") return v.kind() == K::Float;
    if (t == "boolean") return v.kind() == K::Bool;
    if (t == "true") return v.kind() == K::Bool && v.as_bool();
    if (t == "false") return v.kind() == K::Bool && !v.as_bool();
    if (t == "mapping") return v.kind() == K::Object;
    if (t == "sequence") return v.kind() == K::Array || v.kind() == K::String;
    if (t == "iterable") return v.kind() == K::Array || v.kind() == K::String || v.kind() == K::Object;
    if (t == "callable") return v.kind() == K::Function;
    if (t == "odd" || t == "even") {
        if (!is_int(v)) runtime(line, t + " needs an integer");
        return (inum(v) % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
        if (!other || !is_int(v) || !is_int(*other) || inum(*other) == 0) runtime(line, "divisibleby needs integers");
        return inum(v) % inum(*other) == 0;
    }
    if (t == "lower") return v.kind() == K::String && lower(v.as_string()) == v.as_string();
    if (t == "upper") return v.kind() == K::String && upper(v.as_string()) == v.as_string();
    if (!other) runtime(line, "test '" + t + "' needs an argument");
    if (t == "eq" || t == "equalto" || t == "==" || t == "sameas") return v == *other;
    if (t == "ne" || t == "!=") return !(v == *other);
    if (t == "lt" || t == "lessthan" || t == "<") return compare(v, *other, line) < 0;
    if (t == "le" || t == "<=") return compare(v, *other, line) <= 0;
    if (t == "gt" || t == "greaterthan" || t == ">") return compare(v, *other, line) > 0;
    if (t == "ge" || t == ">=") return compare(v, *other, line) >= 0;
    if (t == "in") return contains(*other, v, line);
    runtime(line, "unknown test '" + t + "'");
}

}  // namespace lumen::chat::jinja
