#include "chat/reasoning.h"

#include <algorithm>

namespace lumen::chat {

namespace {
constexpr std::string_view kOpen = "<think>", kClose = "</think>";

// Length of the longest suffix of s that is a proper prefix of tag (a tag that may still be arriving).
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
    for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; n--)
        if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
    return 0;
}
}  // namespace

void ReasoningSplitter::emit(std::vector<Segment>& out, std::string_view s, bool reasoning) {
    if (s.empty()) return;
    if (!out.empty() && out.back().reasoning == reasoning) out.back().text.append(s);
    else out.push_back({std::string(s), reasoning});
}

std::vector<ReasoningSplitter::Segment> ReasoningSplitter::push(std::string_view text) {
    std::vector<Segment> out;
    pending_.append(text);
    std::string_view rest = pending_;
    for (;;) {
        const std::string_view tag = in_think_ ? kClose : kOpen;
        const size_t at = rest.find(tag);
        if (at == std::string_view::npos) break;
        if (in_think_) {
            emit(out, rest.substr(0, at + tag.size()), true);  // the closing tag ends the reasoning
        } else {
            emit(out, rest.substr(0, at), false);
            emit(out, tag, true);
        }
        in_think_ = !in_think_;
        rest.remove_prefix(at + tag.size());
    }
    const size_t hold = partial_tag_suffix(rest, in_think_ ? kClose : kOpen);
    emit(out, rest.substr(0, rest.size() - hold), in_think_);
    pending_ = std::string(rest.substr(rest.size() - hold));
    return out;
}

std::vector<ReasoningSplitter::Segment> ReasoningSplitter::flush() {
    std::vector<Segment> out;
    emit(out, pending_, in_think_);
    pending_.clear();
    return out;
}

}  // namespace lumen::chat
