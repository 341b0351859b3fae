// The chat's parts: the JSON reader and the /save-/load round trip, context-shift bookkeeping, the
// <think> splitter, the line editor driven by scripted key bytes, and the engine's KV reuse on a
// small random model (reuse and full re-reading must give the same greedy replies).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "chat/chat_engine.h"
#include "chat/conversation.h"
#include "chat/json_reader.h"
#include "chat/line_editor.h"
#include "chat/reasoning.h"
#include "engine/backend_select.h"
#include "model/presets.h"
#include "model/synth.h"
#include "util/error.h"

using namespace lumen;
using namespace lumen::chat;

namespace {

// A line editor fed from a byte script; what it draws is kept for inspection.
struct Script {
    std::deque<int> bytes;
    std::string drawn;
    LineEditor editor;
    explicit Script(const std::string& keys) : editor(make_io()) { add(keys); }
    void add(const std::string& keys) {
        for (char c : keys) bytes.push_back(static_cast<unsigned char>(c));
    }
    LineEditor::Io make_io() {
        LineEditor::Io io;
        io.read_byte = [this](int) {
            if (bytes.empty()) return LineEditor::kEof;
            const int c = bytes.front();
            bytes.pop_front();
            return c;
        };
        io.write = [this](std::string_view s) { drawn.append(s); };
        io.columns = [] { return 40; };
        return io;
    }
    std::string line(LineEditor::Result want = LineEditor::Result::Line) {
        std::string text;
        CHECK(editor.read("> ", ". ", text) == want);
        return text;
    }
};

const std::string kLeft = "\x1b[D", kRight = "\x1b[C", kUp = "\x1b[A", kDown = "\x1b[B", kHome = "\x1b[H",
                  kEnd = "\x1b[F", kDelete = "\x1b[3~";

}  // namespace

