// Turns logits into the next token. The chain, in llama.cpp's default order:
//   penalties (repetition / presence / frequency over the last N tokens) -> top-k -> top-p
//   -> min-p -> temperature -> random draw.   temperature <= 0 means greedy (argmax).
//
// distribution() exposes what the draw would pick from (the chain without the draw), so that
// speculative decoding can verify drafted tokens against exactly the distribution sample() uses:
// sample(l) == draw(distribution(l)), consuming the same random numbers.
#pragma once
#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace lumen {

struct SamplingParams {
    float temp = 0.8f;
    int top_k = 40;            // <= 0: off
    float top_p = 0.95f;       // >= 1: off
    float min_p = 0.05f;       // <= 0: off
    float repeat_penalty = 1.0f;   // 1: off
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    int penalty_last_n = 64;   // window of recent tokens the penalties look at
    uint64_t seed = 0xFFFFFFFF;    // 0xFFFFFFFF: a random seed
};

// One candidate of a token distribution.
struct TokenProb {
    int32_t id;
    float p;
};
// A sparse distribution: the candidates with non-zero probability, most likely first, summing to 1.
using TokenDist = std::vector<TokenProb>;

// The k largest logits of a row, largest first, equal logits by lower id (the graph's TopK op), so
// a GPU hands back k candidates instead of the whole vocabulary.
struct Candidates {
    const int32_t* ids = nullptr;
    const float* logits = nullptr;
    int k = 0;
};

// Where a sampler reads the output rows of a forward pass: each row's k largest logits (cheap to hand
// back from a GPU) and, only when the chain needs them, all of its logits.
class OutputRows {
public:
    virtual Candidates candidates(int row) = 0;  // k = 0: none kept
    virtual const float* logits(int row) = 0;

protected:
    ~OutputRows() = default;
};

// Rows already in memory, n_vocab floats each (no candidates).
class DenseRows final : public OutputRows {
public:
    DenseRows(const float* rows, int n_vocab) : rows_(rows), n_vocab_(n_vocab) {}
    Candidates candidates(int) override { return {}; }
    const float* logits(int row) override { return rows_ + size_t(row) * size_t(n_vocab_); }

private:
    const float* rows_;
    int n_vocab_;
};

class Sampler {
public:
    Sampler(const SamplingParams& p, int n_vocab);
    int32_t sample(const float* logits);
    // The distribution the draw picks from for these logits, after the whole chain (penalties,
    // top-k, top-p, min-p, temperature): most likely first. Greedy (temp <= 0): one candidate, the
    // token sample() returns, with p = 1. The reference stays valid until the next call.
    const TokenDist& distribution(const float* logits);
    // The same from the row's k largest logits: equal results, when exact_from(k) holds, to what the
    // full row gives (the chain then only ever looks at the top candidates).
    bool exact_from(int k) const;
    int32_t sample(const Candidates& c);
    const TokenDist& distribution(const Candidates& c);
    // Row `row` of a forward pass's outputs: from its candidates when they suffice, else its logits.
    int32_t sample(OutputRows& out, int row);
    const TokenDist& distribution(OutputRows& out, int row);
    // A random draw from a distribution (one uniform number from this sampler's generator).
    int32_t draw(const TokenDist& d);
    // A uniform number in [0, 1) from this sampler's generator.
    double uniform();
    bool greedy() const { return p_.temp <= 0.0f; }
    // Records a token of the context (prompt or generated) for the penalties.
    void accept(int32_t token);
    void reset();
    const SamplingParams& params() const { return p_; }
    uint64_t seed() const { return seed_; }
    int n_vocab() const { return n_vocab_; }

private:
    struct Cand { int32_t id; float logit; float p; };
    bool penalise() const;
    void apply_penalties();
    const TokenDist& finish(size_t n);  // the chain after the candidates are in cand_
    SamplingParams p_;
    int n_vocab_;
    uint64_t seed_;
    std::mt19937_64 rng_;
    std::deque<int32_t> recent_;
    std::vector<Cand> cand_;
    TokenDist dist_;
};

// Index of the largest logit (the lowest index among ties).
int32_t argmax(const float* logits, int n);

}  // namespace lumen
