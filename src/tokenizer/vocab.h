// The vocabulary as read from a GGUF file: token texts, scores and attributes, the special token ids
// and the flags that steer tokenization, resolved the way llama.cpp resolves them (its defaults per
// tokenizer model, the GGUF keys that override them, and its by-text detection of end-of-turn and FIM
// tokens), so that tokenization matches llama.cpp token for token.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace lumen::gguf {
class File;
}

namespace lumen::tokenizer {

// Token attributes (bit set). Mirrors llama.cpp's, which derive from tokenizer.ggml.token_type.
enum TokenAttr : uint32_t {
    kAttrUnknown = 1u << 0,      // token_type 2
    kAttrUnused = 1u << 1,       // token_type 5
    kAttrNormal = 1u << 2,       // token_type 1
    kAttrControl = 1u << 3,      // token_type 3: only matched in text when special tokens are parsed
    kAttrUserDefined = 1u << 4,  // token_type 4: always matched in text
    kAttrByte = 1u << 5,         // token_type 6: <0xNN>
    kAttrLstrip = 1u << 7,       // white space before the token is dropped when it is matched in text
    kAttrRstrip = 1u << 8,       // white space after it is dropped
};

enum class VocabKind { Spm, Bpe };

constexpr int32_t kNoToken = -1;

struct Vocab {
    Vocab() = default;
    // id_of views the strings in `text`: moving keeps them in place, copying would not.
    Vocab(Vocab&&) = default;
    Vocab& operator=(Vocab&&) = default;
    Vocab(const Vocab&) = delete;
    Vocab& operator=(const Vocab&) = delete;

    VocabKind kind = VocabKind::Spm;
    PreConfig pre;  // BPE only

    std::vector<std::string> text;  // token texts as stored (an empty one becomes "[EMPTY_<id>]")
    std::vector<float> score;
    std::vector<uint32_t> attr;
    // Text to id; when two tokens share a text, the later id wins (as in llama.cpp). Keys view `text`.
    std::unordered_map<std::string_view, int32_t> id_of;

    int32_t bos = kNoToken, eos = kNoToken, eot = kNoToken, eom = kNoToken, unk = kNoToken;
    int32_t pad = kNoToken, sep = kNoToken, mask = kNoToken;
    int32_t fim_pre = kNoToken, fim_suf = kNoToken, fim_mid = kNoToken;
    int32_t fim_pad = kNoToken, fim_rep = kNoToken, fim_sep = kNoToken;

    bool add_bos = false;
    bool add_eos = false;
    bool add_space_prefix = false;  // SPM: a space is put before the text (and after special tokens)

    std::unordered_set<int32_t> eog;  // ids that end generation

    // Tokens matched in raw text before tokenizing (control, user-defined and unknown ones), longest
    // text first, ordered exactly as llama.cpp orders them.
    std::vector<int32_t> special_by_length;

    // Piece of each token with special tokens rendered (what llama.cpp's token_to_piece gives with
    // special = true): SPM "▁" unescaped, BPE byte-level text mapped back to bytes, <0xNN> to its byte.
    std::vector<std::string> piece;

    int32_t n_tokens() const { return int32_t(text.size()); }
    int32_t find(std::string_view s) const {
        auto it = id_of.find(s);
        return it == id_of.end() ? kNoToken : it->second;
    }
    // The token of one byte: SPM "<0xNN>" (else the byte itself as text); BPE its byte-level character.
    // kNoToken when the vocab has neither.
    int32_t byte_token(uint8_t b) const;

    static Vocab from_gguf(const gguf::File& f);
};

// GPT-2's byte-level mapping: each byte is shown as one printable code point (UTF-8 encoded here).
const std::string& byte_to_gpt2_char(uint8_t b);
// Inverse mapping; -1 for a code point that is not one of the 256.
int gpt2_char_to_byte(uint32_t cp);

}  // namespace lumen::tokenizer
