// Reading the vocabulary from GGUF metadata and resolving special tokens and flags like llama.cpp.
#include "tokenizer/vocab.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "gguf/gguf.h"
#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::tokenizer {

namespace {

// GPT-2 shows bytes that are printable Latin-1 as themselves and the rest as U+0100 + n, in byte order.
struct Gpt2Bytes {
    std::array<std::string, 256> chars;
    std::array<int16_t, 324> byte_of;  // indexed by code point; every mapped code point is below 324
    Gpt2Bytes() {
        byte_of.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
            unicode::append_utf8(chars[size_t(b)], cp);
            byte_of[cp] = int16_t(b);
        }
    }
};

const Gpt2Bytes& gpt2_bytes() {
    static const Gpt2Bytes table;
    return table;
}

// Token texts that llama.cpp recognises as end-of-turn, end-of-message, FIM and end-of-generation
// markers when the GGUF does not name them.
const char* const kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                 "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                                 "<end_of_utterance>"};
const char* const kEomTexts[] = {"<|eom_id|>"};
const char* const kFimPreTexts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>",
                                    "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"};
const char* const kFimSufTexts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>",
                                    "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"};
const char* const kFimMidTexts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>",
                                    "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"};
const char* const kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
const char* const kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
const char* const kFimSepTexts[] = {"<|file_sep|>"};
const char* const kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                 "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
                                 "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
                                 "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["};

uint32_t attr_of_type(int64_t type) {
    switch (type) {
        case 1: return kAttrNormal;
        case 2: return kAttrUnknown;
        case 3: return kAttrControl;
        case 4: return kAttrUserDefined;
        case 5: return kAttrUnused;
        case 6: return kAttrByte;
        default: return 0;  // undefined
    }
}

// The byte of a "<0xNN>" token, read like strtol on its two hex digits.
uint8_t byte_of_byte_token(const std::string& t) {
    if (t.size() < 4) return 0;
    std::string hex = t.substr(3, 2);
    return uint8_t(std::strtol(hex.c_str(), nullptr, 16));
}

std::string spm_piece(const Vocab& v, int32_t id) {
    const std::string& t = v.text[size_t(id)];
    uint32_t a = v.attr[size_t(id)];
    if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return t;
    if (a & kAttrNormal) {
        std::string out;
        for (size_t i = 0; i < t.size();) {
            if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
                out.push_back(' ');
                i += 3;
            } else {
                out.push_back(t[i++]);
            }
        }
        return out;
    }
    if (a & kAttrByte) return std::string(1, char(byte_of_byte_token(t)));
    return "";
}

std::string bpe_piece(const Vocab& v, int32_t id) {
    const std::string& t = v.text[size_t(id)];
    uint32_t a = v.attr[size_t(id)];
    if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return t;
    if (a & kAttrNormal) {
        std::string out;
        for (size_t pos = 0; pos < t.size();) {
            uint32_t cp = unicode::decode_lenient(t, pos);
            int b = gpt2_char_to_byte(cp);
            if (b >= 0) {
                out.push_back(char(b));
            } else {
                // A character outside the byte-level alphabet: llama.cpp writes this marker.
                std::string utf8;
                unicode::append_utf8(utf8, cp);
                out += "[UNK_BYTE_0x";
                char hex[4];
                for (unsigned char c : utf8) {
                    std::snprintf(hex, sizeof hex, "%02x", c);
                    out += hex;
                }
                out += t + "]";
            }
        }
        return out;
    }
    if (a & kAttrByte) return std::string(1, char(byte_of_byte_token(t)));
    return "";
}

std::string lowercase_ascii(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool contains_any(const std::string& s, std::initializer_list<const char*> subs) {
    for (const char* x : subs)
        if (s.find(x) != std::string::npos) return true;
    return false;
}

}  // namespace

const std::string& byte_to_gpt2_char(uint8_t b) { return gpt2_bytes().chars[b]; }

int gpt2_char_to_byte(uint32_t cp) { return cp < 324 ? gpt2_bytes().byte_of[cp] : -1; }

int32_t Vocab::byte_token(uint8_t b) const {
    if (kind == VocabKind::Bpe) return find(byte_to_gpt2_char(b));
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    int32_t id = find(buf);
    if (id != kNoToken) return id;
    return find(std::string_view(reinterpret_cast<const char*>(&b), 1));
}

