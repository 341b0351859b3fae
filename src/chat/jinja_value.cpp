// jinja::Value: construction, truthiness, equality, and its text as Jinja prints it (Python's str())
// or as JSON (Hugging Face's tojson).
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "chat/jinja.h"
#include "util/error.h"

namespace lumen::chat::jinja {

Value Value::none() { Value v; v.kind_ = Kind::None; return v; }
Value Value::boolean(bool b) { Value v; v.kind_ = Kind::Bool; v.b_ = b; return v; }
Value Value::integer(int64_t i) { Value v; v.kind_ = Kind::Int; v.i_ = i; return v; }
Value Value::number(double f) { Value v; v.kind_ = Kind::Float; v.f_ = f; return v; }
Value Value::string(std::string s) { Value v; v.kind_ = Kind::String; v.s_ = std::move(s); return v; }
Value Value::array(Array a) { Value v; v.kind_ = Kind::Array; v.a_ = std::make_shared<Array>(std::move(a)); return v; }
Value Value::object(Object o) { Value v; v.kind_ = Kind::Object; v.o_ = std::make_shared<Object>(std::move(o)); return v; }
Value Value::function(Function f) { Value v; v.kind_ = Kind::Function; v.fn_ = std::make_shared<Function>(std::move(f)); return v; }

bool Value::truthy() const {
    switch (kind_) {
        case Kind::Undefined: case Kind::None: return false;
        case Kind::Bool: return b_;
        case Kind::Int: return i_ != 0;
        case Kind::Float: return f_ != 0;
        case Kind::String: return !s_.empty();
        case Kind::Array: return !a_->empty();
        case Kind::Object: return !o_->empty();
        case Kind::Function: return true;
    }
    return false;
}

Value Value::get(std::string_view key) const {
    if (kind_ != Kind::Object) return Value();
    for (const auto& kv : *o_)
        if (kv.first == key) return kv.second;
    return Value();
}

void Value::set(const std::string& key, Value v) const {
    for (auto& kv : *o_)
        if (kv.first == key) { kv.second = std::move(v); return; }
    o_->emplace_back(key, std::move(v));
}

namespace {

// Python's repr of a float: the shortest form that reads back the same, with ".0" when integral.
std::string float_repr(double f) {
    if (std::isnan(f)) return "nan";
    if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, f);
        if (std::strtod(buf, nullptr) == f) break;
    }
    std::string s = buf;
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    return s;
}

std::string py_repr_string(const std::string& s) {
    const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, q);
    for (char c : s) {
        if (c == q || c == '\\') { out += '\\'; out += c; }
        else if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '\r') out += "\\r";
        else out += c;
    }
    return out + q;
}

std::string repr(const Value& v) { return v.kind() == Value::Kind::String ? py_repr_string(v.as_string()) : v.str(); }

void json_string(std::string& out, const std::string& s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += char(c);
                }
        }
    }
    out += '"';
}

void json_write(std::string& out, const Value& v, int indent, int depth) {
    using K = Value::Kind;
    auto newline = [&](int d) {
        if (indent < 0) return;
        out += '\n';
        out.append(size_t(indent * d), ' ');
    };
    const char* item_sep = indent < 0 ? ", " : ",";
    switch (v.kind()) {
        case K::Undefined: case K::None: out += "null"; break;
        case K::Bool: out += v.as_bool() ? "true" : "false"; break;
        case K::Int: out += std::to_string(v.as_int()); break;
        case K::Float: {
            const double f = v.as_number();
            out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f < 0 ? "-Infinity" : "Infinity") : float_repr(f);
            break;
        }
        case K::String: json_string(out, v.as_string()); break;
        case K::Array: {
            if (v.items().empty()) { out += "[]"; break; }
            out += '[';
            for (size_t i = 0; i < v.items().size(); i++) {
                if (i) out += item_sep;
                newline(depth + 1);
                json_write(out, v.items()[i], indent, depth + 1);
            }
            newline(depth);
            out += ']';
            break;
        }
        case K::Object: {
            if (v.members().empty()) { out += "{}"; break; }
            out += '{';
            bool first = true;
            for (const auto& kv : v.members()) {
                if (!first) out += item_sep;
                first = false;
                newline(depth + 1);
                json_string(out, kv.first);
                out += ": ";
                json_write(out, kv.second, indent, depth + 1);
            }
            newline(depth);
            out += '}';
            break;
        }
        case K::Function: fail("chat template: cannot convert a function to JSON");
    }
}

}  // namespace

std::string Value::str() const {
    switch (kind_) {
        case Kind::Undefined: return "";
        case Kind::None: return "None";
        case Kind::Bool: return b_ ? "True" : "False";
        case Kind::Int: return std::to_string(i_);
        case Kind::Float: return float_repr(f_);
        case Kind::String: return s_;
        case Kind::Array: {
            std::string out = "[";
            for (size_t i = 0; i < a_->size(); i++) out += (i ? ", " : "") + repr((*a_)[i]);
            return out + "]";
        }
        case Kind::Object: {
            std::string out = "{";
            bool first = true;
            for (const auto& kv : *o_) {
                out += (first ? "" : ", ") + py_repr_string(kv.first) + ": " + repr(kv.second);
                first = false;
            }
            return out + "}";
        }
        case Kind::Function: return "<function>";
    }
    return "";
}

std::string Value::json(int indent) const {
    std::string out;
    json_write(out, *this, indent, 0);
    return out;
}

bool Value::operator==(const Value& o) const {
    const bool num = (kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool);
    const bool onum = (o.kind_ == Kind::Int || o.kind_ == Kind::Float || o.kind_ == Kind::Bool);
    if (num && onum) {
        auto as_d = [](const Value& v) { return v.kind_ == Kind::Bool ? double(v.b_) : v.as_number(); };
        return as_d(*this) == as_d(o);
    }
    if (kind_ != o.kind_) return false;
    switch (kind_) {
        case Kind::Undefined: case Kind::None: return true;
        case Kind::String: return s_ == o.s_;
        case Kind::Array: return *a_ == *o.a_;
        case Kind::Object: {
            if (o_->size() != o.o_->size()) return false;
            for (const auto& kv : *o_)
                if (!(o.get(kv.first) == kv.second) || !o.get(kv.first).is_defined()) return false;
            return true;
        }
        case Kind::Function: return fn_ == o.fn_;
        default: return false;
    }
}

}  // namespace lumen::chat::jinja
