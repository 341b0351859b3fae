// The Jinja renderer: walks the tree with a stack of variable scopes, writing the output; the
// global functions (raise_exception, namespace, range, dict, strftime_now) live here too.
#include <ctime>
#include <map>

#include "chat/jinja_internal.h"
#include "util/error.h"

namespace lumen::chat::jinja {

namespace {

enum class Flow { Normal, Break, Continue };

class Renderer {
public:
    explicit Renderer(const Value& context) {
        scopes_.emplace_back();
        if (context.kind() == Value::Kind::Object)
            for (const auto& kv : context.members()) scopes_[0][kv.first] = kv.second;
        install_builtins();
    }

    std::string out;

    Flow exec(const Body& body) {
        for (const NodePtr& n : body) {
            const Flow f = exec(*n);
            if (f != Flow::Normal) return f;
        }
        return Flow::Normal;
    }

    Flow exec(const Node& n) {
        switch (n.k) {
            case Node::K::Sequence: return exec(n.body);
            case Node::K::Text: out += n.text; return Flow::Normal;
            case Node::K::Print: out += eval(*n.expr).str(); return Flow::Normal;
            case Node::K::If:
                for (const auto& [cond, body] : n.branches)
                    if (!cond || eval(*cond).truthy()) return exec(body);
                return Flow::Normal;
            case Node::K::For: return exec_for(n);
            case Node::K::Set: {
                Value v = eval(*n.expr);
                if (!n.attr.empty()) {
                    const Value ns = lookup(n.targets[0]);
                    if (ns.kind() != Value::Kind::Object) runtime(n.line, n.targets[0] + " is not a namespace");
                    ns.set(n.attr, std::move(v));
                } else {
                    assign_targets(n.targets, v, n.line);
                }
                return Flow::Normal;
            }
            case Node::K::SetBlock: scopes_.back()[n.targets[0]] = Value::string(capture(n.body)); return Flow::Normal;
            case Node::K::Macro: define_macro(n); return Flow::Normal;
            case Node::K::Break: return Flow::Break;
            case Node::K::Continue: return Flow::Continue;
            case Node::K::FilterBlock: {
                CallArgs none;
                out += apply_filter(n.text, Value::string(capture(n.body)), none, n.line).str();
                return Flow::Normal;
            }
        }
        return Flow::Normal;
    }

private:
    using Scope = std::map<std::string, Value>;

    std::string capture(const Body& body) {
        std::string saved;
        saved.swap(out);
        exec(body);
        std::string result;
        result.swap(out);
        out.swap(saved);
        return result;
    }

    Value lookup(const std::string& name) const {
        for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
            auto f = it->find(name);
            if (f != it->end()) return f->second;
        }
        return Value();
    }

    void assign_targets(const std::vector<std::string>& targets, const Value& v, int line) {
        if (targets.size() == 1) {
            scopes_.back()[targets[0]] = v;
            return;
        }
        const Array items = iterate(v, line);
        if (items.size() != targets.size())
            runtime(line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                              std::to_string(targets.size()) + " names");
        for (size_t i = 0; i < targets.size(); i++) scopes_.back()[targets[i]] = items[i];
    }

    Flow exec_for(const Node& n) {
        Array all = iterate(eval(*n.expr), n.line);
        scopes_.emplace_back();
        if (n.cond) {  // the loop's `if` filters items before loop.* is counted
            Array kept;
            for (const Value& item : all) {
                assign_targets(n.targets, item, n.line);
                if (eval(*n.cond).truthy()) kept.push_back(item);
            }
            all.swap(kept);
        }
        const size_t len = all.size();
        for (size_t i = 0; i < len; i++) {
            assign_targets(n.targets, all[i], n.line);
            Object loop = {
                {"index", Value::integer(int64_t(i) + 1)},
                {"index0", Value::integer(int64_t(i))},
                {"revindex", Value::integer(int64_t(len - i))},
                {"revindex0", Value::integer(int64_t(len - i) - 1)},
                {"first", Value::boolean(i == 0)},
                {"last", Value::boolean(i + 1 == len)},
                {"length", Value::integer(int64_t(len))},
                {"previtem", i > 0 ? all[i - 1] : Value()},
                {"nextitem", i + 1 < len ? all[i + 1] : Value()},
            };
            loop.emplace_back("cycle", Value::function([i](CallArgs& a) {
                if (a.positional.empty()) return Value();
                return a.positional[i % a.positional.size()];
            }));
            scopes_.back()["loop"] = Value::object(std::move(loop));
            if (exec(n.body) == Flow::Break) break;
        }
        if (len == 0) exec(n.else_body);
        scopes_.pop_back();
        return Flow::Normal;
    }

    void define_macro(const Node& n) {
        const Node* node = &n;
        scopes_.back()[n.text] = Value::function([this, node](CallArgs& a) {
            Scope params;
            for (size_t i = 0; i < node->targets.size(); i++) {
                const Value* given = arg(a, i, node->targets[i].c_str());
                if (given) params[node->targets[i]] = *given;
                else if (node->defaults[i]) params[node->targets[i]] = eval(*node->defaults[i]);
                else params[node->targets[i]] = Value();
            }
            if (macro_depth_ >= 100) runtime(node->line, "macro " + node->text + ": calls nested too deeply");
            macro_depth_++;
            scopes_.push_back(std::move(params));
            std::string text = capture(node->body);
            scopes_.pop_back();
            macro_depth_--;
            return Value::string(std::move(text));
        });
    }