TEST_SUITE("chat-json") {

TEST_CASE("values, escapes and surrogate pairs") {
    const json::Value v = json::parse(
        R"( {"a": [1, -2.5e2, true, false, null], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "o": {}} )", "t");
    REQUIRE(v.is_object());
    const json::Value* a = v.find("a");
    REQUIRE(a);
    REQUIRE(a->array.size() == 5);
    CHECK(a->array[0].number == 1);
    CHECK(a->array[1].number == -250);
    CHECK(a->array[2].boolean);
    CHECK(a->array[3].kind == json::Value::Kind::Bool);
    CHECK(a->array[4].kind == json::Value::Kind::Null);
    CHECK(v.find("s")->string == "q\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
    CHECK(v.find("o")->is_object());
    CHECK(v.find("missing") == nullptr);
    CHECK(json::parse(R"({"k": 1, "k": 2})", "t").find("k")->number == 2);  // the last repeat wins
}

TEST_CASE("malformed documents name the line and column") {
    CHECK_THROWS_WITH_AS(json::parse("{\"a\": 1,\n \"b\" 2}", "f.json"), doctest::Contains("f.json:2:6: expected ':'"),
                         Error);
    const char* bad[] = {"", "{", "[1,]", "{\"a\":}", "\"abc", "tru", "01", "1.", "-", "1e", "[1] 2", "\"\\x\"",
                         "\"\\ud800\"", "\"\\udc00\"", "\"a\nb\"", "{a: 1}", "\"\xff\"", "1e999"};
    for (const char* s : bad) {
        INFO("input: ", s);
        CHECK_THROWS_AS(json::parse(s, "t"), Error);
    }
    CHECK_THROWS_WITH_AS(json::parse(std::string(100, '[') + std::string(100, ']'), "t"),
                         doctest::Contains("deeper than 64"), Error);
    CHECK_NOTHROW(json::parse(std::string(60, '[') + std::string(60, ']'), "t"));
}

TEST_CASE("a conversation survives /save then /load") {
    Conversation c;
    c.system = "Be \"precise\".\n\tTabs, \\ and \x01 too.";
    c.turns = {{"user", "Caf\xC3\xA9? \xF0\x9F\x98\x80"}, {"assistant", "Line 1\nLine 2 </s> {\"json\": true}"},
               {"user", ""}, {"assistant", "partial reply"}};
    const std::string text = c.to_json();
    const Conversation back = Conversation::from_json(text, "chat.json");
    CHECK(back.system == c.system);
    CHECK(back.turns == c.turns);
    CHECK(back.to_json() == text);
    // The saved form is the OpenAI-style list, system first.
    CHECK(text.rfind("{\"messages\": [\n  {\"role\": \"system\", \"content\": \"Be \\\"precise\\\".\\n\\t", 0) == 0);

    Conversation empty;
    CHECK(Conversation::from_json(empty.to_json(), "e").messages().empty());
    // A bare array is accepted too.
    CHECK(Conversation::from_json(R"([{"role": "user", "content": "hi"}])", "a").turns.size() == 1);
}

TEST_CASE("conversation files with the wrong shape are refused") {
    CHECK_THROWS_WITH_AS(Conversation::from_json("{}", "c.json"), doctest::Contains("c.json: no \"messages\""), Error);
    CHECK_THROWS_WITH_AS(Conversation::from_json(R"({"messages": 3})", "c"), doctest::Contains("want an array"), Error);
    CHECK_THROWS_WITH_AS(Conversation::from_json(R"([{"role": "user"}])", "c"),
                         doctest::Contains("message 1 must be an object"), Error);
    CHECK_THROWS_WITH_AS(Conversation::from_json(R"([{"role": "robot", "content": ""}])", "c"),
                         doctest::Contains("unknown role \"robot\""), Error);
    CHECK_THROWS_WITH_AS(
        Conversation::from_json(R"([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])", "c"),
        doctest::Contains("message 2: a system message may only come first"), Error);
}

}  // TEST_SUITE

TEST_SUITE("chat-context") {

TEST_CASE("common_prefix") {
    CHECK(common_prefix({}, {1, 2}) == 0);
    CHECK(common_prefix({1, 2, 3}, {1, 2, 3}) == 3);
    CHECK(common_prefix({1, 2, 3}, {1, 2}) == 2);
    CHECK(common_prefix({1, 9, 3}, {1, 2, 3}) == 1);
}

TEST_CASE("context shift forgets whole exchanges, oldest first, never the protected tail") {
    // u1 a1 u2 a2 u3 (the message being answered); a "token" per character plus 10 for the system.
    const std::vector<Message> turns = {
        {"user", "aaaa"}, {"assistant", "bbbbbb"}, {"user", "cc"}, {"assistant", "dddd"}, {"user", "eee"}};
    std::vector<size_t> asked;
    auto tokens = [&](size_t skip) {
        asked.push_back(skip);
        int n = 10;
        for (size_t i = skip; i < turns.size(); i++) n += int(turns[i].content.size());
        return n;
    };
    CHECK(turns_to_forget(turns, 1, 100, tokens) == 0);        // everything fits: 29
    CHECK(turns_to_forget(turns, 1, 29, tokens) == 0);
    CHECK(turns_to_forget(turns, 1, 28, tokens) == 2);         // drop u1 a1 -> 19, never just u1
    asked.clear();
    CHECK(turns_to_forget(turns, 1, 19, tokens) == 2);
    for (size_t s : asked) CHECK((s == 0 || s == 2 || s == 4));  // only exchange boundaries are tried
    CHECK(turns_to_forget(turns, 1, 18, tokens) == 4);         // drop u2 a2 too -> 13
    CHECK(turns_to_forget(turns, 1, 13, tokens) == 4);
    CHECK(turns_to_forget(turns, 1, 12, tokens) == std::string::npos);  // u3 itself is protected
    CHECK(turns_to_forget(turns, 0, 10, tokens) == 5);         // nothing protected: drop all
    CHECK(turns_to_forget({}, 1, 5, [](size_t) { return 10; }) == std::string::npos);
}

}  // TEST_SUITE

TEST_SUITE("chat-reasoning") {

TEST_CASE("think blocks are split out, also when the tags arrive in pieces") {
    auto run = [](const std::vector<std::string>& pieces) {
        ReasoningSplitter s;
        std::vector<ReasoningSplitter::Segment> all;  // merged across pushes
        auto take = [&](const std::vector<ReasoningSplitter::Segment>& segs) {
            for (const auto& g : segs) {
                if (!all.empty() && all.back().reasoning == g.reasoning) all.back().text += g.text;
                else all.push_back(g);
            }
        };
        for (const auto& p : pieces) take(s.push(p));
        take(s.flush());
        std::string out;
        for (const auto& g : all) out += g.reasoning ? "[" + g.text + "]" : g.text;
        return out;
    };
    CHECK(run({"Hello"}) == "Hello");
    CHECK(run({"<think>hmm</think>Yes"}) == "[<think>hmm</think>]Yes");
    CHECK(run({"<th", "ink>h", "m", "m</thi", "nk>", "Yes"}) == "[<think>hmm</think>]Yes");
    CHECK(run({"a <", "b> <thin"}) == "a <b> <thin");               // an unfinished tag is just text
    CHECK(run({"<think>never closed"}) == "[<think>never closed]");
    CHECK(run({"x<think>1</think>y<think>2</think>"}) == "x[<think>1</think>]y[<think>2</think>]");
}

}  // TEST_SUITE

TEST_SUITE("chat-editor") {

TEST_CASE("typing, cursor movement and insertion") {
    Script s("helo" + kLeft + "l" + kEnd + "!\r");
    CHECK(s.line() == "hello!");
    s.add("world" + kHome + "hello " + "\r");
    CHECK(s.line() == "hello world");
    s.add(std::string("bc") + "\x01" + "a" + "\x05" + "d\r");  // Ctrl-A, Ctrl-E
    CHECK(s.line() == "abcd");
    s.add(std::string("ac") + "\x02" + "b" + "\x06" + "d\r");  // Ctrl-B, Ctrl-F
    CHECK(s.line() == "abcd");
}

TEST_CASE("deleting: backspace over UTF-8, Delete, Ctrl-U, Ctrl-K, Ctrl-W, Ctrl-Y") {
    Script s("caf\xC3\xA9\x7f" "e\r");
    CHECK(s.line() == "cafe");
    s.add("abc" + kHome + kDelete + "\r");
    CHECK(s.line() == "bc");
    s.add("one two" + kLeft + kLeft + kLeft + "\x15" + "\r");  // Ctrl-U kills to the start
    CHECK(s.line() == "two");
    s.add("one two" + kHome + kRight + kRight + kRight + "\x0b" + "\r");  // Ctrl-K kills to the end
    CHECK(s.line() == "one");
    s.add("one two  three\x17\x17" "X\r");  // Ctrl-W twice
    CHECK(s.line() == "one X");
    s.add("alpha beta\x17" "\x01" "\x19" " \r");  // kill "beta", yank it at the start
    CHECK(s.line() == "beta alpha ");
    s.add("ab\x04\x02\x04\r");  // Ctrl-D deletes under the cursor when there is text
    CHECK(s.line() == "a");
}

TEST_CASE("history: up and down walk it, edits to a recalled entry do not change it") {
    Script s("");
    s.editor.add_history("first");
    s.editor.add_history("second");
    s.editor.add_history("second");  // repeats are skipped
    s.editor.add_history("");
    CHECK(s.editor.history().size() == 2);
    s.add(kUp + "\r");
    CHECK(s.line() == "second");
    s.add(kUp + kUp + kUp + "\r");  // stops at the oldest
    CHECK(s.line() == "first");
    s.add("draft" + kUp + kDown + "\r");  // down returns to what was being typed
    CHECK(s.line() == "draft");
    s.add(kUp + "X" + kDown + kUp + "\r");
    CHECK(s.line() == "secondX");
    CHECK(s.editor.history().back() == "second");
    s.add(std::string("\x10\x10") + "\x0e" + "\r");  // Ctrl-P, Ctrl-P, Ctrl-N
    CHECK(s.line() == "second");
}

TEST_CASE("multi-line input: a trailing backslash continues, a paste keeps its newlines") {
    Script s("first\\\rsecond\\\rthird\r");
    CHECK(s.line() == "first\nsecond\nthird");
    s.add("say: \x1b[200~line one\r\nline two\rline three\x1b[201~ ok\r");
    CHECK(s.line() == "say: line one\nline two\nline three ok");
    CHECK(s.drawn.find("\xE2\x8F\x8E") != std::string::npos);  // pasted newlines are drawn as ⏎
}

TEST_CASE("Ctrl-C drops typed text, and at an empty prompt interrupts; Ctrl-D and EOF end the input") {
    Script s("some text\x03" "kept\r");
    CHECK(s.line() == "kept");
    s.add("\x03");
    s.line(LineEditor::Result::Interrupted);
    s.add("\x04");
    s.line(LineEditor::Result::EndOfInput);
    s.add("unfinished");  // the input ends without Enter: the text still counts
    CHECK(s.line() == "unfinished");
    s.line(LineEditor::Result::EndOfInput);
}

TEST_CASE("a long line scrolls sideways and keeps the cursor on the row") {
    Script s(std::string(100, 'x') + "\r");
    CHECK(s.line() == std::string(100, 'x'));
    // Each redraw fits in 40 columns: the prompt, at most 37 characters, then the cursor column.
    const size_t last = s.drawn.rfind("\r> ");
    REQUIRE(last != std::string::npos);
    const std::string redraw = s.drawn.substr(last + 3, s.drawn.find("\x1b[0K", last) - last - 3);
    CHECK(redraw.size() <= 37);
    CHECK(redraw == std::string(redraw.size(), 'x'));
}

}  // TEST_SUITE

TEST_SUITE("chat-engine") {

namespace {

struct TinyChat {
    std::string path;
    std::unique_ptr<Model> model;
    tokenizer::Tokenizer tok;
    TinyChat() : path("/tmp/lumen-test-chat-" + std::to_string(getpid()) + ".gguf") {
        SynthOptions so;
        so.type = DType::F16;
        synth_model(*find_preset("tiny"), so, path);
        model = Model::load(path);
        tok = tokenizer::Tokenizer::from_gguf(*model->file);
    }
    ~TinyChat() { std::remove(path.c_str()); }
    // One token per eval (n_batch 1), so every token goes through the same kernels whether it is
    // read again or reused from the cache: the replies must then agree exactly.
    std::unique_ptr<Session> session(int n_ctx) {
        SessionOptions so;
        so.n_ctx = n_ctx;
        so.n_batch = 1;
        so.n_threads = 2;
        return std::make_unique<Session>(*model, make_backend("cpu", 2), so);
    }
};

ChatEngine make_engine(TinyChat& t, Session& s, const ChatOptions& co) {
    SamplingParams sp;
    sp.temp = 0;
    ChatEngine e(s, t.tok, ChatTemplate(TemplateFamily::ChatML), sp, co);
    e.set_system("sys");
    return e;
}

// Sends each input as a user turn; returns the replies as streamed.
std::vector<std::string> converse(ChatEngine& e, const std::vector<std::string>& inputs, std::vector<ReplyStats>* stats) {
    std::vector<std::string> replies;
    for (const std::string& in : inputs) {
        std::string r;
        const ReplyStats st = e.reply(in, [&](std::string_view x) { r += x; }, [](const std::string&) {}, nullptr);
        if (stats) stats->push_back(st);
        replies.push_back(r);
        CHECK(e.conversation().turns.back().content == r);
    }
    return replies;
}

}  // namespace

TEST_CASE("greedy replies are the same with KV reuse and with a full re-read") {
    TinyChat t;
    ChatOptions co;
    co.n_predict = 6;
    const std::vector<std::string> inputs = {"hello", "and then?", "more", "the end"};
    auto s1 = t.session(512);
    ChatEngine e1 = make_engine(t, *s1, co);
    std::vector<ReplyStats> reuse_stats;
    const auto reused = converse(e1, inputs, &reuse_stats);
    CHECK(e1.cached_tokens() == s1->n_past());
    co.kv_reuse = false;
    auto s2 = t.session(512);
    ChatEngine e2 = make_engine(t, *s2, co);
    std::vector<ReplyStats> full_stats;
    const auto full = converse(e2, inputs, &full_stats);
    CHECK(reused == full);
    // Reuse reads only the new tail; the full re-read reads the whole prompt every turn.
    for (size_t i = 1; i < inputs.size(); i++) {
        CHECK(reuse_stats[i].evaluated < reuse_stats[i].prompt_tokens / 2);
        CHECK(full_stats[i].evaluated == full_stats[i].prompt_tokens);
    }
}

// Re-reads the last cached token on the engine's session and compares its logits with a fresh
// session that reads every token the engine says its cache holds: they agree only if the cache
// really holds those tokens at those positions.
void check_cache_matches(TinyChat& t, Session& s, const ChatEngine& e, int n_ctx) {
    const std::vector<int32_t>& cached = e.cached();
    REQUIRE(int(cached.size()) == s.n_past());
    REQUIRE(!cached.empty());
    s.truncate(s.n_past() - 1);
    const std::vector<float> got = s.eval({cached.back()});
    auto fresh = t.session(n_ctx);
    const std::vector<float>& want = fresh->eval(cached);
    REQUIRE(got.size() == want.size());
    float worst = 0;
    for (size_t i = 0; i < got.size(); i++) worst = std::max(worst, std::fabs(got[i] - want[i]));
    CHECK(worst < 1e-5f);
}

TEST_CASE("after every turn the KV cache holds exactly the conversation's tokens") {
    TinyChat t;
    ChatOptions co;
    co.n_predict = 5;
    auto s = t.session(160);
    ChatEngine e = make_engine(t, *s, co);
    for (int i = 0; i < 7; i++) {
        converse(e, {"turn " + std::to_string(i)}, nullptr);
        INFO("after turn ", i);
        check_cache_matches(t, *s, e, 160);
        // The cache starts with the formatted history (the reply may be re-tokenized differently).
        CHECK(common_prefix(e.cached(), e.prompt_tokens(0)) >= size_t(e.cached_tokens() / 2));
        if (i == 3) {
            e.set_system("a new system prompt");  // the next turn re-reads from the first change
        }
    }
}

TEST_CASE("context shift: oldest exchanges go, the system prompt stays, the cache stays consistent") {
    TinyChat t;
    ChatOptions co;
    co.n_predict = 8;
    auto s = t.session(160);
    ChatEngine e = make_engine(t, *s, co);
    std::vector<ReplyStats> stats;
    std::vector<std::string> inputs;
    for (int i = 0; i < 8; i++) inputs.push_back("question number " + std::to_string(i));
    converse(e, inputs, &stats);
    int forgotten = 0;
    for (const ReplyStats& st : stats) {
        forgotten += st.forgotten;
        CHECK(st.forgotten % 2 == 0);  // whole exchanges
        CHECK(st.prompt_tokens + st.generated <= 160);
    }
    CHECK(forgotten > 0);
    const Conversation& c = e.conversation();
    CHECK(c.system == "sys");
    CHECK(c.turns.front().role == "user");
    CHECK(c.turns.back().role == "assistant");
    CHECK(c.turns[c.turns.size() - 2].content == "question number 7");
    CHECK(int(c.turns.size()) + forgotten == 16);
    CHECK(e.cached_tokens() <= 160);
    check_cache_matches(t, *s, e, 160);
}

TEST_CASE("a reply that fills the context forgets old turns mid-reply, then stops when its exchange fills it") {
    TinyChat t;  // the random model never ends its turn: replies run until the context is full
    ChatOptions co;
    auto s = t.session(128);
    ChatEngine e = make_engine(t, *s, co);
    std::vector<ReplyStats> stats;
    converse(e, {"one", "two", "three"}, &stats);
    for (const ReplyStats& st : stats) CHECK(st.end == ReplyStats::End::ContextFull);
    CHECK(stats[0].forgotten == 0);
    CHECK(stats[1].forgotten == 2);  // "one" and its reply went to make room for "two"'s reply
    CHECK(stats[2].forgotten == 2);
    CHECK(e.conversation().turns.size() == 2);
    CHECK(e.conversation().turns[0].content == "three");
    check_cache_matches(t, *s, e, 128);
}

TEST_CASE("without context shift a conversation that outgrows the context is an error, and nothing changes") {
    TinyChat t;
    ChatOptions co;
    co.n_predict = 8;
    co.context_shift = false;
    auto s = t.session(192);
    ChatEngine e = make_engine(t, *s, co);
    auto ignore = [](std::string_view) {};
    auto quiet = [](const std::string&) {};
    int ok = 0;
    for (;;) {
        const size_t before = e.conversation().turns.size();
        try {
            e.reply("a question that takes room", ignore, quiet, nullptr);
            ok++;
        } catch (const Error& err) {
            CHECK(std::string(err.what()).find("context full") != std::string::npos);
            CHECK(e.conversation().turns.size() == before);
            break;
        }
        REQUIRE(ok < 20);
    }
    CHECK(ok >= 1);
    CHECK_THROWS_WITH_AS(e.reply(std::string(200, 'x'), ignore, quiet, nullptr), doctest::Contains("context full"),
                         Error);
}

TEST_CASE("a stop request ends the reply after one token and keeps the partial answer") {
    TinyChat t;
    auto s = t.session(256);
    SamplingParams sp;
    sp.temp = 0;
    ChatEngine e(*s, t.tok, ChatTemplate(TemplateFamily::ChatML), sp, ChatOptions{});
    std::atomic<bool> stop{true};
    std::string r;
    const ReplyStats st = e.reply("hi", [&](std::string_view x) { r += x; }, [](const std::string&) {}, &stop);
    CHECK(st.end == ReplyStats::End::Interrupted);
    CHECK(st.generated == 1);
    CHECK(e.conversation().turns.size() == 2);
    CHECK(e.conversation().turns[1].content == r);
}

}  // TEST_SUITE
