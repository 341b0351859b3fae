// Hand-written pre-tokenizer regexes. Each model family's pre-tokenizer is a list of passes; a pass
// splits every piece left by the previous pass. Two kinds of pass exist, mirroring llama.cpp:
//   - "custom" passes (gpt2, llama3, qwen2, qwen35) walk the piece and cut it into tokens directly; a character
//     that no alternative matches becomes a piece of its own;
//   - "search" passes behave like std::regex_iterator over the piece: each leftmost match becomes a
//     piece, and the text between matches stays a piece too.
// A piece's end bounds every pass (lookaheads and `$` see the end of the piece, not of the text).
//
// Character classes: \p{L} etc. come from the generated tables; \s is White_Space. In the patterns that
// llama.cpp runs through std::wregex (literal code point ranges), a non-ASCII White_Space character is
// seen as \v, so it never matches a literal range; the class helpers below reject white space first.
#include "tokenizer/pretokenize.h"

#include <algorithm>
#include <iterator>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::tokenizer {

namespace {

using unicode::kLetter;
using unicode::kMark;
using unicode::kNumber;
using unicode::kPunct;
using unicode::kSpace;

// The text being split, as code points and their class flags.
struct Text {
    std::vector<uint32_t> cp;
    std::vector<uint8_t> fl;
};

using Spans = std::vector<uint32_t>;  // piece lengths in code points

// Appends piece lengths, cutting at increasing positions.
struct Cutter {
    size_t prev;
    Spans& out;
    void cut(size_t end) {
        if (end > prev) out.push_back(uint32_t(end - prev));
        prev = end;
    }
};

bool is_ascii_letter_ci(uint32_t c, char lower) { return c == uint32_t(lower) || c == uint32_t(lower - 32); }

// ---- custom passes -------------------------------------------------------------------------------

// 's|'t|'re|'ve|'m|'ll|'d; case-insensitive when `icase` (Llama 3 / Qwen 2 use (?i:...)). Returns the
// contraction's length at pos, or 0. (No non-ASCII code point lowercases to one of these letters.)
size_t contraction(const Text& t, size_t pos, size_t e, bool icase) {
    if (t.cp[pos] != '\'' || pos + 1 >= e) return 0;
    auto is = [&](size_t i, char c) { return icase ? is_ascii_letter_ci(t.cp[i], c) : t.cp[i] == uint32_t(c); };
    if (is(pos + 1, 's') || is(pos + 1, 't') || is(pos + 1, 'm') || is(pos + 1, 'd')) return 2;
    if (pos + 2 < e && ((is(pos + 1, 'r') && is(pos + 2, 'e')) || (is(pos + 1, 'v') && is(pos + 2, 'e')) ||
                        (is(pos + 1, 'l') && is(pos + 2, 'l'))))
        return 3;
    return 0;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void pass_gpt2(const Text& t, size_t b, size_t e, Spans& out) {
    const uint32_t* cp = t.cp.data();
    const uint8_t* fl = t.fl.data();
    Cutter c{b, out};
    size_t pos = b;
    while (pos < e) {
        if (size_t n = contraction(t, pos, e, false)) {
            pos += n;
            c.cut(pos);
            continue;
        }
        // An optional leading space joins the run after it.
        const bool space = cp[pos] == ' ';
        const size_t start = pos + (space ? 1 : 0);
        if (start < e) {
            const uint8_t f = fl[start];
            uint8_t run_mask = 0;  // the run continues while (fl & run_mask) == run_want
            uint8_t run_want = 0;
            bool run = true;
            if (f & kLetter) {
                run_mask = run_want = kLetter;
            } else if (f & kNumber) {
                run_mask = run_want = kNumber;
            } else if (!(f & (kSpace | kLetter | kNumber))) {
                run_mask = kSpace | kLetter | kNumber;
                run_want = 0;
            } else {
                run = false;
            }
            if (run) {
                size_t p = start;
                while (p < e && (fl[p] & run_mask) == run_want) p++;
                pos = p;
                c.cut(pos);
                continue;
            }
        }
        size_t n_space = 0;
        while (pos + n_space < e && (fl[pos + n_space] & kSpace)) n_space++;
        if (n_space > 1 && pos + n_space < e) {
            pos += n_space - 1;  // \s+(?!\S): leave the last space to prefix the next word
        } else if (n_space > 0) {
            pos += n_space;
        } else {
            pos += 1;
        }
        c.cut(pos);
    }
}

// Llama 3 (digit_group = 3) and Qwen 2 (digit_group = 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,G}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Qwen 3.5 (with_marks) lets words hold combining marks: [\p{L}\p{M}]+ and [^\s\p{L}\p{M}\p{N}].
template <int digit_group, bool with_marks = false>
void pass_llama3(const Text& t, size_t b, size_t e, Spans& out) {
    constexpr uint8_t kWord = with_marks ? (kLetter | kMark) : kLetter;
    const uint32_t* cp = t.cp.data();
    const uint8_t* fl = t.fl.data();
    Cutter c{b, out};
    size_t pos = b;
    while (pos < e) {
        const uint32_t ch = cp[pos];
        const uint8_t f = fl[pos];
        if (size_t n = contraction(t, pos, e, true)) {
            pos += n;
            c.cut(pos);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (!(ch == '\r' || ch == '\n' || (f & kNumber))) {
            if ((f & kWord) || (pos + 1 < e && (fl[pos + 1] & kWord))) {
                pos++;
                while (pos < e && (fl[pos] & kWord)) pos++;
                c.cut(pos);
                continue;
            }
        }
        // \p{N}{1,G}
        if (f & kNumber) {
            size_t group_start = pos;
            while (pos < e && (fl[pos] & kNumber)) {
                pos++;
                if (pos - group_start >= size_t(digit_group)) {
                    c.cut(pos);
                    group_start = pos;
                }
            }
            c.cut(pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'. A lone space at the end of the piece also lands here (and
        // becomes a piece of its own, as \s+ would make it).
        {
            const bool space = ch == ' ';
            const size_t start = pos + (space ? 1 : 0);
            const bool other = start < e ? !(fl[start] & (kSpace | kWord | kNumber)) : space;
            if (other) {
                size_t p = start;
                while (p < e && !(fl[p] & (kSpace | kWord | kNumber))) p++;
                while (p < e && (cp[p] == '\r' || cp[p] == '\n')) p++;
                pos = p;
                c.cut(pos);
                continue;
            }
        }
        size_t n_space = 0;
        size_t after_last_newline = 0;
        while (pos + n_space < e && (fl[pos + n_space] & kSpace)) {
            if (cp[pos + n_space] == '\r' || cp[pos + n_space] == '\n') after_last_newline = pos + n_space + 1;
            n_space++;
        }
        if (after_last_newline > 0) {
            pos = after_last_newline;  // \s*[\r\n]+
        } else if (n_space > 1 && pos + n_space < e) {
            pos += n_space - 1;  // \s+(?!\S)
        } else if (n_space > 0) {
            pos += n_space;  // \s+
        } else {
            pos += 1;
        }
        c.cut(pos);
    }
}

// ---- search passes -------------------------------------------------------------------------------

// Runs `match(pos, e)` (length of the pattern's match starting exactly at pos, 0 if none) at each
// position like a regex search: matches become pieces, text between them stays a piece.
template <class Match>
void search_split(size_t b, size_t e, Spans& out, Match match) {
    Cutter c{b, out};
    size_t pos = b;
    while (pos < e) {
        size_t n = match(pos, e);
        if (n == 0) {
            pos++;
            continue;
        }
        c.cut(pos);
        pos += n;
        c.cut(pos);
    }
    c.cut(e);
}

// Length of the run of code points at [pos, e) satisfying `in`.
template <class In>
size_t run_length(size_t pos, size_t e, In in) {
    size_t p = pos;
    while (p < e && in(p)) p++;
    return p - pos;
}

// \s?X+ : an optional white space character, then one or more X (X never matches white space).
template <class In>
size_t space_then_run(const Text& t, size_t pos, size_t e, In in) {
    if ((t.fl[pos] & kSpace) && pos + 1 < e && in(pos + 1)) return 1 + run_length(pos + 1, e, in);
    return run_length(pos, e, in);
}

struct Range {
    uint32_t lo, hi;
};

template <size_t N>
bool in_ranges(const Range (&r)[N], uint32_t c) {
    for (const Range& x : r)
        if (c >= x.lo && c <= x.hi) return true;
    return false;
}

// The letter class of DeepSeek LLM's pattern \s?[A-Za-zµÀ-ÖØ-ö...]+ (from its tokenizer.json).
const Range kDeepseekLatin[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
    {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
    {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
    {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107},
    {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F},
    {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
    {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
// \s?[!-/:-~！-／：-～‘-‟　-。]+ (DeepSeek LLM punctuation).
const Range kDeepseekPunct[] = {{0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
                                {0x2018, 0x201F}, {0x3000, 0x3002}};
// [一-龥ࠀ-一가-퟿]+ (DeepSeek CJK and Hangul runs).
const Range kDeepseekCjk[] = {{0x4E00, 0x9FA5}, {0x0800, 0x4E00}, {0xAC00, 0xD7FF}};
// The excluded set of BLOOM's ` ?[^(\s|.,!?…。，、।۔،)]+`.
const uint32_t kBloomStops[] = {'(', '|', '.', ',', '!', '?', 0x2026, 0x3002, 0xFF0C, 0x3001, 0x0964, 0x06D4, 0x060C, ')'};

template <size_t N>
auto range_class(const Text& t, const Range (&r)[N]) {
    return [&t, &r](size_t i) { return !(t.fl[i] & kSpace) && in_ranges(r, t.cp[i]); };
}

bool is_default_punct(uint32_t c, uint8_t f, bool backtick) {
    if (f & kPunct) return true;
    switch (c) {
        case '$': case '+': case '<': case '=': case '>': case '^': case '~': case '|': return true;
        case '`': return backtick;
        default: return false;
    }
}

// [\p{P}\$\+<=>\^~\|]+ (default) and [\p{P}\$\+<=>\^~\|`]+ (Falcon)
template <bool backtick>
void pass_punct_run(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = [&](size_t i) { return is_default_punct(t.cp[i], t.fl[i], backtick); };
    search_split(b, e, out, [&](size_t pos, size_t end) { return run_length(pos, end, in); });
}

// \p{N}+
void pass_number_run(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = [&](size_t i) { return (t.fl[i] & kNumber) != 0; };
    search_split(b, e, out, [&](size_t pos, size_t end) { return run_length(pos, end, in); });
}

// \p{N}
void pass_number_one(const Text& t, size_t b, size_t e, Spans& out) {
    search_split(b, e, out, [&](size_t pos, size_t) -> size_t { return (t.fl[pos] & kNumber) ? 1 : 0; });
}

// [0-9][0-9][0-9]
void pass_digits3(const Text& t, size_t b, size_t e, Spans& out) {
    auto digit = [&](size_t i) { return t.cp[i] >= '0' && t.cp[i] <= '9'; };
    search_split(b, e, out, [&](size_t pos, size_t end) -> size_t {
        return pos + 2 < end && digit(pos) && digit(pos + 1) && digit(pos + 2) ? 3 : 0;
    });
}

// [\r\n]
void pass_cr_or_lf(const Text& t, size_t b, size_t e, Spans& out) {
    search_split(b, e, out, [&](size_t pos, size_t) -> size_t { return t.cp[pos] == '\r' || t.cp[pos] == '\n'; });
}

// \s+$ : the white space run that ends the piece. A run that stops short of the end cannot match from
// any of its positions, so the search skips it whole (this keeps long inner runs linear).
void pass_trailing_space(const Text& t, size_t b, size_t e, Spans& out) {
    size_t p = e;
    while (p > b && (t.fl[p - 1] & kSpace)) p--;
    Cutter c{b, out};
    c.cut(p);
    c.cut(e);
}

// \s?[DeepSeek Latin]+
void pass_deepseek_latin(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = range_class(t, kDeepseekLatin);
    search_split(b, e, out, [&](size_t pos, size_t end) { return space_then_run(t, pos, end, in); });
}

// \s?[DeepSeek punctuation]+
void pass_deepseek_punct(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = range_class(t, kDeepseekPunct);
    search_split(b, e, out, [&](size_t pos, size_t end) { return space_then_run(t, pos, end, in); });
}

// [一-龥ࠀ-一가-퟿]+
void pass_deepseek_cjk(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = range_class(t, kDeepseekCjk);
    search_split(b, e, out, [&](size_t pos, size_t end) { return run_length(pos, end, in); });
}

// \s?\p{L}+
void pass_space_letters(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = [&](size_t i) { return (t.fl[i] & kLetter) != 0; };
    search_split(b, e, out, [&](size_t pos, size_t end) { return space_then_run(t, pos, end, in); });
}

// \s?\p{P}+
void pass_space_puncts(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = [&](size_t i) { return (t.fl[i] & kPunct) != 0; };
    search_split(b, e, out, [&](size_t pos, size_t end) { return space_then_run(t, pos, end, in); });
}

// ` ?[^(\s|.,!?…。，、।۔،)]+` (BLOOM): the optional prefix is a literal space.
void pass_bloom_word(const Text& t, size_t b, size_t e, Spans& out) {
    auto in = [&](size_t i) {
        if (t.fl[i] & kSpace) return false;
        return std::find(std::begin(kBloomStops), std::end(kBloomStops), t.cp[i]) == std::end(kBloomStops);
    };
    search_split(b, e, out, [&](size_t pos, size_t end) -> size_t {
        if (t.cp[pos] == ' ' && pos + 1 < end && in(pos + 1)) return 1 + run_length(pos + 1, end, in);
        return run_length(pos, end, in);
    });
}

using Pass = void (*)(const Text&, size_t, size_t, Spans&);

std::vector<Pass> passes_for(PreTokenizer pre) {
    switch (pre) {
        case PreTokenizer::Default:
            return {pass_punct_run<false>, pass_gpt2, pass_number_run, pass_digits3};
        case PreTokenizer::Gpt2:
            return {pass_gpt2};
        case PreTokenizer::Llama3:
            return {pass_llama3<3>};
        case PreTokenizer::Qwen2:
            return {pass_llama3<1>};
        case PreTokenizer::Qwen35:
            return {pass_llama3<1, true>};
        case PreTokenizer::Starcoder:
            return {pass_number_one, pass_gpt2};
        case PreTokenizer::Falcon:
            return {pass_punct_run<true>, pass_gpt2, pass_digits3};
        case PreTokenizer::DeepseekLlm:
            return {pass_cr_or_lf, pass_deepseek_latin, pass_deepseek_punct, pass_trailing_space,
                    pass_deepseek_cjk, pass_number_run};
        case PreTokenizer::DeepseekCoder:
            return {pass_cr_or_lf, pass_space_letters, pass_space_puncts, pass_deepseek_cjk, pass_number_one};
        case PreTokenizer::Bloom:
            return {pass_bloom_word};
        case PreTokenizer::Viking:
            return {pass_bloom_word, pass_number_one};
    }
    return {};
}

}  // namespace

PreConfig pre_config_from_name(const std::string& name) {
    auto any = [&](std::initializer_list<const char*> names) {
        for (const char* n : names)
            if (name == n) return true;
        return false;
    };
    PreConfig c;
    if (name.empty() || name == "default") {
        c.pre = PreTokenizer::Default;
    } else if (any({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                    "jina-v5-nano"})) {
        c.pre = PreTokenizer::Llama3;
        c.ignore_merges = true;
        c.add_bos = true;
    } else if (any({"dbrx", "smaug-bpe"})) {
        c.pre = PreTokenizer::Llama3;
    } else if (name == "chatglm-bpe") {
        c.pre = PreTokenizer::Llama3;
        c.no_bos = true;
    } else if (any({"glm4", "glm5"})) {
        c.pre = PreTokenizer::Llama3;
        c.no_bos = true;
        c.ignore_merges = true;
    } else if (any({"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", "hunyuan",
                    "solar-open"})) {
        c.pre = PreTokenizer::Qwen2;
    } else if (name == "qwen35") {
        c.pre = PreTokenizer::Qwen35;
    } else if (any({"starcoder", "refact", "smollm", "command-r", "codeshell", "exaone", "minerva-7b",
                    "mellum2"})) {
        c.pre = PreTokenizer::Starcoder;
    } else if (any({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                    "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais",
                    "exaone4", "trillion", "granite-docling"})) {
        c.pre = PreTokenizer::Gpt2;
    } else if (name == "falcon") {
        c.pre = PreTokenizer::Falcon;
    } else if (name == "deepseek-llm") {
        c.pre = PreTokenizer::DeepseekLlm;
    } else if (name == "deepseek-coder") {
        c.pre = PreTokenizer::DeepseekCoder;
    } else if (any({"bloom", "poro-chat", "gpt3-finnish"})) {
        c.pre = PreTokenizer::Bloom;
    } else if (name == "viking") {
        c.pre = PreTokenizer::Viking;
    } else {
        fail("unsupported pre-tokenizer '", name, "' (tokenizer.ggml.pre)");
    }
    return c;
}

void pretokenize(PreTokenizer pre, std::string_view text, std::vector<uint32_t>& word_bytes) {
    if (text.empty()) return;
    if (text.size() > UINT32_MAX) fail("tokenizer: text of ", text.size(), " bytes is too long (at most 4 GiB)");
    Text t;
    t.cp.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) t.cp.push_back(unicode::decode_lenient(text, pos));
    t.fl.resize(t.cp.size());
    for (size_t i = 0; i < t.cp.size(); i++) t.fl[i] = unicode::flags(t.cp[i]);

    Spans spans{uint32_t(t.cp.size())}, next;
    for (Pass pass : passes_for(pre)) {
        next.clear();
        size_t b = 0;
        for (uint32_t len : spans) {
            pass(t, b, b + len, next);
            b += len;
        }
        spans.swap(next);
    }

    size_t i = 0;
    for (uint32_t len : spans) {
        uint32_t bytes = 0;
        for (size_t end = i + len; i < end; i++) bytes += uint32_t(unicode::utf8_len(t.cp[i]));
        word_bytes.push_back(bytes);
    }
}

}  // namespace lumen::tokenizer
