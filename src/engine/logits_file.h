// The file of a base model's log-probabilities that llama.cpp's llama-perplexity writes with
// --kl-divergence-base and reads back with --kl-divergence, byte for byte, so lumen and llama.cpp
// read each other's. Layout (little-endian, as llama.cpp writes its structs on x86 and ARM):
//
//   "_logits_"                         8 bytes
//   n_ctx, n_vocab, n_chunk            int32 each
//   tokens                             n_chunk * n_ctx int32: the text's tokens as tokenized (with
//                                      BOS first where the model adds one; each chunk's first token
//                                      is replaced by BOS only when it is evaluated)
//   rows                               for each chunk, for each scored position j = n_ctx/2 ..
//                                      n_ctx-2 (predicting token j+1): row_width(n_vocab) uint16
//
// A row is the position's log-softmax, compressed: f32 scale and f32 min_log_prob (the first four
// uint16), then one uint16 q per vocabulary entry, log p = scale * q + min_log_prob, then a zero
// uint16 when n_vocab is odd. Logits more than 16 below the row's maximum all get q = 0.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace lumen {

// uint16 per stored row: 4 for the two floats, the vocabulary rounded up to even.
int logits_row_width(int n_vocab);

// Positions scored per chunk of n_ctx tokens: n_ctx/2 .. n_ctx-2, as llama.cpp's perplexity.
inline int scored_first(int n_ctx) { return n_ctx / 2; }
inline int scored_per_chunk(int n_ctx) { return n_ctx - 1 - n_ctx / 2; }

// Compresses one row of logits into `row` (logits_row_width(n_vocab) uint16), with llama.cpp's
// arithmetic (f32 exponentials summed in double), so equal logits give equal bytes.
void compress_log_probs(const float* logits, int n_vocab, uint16_t* row);

// The stored scale and offset of a row, and its log-probability of token i.
float row_scale(const uint16_t* row);
float row_min_log_prob(const uint16_t* row);
inline float stored_log_prob(const uint16_t* row, float scale, float min_log_prob, int i) {
    return scale * float(row[4 + i]) + min_log_prob;
}

struct LogitsFileHeader {
    int n_ctx = 0, n_vocab = 0, n_chunk = 0;
    std::vector<int32_t> tokens;  // n_chunk * n_ctx
};

// Writes a file chunk by chunk, as the chunks are evaluated. Errors (lumen::Error) name the file.
class LogitsFileWriter {
public:
    // Writes the header and the tokens (n_chunk * n_ctx of them).
    LogitsFileWriter(const std::string& path, int n_ctx, int n_vocab, int n_chunk, const int32_t* tokens);
    ~LogitsFileWriter();
    LogitsFileWriter(const LogitsFileWriter&) = delete;
    LogitsFileWriter& operator=(const LogitsFileWriter&) = delete;
    // The next chunk: `logits` holds the rows of its scored positions (scored_per_chunk(n_ctx) rows
    // of n_vocab, the first one for position n_ctx/2).
    void write_chunk(const float* logits);
    // Flushes and closes; a short write (a full disk) is an error here. Also checks every chunk was written.
    void close();

private:
    void put(const void* data, size_t bytes);
    std::string path_;
    std::FILE* f_ = nullptr;
    int n_ctx_, n_vocab_, n_chunk_, written_ = 0;
    std::vector<uint16_t> rows_;
};

// Reads a file: the header and tokens at once, the rows chunk by chunk (a base file for a long text
// is many gigabytes). The constructor checks everything it can before a model runs: the magic, sane
// sizes, tokens inside the vocabulary, and the file's length against what the header promises, so a
// truncated or padded file is an error naming the file and both lengths.
class LogitsFileReader {
public:
    explicit LogitsFileReader(const std::string& path);
    ~LogitsFileReader();
    LogitsFileReader(const LogitsFileReader&) = delete;
    LogitsFileReader& operator=(const LogitsFileReader&) = delete;
    const LogitsFileHeader& header() const { return h_; }
    const std::string& path() const { return path_; }
    // The next chunk's rows (scored_per_chunk(n_ctx) x logits_row_width(n_vocab)); a row whose scale
    // or offset is not a possible one (negative, not finite, a positive log-probability) is an error
    // naming the chunk and position.
    const std::vector<uint16_t>& read_chunk();

private:
    std::string path_;
    std::FILE* f_ = nullptr;
    LogitsFileHeader h_;
    int next_chunk_ = 0;
    std::vector<uint16_t> rows_;
};

}  // namespace lumen