Vocab Vocab::from_gguf(const gguf::File& f) {
    Vocab v;
    const std::string model = f.get_str("tokenizer.ggml.model");
    if (model.empty()) f.error("no tokenizer in this file (tokenizer.ggml.model is missing)");
    if (model == "llama") {
        v.kind = VocabKind::Spm;
        v.bos = 1, v.eos = 2, v.unk = 0;
        v.add_space_prefix = true;
        v.add_bos = true;
    } else if (model == "gpt2") {
        v.kind = VocabKind::Bpe;
        try {
            v.pre = pre_config_from_name(f.get_str("tokenizer.ggml.pre"));
        } catch (const Error& e) {
            f.error(e.what());
        }
        v.bos = v.pre.no_bos ? kNoToken : 11;
        v.eos = 11;
        v.add_bos = v.pre.add_bos;
    } else {
        f.error("unsupported tokenizer model '" + model + "' (tokenizer.ggml.model; lumen reads llama and gpt2)");
    }
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);

    const gguf::Value* tokens = f.get_array("tokenizer.ggml.tokens", gguf::VType::STRING);
    if (!tokens || tokens->count == 0) f.error("tokenizer.ggml.tokens is missing or empty");
    if (tokens->count > uint64_t(INT32_MAX)) f.error("tokenizer.ggml.tokens has too many entries");
    const size_t n = size_t(tokens->count);

    const gguf::Value* scores = f.find("tokenizer.ggml.scores");
    if (scores && (scores->type != gguf::VType::ARRAY ||
                   (scores->elem != gguf::VType::FLOAT32 && scores->elem != gguf::VType::INT32)))
        f.error("tokenizer.ggml.scores should be an array of float32 or int32");
    if (scores && scores->count < n) f.error("tokenizer.ggml.scores has fewer entries than tokenizer.ggml.tokens");
    const gguf::Value* types = f.get_array("tokenizer.ggml.token_type", gguf::VType::INT32);
    if (types && types->count < n) f.error("tokenizer.ggml.token_type has fewer entries than tokenizer.ggml.tokens");

    v.text.resize(n);
    v.score.assign(n, 0.0f);
    v.attr.assign(n, kAttrNormal);
    for (size_t i = 0; i < n; i++) {
        v.text[i] = std::string(tokens->strs[i]);
        if (v.text[i].empty()) v.text[i] = "[EMPTY_" + std::to_string(i) + "]";
        if (scores) v.score[i] = float(scores->num_at(i));
        if (types) v.attr[i] = attr_of_type(types->int_at(i));
    }
    // No reserve(): id_of must grow like llama.cpp's map does (see the by-text detection below).
    for (size_t i = 0; i < n; i++) v.id_of[v.text[i]] = int32_t(i);

    // Special ids: a default outside the vocab is dropped; a GGUF value outside it is ignored.
    struct IdKey {
        const char* key;
        int32_t* id;
    };
    const IdKey id_keys[] = {
        {"tokenizer.ggml.bos_token_id", &v.bos},         {"tokenizer.ggml.eos_token_id", &v.eos},
        {"tokenizer.ggml.eot_token_id", &v.eot},         {"tokenizer.ggml.eom_token_id", &v.eom},
        {"tokenizer.ggml.unknown_token_id", &v.unk},     {"tokenizer.ggml.seperator_token_id", &v.sep},
        {"tokenizer.ggml.padding_token_id", &v.pad},     {"tokenizer.ggml.mask_token_id", &v.mask},
        {"tokenizer.ggml.fim_pre_token_id", &v.fim_pre}, {"tokenizer.ggml.fim_suf_token_id", &v.fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &v.fim_mid}, {"tokenizer.ggml.fim_pad_token_id", &v.fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &v.fim_rep}, {"tokenizer.ggml.fim_sep_token_id", &v.fim_sep},
        {"tokenizer.ggml.prefix_token_id", &v.fim_pre},  {"tokenizer.ggml.suffix_token_id", &v.fim_suf},
        {"tokenizer.ggml.middle_token_id", &v.fim_mid},
    };
    for (const IdKey& k : id_keys) {
        if (*k.id >= int64_t(n)) *k.id = kNoToken;
        int64_t id = f.get_int(k.key, -1);
        if (id >= 0 && id < int64_t(n)) *k.id = int32_t(id);
    }
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", v.add_bos);
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", v.add_eos);

    // For each role llama.cpp takes the first candidate it meets walking its text->id hash map. id_of is
    // the same kind of map (std::unordered_map, same hash, filled in the same order, same growth), so
    // walking it meets the candidates in the same order; this only matters when a vocab holds several
    // candidates for one role (Phi-3: <|endoftext|> and <|end|> for end-of-turn).
    auto mark_control = [&](int32_t id) { v.attr[size_t(id)] |= kAttrControl; };
    auto detect = [&](int32_t& slot, auto& texts) {
        if (slot != kNoToken) return;
        std::vector<int32_t> present;
        for (const char* t : texts)
            if (int32_t id = v.find(t); id != kNoToken) present.push_back(id);
        if (present.empty()) return;
        slot = present[0];
        if (present.size() > 1) {
            for (const auto& entry : v.id_of) {
                if (std::find(present.begin(), present.end(), entry.second) != present.end()) {
                    slot = entry.second;
                    break;
                }
            }
        }
        mark_control(slot);
    };
    detect(v.eot, kEotTexts);
    detect(v.eom, kEomTexts);
    detect(v.fim_pre, kFimPreTexts);
    detect(v.fim_suf, kFimSufTexts);
    detect(v.fim_mid, kFimMidTexts);
    detect(v.fim_pad, kFimPadTexts);
    detect(v.fim_rep, kFimRepTexts);
    detect(v.fim_sep, kFimSepTexts);

    // End of generation: the FIM pad/repo/file-separator tokens, every marker-looking token, eos/eot/eom.
    for (int32_t id : {v.fim_pad, v.fim_rep, v.fim_sep})
        if (id != kNoToken) v.eog.insert(id);
    for (const char* t : kEogTexts) {
        int32_t id = v.find(t);
        if (id == kNoToken) continue;
        v.eog.insert(id);
        mark_control(id);
    }
    // gpt-oss channel markers are always rendered, like ordinary text.
    for (const char* t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
        int32_t id = v.find(t);
        if (id != kNoToken) v.attr[size_t(id)] = kAttrUserDefined;
    }
    for (int32_t id : {v.eos, v.eot, v.eom})
        if (id != kNoToken) v.eog.insert(id);
    {
        // With <|return|> and <|call|> (gpt-oss) or <|calls|> and <|flush|> (solar-open), <|end|> is not
        // the end of generation.
        bool has_return = false, has_call = false, has_flush = false;
        int32_t end_id = kNoToken;
        for (int32_t id : v.eog) {
            const std::string& t = v.text[size_t(id)];
            if (t == "<|return|>") has_return = true;
            else if (t == "<|call|>" || t == "<|calls|>") has_call = true;
            else if (t == "<|flush|>") has_flush = true;
            else if (t == "<|end|>") end_id = id;
        }
        if (end_id != kNoToken && ((has_return && has_call) || (has_call && has_flush))) {
            v.eog.erase(end_id);
            v.attr[size_t(end_id)] = kAttrUserDefined;
        }
        // Where <|tool_response> or <|plamo:eos|> exist, </s> is an ordinary token.
        bool has_marker = false;
        int32_t s_id = kNoToken;
        for (int32_t id : v.eog) {
            const std::string& t = v.text[size_t(id)];
            if (t == "<|tool_response>" || t == "<|plamo:eos|>") has_marker = true;
            else if (t == "</s>") s_id = id;
        }
        if (has_marker && s_id != kNoToken) {
            v.eog.erase(s_id);
            v.attr[size_t(s_id)] = kAttrNormal;
        }
    }

    // Tokens matched in raw text, longest first. std::sort on the same input order with the same
    // comparison gives llama.cpp's order among tokens of equal length too.
    for (size_t i = 0; i < n; i++)
        if (v.attr[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v.special_by_length.push_back(int32_t(i));
    std::sort(v.special_by_length.begin(), v.special_by_length.end(),
              [&](int32_t a, int32_t b) { return v.text[size_t(a)].size() > v.text[size_t(b)].size(); });

    v.piece.resize(n);
    for (size_t i = 0; i < n; i++)
        v.piece[i] = v.kind == VocabKind::Spm ? spm_piece(v, int32_t(i)) : bpe_piece(v, int32_t(i));

    // Per-model strip rules llama.cpp applies by name.
    const std::string name = lowercase_ascii(f.get_str("general.name"));
    const std::string pre_name = f.get_str("tokenizer.ggml.pre");
    const std::string arch = f.get_str("general.architecture");
    auto set_attr = [&](const char* t, uint32_t a, bool on) {
        int32_t id = v.find(t);
        if (id == kNoToken) return;
        v.attr[size_t(id)] = on ? (v.attr[size_t(id)] | a) : (v.attr[size_t(id)] & ~a);
    };
    if (contains_any(pre_name, {"jina-v2-de", "jina-v2-es", "jina-v2-code"}) ||
        contains_any(arch, {"nomic-bert-moe", "jina-bert-v3"})) {
        set_attr("<mask>", kAttrLstrip, true);
    } else if (contains_any(name, {"phi-3", "phi3"})) {
        for (int32_t id : v.special_by_length) v.attr[size_t(id)] |= kAttrRstrip;
        set_attr("</s>", kAttrRstrip, true);
        for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set_attr(t, kAttrRstrip, false);
    } else if (contains_any(name, {"modern-bert"})) {
        set_attr("[MASK]", kAttrLstrip, true);
    }
    return v;
}

}  // namespace lumen::tokenizer
