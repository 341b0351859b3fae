#include "engine/logits_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace lumen {

namespace {

constexpr char kMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
constexpr int64_t kHeaderBytes = 8 + 3 * 4;
// Far above any real vocabulary or context; only there so that a corrupt header cannot ask for
// terabytes before the length check.
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxCtx = 1 << 24;

int64_t file_bytes(const LogitsFileHeader& h) {
    return kHeaderBytes + int64_t(h.n_chunk) * h.n_ctx * 4 +
           int64_t(h.n_chunk) * scored_per_chunk(h.n_ctx) * logits_row_width(h.n_vocab) * 2;
}

}  // namespace

int logits_row_width(int n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }

void compress_log_probs(const float* logits, int n_vocab, uint16_t* row) {
    float mx = logits[0], mn = logits[0];
    for (int i = 1; i < n_vocab; i++) {
        mx = std::max(mx, logits[i]);
        mn = std::min(mn, logits[i]);
    }
    // 16 nats below the top the probabilities no longer matter to any statistic (e^-16 ~ 1e-7),
    // and the uint16 steps stay fine: at most 16/65535 of a nat.
    mn = std::max(mn, mx - 16);
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += std::exp(logits[i] - mx);
    const float log_sum = float(std::log(sum));
    const float min_log_prob = mn - mx - log_sum;
    const float scale = (mx - mn) / 65535.f;
    std::memcpy(row, &scale, 4);
    std::memcpy(row + 2, &min_log_prob, 4);
    uint16_t* q = row + 4;
    if (scale != 0) {
        const float inv = 1 / scale;
        for (int i = 0; i < n_vocab; i++) {
            // Round to nearest, ties to even, as llama.cpp's nearest_int does; the clamp only
            // guards against a product that rounding pushed past 65535.
            q[i] = logits[i] > mn ? uint16_t(std::min(65535.f, std::nearbyint(inv * (logits[i] - mn)))) : 0;
        }
    } else {
        std::fill(q, q + n_vocab, uint16_t(0));
    }
    if (n_vocab % 2) q[n_vocab] = 0;
}

float row_scale(const uint16_t* row) {
    float v;
    std::memcpy(&v, row, 4);
    return v;
}

float row_min_log_prob(const uint16_t* row) {
    float v;
    std::memcpy(&v, row + 2, 4);
    return v;
}

LogitsFileWriter::LogitsFileWriter(const std::string& path, int n_ctx, int n_vocab, int n_chunk,
                                   const int32_t* tokens)
    : path_(path), n_ctx_(n_ctx), n_vocab_(n_vocab), n_chunk_(n_chunk) {
    if (scored_per_chunk(n_ctx) < 1) fail("--kl-divergence-base ", path, ": a context of ", n_ctx, " scores no positions");
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) fail("--kl-divergence-base ", path, ": cannot open for writing: ", std::strerror(errno));
    const int32_t head[3] = {n_ctx, n_vocab, n_chunk};
    put(kMagic, 8);
    put(head, sizeof head);
    put(tokens, size_t(n_chunk) * size_t(n_ctx) * 4);
    rows_.resize(size_t(scored_per_chunk(n_ctx)) * size_t(logits_row_width(n_vocab)));
}

LogitsFileWriter::~LogitsFileWriter() {
    if (f_) std::fclose(f_);
}

void LogitsFileWriter::put(const void* data, size_t bytes) {
    if (std::fwrite(data, 1, bytes, f_) != bytes)
        fail("--kl-divergence-base ", path_, ": write failed: ", std::strerror(errno));
}

void LogitsFileWriter::write_chunk(const float* logits) {
    if (written_ == n_chunk_) fail("--kl-divergence-base ", path_, ": more chunks than the ", n_chunk_, " announced");
    const int n_rows = scored_per_chunk(n_ctx_), width = logits_row_width(n_vocab_);
    for (int j = 0; j < n_rows; j++)
        compress_log_probs(logits + size_t(j) * size_t(n_vocab_), n_vocab_, rows_.data() + size_t(j) * size_t(width));
    put(rows_.data(), rows_.size() * 2);
    written_++;
}

void LogitsFileWriter::close() {
    if (!f_) return;
    if (written_ != n_chunk_)
        fail("--kl-divergence-base ", path_, ": ", written_, " of ", n_chunk_, " chunks written");
    const bool ok = std::fflush(f_) == 0;
    const int err = errno;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    if (!ok || !closed) fail("--kl-divergence-base ", path_, ": write failed: ", std::strerror(err));
}

