// The Tokenizer facade: special-token partition, then SentencePiece or byte-level BPE per fragment.
//
// Round-trip notes (consequences of following llama.cpp, not bugs):
// - SPM puts a space before the text and before the text after every special token it matched; decode()
//   removes only the first one, so text containing a user-defined token (matched even without
//   parse_special) may come back with an extra space after it.
// - RSTRIP/LSTRIP special tokens (e.g. Phi-3's) swallow the white space next to them.
#include "tokenizer/tokenizer.h"

#include <unordered_map>

#include "gguf/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/special.h"
#include "tokenizer/spm.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace lumen::tokenizer {

struct Tokenizer::Impl {
    Vocab vocab;
    std::unique_ptr<BpeModel> bpe;        // BPE vocabs only
    std::unique_ptr<SpecialMatcher> special;
    std::string empty;

    void encode_spm(std::string_view fragment, bool space_before, std::vector<int32_t>& out) const;
    void encode_bpe(std::string_view fragment, std::vector<int32_t>& out) const;
};

namespace {

const char kEscapedSpace[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// llama.cpp re-encodes BPE input code point by code point, so malformed bytes become U+FFFD.
std::string reencode_lenient(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 16);
    for (size_t pos = 0; pos < s.size();) unicode::append_utf8(out, unicode::decode_lenient(s, pos));
    return out;
}

}  // namespace

void Tokenizer::Impl::encode_spm(std::string_view fragment, bool space_before, std::vector<int32_t>& out) const {
    std::string text;
    text.reserve(fragment.size() + 16);
    if (space_before) text += kEscapedSpace;
    for (char c : fragment) {
        if (c == ' ') text += kEscapedSpace;
        else text.push_back(c);
    }
    spm_encode(vocab, text, out);
}

void Tokenizer::Impl::encode_bpe(std::string_view fragment, std::vector<int32_t>& out) const {
    std::string clean;
    std::string_view text = fragment;
    if (unicode::find_invalid_utf8(text) != std::string_view::npos) {
        clean = reencode_lenient(text);
        text = clean;
    }
    std::vector<uint32_t> words;
    pretokenize(vocab.pre.pre, text, words);

    // Words repeat a lot in real text: remember each word's tokens for the rest of this fragment.
    constexpr size_t kMaxCached = size_t(1) << 20;
    struct Span {
        uint32_t start, count;
    };
    std::unordered_map<std::string_view, Span> cache;
    std::vector<int32_t> cached_tokens;
    size_t off = 0;
    for (uint32_t len : words) {
        std::string_view w = text.substr(off, len);
        off += len;
        auto it = cache.find(w);
        if (it != cache.end()) {
            const int32_t* p = cached_tokens.data() + it->second.start;
            out.insert(out.end(), p, p + it->second.count);
            continue;
        }
        size_t before = out.size();
        bpe->encode_word(w, out);
        if (cache.size() < kMaxCached) {
            cache.emplace(w, Span{uint32_t(cached_tokens.size()), uint32_t(out.size() - before)});
            cached_tokens.insert(cached_tokens.end(), out.begin() + long(before), out.end());
        }
    }
}

Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
    auto impl = std::make_shared<Impl>();
    impl->vocab = Vocab::from_gguf(f);
    if (impl->vocab.kind == VocabKind::Bpe) {
        const gguf::Value* merges = f.get_array("tokenizer.ggml.merges", gguf::VType::STRING);
        if (!merges) f.error("BPE tokenizer without tokenizer.ggml.merges");
        impl->bpe = std::make_unique<BpeModel>(impl->vocab, *merges);
    }
    impl->special = std::make_unique<SpecialMatcher>(impl->vocab);
    Tokenizer t;
    t.impl_ = std::move(impl);
    return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
    const Impl& im = *impl_;
    const Vocab& v = im.vocab;
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    if (add_special && v.add_bos && v.bos != kNoToken) out.push_back(v.bos);

    bool after_special = true;  // SPM: the text at the start and after a special token gets a space
    for (const Fragment& fr : im.special->partition(text, parse_special)) {
        if (fr.token != kNoToken) {
            out.push_back(fr.token);
            after_special = true;
            continue;
        }
        std::string_view piece = text.substr(fr.begin, fr.end - fr.begin);
        if (v.kind == VocabKind::Spm) {
            im.encode_spm(piece, v.add_space_prefix && after_special, out);
        } else {
            im.encode_bpe(piece, out);
        }
        after_special = false;
    }

    if (add_special && v.add_eos && v.eos != kNoToken) out.push_back(v.eos);
    return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    const Vocab& v = impl_->vocab;
    std::string out;
    size_t i = 0;
    if (!ids.empty() && v.bos != kNoToken && ids[0] == v.bos) i = 1;
    bool strip_space = v.kind == VocabKind::Spm && v.add_space_prefix;
    for (; i < ids.size(); i++) {
        const std::string& p = piece(ids[i]);
        if (strip_space && !p.empty() && p[0] == ' ') out.append(p, 1, std::string::npos);
        else out += p;
        strip_space = false;
    }
    return out;
}

const std::string& Tokenizer::piece(int32_t id, bool special) const {
    const Vocab& v = impl_->vocab;
    if (id < 0 || id >= v.n_tokens()) fail("token id ", id, " is outside the vocabulary (", v.n_tokens(), " tokens)");
    if (!special && (v.attr[size_t(id)] & (kAttrUnknown | kAttrControl))) return impl_->empty;
    return v.piece[size_t(id)];
}

const std::string& Tokenizer::token_text(int32_t id) const {
    const Vocab& v = impl_->vocab;
    if (id < 0 || id >= v.n_tokens()) fail("token id ", id, " is outside the vocabulary (", v.n_tokens(), " tokens)");
    return v.text[size_t(id)];
}

int32_t Tokenizer::find_token(std::string_view text) const { return impl_->vocab.find(text); }
int32_t Tokenizer::bos() const { return impl_->vocab.bos; }
int32_t Tokenizer::eos() const { return impl_->vocab.eos; }
int32_t Tokenizer::eot() const { return impl_->vocab.eot; }
bool Tokenizer::is_eog(int32_t id) const { return id != kNoToken && impl_->vocab.eog.count(id) > 0; }
bool Tokenizer::is_control(int32_t id) const {
    const Vocab& v = impl_->vocab;
    return id >= 0 && id < v.n_tokens() && (v.attr[size_t(id)] & kAttrControl);
}
int Tokenizer::n_vocab() const { return impl_->vocab.n_tokens(); }
bool Tokenizer::add_bos_default() const { return impl_->vocab.add_bos && impl_->vocab.bos != kNoToken; }
bool Tokenizer::is_spm() const { return impl_->vocab.kind == VocabKind::Spm; }
const Vocab& Tokenizer::vocab() const { return impl_->vocab; }

}  // namespace lumen::tokenizer
