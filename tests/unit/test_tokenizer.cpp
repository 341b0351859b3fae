// Tokenizer tests against llama.cpp's test vectors (shared/tokenizer-tests/*.gguf.inp/.out), round
// trips on every shared vocab, special-token handling, and streaming decode.
#include <doctest/doctest.h>

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

using lumen::tokenizer::Tokenizer;

namespace {

const std::string kVocabDir = LUMEN_SOURCE_DIR "/../shared/tokenizer-tests";

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open ", path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Names of the files in the shared vocab directory ending in `suffix`, sorted. The directory must
// exist: a missing one fails the test rather than skipping it.
std::vector<std::string> vocab_files(const std::string& suffix) {
    DIR* d = opendir(kVocabDir.c_str());
    REQUIRE_MESSAGE(d != nullptr, "missing test vocab directory ", kVocabDir);
    std::vector<std::string> out;
    while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (ends_with(name, suffix)) out.push_back(name);
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

struct Loaded {
    std::unique_ptr<lumen::gguf::File> file;
    Tokenizer tok;
};

Loaded load(const std::string& name) {
    auto f = lumen::gguf::File::open(kVocabDir + "/" + name);
    Tokenizer t = Tokenizer::from_gguf(*f);
    return Loaded{std::move(f), t};
}

// llama.cpp's test file format: inputs separated by "\n__ggml_vocab_test__\n"; one output line per
// input with space-separated ids.
std::vector<std::pair<std::string, std::vector<int32_t>>> read_vectors(const std::string& inp_path,
                                                                       const std::string& out_path) {
    const std::string raw = read_all(inp_path);
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> inputs;
    for (size_t pos = 0; pos < raw.size();) {
        size_t next = raw.find(sep, pos);
        if (next == std::string::npos) {
            inputs.push_back(raw.substr(pos));
            break;
        }
        inputs.push_back(raw.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::istringstream outs(read_all(out_path));
    std::vector<std::pair<std::string, std::vector<int32_t>>> cases;
    std::string line;
    for (const std::string& in : inputs) {
        REQUIRE_MESSAGE(std::getline(outs, line), out_path, " has fewer lines than inputs");
        std::istringstream ls(line);
        std::vector<int32_t> ids;
        for (int32_t id; ls >> id;) ids.push_back(id);
        cases.emplace_back(in, ids);
    }
    REQUIRE_MESSAGE(!std::getline(outs, line), out_path, " has more lines than inputs");
    return cases;
}

std::string ids_str(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
    return s;
}

// Varied text for round trips: ASCII, accents, CJK, emoji (incl. ZWJ sequences and flags), RTL,
// combining marks, white space runs, code, numbers, control characters.
const std::vector<std::string> kRoundTripTexts = {
    "Hello world",
    " Hello world",
    "Hello  world   with    spaces",
    "\n\n\nNew lines\r\nand\ttabs\t\t\n",
    "   leading and trailing   ",
    "Ünïcödé àccents: façade, naïve, Straße, ÆØÅ",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트",
    "Emoji: 🙂 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "Арабский: مرحبا بالعالم — עברית: שלום",
    "e\xCC\x81 combining, \xE2\x80\x8B zero width, \xC2\xA0nbsp, \xE3\x80\x80ideographic space",
    "int main(int argc, char** argv) {\n    return argc > 1 ? 0 : -1;  // comment\n}\n",
    "def f(x):\n\tif x:\n\t\treturn [i ** 2 for i in range(10)]\n",
    "Numbers: 1234567890 3.14159 -42 1,000,000 0x1F 1e-9 ½ ²³ ٣٤٥",
    "I'm sure you've seen it; they'll say it's 'fine' — don't they? WE'LL SEE'S",
    "punctuation!!! ??? ... ,,, ;;; ::: --- ___ ((( ))) [[ ]] {{ }} <<< >>> @#$%^&*~`|\\",
    "\x01\x02\x7f control \x1b[0m escape",
    "a",
    " ",
    "  ",
    "\n",
    "x  \n  y",
    "ied 4 ½ months",
    "   \t  \n  mixed   \r\n\r\n white   ",
    "<s> </s> <unk> <|endoftext|> <|im_start|> look like special tokens but are text",
    "Long word: pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "Mixed123abc 456def 7g8h9i 10000000000000000000",
    "🤖🤖🤖 " "\xF0\x9F\xA6\x99" " rare: \xF0\x9D\x94\xB8 \xF0\x90\x8D\x88 \xE1\x9A\x80 \xEF\xBF\xBD",
};

}  // namespace

TEST_SUITE("tokenizer") {

TEST_CASE("tokenizer: llama.cpp test vectors match exactly") {
    const std::vector<std::string> inps = vocab_files(".gguf.inp");
    REQUIRE_MESSAGE(inps.size() >= 5, "expected the llama.cpp test vectors in ", kVocabDir);
    size_t n_cases = 0;
    for (const std::string& inp : inps) {
        const std::string vocab = inp.substr(0, inp.size() - 4);
        CAPTURE(vocab);
        Loaded l = load(vocab);
        for (const auto& [text, want] : read_vectors(kVocabDir + "/" + inp, kVocabDir + "/" + vocab + ".out")) {
            CAPTURE(text);
            std::vector<int32_t> got = l.tok.encode(text, false, false);
            CHECK(ids_str(got) == ids_str(want));
            n_cases++;
        }
    }
    CHECK(n_cases >= 5 * 40);
}

TEST_CASE("tokenizer: decode(encode(x)) == x for every shared vocab") {
    const std::vector<std::string> vocabs = vocab_files(".gguf");
    REQUIRE(vocabs.size() >= 10);
    for (const std::string& vocab : vocabs) {
        CAPTURE(vocab);
        Loaded l = load(vocab);
        for (const std::string& text : kRoundTripTexts) {
            CAPTURE(text);
            for (bool add_special : {false, true}) {
                std::vector<int32_t> ids = l.tok.encode(text, add_special, false);
                CHECK(l.tok.decode(ids) == text);
            }
        }
        // Concatenated pieces through the streaming decoder give the same text, one whole
        // character at a time.
        for (const std::string& text : kRoundTripTexts) {
            CAPTURE(text);
            std::vector<int32_t> ids = l.tok.encode(text, false, false);
            lumen::unicode::Utf8Stream stream;
            std::string streamed;
            for (int32_t id : ids) {
                std::string out = stream.push(l.tok.piece(id));
                CHECK(lumen::unicode::find_invalid_utf8(out) == std::string::npos);
                streamed += out;
            }
            streamed += stream.flush();
            std::string whole = l.tok.decode(ids);
            // decode() drops the SentencePiece prefix space; the raw pieces keep it.
            if (l.tok.is_spm() && !streamed.empty() && streamed[0] == ' ' && whole == text) streamed.erase(0, 1);
            CHECK(streamed == text);
        }
    }
}

TEST_CASE("tokenizer: BOS follows the vocab's add_bos_token") {
    Loaded spm = load("ggml-vocab-llama-spm.gguf");
    CHECK(spm.tok.add_bos_default());
    std::vector<int32_t> ids = spm.tok.encode("Hello", true, false);
    REQUIRE(!ids.empty());
    CHECK(ids[0] == spm.tok.bos());
    CHECK(spm.tok.encode("Hello", false, false).front() != spm.tok.bos());
    // SentencePiece: an empty text with BOS is just BOS.
    CHECK(spm.tok.encode("", true, false) == std::vector<int32_t>{1});
    CHECK(spm.tok.encode("", false, false).empty());

    Loaded gpt2 = load("ggml-vocab-gpt-2.gguf");
    CHECK(!gpt2.tok.add_bos_default());
    CHECK(gpt2.tok.encode("Hello", true, false) == gpt2.tok.encode("Hello", false, false));
}

TEST_CASE("tokenizer: control tokens are matched only with parse_special") {
    Loaded l = load("ggml-vocab-starcoder.gguf");
    const int32_t fim = l.tok.find_token("<fim_prefix>");
    REQUIRE(fim >= 0);
    CHECK(l.tok.is_control(fim));
    std::vector<int32_t> parsed = l.tok.encode("<fim_prefix>def f():", false, true);
    REQUIRE(!parsed.empty());
    CHECK(parsed[0] == fim);
    CHECK(std::count(parsed.begin(), parsed.end(), fim) == 1);
    std::vector<int32_t> plain = l.tok.encode("<fim_prefix>def f():", false, false);
    CHECK(std::count(plain.begin(), plain.end(), fim) == 0);
    CHECK(plain.size() > parsed.size());
    // The special token renders as its text only when asked to.
    CHECK(l.tok.piece(fim, true) == "<fim_prefix>");
    CHECK(l.tok.piece(fim, false).empty());
    CHECK(l.tok.decode(parsed) == "def f():");
}

TEST_CASE("tokenizer: user-defined tokens are matched even without parse_special") {
    // MPT's vocab has user-defined tokens made of runs of spaces.
    Loaded l = load("ggml-vocab-mpt.gguf");
    const int32_t four = l.tok.find_token("    ");
    REQUIRE(four >= 0);
    CHECK(!l.tok.is_control(four));
    std::vector<int32_t> ids = l.tok.encode("a    b", false, false);
    CHECK(std::count(ids.begin(), ids.end(), four) == 1);
    CHECK(l.tok.decode(ids) == "a    b");
}

TEST_CASE("tokenizer: Phi-3 special tokens swallow the white space after them (rstrip)") {
    Loaded l = load("ggml-vocab-phi-3.gguf");
    const int32_t user = l.tok.find_token("<|user|>");
    REQUIRE(user >= 0);
    std::vector<int32_t> a = l.tok.encode("<|user|>\n  Hi", false, true);
    std::vector<int32_t> b = l.tok.encode("<|user|>Hi", false, true);
    CHECK(a == b);
    CHECK(a.front() == user);
}

TEST_CASE("tokenizer: end-of-generation tokens") {
    Loaded gpt2 = load("ggml-vocab-gpt-2.gguf");
    CHECK(gpt2.tok.is_eog(50256));
    CHECK(!gpt2.tok.is_eog(100));
    Loaded phi3 = load("ggml-vocab-phi-3.gguf");
    CHECK(phi3.tok.is_eog(phi3.tok.eos()));
    CHECK(phi3.tok.is_eog(phi3.tok.find_token("<|end|>")));
    // Two end-of-turn candidates (<|endoftext|>, <|end|>): llama.cpp settles on <|end|>.
    CHECK(phi3.tok.eot() == phi3.tok.find_token("<|end|>"));
    CHECK(!phi3.tok.is_eog(phi3.tok.find_token("<|user|>")));
}

TEST_CASE("tokenizer: byte fallback spells unknown characters as bytes") {
    Loaded l = load("ggml-vocab-llama-spm.gguf");
    // U+1F99D (raccoon) is not in the Llama 2 vocab: four <0xNN> tokens.
    std::vector<int32_t> ids = l.tok.encode("\xF0\x9F\xA6\x9D", false, false);
    REQUIRE(ids.size() == 5);  // "▁" then the four bytes
    CHECK(l.tok.token_text(ids[1]) == "<0xF0>");
    CHECK(l.tok.token_text(ids[4]) == "<0x9D>");
    CHECK(l.tok.piece(ids[1]) == "\xF0");
}

TEST_CASE("tokenizer: bad ids and bad files are errors") {
    Loaded l = load("ggml-vocab-gpt-2.gguf");
    CHECK_THROWS_AS(l.tok.piece(-1), lumen::Error);
    CHECK_THROWS_AS(l.tok.piece(l.tok.n_vocab()), lumen::Error);
    CHECK_THROWS_AS(l.tok.decode({0, 1, 99999999}), lumen::Error);
}

TEST_CASE("tokenizer: unicode tables and UTF-8 helpers") {
    using namespace lumen::unicode;
    CHECK(flags('a') == kLetter);
    CHECK(flags('7') == kNumber);
    CHECK(flags(' ') == (kSeparator | kSpace));
    CHECK(flags('\n') == (kControl | kSpace));
    CHECK(flags('!') == kPunct);
    CHECK(flags('$') == kSymbol);
    CHECK(flags(0x4E2D) == kLetter);              // 中
    CHECK(flags(0x0301) == kMark);                // combining acute
    CHECK(flags(0x00BD) == kNumber);              // ½
    CHECK(flags(0x3000) == (kSeparator | kSpace));  // ideographic space
    CHECK(flags(0x1F642) == kSymbol);             // 🙂
    CHECK(flags(0x0378) == 0);                    // unassigned
    CHECK(flags(0x110000) == 0);

    CHECK(find_invalid_utf8("plain ascii") == std::string::npos);
    CHECK(find_invalid_utf8("caf\xC3\xA9 \xF0\x9F\x99\x82") == std::string::npos);
    CHECK(find_invalid_utf8("ab\xC3") == 2);              // truncated
    CHECK(find_invalid_utf8("ab\x80") == 2);              // stray continuation
    CHECK(find_invalid_utf8("\xC0\xAF") == 0);            // overlong
    CHECK(find_invalid_utf8("x\xED\xA0\x80") == 1);       // surrogate
    CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);    // above U+10FFFF

    Utf8Stream s;
    CHECK(s.push("h\xC3") == "h");
    CHECK(s.push("\xA9\xF0\x9F") == "\xC3\xA9");
    CHECK(s.push("\x99") == "");
    CHECK(s.push("\x82!") == "\xF0\x9F\x99\x82!");
    CHECK(s.push("\xE4\xB8") == "");
    CHECK(s.flush() == "\xE4\xB8");
}

}  // TEST_SUITE
