#include "chat/template.h"

#include <sstream>

#include "chat/jinja.h"
#include "gguf/gguf.h"
#include "util/error.h"

namespace lumen::chat {

namespace {

struct NamedFamily {
    const char* name;  // llama.cpp's name for the family, so --chat-template means the same in both
    TemplateFamily family;
};

constexpr NamedFamily kFamilies[] = {
    {"chatml", TemplateFamily::ChatML},
    {"llama2", TemplateFamily::Llama2},
    {"llama2-sys", TemplateFamily::Llama2Sys},
    {"llama2-sys-bos", TemplateFamily::Llama2SysBos},
    {"llama2-sys-strip", TemplateFamily::Llama2SysStrip},
    {"mistral-v1", TemplateFamily::MistralV1},
    {"mistral-v3", TemplateFamily::MistralV3},
    {"mistral-v3-tekken", TemplateFamily::MistralV3Tekken},
    {"mistral-v7", TemplateFamily::MistralV7},
    {"mistral-v7-tekken", TemplateFamily::MistralV7Tekken},
    {"phi3", TemplateFamily::Phi3},
    {"phi4", TemplateFamily::Phi4},
    {"falcon3", TemplateFamily::Falcon3},
    {"zephyr", TemplateFamily::Zephyr},
    {"gemma", TemplateFamily::Gemma},
    {"llama3", TemplateFamily::Llama3},
    {"deepseek", TemplateFamily::DeepSeek},
    {"deepseek2", TemplateFamily::DeepSeek2},
    {"deepseek3", TemplateFamily::DeepSeek3},
    {"command-r", TemplateFamily::CommandR},
    {"vicuna", TemplateFamily::Vicuna},
    {"vicuna-orca", TemplateFamily::VicunaOrca},
    {"openchat", TemplateFamily::OpenChat},
};

// Strips ASCII whitespace at both ends (the families that trim do it bytewise, like Python's strip()
// on ASCII text).
std::string trim(const std::string& s) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
    size_t b = 0, e = s.size();
    while (b < e && space(s[b])) b++;
    while (e > b && space(s[e - 1])) e--;
    return s.substr(b, e - b);
}

// Sorting a template into a family. The order of the checks matters (a Phi-4 template also contains
// "<|im_start|>", a Zephyr one "<|user|>"), and it follows llama.cpp's so both recognise the same
// template as the same family. Families llama.cpp knows but we do not format return Unsupported, so
// that a later, looser check cannot claim them.
enum class Detect { Found, Unsupported, NoMatch };

Detect classify(std::string_view t, TemplateFamily& f) {
    auto has = [t](std::string_view s) { return t.find(s) != std::string_view::npos; };
    auto found = [&f](TemplateFamily x) { f = x; return Detect::Found; };
    if (has("<|im_start|>")) {
        if (has("<|im_sep|>")) return found(TemplateFamily::Phi4);
        if (has("<end_of_utterance>")) return Detect::Unsupported;  // SmolVLM: im_start is its BOS
        return found(TemplateFamily::ChatML);
    }
    if (t.substr(0, 7) == "mistral" || has("[INST]")) {
        if (has("[SYSTEM_PROMPT]")) return found(TemplateFamily::MistralV7);
        // Mistral's official v1 / v3 templates, told apart from Llama 2 style ones.
        if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
            if (has(" [INST]")) return found(TemplateFamily::MistralV1);
            if (has("\"[INST]\"")) return found(TemplateFamily::MistralV3Tekken);
            return found(TemplateFamily::MistralV3);
        }
        if (has("content.strip()")) return found(TemplateFamily::Llama2SysStrip);
        if (has("bos_token + '[INST]")) return found(TemplateFamily::Llama2SysBos);
        if (has("<<SYS>>")) return found(TemplateFamily::Llama2Sys);
        return found(TemplateFamily::Llama2);
    }
    if (has("<|assistant|>") && has("<|end|>")) return found(TemplateFamily::Phi3);
    if (has("[gMASK]<sop>")) return Detect::Unsupported;  // ChatGLM 4
    if (has("<|assistant|>") && has("<|user|>")) {
        if (has("<|tool_declare|>")) return Detect::Unsupported;  // EXAONE MoE
        if (has("</s>")) return found(TemplateFamily::Falcon3);
        return Detect::Unsupported;                                // GLM-Edge
    }
    if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return Detect::Unsupported;  // GLM-Edge
    if (has("<|user|>") && has("<|endoftext|>")) return found(TemplateFamily::Zephyr);
    if (has("bos_token + message['role']")) return Detect::Unsupported;  // Monarch
    if (has("<start_of_turn>")) return found(TemplateFamily::Gemma);
    if (has("'\\n\\nAssistant: ' + eos_token")) return Detect::Unsupported;  // Orion
    if (has("GPT4 Correct ")) return found(TemplateFamily::OpenChat);
    if (has("USER: ") && has("ASSISTANT: "))
        return found(has("SYSTEM: ") ? TemplateFamily::VicunaOrca : TemplateFamily::Vicuna);
    if (has("### Instruction:") && has("<|EOT|>")) return found(TemplateFamily::DeepSeek);
    if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return found(TemplateFamily::CommandR);
    if (has("<|start_header_id|>") && has("<|end_header_id|>")) return found(TemplateFamily::Llama3);
    if (has("[gMASK]sop")) return Detect::Unsupported;  // ChatGLM 3
    if (has("<\xE7\x94\xA8\xE6\x88\xB7>")) return Detect::Unsupported;  // MiniCPM ("<用户>")
    if (has("'Assistant: ' + message['content'] + eos_token")) return found(TemplateFamily::DeepSeek2);
    // DeepSeek V3 / R1 use full-width bars: <｜User｜>, <｜Assistant｜>, <｜end▁of▁sentence｜>.
    if (has("<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>") && has("<\xEF\xBD\x9C" "User\xEF\xBD\x9C>") &&
        has("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"))
        return found(TemplateFamily::DeepSeek3);
    return Detect::NoMatch;
}

