// Pre-tokenizers for byte-level BPE: split text into words before the merges run, as the regexes of
// each model family (named by tokenizer.ggml.pre) do. The regexes are implemented by hand, one function
// per pattern, and reproduce llama.cpp's splitting exactly, including how it chains several patterns
// (each pattern splits the pieces left by the previous one; text between matches stays a piece).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lumen::tokenizer {

enum class PreTokenizer {
    Default,        // BPE vocab without a named pre-tokenizer
    Gpt2,           // gpt-2, mpt, olmo, phi-2, jais, ...
    Llama3,         // llama-bpe (Llama 3), dbrx, smaug-bpe, chatglm-bpe, glm4
    Qwen2,          // qwen2, stablelm2, deepseek-r1-qwen, megrez
    Qwen35,         // qwen35 (Qwen 2 with combining marks inside words)
    Starcoder,      // starcoder, refact, smollm, command-r, codeshell, exaone, minerva-7b
    Falcon,         // falcon
    DeepseekLlm,    // deepseek-llm
    DeepseekCoder,  // deepseek-coder
    Bloom,          // bloom, poro-chat, gpt3-finnish
    Viking,         // viking
};

// What a tokenizer.ggml.pre name selects: the splitting, plus the few vocab defaults llama.cpp ties
// to the name (the GGUF keys tokenizer.ggml.add_bos_token etc. still override them).
struct PreConfig {
    PreTokenizer pre = PreTokenizer::Default;
    bool ignore_merges = false;  // a word that is itself a token is not merged (Llama 3)
    bool add_bos = false;        // default for add_bos_token
    bool no_bos = false;         // the vocab has no BOS token unless the GGUF names one
};

// Maps a tokenizer.ggml.pre value; an empty name means "default". Unknown names throw lumen::Error.
PreConfig pre_config_from_name(const std::string& name);

// Splits `text` (valid UTF-8 with no code point above U+10FFFF) into words and appends the byte length
// of each word, in order, to `word_bytes`. The lengths sum to text.size().
void pretokenize(PreTokenizer pre, std::string_view text, std::vector<uint32_t>& word_bytes);

}  // namespace lumen::tokenizer
