// Finding special tokens written in raw text before tokenization, with llama.cpp's rules: tokens are
// tried longest first, each claiming its leftmost non-overlapping occurrences in the text not yet
// claimed; control and unknown tokens only when special tokens are parsed, user-defined ones always;
// LSTRIP/RSTRIP tokens also swallow the white space beside them.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace lumen::tokenizer {

// A piece of the input: a special token, or raw text [begin, end) to tokenize.
struct Fragment {
    int32_t token;  // kNoToken for raw text
    size_t begin, end;
};

class SpecialMatcher {
public:
    explicit SpecialMatcher(const Vocab& vocab);
    std::vector<Fragment> partition(std::string_view text, bool parse_special) const;

private:
    // A byte trie of the special token texts.
    struct Node {
        std::vector<std::pair<uint8_t, int32_t>> next;  // byte -> child node (root uses root_next_)
        int32_t parent = -1;
        int32_t depth = 0;  // length of the text that leads here
        // Lowest rank (position in vocab.special_by_length) of the tokens whose text ends here, among
        // all of them and among those matched without parse_special; -1 if none.
        int32_t rank_any = -1;
        int32_t rank_plain = -1;
    };
    int32_t child(int32_t node, uint8_t b) const;
    int32_t rank_at(int32_t node, bool parse_special) const {
        return parse_special ? nodes_[size_t(node)].rank_any : nodes_[size_t(node)].rank_plain;
    }
    // The longest matchable token that is a proper prefix of `node`'s text and at most `max_len` long,
    // or -1.
    int32_t shorter_match(int32_t node, size_t max_len, bool parse_special) const;

    const Vocab* vocab_;
    std::vector<Node> nodes_;       // nodes_[0] is the root
    std::vector<int32_t> node_of_;  // by rank: the node where that token's text ends
    int32_t root_next_[256];        // root's children, by byte (-1: none)
};

}  // namespace lumen::tokenizer
