// The files of `lumen batch`: the prompts it reads (plain text or JSONL), the JSONL records it writes,
// and reading those records back for --resume. No model here: tokenizing, chat templates and the
// context limit are the command's job.
//
//   Input in = batch::parse_prompts(text, "prompts.jsonl", batch::Format::Auto);
//   for (const auto& e : in.errors) ...   // malformed lines: reported, skipped
//   Resume r = batch::read_output(out_text, "out.jsonl");   // r.done, r.keep_bytes
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chat/template.h"

namespace lumen::batch {

// A prompt's id as the user wrote it: an integer or a string. Written back unchanged, so 7 and "7"
// are different ids.
struct Id {
    bool is_string = false;
    int64_t number = 0;
    std::string text;

    static Id of(int64_t n) { Id i; i.number = n; return i; }
    static Id of(std::string s) { Id i; i.is_string = true; i.text = std::move(s); return i; }
    std::string json() const;  // 12 or "abc" (escaped); also the key for comparisons
};

struct Item {
    int line = 0;                          // 1-based line in the prompts file
    Id id;
    std::string prompt;                    // the text, when no messages are given
    std::vector<chat::Message> messages;   // JSONL "messages": the chat template is applied
    // Per-prompt settings from JSONL; unset: the command's flags.
    std::optional<int> n_predict, top_k;
    std::optional<float> temperature, top_p, min_p;
    std::optional<uint64_t> seed;
};

struct LineError {
    int line = 0;
    std::string message;
};

enum class Format { Auto, Text, Jsonl };

struct Input {
    bool jsonl = false;
    std::vector<Item> items;
    std::vector<LineError> errors;      // malformed lines, skipped (fatal with --strict)
    std::vector<LineError> duplicates;  // repeated ids: always fatal, the output could not tell them apart
};

// Auto: JSONL when the name ends in .jsonl / .ndjson or every non-blank line starts with '{'.
// Text: one prompt per line, escapes \n \t \\ (other backslashes are kept), blank lines skipped, the id
// is the line number. JSONL: one object per line with "id" (integer or string; default the line
// number), "prompt" or "messages", optional n_predict, temperature, top_k, top_p, min_p, seed; other
// keys are ignored.
Input parse_prompts(std::string_view text, const std::string& path, Format f);

// The text-format escapes: "a\\nb" -> "a\nb".
std::string unescape_line(std::string_view s);

// One finished generation, as written to the output file.
struct Result {
    Id id;
    int sample = -1;  // -1: not written (no --n-samples)
    std::string text;
    int n_prompt = 0, n_prompt_cached = 0, n_completion = 0;
    std::string finish_reason;
    double prompt_s = 0, gen_s = 0;
    // With speculation: guesses verified and kept (written only when `speculative`).
    bool speculative = false;
    int drafted = 0, accepted = 0;
};

// The record as one line of JSON, newline included.
std::string format_result(const Result& r);

// What an existing output file holds, for --resume.
struct Resume {
    std::set<std::pair<std::string, int>> done;  // (Id::json(), sample; 0 when not written)
    size_t keep_bytes = 0;   // length up to the end of the last complete record
    int torn_line = 0;       // the dropped last line (killed mid-write), or 0
    int records = 0;
};

// A torn last line (no newline, or not valid JSON) is dropped: keep_bytes stops before it. Any other
// line that is not a record of ours is an error naming the file and line.
Resume read_output(std::string_view text, const std::string& path);

}  // namespace lumen::batch
