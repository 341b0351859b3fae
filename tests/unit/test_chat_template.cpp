// Chat templates: every family formats a conversation byte for byte as llama.cpp's
// llama_chat_apply_template does (the expected strings below are its output for this conversation,
// checked against the oracle build), and real templates are sorted into the right family.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "chat/template.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

using lumen::chat::ChatTemplate;
using lumen::chat::Message;

namespace {

// System, user, an assistant reply with stray whitespace (some families trim, some do not), user.
const std::vector<Message> kConversation = {
    {"system", "You are helpful."}, {"user", "Hello"}, {"assistant", " Hi there\n"}, {"user", "Who are you?"}};

struct Expected {
    const char* name;
    const char* text;
};

const Expected kExpected[] = {
    {"chatml",
     "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there\n<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
    {"llama2",
     "[INST] You are helpful.\nHello [/INST] Hi there\n</s>[INST] Who are you? [/INST]"},
    {"llama2-sys",
     "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST] Hi there\n</s>[INST] Who are you? [/INST]"},
    {"llama2-sys-bos",
     "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST] Hi there\n</s><s>[INST] Who are you? [/INST]"},
    {"llama2-sys-strip",
     "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you? [/INST]"},
    {"mistral-v1",
     " [INST] You are helpful.\n\nHello [/INST]  Hi there\n</s> [INST] Who are you? [/INST]"},
    {"mistral-v3",
     "[INST] You are helpful.\n\nHello[/INST] Hi there</s>[INST] Who are you?[/INST]"},
    {"mistral-v3-tekken",
     "[INST]You are helpful.\n\nHello[/INST] Hi there\n</s>[INST]Who are you?[/INST]"},
    {"mistral-v7",
     "[SYSTEM_PROMPT] You are helpful.[/SYSTEM_PROMPT][INST] Hello[/INST]  Hi there\n</s>[INST] Who are you?[/INST]"},
    {"mistral-v7-tekken",
     "[SYSTEM_PROMPT]You are helpful.[/SYSTEM_PROMPT][INST]Hello[/INST] Hi there\n</s>[INST]Who are you?[/INST]"},
    {"phi3",
     "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n Hi there\n<|end|>\n<|user|>\nWho are you?<|end|>\n<|assistant|>\n"},
    {"phi4",
     "<|im_start|>system<|im_sep|>You are helpful.<|im_end|><|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_sep|> Hi there\n<|im_end|><|im_start|>user<|im_sep|>Who are you?<|im_end|><|im_start|>assistant<|im_sep|>"},
    {"falcon3",
     "<|system|>\nYou are helpful.\n<|user|>\nHello\n<|assistant|>\n Hi there\n\n<|user|>\nWho are you?\n<|assistant|>\n"},
    {"zephyr",
     "<|system|>\nYou are helpful.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\n Hi there\n<|endoftext|>\n<|user|>\nWho are you?<|endoftext|>\n<|assistant|>\n"},
    {"gemma",
     "<start_of_turn>user\nYou are helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n"},
    {"llama3",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"deepseek",
     "You are helpful.### Instruction:\nHello\n### Response:\n Hi there\n\n<|EOT|>\n### Instruction:\nWho are you?\n### Response:\n"},
    {"deepseek2",
     "You are helpful.\n\nUser: Hello\n\nAssistant:  Hi there\n<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>User: Who are you?\n\nAssistant:"},
    {"deepseek3",
     "You are helpful.\n\n<\xEF\xBD\x9CUser\xEF\xBD\x9C>Hello<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C> Hi there\n<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C><\xEF\xBD\x9CUser\xEF\xBD\x9C>Who are you?<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>"},
    {"command-r",
     "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are helpful.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you?<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"},
    {"vicuna",
     "You are helpful.\n\nUSER: Hello\nASSISTANT:  Hi there\n</s>\nUSER: Who are you?\nASSISTANT:"},
    {"vicuna-orca",
     "SYSTEM: You are helpful.\nUSER: Hello\nASSISTANT:  Hi there\n</s>\nUSER: Who are you?\nASSISTANT:"},
    {"openchat",
     "You are helpful.<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:  Hi there\n<|end_of_turn|>GPT4 Correct User: Who are you?<|end_of_turn|>GPT4 Correct Assistant:"},
};

ChatTemplate by_name(const char* name) {
    ChatTemplate t;
    REQUIRE_MESSAGE(ChatTemplate::from_name(name, t), name);
    return t;
}

std::string detected(const std::string& src) {
    ChatTemplate t;
    return ChatTemplate::detect(src, t) ? t.name() : "none";
}

// A GGUF in memory holding only the metadata for_model reads.
struct MetaOnly {
    std::vector<uint8_t> bytes;
    std::unique_ptr<lumen::gguf::File> file;
    explicit MetaOnly(const char* chat_template) {
        lumen::gguf::Writer w;
        w.set("general.architecture", lumen::gguf::MetaValue::string("llama"));
        if (chat_template) w.set("tokenizer.chat_template", lumen::gguf::MetaValue::string(chat_template));
        bytes = w.write_memory();
        file = lumen::gguf::File::from_memory(bytes.data(), bytes.size(), "model.gguf");
    }
};

}  // namespace

TEST_SUITE("chat-template") {

TEST_CASE("every family formats a conversation exactly as llama.cpp does") {
    size_t n = 0;
    for (const Expected& e : kExpected) {
        INFO("template ", e.name);
        CHECK(by_name(e.name).format(kConversation, true) == e.text);
        n++;
    }
    // Every known name is covered by the table above.
    std::string names = ChatTemplate::known_names();
    CHECK(size_t(std::count(names.begin(), names.end(), ',')) + 1 == n);
}

TEST_CASE("without the generation prompt, and for families that have none") {
    const std::vector<Message> one = {{"user", "Hi"}};
    CHECK(by_name("chatml").format(one, false) == "<|im_start|>user\nHi<|im_end|>\n");
    CHECK(by_name("chatml").format(one, true) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    CHECK(by_name("llama3").format(one, false) == "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    CHECK(by_name("gemma").format(one, false) == "<start_of_turn>user\nHi<end_of_turn>\n");
    // Llama 2 / Mistral: the prompt already ends with [/INST]; the flag changes nothing.
    CHECK(by_name("llama2").format(one, true) == "[INST] Hi [/INST]");
    CHECK(by_name("llama2").format(one, false) == "[INST] Hi [/INST]");
    CHECK(by_name("mistral-v7").format(one, true) == "[INST] Hi[/INST]");
}

TEST_CASE("gemma folds the system prompt into the first user turn, trimmed") {
    const std::vector<Message> msgs = {{"system", "  Be brief. \n"}, {"user", " Q1 "}, {"assistant", "A1"}, {"user", "Q2"}};
    CHECK(by_name("gemma").format(msgs, true) ==
          "<start_of_turn>user\nBe brief.\n\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
          "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n");
}

TEST_CASE("real templates are recognised by family") {
    // SmolLM2-135M-Instruct's template (ChatML with a default system prompt).
    CHECK(detected("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                   "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
                   "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}") == "chatml");
    CHECK(detected("{{ '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] }}") == "phi4");
    CHECK(detected("{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
                   "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}") == "llama3");
    CHECK(detected("{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}") == "gemma");
    CHECK(detected("{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
                   "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}{% endif %}") == "phi3");
    CHECK(detected("{{ '[INST] ' + message['content'] + ' [/INST]' }}") == "llama2");
    CHECK(detected("{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }} <<SYS>>") == "llama2-sys-bos");
    CHECK(detected("{{ '[INST] <<SYS>>\n' + system_message + '\n<</SYS>>\n\n' }}") == "llama2-sys");
    CHECK(detected("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }} <<SYS>>") == "llama2-sys-strip");
    CHECK(detected("{{ '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{{ '[INST]' + c + '[/INST]' }}") ==
          "mistral-v7");
    CHECK(detected("{{ '### Instruction:\n' + message['content'] + '\n' }}{{ '<|EOT|>' }}") == "deepseek");
    CHECK(detected("{{'<\xEF\xBD\x9CUser\xEF\xBD\x9C>' + c}}{{'<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>' + c + "
                   "'<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>'}}") == "deepseek3");
    CHECK(detected("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>") == "command-r");
    CHECK(detected("{{ '<|user|>\n' + message['content'] + '<|endoftext|>' }}") == "zephyr");
    // Families llama.cpp knows but lumen does not format, and plain nonsense: no family.
    CHECK(detected("[gMASK]<sop>{{ '<|user|>' }}{{ '<|assistant|>' }}") == "none");
    CHECK(detected("{{ '<|start_of_role|>' + message['role'] + '<|end_of_role|>' }}") == "none");
    CHECK(detected("{{ messages }}") == "none");
}

TEST_CASE("names: every listed name resolves, unknown ones do not") {
    ChatTemplate t;
    CHECK(ChatTemplate::from_name("llama3", t));
    CHECK(std::string(t.name()) == "llama3");
    CHECK_FALSE(ChatTemplate::from_name("llama-3", t));
    CHECK_FALSE(ChatTemplate::from_name("", t));
}

TEST_CASE("for_model: the GGUF's template, an override, no template, an unknown template") {
    MetaOnly llama3("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}");
    std::string notice;
    CHECK(std::string(ChatTemplate::for_model(*llama3.file, "", &notice).name()) == "llama3");
    CHECK(notice.empty());
    CHECK(std::string(ChatTemplate::for_model(*llama3.file, "gemma", &notice).name()) == "gemma");

    MetaOnly none(nullptr);
    CHECK(std::string(ChatTemplate::for_model(*none.file, "", &notice).name()) == "chatml");
    CHECK(notice.find("no chat template") != std::string::npos);

    MetaOnly odd("{{ 'Q: ' + message['content'] }}");
    CHECK_THROWS_WITH_AS(ChatTemplate::for_model(*odd.file, ""),
                         doctest::Contains("--chat-template NAME"), lumen::Error);
    CHECK(std::string(ChatTemplate::for_model(*odd.file, "vicuna").name()) == "vicuna");
    CHECK_THROWS_WITH_AS(ChatTemplate::for_model(*odd.file, "gpt9"),
                         doctest::Contains("--chat-template gpt9: unknown template (known: chatml, "), lumen::Error);
}

}  // TEST_SUITE
