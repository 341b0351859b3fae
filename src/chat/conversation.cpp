#include "chat/conversation.h"

#include "chat/json_reader.h"
#include "util/error.h"
#include "util/json.h"

namespace lumen::chat {

std::vector<Message> Conversation::messages() const {
    std::vector<Message> all;
    all.reserve(turns.size() + 1);
    if (!system.empty()) all.push_back({"system", system});
    all.insert(all.end(), turns.begin(), turns.end());
    return all;
}

std::string Conversation::to_json() const {
    std::string out = "{\"messages\": [";
    bool first = true;
    for (const Message& m : messages()) {
        out += first ? "\n  " : ",\n  ";
        first = false;
        out += "{\"role\": " + lumen::json::quote(m.role) + ", \"content\": " + lumen::json::quote(m.content) + "}";
    }
    out += first ? "]}\n" : "\n]}\n";
    return out;
}

Conversation Conversation::from_json(std::string_view text, const std::string& what) {
    const json::Value doc = json::parse(text, what);
    const json::Value* list = &doc;
    if (doc.is_object()) {
        list = doc.find("messages");
        if (!list) fail(what, ": no \"messages\" member");
    }
    if (!list->is_array()) fail(what, ": \"messages\" is ", json::kind_name(list->kind), ", want an array");
    Conversation c;
    for (size_t i = 0; i < list->array.size(); i++) {
        const json::Value& m = list->array[i];
        const json::Value* role = m.find("role");
        const json::Value* content = m.find("content");
        if (!m.is_object() || !role || !content || !role->is_string() || !content->is_string())
            fail(what, ": message ", i + 1, " must be an object with string \"role\" and \"content\"");
        if (role->string == "system") {
            if (i != 0) fail(what, ": message ", i + 1, ": a system message may only come first");
            c.system = content->string;
        } else if (role->string == "user" || role->string == "assistant") {
            c.turns.push_back({role->string, content->string});
        } else {
            fail(what, ": message ", i + 1, ": unknown role \"", role->string, "\" (want system, user or assistant)");
        }
    }
    return c;
}

size_t turns_to_forget(const std::vector<Message>& turns, size_t protected_tail, int budget,
                       const std::function<int(size_t)>& prompt_tokens) {
    const size_t limit = protected_tail >= turns.size() ? 0 : turns.size() - protected_tail;
    if (prompt_tokens(0) <= budget) return 0;
    // Candidate cuts: just before each user message (an exchange boundary), and at the limit.
    for (size_t n = 1; n <= limit; n++) {
        const bool boundary = n == limit || turns[n].role == "user";
        if (boundary && prompt_tokens(n) <= budget) return n;
    }
    return std::string::npos;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) n++;
    return n;
}

}  // namespace lumen::chat