const char* kDeepSeekUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
const char* kDeepSeekAssistant = "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>";
const char* kDeepSeekEnd = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

// Llama 2 and Mistral v1/v3: [INST] blocks; a system message goes inside the first one.
void format_inst(TemplateFamily f, const std::vector<Message>& msgs, std::ostream& os) {
    const bool llama2 = f == TemplateFamily::Llama2 || f == TemplateFamily::Llama2Sys ||
                        f == TemplateFamily::Llama2SysBos || f == TemplateFamily::Llama2SysStrip;
    if (llama2) {
        const bool sys_block = f != TemplateFamily::Llama2;
        const bool strip = f == TemplateFamily::Llama2SysStrip;
        os << "[INST] ";  // the opening block never gets a BOS: the tokenizer adds it
        bool open = true;
        for (const Message& m : msgs) {
            const std::string c = strip ? trim(m.content) : m.content;
            if (!open) {
                os << (f == TemplateFamily::Llama2SysBos ? "<s>[INST] " : "[INST] ");
                open = true;
            }
            if (m.role == "system") {
                if (sys_block) os << "<<SYS>>\n" << c << "\n<</SYS>>\n\n";
                else os << c << "\n";
            } else if (m.role == "user") {
                os << c << " [/INST]";
            } else {
                os << c << "</s>";
                open = false;
            }
        }
        return;
    }
    const char* lead = f == TemplateFamily::MistralV1 ? " " : "";
    const char* after_inst = f == TemplateFamily::MistralV3Tekken ? "" : " ";
    bool open = false;
    for (const Message& m : msgs) {
        if (!open) {
            os << lead << "[INST]" << after_inst;
            open = true;
        }
        if (m.role == "system") {
            os << m.content << "\n\n";
        } else if (m.role == "user") {
            os << m.content << lead << "[/INST]";
        } else {
            os << after_inst << (f == TemplateFamily::MistralV3 ? trim(m.content) : m.content) << "</s>";
            open = false;
        }
    }
}

}  // namespace

