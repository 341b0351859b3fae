// Text <-> token ids for a model's vocabulary, matching llama.cpp's tokenizer token for token.
//
//   auto f = gguf::File::open(path);
//   Tokenizer tok = Tokenizer::from_gguf(*f);            // copies what it needs; f may be closed after
//   std::vector<int32_t> ids = tok.encode(prompt, true, true);
//   std::string text = tok.decode(ids);                    // == prompt (without the BOS)
//
// Streaming: feed tok.piece(id) of each generated token through unicode::Utf8Stream to print only
// whole characters.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lumen::gguf {
class File;
}

namespace lumen::tokenizer {

struct Vocab;
enum class VocabKind;

class Tokenizer {
public:
    // Reads tokenizer.ggml.* from the file. Throws lumen::Error for a missing, malformed or unsupported
    // tokenizer (naming the key or the tokenizer.ggml.model / .pre value).
    static Tokenizer from_gguf(const gguf::File& f);

    // Text to ids. With add_special, BOS (and EOS) are added where the vocab asks for them
    // (add_bos_default(), tokenizer.ggml.add_eos_token), as llama.cpp does; llama-tokenize's
    // --no-bos corresponds to add_special = false. With parse_special, control tokens written in the
    // text (e.g. "<|im_start|>") become their ids; user-defined tokens are matched either way.
    // Invalid UTF-8 is tokenized as llama.cpp does it (BPE: each bad byte becomes U+FFFD; SPM: byte
    // fallback); callers that take user input should reject it first (unicode::find_invalid_utf8).
    std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

    // Ids to text: the concatenated pieces, control tokens rendered as nothing; a leading BOS is
    // dropped and, for SentencePiece vocabs, the space that encode() put before the text is removed.
    // decode(encode(s, ...)) == s for valid UTF-8 s (see the notes in tokenizer.cpp for the exceptions
    // llama.cpp's rules imply).
    std::string decode(const std::vector<int32_t>& ids) const;

    // The raw bytes of one token, for streaming (may be part of a UTF-8 character). Control and
    // unknown tokens give "" unless `special`, which renders them as their text (llama-tokenize does).
    // Throws lumen::Error for an id outside the vocab.
    const std::string& piece(int32_t id, bool special = false) const;
    // The token's text as stored in the vocab (e.g. "Ġhello", "▁hello", "<|im_end|>").
    const std::string& token_text(int32_t id) const;
    // The id of a token by its stored text, or -1.
    int32_t find_token(std::string_view text) const;

    int32_t bos() const;  // -1 when the vocab has none
    int32_t eos() const;
    int32_t eot() const;
    bool is_eog(int32_t id) const;  // end of generation: eos, eot, <|im_end|> and the like
    bool is_control(int32_t id) const;
    int n_vocab() const;
    bool add_bos_default() const;  // whether the model wants BOS at the start of a prompt
    bool is_spm() const;
    const Vocab& vocab() const;

private:
    struct Impl;
    std::shared_ptr<const Impl> impl_;
};

}  // namespace lumen::tokenizer
