// The statistics of llama.cpp's llama-perplexity --kl-divergence: a model Q against a base model
// whose log-probabilities were stored in a logits file (engine/logits_file.h), position by position.
// The definitions, the float/double arithmetic and the wording of the report are llama.cpp's, so the
// figures of the two tools compare:
//   - PPL(Q), PPL(base): e^(mean -log p(next token)), the base's from its stored (compressed) row;
//   - KLD = sum over the vocabulary of p_base (ln p_base - ln p_Q), over the entries with
//     ln p_base > -16 (the compressed row holds nothing finer below that);
//   - Δp = p_Q(next token) - p_base(next token); "same top" = the two rows' argmax agree;
//   - uncertainties are standard errors of the mean (none below 11 positions).
// One figure is ours: ln(n_vocab) - entropy(base), in nats, over the same entries as the KLD: 0
// for a uniform base distribution, growing as the base gets sure of its next token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lumen {

// A figure and its uncertainty.
struct Estimate {
    double value = 0, error = 0;
};

// Everything the final report prints.
struct KldReport {
    size_t count = 0;
    Estimate ppl, ppl_base, log_ppl_ratio, ppl_ratio, ppl_diff;
    double log_ppl_cor = 0;
    Estimate kld;
    double kld_max = 0, kld_median = 0, kld_min = 0;
    std::vector<std::pair<double, double>> kld_percentiles;  // (fraction, value), from 99.9% down to 0.1%
    Estimate p_diff;
    double p_diff_max = 0, p_diff_median = 0, p_diff_min = 0;
    std::vector<std::pair<double, double>> p_diff_percentiles;
    Estimate p_diff_rms, same_top;
    Estimate entropy_gap;  // ln(n_vocab) - entropy(base), nats
};

class KldStats {
public:
    explicit KldStats(int n_vocab) : n_vocab_(n_vocab) {}
    // One scored position: Q's logits (n_vocab), the base's stored row (logits_row_width(n_vocab)
    // uint16) and the token that follows in the text.
    void add(const float* logits, const uint16_t* base_row, int32_t next_token);
    size_t count() const { return count_; }

    // The running figures llama.cpp prints after each chunk, as one line under chunk_header().
    static std::string chunk_header();
    std::string chunk_line(int chunk) const;

    // The final statistics (llama.cpp prints them only from 100 positions on).
    KldReport report() const;

private:
    int n_vocab_;
    double sum_nll_ = 0, sum_nll2_ = 0, sum_nll_base_ = 0, sum_nll_base2_ = 0, sum_nll_nll_base_ = 0;
    double sum_kld_ = 0, sum_kld2_ = 0;
    double sum_p_diff_ = 0, sum_p_diff2_ = 0, sum_p_diff4_ = 0;
    double sum_gap_ = 0, sum_gap2_ = 0;
    float max_p_diff_ = 0;
    size_t n_same_top_ = 0, count_ = 0;
    std::vector<float> kld_values_, p_diff_values_;
};

// The report in llama.cpp's wording and layout (its three "======" blocks), plus our
// "Mean ln(vocab) - entropy(base)" line at the end.
std::string format_kld_report(const KldReport& r);

}  // namespace lumen
