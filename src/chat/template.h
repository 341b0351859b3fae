// Chat templates: turn a list of {role, content} messages into the prompt text a chat model was
// trained on. The GGUF's tokenizer.chat_template is a Jinja program; like llama.cpp's built-in
// formatter (llama_chat_apply_template) we do not run it but recognise its family by characteristic
// substrings and format that family's layout with fixed strings, byte for byte as llama.cpp does.
//
//   ChatTemplate t = ChatTemplate::for_model(file, "");   // or a name: "chatml", "llama3", ...
//   std::string prompt = t.format(messages, true);         // ends with the assistant's header
//
// The result carries no BOS: the tokenizer adds it (encode(..., add_special = true)). With --jinja the
// model's own template is run instead (jinja.h); it may write the BOS itself.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lumen::gguf {
class File;
}

namespace lumen::chat {

namespace jinja {
class Template;
}

struct Message {
    std::string role;  // "system", "user" or "assistant"
    std::string content;
    bool operator==(const Message& o) const { return role == o.role && content == o.content; }
};

enum class TemplateFamily {
    ChatML,
    Llama2, Llama2Sys, Llama2SysBos, Llama2SysStrip,
    MistralV1, MistralV3, MistralV3Tekken, MistralV7, MistralV7Tekken,
    Phi3, Phi4, Falcon3, Zephyr,
    Gemma,
    Llama3,
    DeepSeek, DeepSeek2, DeepSeek3,
    CommandR,
    Vicuna, VicunaOrca,
    OpenChat,
};

class ChatTemplate {
public:
    explicit ChatTemplate(TemplateFamily f = TemplateFamily::ChatML) : family_(f) {}

    // The template for a model: `override_name` when given (an unknown name is an error listing the
    // known ones), else the family recognised in tokenizer.chat_template. A model without a template
    // gets ChatML, as llama.cpp does; `notice` (if not null) then receives a line saying so. A template
    // of no known family is an error that names --chat-template.
    static ChatTemplate for_model(const gguf::File& f, const std::string& override_name,
                                  std::string* notice = nullptr);
    // By llama.cpp's name for the family ("chatml", "llama3", "mistral-v7", ...); false if unknown.
    static bool from_name(std::string_view name, ChatTemplate& out);
    // Recognises the family of a Jinja template source; false if none matches.
    static bool detect(std::string_view jinja_source, ChatTemplate& out);
    // Every name from_name accepts, comma-separated (for help and error messages).
    static std::string known_names();
    // The model's own Jinja template, run by the interpreter in jinja.h instead of recognised by
    // family; bos_token and eos_token are the texts the template sees. A model without one, or a
    // template with a syntax error, is an error.
    static ChatTemplate jinja_for_model(const gguf::File& f, const std::string& bos_token, const std::string& eos_token);

    TemplateFamily family() const { return family_; }
    bool is_jinja() const { return jinja_ != nullptr; }
    const char* name() const;  // the family's name, or "jinja"
    // The prompt for `messages`; with add_generation_prompt it ends with the opening of the
    // assistant's turn (families whose layout has none, like Llama 2, end after the last user turn).
    std::string format(const std::vector<Message>& messages, bool add_generation_prompt) const;

private:
    TemplateFamily family_;
    std::shared_ptr<const jinja::Template> jinja_;  // set: run this instead of the family's layout
    std::string bos_token_, eos_token_;
};

}  // namespace lumen::chat