    void install_builtins() {
        Scope& g = scopes_[0];
        auto def = [&g](const char* name, Function f) {
            if (g.find(name) == g.end()) g[name] = Value::function(std::move(f));
        };
        def("raise_exception", [](CallArgs& a) -> Value {
            fail("chat template: ", a.positional.empty() ? std::string("raise_exception()") : a.positional[0].str());
        });
        def("namespace", [](CallArgs& a) {
            Object o;
            for (auto& kv : a.named) o.emplace_back(kv.first, kv.second);
            return Value::object(std::move(o));
        });
        def("dict", [](CallArgs& a) {
            Object o;
            for (auto& kv : a.named) o.emplace_back(kv.first, kv.second);
            return Value::object(std::move(o));
        });
        def("range", [](CallArgs& a) {
            int64_t start = 0, stop = 0, step = 1;
            for (const Value& v : a.positional)
                if (!is_int(v)) fail("chat template: range() takes integers");
            if (a.positional.size() == 1) stop = inum(a.positional[0]);
            else if (a.positional.size() >= 2) { start = inum(a.positional[0]); stop = inum(a.positional[1]); }
            if (a.positional.size() >= 3) step = inum(a.positional[2]);
            if (step == 0) fail("chat template: range() step must not be zero");
            Array out;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                if (out.size() >= 1000000) fail("chat template: range() too long");
                out.push_back(Value::integer(i));
            }
            return Value::array(std::move(out));
        });
        def("strftime_now", [](CallArgs& a) {
            const std::time_t t = std::time(nullptr);
            std::tm tm{};
            localtime_r(&t, &tm);
            char buf[256];
            const std::string fmt = a.positional.empty() ? std::string("%Y-%m-%d") : a.positional[0].str();
            const size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
            return Value::string(std::string(buf, n));
        });
    }

    Value eval(const Expr& e) {
        switch (e.k) {
            case Expr::K::Literal: return e.literal;
            case Expr::K::Name: return lookup(e.name);
            case Expr::K::Attr: return attribute(eval(*e.kids[0]), e.name, e.line);
            case Expr::K::Item: return item(eval(*e.kids[0]), eval(*e.kids[1]), e.line);
            case Expr::K::Slice: return slice(e);
            case Expr::K::Call: {
                const Value f = eval(*e.kids[0]);
                if (f.kind() != Value::Kind::Function)
                    runtime(e.line, std::string("cannot call ") + kind_name(f.kind()));
                CallArgs a = arguments(e, 1);
                return f.call()(a);
            }
            case Expr::K::Filter: {
                CallArgs a = arguments(e, 1);
                return apply_filter(e.name, eval(*e.kids[0]), a, e.line);
            }
            case Expr::K::Test: {
                CallArgs a = arguments(e, 1);
                return Value::boolean(apply_test(e.name, eval(*e.kids[0]), a, e.line) != e.negated);
            }
            case Expr::K::Not: return Value::boolean(!eval(*e.kids[0]).truthy());
            case Expr::K::Neg: return binary("-", Value::integer(0), eval(*e.kids[0]), e.line);  // -x is 0 - x
            case Expr::K::And: {
                Value a = eval(*e.kids[0]);
                return a.truthy() ? eval(*e.kids[1]) : a;
            }
            case Expr::K::Or: {
                Value a = eval(*e.kids[0]);
                return a.truthy() ? a : eval(*e.kids[1]);
            }
            case Expr::K::Cond: return eval(*e.kids[0]).truthy() ? eval(*e.kids[1]) : eval(*e.kids[2]);
            case Expr::K::List: {
                Array a;
                for (const ExprPtr& k : e.kids) a.push_back(eval(*k));
                return Value::array(std::move(a));
            }
            case Expr::K::Dict: {
                Value o = Value::object();
                for (size_t i = 0; i + 1 < e.kids.size(); i += 2) o.set(eval(*e.kids[i]).str(), eval(*e.kids[i + 1]));
                return o;
            }
            case Expr::K::Binary: return binary(e.name, eval(*e.kids[0]), eval(*e.kids[1]), e.line);
        }
        return Value();
    }

    CallArgs arguments(const Expr& e, size_t first) {
        CallArgs a;
        for (size_t i = first; i < e.kids.size(); i++) a.positional.push_back(eval(*e.kids[i]));
        for (const auto& kv : e.named) a.named.emplace_back(kv.first, eval(*kv.second));
        return a;
    }

    Value slice(const Expr& e) {
        const Value v = eval(*e.kids[0]);
        Value bounds[3];
        for (int k = 0; k < 3; k++)
            if (e.kids[size_t(k) + 1]) bounds[k] = eval(*e.kids[size_t(k) + 1]);
        return slice_of(v, e.kids[1] ? &bounds[0] : nullptr, e.kids[2] ? &bounds[1] : nullptr,
                        e.kids[3] ? &bounds[2] : nullptr, e.line);
    }

    std::vector<Scope> scopes_;
    int macro_depth_ = 0;
};

}  // namespace

std::string Template::render(const Value& context) const {
    Renderer r(context);
    r.exec(*root_);
    return std::move(r.out);
}

}  // namespace lumen::chat::jinja
