// The messages of one chat: an optional system prompt and the turns after it, with their JSON form
// (/save and /load) and the choice of which old turns to forget when the context fills.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/template.h"

namespace lumen::chat {

struct Conversation {
    std::string system;          // empty: no system message
    std::vector<Message> turns;  // "user" and "assistant" messages, oldest first

    // The system message (if any) followed by the turns: what a template formats.
    std::vector<Message> messages() const;

    // {"messages": [{"role": "system", "content": "..."}, {"role": "user", ...}, ...]} plus a newline.
    std::string to_json() const;
    // Reads to_json()'s form (a bare array of messages is accepted too). Roles must be user or
    // assistant, with system allowed only first; `what` (the file) prefixes errors.
    static Conversation from_json(std::string_view text, const std::string& what);
};

// Context shift: how many of the oldest turns to forget so that the prompt fits. Only whole
// exchanges go (a user message and the replies after it), so the kept history starts with a user
// turn; the last `protected_tail` turns (the one being answered) are never dropped.
// `prompt_tokens(n)` gives the prompt's length in tokens with the first n turns dropped.
// Returns the smallest such n for which prompt_tokens(n) <= budget, or npos when even dropping every
// unprotected exchange is not enough.
size_t turns_to_forget(const std::vector<Message>& turns, size_t protected_tail, int budget,
                       const std::function<int(size_t)>& prompt_tokens);

// Length of the common prefix of two token sequences: the part of the KV cache a new prompt reuses.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

}  // namespace lumen::chat
