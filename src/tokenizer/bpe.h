// Byte-level BPE (tokenizer.ggml.model = "gpt2"): merges one pre-tokenized word at a time.
//
// Every string that takes part in a merge (each token text, and each merge half that is not a token)
// gets a symbol id: a token's symbol id is its token id, other strings get ids from n_vocab up. A merge
// is then a hash lookup on a pair of symbol ids, and a word starts as one symbol per byte (the byte's
// GPT-2 character). Merging follows llama.cpp: repeatedly merge the adjacent pair of lowest rank, the
// leftmost one among equals; a final symbol that is not a token falls back to its single bytes.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/vocab.h"

namespace lumen::gguf {
struct Value;
}

namespace lumen::tokenizer {

class BpeModel {
public:
    // `merges` is tokenizer.ggml.merges ("left right" strings, rank = index).
    BpeModel(const Vocab& vocab, const gguf::Value& merges);

    // Appends the tokens of one word (its raw UTF-8 bytes).
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;

private:
    struct Merge {
        int32_t rank;
        int32_t merged;  // symbol id of the concatenation
    };
    static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    int32_t intern(const std::string& s);
    void emit_symbol(int32_t sym, uint8_t first_byte, std::vector<int32_t>& out) const;

    const Vocab* vocab_;
    int32_t n_vocab_;
    std::unordered_map<std::string, int32_t> extra_ids_;  // merge halves that are not tokens
    std::vector<std::string> extra_text_;                 // by id - n_vocab
    std::unordered_map<uint64_t, Merge> merges_;
    std::array<int32_t, 256> byte_sym_;  // symbol of each byte's GPT-2 character, -1 if it has none
};

}  // namespace lumen::tokenizer
