// The Jinja parser: the source as text and tag segments with whitespace control applied, tokens
// inside the tags, then statements and expressions into the tree of jinja_internal.h.
#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "chat/jinja_internal.h"
#include "util/error.h"

namespace lumen::chat::jinja {

// ---------------------------------------------------------------------------------------------------
// Lexer: the source as text and tag segments, with whitespace control applied

namespace {

struct Segment {
    enum class K { Text, Expr, Stmt, Comment } k;
    std::string text;  // text, or the tag's inside without delimiters and -/+ markers
    int line;
    bool strip_before = false, strip_after = false, keep_lstrip = false;
};

[[noreturn]] void syntax(int line, const std::string& msg) { fail("chat template: line ", line, ": ", msg); }

int count_lines(std::string_view s, size_t from, size_t to) {
    return int(std::count(s.begin() + long(from), s.begin() + long(to), '\n'));
}

std::vector<Segment> segment(std::string_view src) {
    std::vector<Segment> segs;
    size_t pos = 0;
    int line = 1;
    while (pos < src.size()) {
        size_t open = pos;
        for (;;) {
            open = src.find('{', open);
            if (open == std::string_view::npos || open + 1 >= src.size()) { open = std::string_view::npos; break; }
            const char c = src[open + 1];
            if (c == '{' || c == '%' || c == '#') break;
            open++;
        }
        if (open == std::string_view::npos) {
            segs.push_back({Segment::K::Text, std::string(src.substr(pos)), line});
            break;
        }
        if (open > pos) segs.push_back({Segment::K::Text, std::string(src.substr(pos, open - pos)), line});
        line += count_lines(src, pos, open);
        const char kind = src[open + 1];
        Segment tag{kind == '{' ? Segment::K::Expr : kind == '%' ? Segment::K::Stmt : Segment::K::Comment, "", line};
        size_t inner = open + 2;
        if (inner < src.size() && src[inner] == '-') { tag.strip_before = true; inner++; }
        else if (inner < src.size() && src[inner] == '+') { tag.keep_lstrip = true; inner++; }
        const char close = kind == '{' ? '}' : kind == '%' ? '%' : '#';
        // Find the closing delimiter, skipping string literals inside expressions.
        size_t end = inner;
        char quote = 0;
        for (;; end++) {
            if (end + 1 >= src.size()) syntax(line, std::string("unclosed '{") + kind + "'");
            const char c = src[end];
            if (tag.k != Segment::K::Comment) {
                if (quote) {
                    if (c == '\\') { end++; continue; }
                    if (c == quote) quote = 0;
                    continue;
                }
                if (c == '\'' || c == '"') { quote = c; continue; }
            }
            if (c == close && src[end + 1] == '}') break;
        }
        size_t content_end = end;
        if (content_end > inner && src[content_end - 1] == '-') { tag.strip_after = true; content_end--; }
        else if (content_end > inner && src[content_end - 1] == '+') content_end--;
        tag.text = std::string(src.substr(inner, content_end - inner));
        line += count_lines(src, open, end + 2);
        pos = end + 2;
        segs.push_back(std::move(tag));
    }

    // Whitespace control. First lstrip_blocks, judged on the source as written: the indentation before
    // a block tag that starts a line goes. Then '-' strips all whitespace on its side, and
    // trim_blocks removes the newline right after a block tag.
    auto is_block = [](const Segment& s) { return s.k == Segment::K::Stmt || s.k == Segment::K::Comment; };
    for (size_t i = 1; i < segs.size(); i++) {
        Segment& tag = segs[i];
        Segment& prev = segs[i - 1];
        if (!is_block(tag) || tag.keep_lstrip || tag.strip_before || prev.k != Segment::K::Text) continue;
        const size_t nl = prev.text.rfind('\n');
        const size_t start = nl == std::string::npos ? 0 : nl + 1;
        const bool line_start = nl != std::string::npos || i == 1;
        if (line_start && prev.text.find_first_not_of(" \t", start) == std::string::npos) prev.text.erase(start);
    }
    for (size_t i = 0; i < segs.size(); i++) {
        Segment& tag = segs[i];
        if (tag.k == Segment::K::Text) continue;
        Segment* prev = i > 0 && segs[i - 1].k == Segment::K::Text ? &segs[i - 1] : nullptr;
        Segment* next = i + 1 < segs.size() && segs[i + 1].k == Segment::K::Text ? &segs[i + 1] : nullptr;
        if (prev && tag.strip_before) {
            const size_t keep = prev->text.find_last_not_of(" \t\r\n");
            prev->text.erase(keep == std::string::npos ? 0 : keep + 1);
        }
        if (next && tag.strip_after) {
            const size_t keep = next->text.find_first_not_of(" \t\r\n");
            next->text.erase(0, keep == std::string::npos ? next->text.size() : keep);
        } else if (next && is_block(tag)) {
            if (next->text.rfind("\r\n", 0) == 0) next->text.erase(0, 2);
            else if (next->text.rfind("\n", 0) == 0) next->text.erase(0, 1);
        }
    }
    return segs;
}

// Tokens inside a tag.
struct Token {
    enum class K { Name, Int, Float, String, Op, End } k;
    std::string text;
    int64_t i = 0;
    double f = 0;
};

std::vector<Token> tokenize(const std::string& s, int line) {
    std::vector<Token> out;
    static const char* kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
                                 "(", ")", "[", "]", "{", "}", ".", ",", ":", "|"};
    size_t i = 0;
    while (i < s.size()) {
        const char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') { i++; continue; }
        if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
            size_t j = i;
            while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) j++;
            out.push_back({Token::K::Name, s.substr(i, j - i)});
            i = j;
            continue;
        }
        if (std::isdigit(static_cast<unsigned char>(c))) {
            size_t j = i;
            while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) j++;
            bool is_float = false;
            if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
                is_float = true;
                j++;
                while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) j++;
            }
            if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < s.size() && (s[k] == '+' || s[k] == '-')) k++;
                if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
                    is_float = true;
                    j = k;
                    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) j++;
                }
            }
            std::string num = s.substr(i, j - i);
            num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
            Token t{is_float ? Token::K::Float : Token::K::Int, num};
            if (is_float) t.f = std::strtod(num.c_str(), nullptr);
            else t.i = std::strtoll(num.c_str(), nullptr, 10);
            out.push_back(t);
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            std::string v;
            size_t j = i + 1;
            for (;; j++) {
                if (j >= s.size()) syntax(line, "unterminated string");
                if (s[j] == c) break;
                if (s[j] == '\\' && j + 1 < s.size()) {
                    const char e = s[++j];
                    switch (e) {
                        case 'n': v += '\n'; break;
                        case 't': v += '\t'; break;
                        case 'r': v += '\r'; break;
                        case '0': v += '\0'; break;
                        case '\\': case '\'': case '"': v += e; break;
                        default: v += '\\'; v += e; break;
                    }
                    continue;
                }
                v += s[j];
            }
            out.push_back({Token::K::String, v});
            i = j + 1;
            continue;
        }
        bool matched = false;
        for (const char* op : kOps) {
            const size_t n = std::char_traits<char>::length(op);
            if (s.compare(i, n, op) == 0) {
                out.push_back({Token::K::Op, op});
                i += n;
                matched = true;
                break;
            }
        }
        if (!matched) syntax(line, std::string("unexpected character '") + c + "'");
    }
    out.push_back({Token::K::End, ""});
    return out;
}

