// Splits a streamed reply into reasoning (<think> ... </think>, as reasoning models write it) and
// answer text, so the terminal can dim the first or hide it. Tags split across pushes are held back
// until they are complete; the tags themselves belong to the reasoning part.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace lumen::chat {

class ReasoningSplitter {
public:
    // start_in_reasoning: the prompt already opened the block (the reply has only the closing tag).
    explicit ReasoningSplitter(bool start_in_reasoning = false) : in_think_(start_in_reasoning) {}
    struct Segment {
        std::string text;
        bool reasoning;
    };
    // The text that is now certain, in order; adjacent pieces of one kind are merged.
    std::vector<Segment> push(std::string_view text);
    // Whatever was held back (an incomplete tag at the end is ordinary text of the current kind).
    std::vector<Segment> flush();
    bool in_reasoning() const { return in_think_; }

private:
    void emit(std::vector<Segment>& out, std::string_view s, bool reasoning);
    bool in_think_ = false;
    std::string pending_;
};

}  // namespace lumen::chat
