// SentencePiece-style tokenization (tokenizer.ggml.model = "llama"), as llama.cpp does it: start from
// one symbol per UTF-8 character, repeatedly merge the adjacent pair whose concatenation is the token of
// highest score (leftmost among equals), and spell any final symbol that is not a token as <0xNN> byte
// tokens.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace lumen::tokenizer {

// Appends the tokens of `text`, which must already have its spaces escaped as "▁" (U+2581).
void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out);

}  // namespace lumen::tokenizer