// ---------------------------------------------------------------------------------------------------
// Parser

class ExprParser {
public:
    ExprParser(const std::string& src, int line) : toks_(tokenize(src, line)), line_(line) {}

    ExprPtr expression() { return conditional(); }
    ExprPtr expression_no_cond() { return or_expr(); }  // a for loop's iterable: its `if` filters the loop
    bool at_end() const { return toks_[pos_].k == Token::K::End; }
    bool peek_name(const char* n) const { return toks_[pos_].k == Token::K::Name && toks_[pos_].text == n; }
    bool peek_op(const char* o) const { return toks_[pos_].k == Token::K::Op && toks_[pos_].text == o; }
    bool accept_name(const char* n) { if (peek_name(n)) { pos_++; return true; } return false; }
    bool accept_op(const char* o) { if (peek_op(o)) { pos_++; return true; } return false; }
    void expect_op(const char* o) { if (!accept_op(o)) error(std::string("expected '") + o + "'"); }
    void expect_end() { if (!at_end()) error("unexpected '" + toks_[pos_].text + "'"); }
    std::string name() {
        if (toks_[pos_].k != Token::K::Name) error("expected a name");
        return toks_[pos_++].text;
    }
    [[noreturn]] void error(const std::string& msg) const { syntax(line_, msg); }

private:
    ExprPtr make(Expr::K k) {
        auto e = std::make_unique<Expr>();
        e->k = k;
        e->line = line_;
        return e;
    }
    ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, Expr::K k = Expr::K::Binary) {
        auto e = make(k);
        e->name = op;
        e->kids.push_back(std::move(a));
        e->kids.push_back(std::move(b));
        return e;
    }

    // Nesting guard: a pathological template is an error, not a stack overflow.
    struct Deeper {
        ExprParser& p;
        explicit Deeper(ExprParser& parser) : p(parser) {
            if (++p.depth_ > 400) p.error("expression nested too deeply");
        }
        ~Deeper() { p.depth_--; }
    };

    ExprPtr conditional() {
        Deeper guard(*this);
        ExprPtr e = or_expr();
        while (accept_name("if")) {
            auto c = make(Expr::K::Cond);
            ExprPtr cond = or_expr();
            ExprPtr other = accept_name("else") ? or_expr() : make(Expr::K::Literal);  // missing else: undefined
            c->kids.push_back(std::move(cond));
            c->kids.push_back(std::move(e));
            c->kids.push_back(std::move(other));
            e = std::move(c);
        }
        return e;
    }
    ExprPtr or_expr() {
        ExprPtr e = and_expr();
        while (accept_name("or")) e = binary("or", std::move(e), and_expr(), Expr::K::Or);
        return e;
    }
    ExprPtr and_expr() {
        ExprPtr e = not_expr();
        while (accept_name("and")) e = binary("and", std::move(e), not_expr(), Expr::K::And);
        return e;
    }
    ExprPtr not_expr() {
        Deeper guard(*this);
        if (accept_name("not")) {
            auto e = make(Expr::K::Not);
            e->kids.push_back(not_expr());
            return e;
        }
        return compare();
    }
    ExprPtr compare() {
        ExprPtr e = concat();
        for (;;) {
            static const char* kCmp[] = {"==", "!=", "<=", ">=", "<", ">"};
            bool done = true;
            for (const char* op : kCmp)
                if (accept_op(op)) { e = binary(op, std::move(e), concat()); done = false; break; }
            if (!done) continue;
            if (accept_name("in")) { e = binary("in", std::move(e), concat()); continue; }
            if (peek_name("not") && toks_[pos_ + 1].k == Token::K::Name && toks_[pos_ + 1].text == "in") {
                pos_ += 2;
                e = binary("not in", std::move(e), concat());
                continue;
            }
            return e;
        }
    }
    ExprPtr concat() {
        ExprPtr e = math1();
        while (accept_op("~")) e = binary("~", std::move(e), math1());
        return e;
    }
    ExprPtr math1() {
        ExprPtr e = math2();
        for (;;) {
            if (accept_op("+")) e = binary("+", std::move(e), math2());
            else if (accept_op("-")) e = binary("-", std::move(e), math2());
            else return e;
        }
    }
    ExprPtr math2() {
        ExprPtr e = power();
        for (;;) {
            if (accept_op("*")) e = binary("*", std::move(e), power());
            else if (accept_op("//")) e = binary("//", std::move(e), power());
            else if (accept_op("/")) e = binary("/", std::move(e), power());
            else if (accept_op("%")) e = binary("%", std::move(e), power());
            else return e;
        }
    }
    ExprPtr power() {
        ExprPtr e = unary();
        while (accept_op("**")) e = binary("**", std::move(e), unary());
        return e;
    }
    ExprPtr unary() {
        Deeper guard(*this);
        if (accept_op("-")) {
            auto e = make(Expr::K::Neg);
            e->kids.push_back(unary());
            return filters(std::move(e));
        }
        if (accept_op("+")) return unary();
        return filters(postfix(primary()));
    }
    // Arguments of a call, filter or test: positional then keyword.
    void arguments(Expr& e) {
        if (accept_op(")")) return;
        for (;;) {
            if (toks_[pos_].k == Token::K::Name && toks_[pos_ + 1].k == Token::K::Op && toks_[pos_ + 1].text == "=") {
                std::string key = toks_[pos_].text;
                pos_ += 2;
                e.named.emplace_back(key, expression());
            } else {
                e.kids.push_back(expression());
            }
            if (accept_op(")")) return;
            expect_op(",");
        }
    }
    ExprPtr filters(ExprPtr e) {
        for (;;) {
            if (accept_op("|")) {
                auto f = make(Expr::K::Filter);
                f->name = name();
                f->kids.push_back(std::move(e));
                if (accept_op("(")) arguments(*f);
                e = std::move(f);
            } else if (accept_name("is")) {
                auto t = make(Expr::K::Test);
                t->negated = accept_name("not");
                t->name = name();
                t->kids.push_back(std::move(e));
                if (accept_op("(")) arguments(*t);
                else if (toks_[pos_].k == Token::K::String || toks_[pos_].k == Token::K::Int ||
                         toks_[pos_].k == Token::K::Float)
                    t->kids.push_back(primary());  // `is divisibleby 3`, `is eq "x"`
                e = std::move(t);
            } else {
                return e;
            }
        }
    }
    ExprPtr postfix(ExprPtr e) {
        for (;;) {
            if (accept_op(".")) {
                auto a = make(Expr::K::Attr);
                if (toks_[pos_].k == Token::K::Int) a->name = toks_[pos_++].text;
                else a->name = name();
                a->kids.push_back(std::move(e));
                e = std::move(a);
            } else if (accept_op("[")) {
                e = subscript(std::move(e));
            } else if (accept_op("(")) {
                auto c = make(Expr::K::Call);
                c->kids.push_back(std::move(e));
                arguments(*c);
                e = std::move(c);
            } else {
                return e;
            }
        }
    }
    ExprPtr subscript(ExprPtr subject) {
        ExprPtr parts[3];
        int n_colons = 0;
        if (!peek_op(":")) parts[0] = expression();
        while (accept_op(":")) {
            if (++n_colons > 2) error("too many ':' in a slice");
            if (!peek_op(":") && !peek_op("]")) parts[n_colons] = expression();
        }
        expect_op("]");
        if (n_colons == 0) {
            if (!parts[0]) error("empty subscript");
            return binary("[]", std::move(subject), std::move(parts[0]), Expr::K::Item);
        }
        auto s = make(Expr::K::Slice);
        s->kids.push_back(std::move(subject));
        for (auto& p : parts) s->kids.push_back(std::move(p));  // null parts: omitted bounds
        return s;
    }
    ExprPtr primary() {
        const Token t = toks_[pos_];
        switch (t.k) {
            case Token::K::Int: pos_++; { auto e = make(Expr::K::Literal); e->literal = Value::integer(t.i); return e; }
            case Token::K::Float: pos_++; { auto e = make(Expr::K::Literal); e->literal = Value::number(t.f); return e; }
            case Token::K::String: {
                pos_++;
                std::string s = t.text;
                while (toks_[pos_].k == Token::K::String) s += toks_[pos_++].text;  // "a" "b" concatenates
                auto e = make(Expr::K::Literal);
                e->literal = Value::string(s);
                return e;
            }
            case Token::K::Name: {
                pos_++;
                auto e = make(Expr::K::Literal);
                if (t.text == "true" || t.text == "True") e->literal = Value::boolean(true);
                else if (t.text == "false" || t.text == "False") e->literal = Value::boolean(false);
                else if (t.text == "none" || t.text == "None") e->literal = Value::none();
                else { e->k = Expr::K::Name; e->name = t.text; }
                return e;
            }
            case Token::K::Op:
                if (t.text == "(") {
                    pos_++;
                    if (accept_op(")")) return make(Expr::K::List);  // () : an empty tuple
                    ExprPtr first = expression();
                    if (accept_op(")")) return first;
                    auto tuple = make(Expr::K::List);
                    tuple->kids.push_back(std::move(first));
                    while (accept_op(",")) {
                        if (peek_op(")")) break;
                        tuple->kids.push_back(expression());
                    }
                    expect_op(")");
                    return tuple;
                }
                if (t.text == "[") {
                    pos_++;
                    auto list = make(Expr::K::List);
                    while (!accept_op("]")) {
                        list->kids.push_back(expression());
                        if (!accept_op(",")) { expect_op("]"); break; }
                    }
                    return list;
                }
                if (t.text == "{") {
                    pos_++;
                    auto dict = make(Expr::K::Dict);
                    while (!accept_op("}")) {
                        dict->kids.push_back(expression());
                        expect_op(":");
                        dict->kids.push_back(expression());
                        if (!accept_op(",")) { expect_op("}"); break; }
                    }
                    return dict;
                }
                break;
            case Token::K::End: error("unexpected end of expression");
        }
        error("unexpected '" + t.text + "'");
    }

    std::vector<Token> toks_;
    size_t pos_ = 0;
    int line_;
    int depth_ = 0;
};

