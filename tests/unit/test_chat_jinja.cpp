// The Jinja interpreter against Python's jinja2 (with Hugging Face's settings: trim_blocks,
// lstrip_blocks, loop controls, a tojson that keeps non-ASCII text). The expected outputs below
// are jinja2's renderings of each template and context; the chat-template suite checks the
// interpreter through ChatTemplate.
#include <doctest/doctest.h>

#include <string>

#include "chat/jinja.h"
#include "chat/json_reader.h"
#include "chat/template.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

using namespace lumen;
using namespace lumen::chat;

namespace {

struct JinjaCase {
    const char* name;
    const char* source;
    const char* context;  // JSON
    const char* expected;
};

const JinjaCase kCases[] = {
    {"SmolLM2's template adds its default system prompt",
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
     "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Who are you?\"}], \"add_generation_prompt\": true}",
     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
    {"SmolLM2's template keeps a given system prompt",
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Who are you?\"}], \"add_generation_prompt\": false}",
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"},
    {"trim_blocks and lstrip_blocks",
     "{% for x in xs %}\n    {% if x %}\n  [{{ x }}]\n    {% endif %}\n{% endfor %}\nend",
     "{\"xs\": [1, 0, 2]}",
     "  [1]\n  [2]\nend"},
    {"'-' strips, '+' keeps the indentation",
     "a  \n  {%- if true -%}  \n  b  {#- c -#}  d\n    {%+ if true %}e{% endif %}{% endif %}",
     "{}",
     "abd\n    e"},
    {"operators and precedence",
     "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 'a' ~ 1 ~ none }} {{ not true or true and false }} {{ 1 if false else 2 }} {{ 'x' if true }}|{{ 'b' in 'abc' }} {{ 3 not in [1, 2] }}",
     "{}",
     "7 9 3 -4 1 2 1024 3.5 a1None False 2 x|True True"},
    {"values print as Python's str()",
     "{{ none }}|{{ true }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ [1, 'a', none, true] }}|{{ {'k': 'v', 'n': 1.5} }}|{{ undefined_name }}|",
     "{}",
     "None|True|1.0|0.30000000000000004|[1, 'a', None, True]|{'k': 'v', 'n': 1.5}||"},
    {"filters",
     "{{ '  x  ' | trim }}|{{ xs | length }}|{{ xs | join(', ') }}|{{ xs | first }}{{ xs | last }}|{{ missing | default('d') }}|{{ '' | default('e', true) }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ 'hello world' | title }}|{{ 'hello' | capitalize }}|{{ 'aXbX' | replace('X', '-') }}|{{ xs | reverse | list }}|{{ '3' | int + 1 }}|{{ [3, 1, 2] | sort }}|{{ [1, 1, 2] | unique | list }}",
     "{\"xs\": [\"a\", \"b\", \"c\"]}",
     "x|3|a, b, c|ac|d|e|ABab|Hello World|Hello|a-b-|['c', 'b', 'a']|4|[1, 2, 3]|[1, 2]"},
    {"tojson keeps non-ASCII text and follows Python's separators",
     "{{ obj | tojson }}\n{{ obj | tojson(indent=2) }}",
     "{\"obj\": {\"name\": \"caf\xC3\xA9" " \\\"q\\\"\", \"n\": [1, 2.5, true, null], \"e\": {}}}",
     "{\"name\": \"caf\xC3\xA9" " \\\"q\\\"\", \"n\": [1, 2.5, true, null], \"e\": {}}\n{\n  \"name\": \"caf\xC3\xA9" " \\\"q\\\"\",\n  \"n\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"e\": {}\n}"},
    {"selectattr, map, dictsort, items",
     "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|{{ ms | rejectattr('role', 'eq', 'user') | list | length }}|{% for k, v in d | dictsort %}{{ k }}={{ v }};{% endfor %}|{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}",
     "{\"ms\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Who are you?\"}], \"d\": {\"b\": 2, \"a\": 1}}",
     "Hi,Who are you?|1|a=1;b=2;|b2a1"},
    {"tests",
     "{{ x is defined }}{{ y is defined }}{{ x is string }}{{ n is number }}{{ n is integer }}{{ d is mapping }}{{ l is iterable }}{{ none is none }}{{ n is odd }}{{ n is even }}{{ n is divisibleby(3) }}{{ x is not none }}",
     "{\"x\": \"s\", \"n\": 3, \"d\": {}, \"l\": []}",
     "TrueFalseTrueTrueTrueTrueTrueTrueTrueFalseTrueTrue"},
    {"string methods",
     "{{ ' a b '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ '{} and {}'.format(1, 'two') }}|{{ 'xxhixx'.lstrip('x') }}{{ 'xxhixx'.rstrip('x') }}|{{ '-'.join(['a', 'b']) }}|{{ 'hello'.find('l') }}",
     "{}",
     "a b|['a', 'b', '', 'c']|['a', 'b']|TrueTrue|1 and two|hixxxxhi|a-b|2"},
    {"slices and indexing",
     "{{ xs[1:] }}{{ xs[:-1] }}{{ xs[::-1] }}{{ xs[-1] }}{{ 'hello'[1:3] }}{{ xs[5] is defined }}{{ d['k'] }}{{ d.k }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}",
     "{\"xs\": [1, 2, 3], \"d\": {\"k\": \"v\"}}",
     "[2, 3][1, 2][3, 2, 1]3elFalsevvdfltNone"},
    {"loop variables, loop filters, else, break and continue",
     "{% for x in xs if x != 3 %}{{ loop.index }}/{{ loop.length }}{{ '(first)' if loop.first }}{{ '(last)' if loop.last }}:{{ x }},{{ loop.previtem }} {% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     "{\"xs\": [1, 2, 3, 4, 5]}",
     "1/4(first):1, 2/4:2,1 3/4:4,2 4/4(last):5,4 |empty|13"},
    {"set, namespaces and scoping",
     "{% set a = 1 %}{% set ns = namespace(found=false, n=0) %}{% for x in [1, 2] %}{% set a = 5 %}{% set ns.n = ns.n + x %}{% if x == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ a }} {{ ns.n }} {{ ns.found }}{% set b, c = [7, 8] %} {{ b }}{{ c }}{% set blk %}in {{ a }}{% endset %} [{{ blk }}]",
     "{}",
     "1 3 True 78 [in 1]"},
    {"macros with defaults and keyword arguments",
     "{% macro tag(name, body='none', end='!') %}<{{ name }}>{{ body }}{{ end }}{% endmacro %}{{ tag('a') }}{{ tag('b', 'x') }}{{ tag('c', end='?') }}",
     "{}",
     "<a>none!<b>x!<c>none?"},
    {"messages[loop.index0 - 1] and nested data, as Qwen's template uses",
     "{% for m in messages %}{% if loop.index0 > 0 and messages[loop.index0 - 1].role == m.role %}[repeat]{% endif %}{{ m['role'][0] }}:{{ m.content | length }};{% endfor %}",
     "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Who are you?\"}, {\"role\": \"user\", \"content\": \"again\"}]}",
     "u:2;a:6;u:12;[repeat]u:5;"},
    {"filter blocks and generation blocks",
     "{% filter upper %}shout {{ 'this' }}{% endfilter %}",
     "{}",
     "SHOUT THIS"},
};


jinja::Value from_json(const json::Value& v) {
    switch (v.kind) {
        case json::Value::Kind::Null: return jinja::Value::none();
        case json::Value::Kind::Bool: return jinja::Value::boolean(v.boolean);
        case json::Value::Kind::Number:
            if (v.number == double(int64_t(v.number))) return jinja::Value::integer(int64_t(v.number));
            return jinja::Value::number(v.number);
        case json::Value::Kind::String: return jinja::Value::string(v.string);
        case json::Value::Kind::Array: {
            jinja::Array a;
            for (const auto& x : v.array) a.push_back(from_json(x));
            return jinja::Value::array(std::move(a));
        }
        case json::Value::Kind::Object: {
            jinja::Object o;
            for (const auto& kv : v.object) o.emplace_back(kv.first, from_json(kv.second));
            return jinja::Value::object(std::move(o));
        }
    }
    return jinja::Value();
}

std::string render(const std::string& source, const std::string& context_json = "{}") {
    return jinja::Template::parse(source).render(from_json(json::parse(context_json, "context")));
}

}  // namespace

TEST_SUITE("chat-jinja") {

TEST_CASE("renders as jinja2 does") {
    for (const JinjaCase& c : kCases) {
        INFO("case: ", c.name);
        std::string got;
        CHECK_NOTHROW(got = render(c.source, c.context));
        CHECK(got == c.expected);
    }
}

TEST_CASE("syntax errors name the line") {
    CHECK_THROWS_WITH_AS(render("a\n{% if x %}b"), doctest::Contains("line 2"), Error);
    CHECK_THROWS_WITH_AS(render("a\nb\n{{ x + }}"), doctest::Contains("chat template: line 3: unexpected end"), Error);
    CHECK_THROWS_WITH_AS(render("{% include 'x' %}"), doctest::Contains("unsupported statement 'include'"), Error);
    CHECK_THROWS_WITH_AS(render("{{ 'abc }}"), doctest::Contains("unclosed"), Error);
    CHECK_THROWS_AS(render("{% for x in %}{% endfor %}"), Error);
    CHECK_THROWS_WITH_AS(render("{{ x ! y }}"), doctest::Contains("unexpected character '!'"), Error);
    CHECK_THROWS_WITH_AS(render("{% endif %}"), doctest::Contains("unsupported statement 'endif'"), Error);
    CHECK_THROWS_WITH_AS(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
                         doctest::Contains("nested too deeply"), Error);
    std::string deep;
    for (int i = 0; i < 300; i++) deep += "{% if true %}";
    CHECK_THROWS_WITH_AS(render(deep), doctest::Contains("nested too deeply"), Error);
}

TEST_CASE("runtime errors: raise_exception, unknown filters, bad operands") {
    CHECK_THROWS_WITH_AS(render("{{ raise_exception('Roles must alternate') }}"),
                         doctest::Contains("chat template: Roles must alternate"), Error);
    CHECK_THROWS_WITH_AS(render("\n{{ 1 | frobnicate }}"), doctest::Contains("line 2: unknown filter 'frobnicate'"), Error);
    CHECK_THROWS_WITH_AS(render("{{ 'a' - 1 }}"), doctest::Contains("cannot apply '-'"), Error);
    CHECK_THROWS_WITH_AS(render("{{ x.y.z }}"), doctest::Contains("of an undefined value"), Error);
    CHECK_THROWS_WITH_AS(render("{{ 1 // 0 }}"), doctest::Contains("division by zero"), Error);
    CHECK_THROWS_WITH_AS(render("{{ range(10000000) | length }}"), doctest::Contains("too long"), Error);
    CHECK_THROWS_WITH_AS(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
                         doctest::Contains("nested too deeply"), Error);
    CHECK_THROWS_WITH_AS(render("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                                "{% endfor %}"),
                         doctest::Contains("longer than 64 MiB"), Error);
}

TEST_CASE("ChatTemplate runs a model's Jinja template") {
    gguf::Writer w;
    w.set("general.architecture", gguf::MetaValue::string("llama"));
    // Llama 3 style: the template writes the BOS itself.
    w.set("tokenizer.chat_template",
          gguf::MetaValue::string("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}"
                                  "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"));
    const std::vector<uint8_t> bytes = w.write_memory();
    auto f = gguf::File::from_memory(bytes.data(), bytes.size(), "m.gguf");
    const ChatTemplate t = ChatTemplate::jinja_for_model(*f, "<s>", "</s>");
    CHECK(t.is_jinja());
    CHECK(std::string(t.name()) == "jinja");
    CHECK(t.format({{"system", " S "}, {"user", "Hi"}}, true) == "<s><|system|>S</s><|user|>Hi</s><|assistant|>");
    CHECK(t.format({{"user", "Hi"}}, false) == "<s><|user|>Hi</s>");

    gguf::Writer none;
    none.set("general.architecture", gguf::MetaValue::string("llama"));
    const std::vector<uint8_t> nb = none.write_memory();
    auto nf = gguf::File::from_memory(nb.data(), nb.size(), "n.gguf");
    CHECK_THROWS_WITH_AS(ChatTemplate::jinja_for_model(*nf, "", ""), doctest::Contains("--jinja: the model has no chat template"),
                         Error);
}

}  // TEST_SUITE