LogitsFileReader::LogitsFileReader(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) fail("--kl-divergence-base ", path, ": cannot open file: ", std::strerror(errno));
    if (fseeko(f_, 0, SEEK_END) != 0) fail("--kl-divergence-base ", path, ": cannot seek (not a regular file?)");
    const int64_t size = ftello(f_);
    std::rewind(f_);
    char magic[8];
    int32_t head[3];
    if (size < kHeaderBytes || std::fread(magic, 1, 8, f_) != 8 || std::fread(head, 4, 3, f_) != 3)
        fail("--kl-divergence-base ", path, ": ", size, " bytes is too short for the header of a log-probability file");
    if (std::memcmp(magic, kMagic, 8) != 0)
        fail("--kl-divergence-base ", path, ": not a log-probability file (no \"_logits_\" magic)");
    h_.n_ctx = head[0];
    h_.n_vocab = head[1];
    h_.n_chunk = head[2];
    if (h_.n_ctx < 3 || h_.n_ctx > kMaxCtx)
        fail("--kl-divergence-base ", path, ": n_ctx ", h_.n_ctx, " in the header is not a usable context");
    if (h_.n_vocab < 1 || h_.n_vocab > kMaxVocab)
        fail("--kl-divergence-base ", path, ": n_vocab ", h_.n_vocab, " in the header is not a vocabulary size");
    if (h_.n_chunk < 1 || int64_t(h_.n_chunk) * h_.n_ctx > (int64_t(1) << 40))
        fail("--kl-divergence-base ", path, ": n_chunk ", h_.n_chunk, " in the header is not a chunk count");
    const int64_t want = file_bytes(h_);
    if (size != want)
        fail("--kl-divergence-base ", path, ": ", size, " bytes, but n_ctx ", h_.n_ctx, ", n_vocab ", h_.n_vocab,
             " and n_chunk ", h_.n_chunk, " make ", want, size < want ? " (truncated)" : " (trailing bytes)");
    h_.tokens.resize(size_t(h_.n_chunk) * size_t(h_.n_ctx));
    if (std::fread(h_.tokens.data(), 4, h_.tokens.size(), f_) != h_.tokens.size())
        fail("--kl-divergence-base ", path, ": read error in the tokens");
    for (size_t i = 0; i < h_.tokens.size(); i++)
        if (h_.tokens[i] < 0 || h_.tokens[i] >= h_.n_vocab)
            fail("--kl-divergence-base ", path, ": token ", i, " is ", h_.tokens[i], ", outside the vocabulary of ",
                 h_.n_vocab);
    rows_.resize(size_t(scored_per_chunk(h_.n_ctx)) * size_t(logits_row_width(h_.n_vocab)));
}

LogitsFileReader::~LogitsFileReader() {
    if (f_) std::fclose(f_);
}

const std::vector<uint16_t>& LogitsFileReader::read_chunk() {
    const int c = next_chunk_;
    if (c >= h_.n_chunk) fail("--kl-divergence-base ", path_, ": no chunk ", c + 1, " (the file has ", h_.n_chunk, ")");
    // The length was checked at open, so a short read here means the file changed under us.
    if (std::fread(rows_.data(), 2, rows_.size(), f_) != rows_.size())
        fail("--kl-divergence-base ", path_, ": read error in the log-probabilities of chunk ", c + 1);
    const int width = logits_row_width(h_.n_vocab), first = scored_first(h_.n_ctx);
    for (int j = 0; j < scored_per_chunk(h_.n_ctx); j++) {
        const uint16_t* row = rows_.data() + size_t(j) * size_t(width);
        const float scale = row_scale(row), lo = row_min_log_prob(row);
        // A real row has 0 <= scale <= 16/65535 (the kept range is at most 16 nats) and a lowest
        // log-probability at or below 0; anything else is not llama.cpp's compression.
        if (!(scale >= 0 && scale <= 16.001f / 65535.f) || !(lo <= 0 && lo > -1e6f))
            fail("--kl-divergence-base ", path_, ": chunk ", c + 1, ", position ", first + j, ": scale ", scale,
                 " and minimum log-probability ", lo, " are not a compressed row (corrupt file?)");
    }
    next_chunk_++;
    return rows_;
}

}  // namespace lumen