class StmtParser {
public:
    explicit StmtParser(std::vector<Segment> segs) : segs_(std::move(segs)) {}

    NodePtr parse() {
        auto root = std::make_unique<Node>();
        root->k = Node::K::Sequence;
        std::string end_tag;
        root->body = block({}, end_tag);
        return root;
    }

private:
    // Parses nodes until a statement whose keyword is in `ends` (returned in end_tag with its parser
    // positioned after the keyword), or the end of input when `ends` is empty.
    Body block(const std::vector<std::string>& ends, std::string& end_tag, std::unique_ptr<ExprParser>* end_parser = nullptr) {
        Body body;
        while (i_ < segs_.size()) {
            const Segment& s = segs_[i_++];
            if (s.k == Segment::K::Comment) continue;
            if (s.k == Segment::K::Text) {
                if (s.text.empty()) continue;
                auto n = std::make_unique<Node>();
                n->k = Node::K::Text;
                n->text = s.text;
                body.push_back(std::move(n));
                continue;
            }
            auto p = std::make_unique<ExprParser>(s.text, s.line);
            if (s.k == Segment::K::Expr) {
                auto n = std::make_unique<Node>();
                n->k = Node::K::Print;
                n->line = s.line;
                n->expr = p->expression();
                p->expect_end();
                body.push_back(std::move(n));
                continue;
            }
            const std::string kw = p->name();
            if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
                end_tag = kw;
                if (end_parser) *end_parser = std::move(p);
                else p->expect_end();
                return body;
            }
            body.push_back(statement(kw, *p, s.line));
        }
        if (!ends.empty()) syntax(segs_.empty() ? 1 : segs_.back().line, "missing {% " + ends.back() + " %}");
        return body;
    }

    NodePtr statement(const std::string& kw, ExprParser& p, int line) {
        struct Deeper {
            int& d;
            Deeper(int& depth, int line) : d(depth) {
                if (++d > 200) syntax(line, "blocks nested too deeply");
            }
            ~Deeper() { d--; }
        } guard(depth_, line);
        auto n = std::make_unique<Node>();
        n->line = line;
        std::string end;
        if (kw == "if") {
            n->k = Node::K::If;
            ExprPtr cond = p.expression();
            p.expect_end();
            for (;;) {
                std::unique_ptr<ExprParser> ep;
                Body body = block({"elif", "else", "endif"}, end, &ep);
                n->branches.emplace_back(std::move(cond), std::move(body));
                if (end == "elif") {
                    cond = ep->expression();
                    ep->expect_end();
                    continue;
                }
                ep->expect_end();
                if (end == "else") {
                    Body tail = block({"endif"}, end);
                    n->branches.emplace_back(nullptr, std::move(tail));
                }
                return n;
            }
        }
        if (kw == "for") {
            n->k = Node::K::For;
            n->targets.push_back(p.name());
            while (p.accept_op(",")) n->targets.push_back(p.name());
            if (!p.accept_name("in")) p.error("expected 'in' in a for loop");
            n->expr = p.expression_no_cond();
            if (p.accept_name("if")) n->cond = p.expression();
            p.accept_name("recursive");
            p.expect_end();
            std::unique_ptr<ExprParser> ep;
            n->body = block({"else", "endfor"}, end, &ep);
            ep->expect_end();
            if (end == "else") n->else_body = block({"endfor"}, end);
            return n;
        }
        if (kw == "set") {
            std::string first = p.name();
            if (p.accept_op(".")) {
                n->k = Node::K::Set;
                n->targets.push_back(first);
                n->attr = p.name();
            } else {
                n->targets.push_back(first);
                while (p.accept_op(",")) n->targets.push_back(p.name());
                if (p.at_end()) {  // {% set x %}...{% endset %}
                    n->k = Node::K::SetBlock;
                    n->body = block({"endset"}, end);
                    return n;
                }
                n->k = Node::K::Set;
            }
            p.expect_op("=");
            n->expr = p.expression();
            p.expect_end();
            return n;
        }
        if (kw == "macro") {
            n->k = Node::K::Macro;
            n->text = p.name();
            p.expect_op("(");
            if (!p.accept_op(")")) {
                for (;;) {
                    n->targets.push_back(p.name());
                    n->defaults.push_back(p.accept_op("=") ? p.expression() : nullptr);
                    if (p.accept_op(")")) break;
                    p.expect_op(",");
                }
            }
            p.expect_end();
            n->body = block({"endmacro"}, end);
            return n;
        }
        if (kw == "break" || kw == "continue") {
            n->k = kw == "break" ? Node::K::Break : Node::K::Continue;
            p.expect_end();
            return n;
        }
        if (kw == "generation") {  // Hugging Face's marker for assistant text: renders its body
            p.expect_end();
            n->k = Node::K::Sequence;
            n->body = block({"endgeneration"}, end);
            return n;
        }
        if (kw == "filter") {
            n->k = Node::K::FilterBlock;
            n->text = p.name();
            p.expect_end();
            n->body = block({"endfilter"}, end);
            return n;
        }
        p.error("unsupported statement '" + kw + "'");
    }

    std::vector<Segment> segs_;
    size_t i_ = 0;
    int depth_ = 0;
};

}  // namespace

std::shared_ptr<const Node> parse_tree(std::string_view source) { return StmtParser(segment(source)).parse(); }

Template Template::parse(std::string_view source) {
    Template t;
    t.root_ = parse_tree(source);
    return t;
}

}  // namespace lumen::chat::jinja
