// The files of `lumen batch`: prompt files (text and JSONL, malformed lines, duplicate ids), the
// records it writes, and reading them back for --resume (torn last lines).
#include <doctest/doctest.h>

#include <string>

#include "chat/json_reader.h"
#include "engine/batch_input.h"
#include "util/error.h"

using namespace lumen;
using namespace lumen::batch;

TEST_CASE("batch input: text lines, escapes, blank lines, ids are line numbers") {
    Input in = parse_prompts("hello\n\n  \nline\\none\\ttab \\\\ C:\\dir\r\nlast", "p.txt", Format::Auto);
    CHECK_FALSE(in.jsonl);
    REQUIRE(in.items.size() == 3);
    CHECK(in.items[0].prompt == "hello");
    CHECK(in.items[0].id.json() == "1");
    CHECK(in.items[1].line == 4);
    CHECK(in.items[1].prompt == "line\none\ttab \\ C:\\dir");
    CHECK(in.items[2].id.json() == "5");
    CHECK(in.errors.empty());
    CHECK(unescape_line("a\\nb\\") == "a\nb\\");
}

TEST_CASE("batch input: a line starting with { in a text file stays text") {
    Input in = parse_prompts("{\"prompt\": \"x\"}\nplain\n", "p.txt", Format::Auto);
    CHECK_FALSE(in.jsonl);
    CHECK(in.items.size() == 2);
    Input forced = parse_prompts("{\"prompt\": \"x\"}\nplain\n", "p.txt", Format::Jsonl);
    CHECK(forced.jsonl);
    CHECK(forced.items.size() == 1);
    REQUIRE(forced.errors.size() == 1);
    CHECK(forced.errors[0].line == 2);
}

TEST_CASE("batch input: invalid UTF-8 in a text line is malformed") {
    Input in = parse_prompts("ok\nbad \xff byte\n", "p.txt", Format::Text);
    CHECK(in.items.size() == 1);
    REQUIRE(in.errors.size() == 1);
    CHECK(in.errors[0].line == 2);
    CHECK(in.errors[0].message.find("UTF-8") != std::string::npos);
}

TEST_CASE("batch input: JSONL fields") {
    const char* text =
        "{\"id\": \"a\", \"prompt\": \"hi\", \"n_predict\": 5, \"temperature\": 0, \"top_k\": 3, \"top_p\": 0.5,"
        " \"min_p\": 0.1, \"seed\": 9, \"extra\": [1, 2]}\n"
        "{\"id\": 12, \"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"q\"}]}\n"
        "{\"prompt\": \"no id\"}\n";
    Input in = parse_prompts(text, "p.jsonl", Format::Auto);
    CHECK(in.jsonl);
    CHECK(in.errors.empty());
    REQUIRE(in.items.size() == 3);
    const Item& a = in.items[0];
    CHECK(a.id.json() == "\"a\"");
    CHECK(a.prompt == "hi");
    CHECK(*a.n_predict == 5);
    CHECK(*a.temperature == 0.0f);
    CHECK(*a.top_k == 3);
    CHECK(*a.top_p == doctest::Approx(0.5));
    CHECK(*a.min_p == doctest::Approx(0.1));
    CHECK(*a.seed == 9);
    const Item& b = in.items[1];
    CHECK(b.id.json() == "12");
    REQUIRE(b.messages.size() == 2);
    CHECK(b.messages[0].role == "system");
    CHECK(b.messages[1].content == "q");
    CHECK_FALSE(b.n_predict.has_value());
    CHECK(in.items[2].id.json() == "3");
}

TEST_CASE("batch input: malformed JSONL lines name the line and the problem") {
    const char* text =
        "{\"prompt\": \"fine\"}\n"
        "{\"prompt\": \"unterminated}\n"
        "{\"id\": \"x\"}\n"
        "{\"prompt\": 5}\n"
        "{\"prompt\": \"\"}\n"
        "{\"prompt\": \"p\", \"n_predict\": 1.5}\n"
        "{\"prompt\": \"p\", \"temperature\": \"hot\"}\n"
        "{\"id\": [1], \"prompt\": \"p\"}\n"
        "{\"prompt\": \"p\", \"messages\": []}\n"
        "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n"
        "[1, 2]\n"
        "{\"prompt\": \"p\", \"top_p\": 2}\n"
        "{\"prompt\": \"also fine\"}\n";
    Input in = parse_prompts(text, "p.jsonl", Format::Auto);
    REQUIRE(in.items.size() == 2);
    CHECK(in.items[1].line == 13);
    REQUIRE(in.errors.size() == 11);
    CHECK(in.errors[0].line == 2);
    CHECK(in.errors[0].message.find("invalid JSON at column") != std::string::npos);
    CHECK(in.errors[1].message.find("missing \"prompt\"") != std::string::npos);
    CHECK(in.errors[2].message.find("must be a string") != std::string::npos);
    CHECK(in.errors[3].message == "the prompt is empty");
    CHECK(in.errors[4].message.find("integer") != std::string::npos);
    CHECK(in.errors[5].message.find("\"temperature\" must be a number") != std::string::npos);
    CHECK(in.errors[6].message.find("\"id\" must be a string or an integer") != std::string::npos);
    CHECK(in.errors[7].message.find("not both") != std::string::npos);
    CHECK(in.errors[8].message.find("wizard") != std::string::npos);
    CHECK(in.errors[9].message.find("expected a JSON object") != std::string::npos);
    CHECK(in.errors[10].line == 12);
}