bool ChatTemplate::from_name(std::string_view name, ChatTemplate& out) {
    for (const NamedFamily& nf : kFamilies)
        if (name == nf.name) {
            out = ChatTemplate(nf.family);
            return true;
        }
    return false;
}

bool ChatTemplate::detect(std::string_view src, ChatTemplate& out) {
    TemplateFamily f;
    if (classify(src, f) != Detect::Found) return false;
    out = ChatTemplate(f);
    return true;
}

std::string ChatTemplate::known_names() {
    std::string s;
    for (const NamedFamily& nf : kFamilies) s += (s.empty() ? "" : ", ") + std::string(nf.name);
    return s;
}

ChatTemplate ChatTemplate::for_model(const gguf::File& f, const std::string& override_name, std::string* notice) {
    ChatTemplate t;
    if (!override_name.empty()) {
        if (!from_name(override_name, t))
            fail("--chat-template ", override_name, ": unknown template (known: ", known_names(), ")");
        return t;
    }
    const std::string src = f.get_str("tokenizer.chat_template", "");
    if (src.empty()) {
        if (notice) *notice = "the model has no chat template; using chatml (choose another with --chat-template NAME)";
        return t;
    }
    if (from_name(src, t) || detect(src, t)) return t;
    fail(f.path(), ": the model's chat template (tokenizer.chat_template) is not of a family lumen knows; "
         "choose one with --chat-template NAME (", known_names(), ")");
}

ChatTemplate ChatTemplate::jinja_for_model(const gguf::File& f, const std::string& bos_token, const std::string& eos_token) {
    const std::string src = f.get_str("tokenizer.chat_template", "");
    if (src.empty()) fail(f.path(), ": --jinja: the model has no chat template (tokenizer.chat_template)");
    ChatTemplate t;
    t.jinja_ = std::make_shared<const jinja::Template>(jinja::Template::parse(src));
    t.bos_token_ = bos_token;
    t.eos_token_ = eos_token;
    return t;
}

const char* ChatTemplate::name() const {
    if (jinja_) return "jinja";
    for (const NamedFamily& nf : kFamilies)
        if (nf.family == family_) return nf.name;
    return "?";
}

std::string ChatTemplate::format(const std::vector<Message>& msgs, bool gen) const {
    if (jinja_) {
        jinja::Array list;
        for (const Message& m : msgs)
            list.push_back(jinja::Value::object({{"role", jinja::Value::string(m.role)},
                                                 {"content", jinja::Value::string(m.content)}}));
        return jinja_->render(jinja::Value::object({{"messages", jinja::Value::array(std::move(list))},
                                                    {"add_generation_prompt", jinja::Value::boolean(gen)},
                                                    {"bos_token", jinja::Value::string(bos_token_)},
                                                    {"eos_token", jinja::Value::string(eos_token_)}}));
    }
    std::ostringstream os;
    using F = TemplateFamily;
    switch (family_) {
        case F::ChatML:
            for (const Message& m : msgs) os << "<|im_start|>" << m.role << "\n" << m.content << "<|im_end|>\n";
            if (gen) os << "<|im_start|>assistant\n";
            break;
        case F::Llama2: case F::Llama2Sys: case F::Llama2SysBos: case F::Llama2SysStrip:
        case F::MistralV1: case F::MistralV3: case F::MistralV3Tekken:
            format_inst(family_, msgs, os);  // the last [/INST] is the generation prompt
            break;
        case F::MistralV7: case F::MistralV7Tekken: {
            const char* sp = family_ == F::MistralV7 ? " " : "";
            for (const Message& m : msgs) {
                if (m.role == "system") os << "[SYSTEM_PROMPT]" << sp << m.content << "[/SYSTEM_PROMPT]";
                else if (m.role == "user") os << "[INST]" << sp << m.content << "[/INST]";
                else os << sp << m.content << "</s>";
            }
            break;
        }
        case F::Phi3:
            for (const Message& m : msgs) os << "<|" << m.role << "|>\n" << m.content << "<|end|>\n";
            if (gen) os << "<|assistant|>\n";
            break;
        case F::Phi4:
            for (const Message& m : msgs) os << "<|im_start|>" << m.role << "<|im_sep|>" << m.content << "<|im_end|>";
            if (gen) os << "<|im_start|>assistant<|im_sep|>";
            break;
        case F::Falcon3:
            for (const Message& m : msgs) os << "<|" << m.role << "|>\n" << m.content << "\n";
            if (gen) os << "<|assistant|>\n";
            break;
        case F::Zephyr:
            for (const Message& m : msgs) os << "<|" << m.role << "|>\n" << m.content << "<|endoftext|>\n";
            if (gen) os << "<|assistant|>\n";
            break;
        case F::Gemma: {
            // Gemma has no system role: the system text opens the next user turn.
            std::string pending_system;
            for (const Message& m : msgs) {
                if (m.role == "system") {
                    pending_system += trim(m.content);
                    continue;
                }
                const std::string role = m.role == "assistant" ? "model" : m.role;
                os << "<start_of_turn>" << role << "\n";
                if (!pending_system.empty() && role != "model") {
                    os << pending_system << "\n\n";
                    pending_system.clear();
                }
                os << trim(m.content) << "<end_of_turn>\n";
            }
            if (gen) os << "<start_of_turn>model\n";
            break;
        }
        case F::Llama3:
            for (const Message& m : msgs)
                os << "<|start_header_id|>" << m.role << "<|end_header_id|>\n\n" << trim(m.content) << "<|eot_id|>";
            if (gen) os << "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        case F::DeepSeek:
            for (const Message& m : msgs) {
                if (m.role == "system") os << m.content;
                else if (m.role == "user") os << "### Instruction:\n" << m.content << "\n";
                else if (m.role == "assistant") os << "### Response:\n" << m.content << "\n<|EOT|>\n";
            }
            if (gen) os << "### Response:\n";
            break;
        case F::DeepSeek2:
            for (const Message& m : msgs) {
                if (m.role == "system") os << m.content << "\n\n";
                else if (m.role == "user") os << "User: " << m.content << "\n\n";
                else if (m.role == "assistant") os << "Assistant: " << m.content << kDeepSeekEnd;
            }
            if (gen) os << "Assistant:";
            break;
        case F::DeepSeek3:
            for (const Message& m : msgs) {
                if (m.role == "system") os << m.content << "\n\n";
                else if (m.role == "user") os << kDeepSeekUser << m.content;
                else if (m.role == "assistant") os << kDeepSeekAssistant << m.content << kDeepSeekEnd;
            }
            if (gen) os << kDeepSeekAssistant;
            break;
        case F::CommandR:
            for (const Message& m : msgs) {
                const char* tag = m.role == "system" ? "<|SYSTEM_TOKEN|>"
                                  : m.role == "user" ? "<|USER_TOKEN|>"
                                  : m.role == "assistant" ? "<|CHATBOT_TOKEN|>" : nullptr;
                if (tag) os << "<|START_OF_TURN_TOKEN|>" << tag << trim(m.content) << "<|END_OF_TURN_TOKEN|>";
            }
            if (gen) os << "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
            break;
        case F::Vicuna: case F::VicunaOrca:
            for (const Message& m : msgs) {
                if (m.role == "system") {
                    if (family_ == F::VicunaOrca) os << "SYSTEM: " << m.content << "\n";
                    else os << m.content << "\n\n";
                } else if (m.role == "user") {
                    os << "USER: " << m.content << "\n";
                } else if (m.role == "assistant") {
                    os << "ASSISTANT: " << m.content << "</s>\n";
                }
            }
            if (gen) os << "ASSISTANT:";
            break;
        case F::OpenChat:
            for (const Message& m : msgs) {
                if (m.role == "system") {
                    os << m.content << "<|end_of_turn|>";
                } else {
                    std::string role = m.role;
                    if (!role.empty() && role[0] >= 'a' && role[0] <= 'z') role[0] = char(role[0] - 'a' + 'A');
                    os << "GPT4 Correct " << role << ": " << m.content << "<|end_of_turn|>";
                }
            }
            if (gen) os << "GPT4 Correct Assistant:";
            break;
    }
    return os.str();
}

}  // namespace lumen::chat