TEST_CASE("batch input: duplicate ids name both lines; 7 and \"7\" differ") {
    const char* text =
        "{\"id\": 7, \"prompt\": \"a\"}\n"
        "{\"id\": \"7\", \"prompt\": \"b\"}\n"
        "{\"prompt\": \"c\"}\n"  // line 3: id 3
        "{\"id\": 3, \"prompt\": \"d\"}\n";
    Input in = parse_prompts(text, "p.jsonl", Format::Auto);
    CHECK(in.items.size() == 3);
    REQUIRE(in.duplicates.size() == 1);
    CHECK(in.duplicates[0].line == 4);
    CHECK(in.duplicates[0].message == "id 3 repeats the id of line 3");
}

TEST_CASE("batch output: a record is one line of valid JSON") {
    Result r;
    r.id = Id::of(std::string("q\"1"));
    r.sample = 2;
    r.text = "caf\xc3\xa9 \xe6\x97\xa5\n\"quoted\" \xe6\x97";  // ends inside a character
    r.n_prompt = 5;
    r.n_completion = 3;
    r.finish_reason = "length";
    r.prompt_s = 0.5;
    r.gen_s = 1.5;
    const std::string line = format_result(r);
    REQUIRE(line.back() == '\n');
    CHECK(line.find('\n') == line.size() - 1);
    chat::json::Value v = chat::json::parse(line, "record");
    CHECK(v.find("id")->string == "q\"1");
    CHECK(v.find("sample")->number == 2);
    const std::string text = v.find("text")->string;  // the cut character becomes U+FFFD (per byte)
    CHECK(text.rfind("caf\xc3\xa9 \xe6\x97\xa5\n\"quoted\" \xef\xbf\xbd", 0) == 0);
    CHECK(v.find("finish_reason")->string == "length");
    CHECK(v.find("timings")->find("gen_ms")->number == doctest::Approx(1500));
    CHECK(v.find("timings")->find("tokens_per_s")->number == doctest::Approx(2.0));
    r.sample = -1;
    CHECK(chat::json::parse(format_result(r), "record").find("sample") == nullptr);
}

TEST_CASE("batch resume: done set, torn last lines dropped") {
    Result r;
    r.finish_reason = "stop";
    r.id = Id::of(int64_t(1));
    std::string a = format_result(r);
    r.id = Id::of(std::string("x"));
    r.sample = 1;
    std::string b = format_result(r);

    Resume whole = read_output(a + b, "out.jsonl");
    CHECK(whole.records == 2);
    CHECK(whole.torn_line == 0);
    CHECK(whole.keep_bytes == a.size() + b.size());
    CHECK(whole.done.count({"1", 0}) == 1);
    CHECK(whole.done.count({"\"x\"", 1}) == 1);
    CHECK(whole.done.count({"\"x\"", 0}) == 0);

    // Killed mid-write: no newline at the end.
    Resume torn = read_output(a + b.substr(0, b.size() / 2), "out.jsonl");
    CHECK(torn.records == 1);
    CHECK(torn.torn_line == 2);
    CHECK(torn.keep_bytes == a.size());

    // A last line with its newline but cut JSON is torn too.
    Resume cut = read_output(a + "{\"id\": 3, \"fin\n", "out.jsonl");
    CHECK(cut.torn_line == 2);
    CHECK(cut.keep_bytes == a.size());

    // Garbage before the last line is not a torn write: an error naming the line.
    CHECK_THROWS_WITH_AS(read_output("not json\n" + a, "out.jsonl"), doctest::Contains("out.jsonl:1:"), Error);
    CHECK_THROWS_WITH_AS(read_output("{\"x\": 1}\n", "out.jsonl"), doctest::Contains("not a lumen batch record"), Error);
    CHECK(read_output("", "out.jsonl").keep_bytes == 0);
}
