#include "engine/kl_divergence.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/logits_file.h"

namespace lumen {

namespace {

// Mean and standard error from a sum and a sum of squares; no error below 11 values, as llama.cpp.
Estimate mean_and_error(double sum, double sum2, size_t count) {
    if (count < 1) return {};
    const double mean = sum / double(count);
    const double var = sum2 / double(count) - mean * mean;
    return {mean, var > 0 && count > 10 ? std::sqrt(var / double(count - 1)) : 0.0};
}

// The covariance of the two means (zero below 10 values).
double covariance(double sum_a, double sum_b, double sum_ab, size_t count) {
    if (count < 10) return 0;
    const double n = double(count);
    return (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1);
}

// Linear interpolation between the two nearest of the sorted values, as llama.cpp.
double percentile(const std::vector<float>& sorted, float fraction) {
    if (fraction <= 0) return sorted.front();
    if (fraction >= 1) return sorted.back();
    float p = fraction * float(sorted.size() - 1);
    const size_t ip = size_t(p);
    p -= float(ip);
    return (1 - p) * sorted[ip] + p * sorted[std::min(ip + 1, sorted.size() - 1)];
}

double median(const std::vector<float>& sorted) {
    const size_t n = sorted.size();
    return n % 2 == 0 ? 0.5f * (sorted[n / 2] + sorted[n / 2 - 1]) : sorted[n / 2];
}

// The RMS of Δp from the mean of Δp² and its error (d sqrt(x) = dx / (2 sqrt(x))).
Estimate rms_of(const Estimate& mse) {
    const double rms = std::sqrt(mse.value);
    return {rms, rms > 0 ? 0.5 / rms * mse.error : 0.0};
}

// The square root of a variance that rounding may have pushed a hair below zero (llama.cpp prints
// nan there, e.g. for a model against its own base).
double root(double var) { return std::sqrt(std::max(0.0, var)); }

Estimate share(size_t hits, size_t count) {
    const double p = count ? double(hits) / double(count) : 0.0;
    return {p, count > 1 ? std::sqrt(p * (1 - p) / double(count - 1)) : 0.0};
}

}  // namespace

void KldStats::add(const float* logits, const uint16_t* base_row, int32_t next_token) {
    // The types follow llama.cpp's: per-position figures in float, sums in double.
    float max_logit = logits[0];
    int imax = 0;
    for (int i = 1; i < n_vocab_; i++)
        if (logits[i] > max_logit) {
            max_logit = logits[i];
            imax = i;
        }
    double sum_exp = 0;
    for (int i = 0; i < n_vocab_; i++) sum_exp += std::exp(logits[i] - max_logit);
    const float log_sum_exp = float(std::log(sum_exp));
    const float scale = row_scale(base_row), min_log_prob = row_min_log_prob(base_row);

    const float nll = max_logit + log_sum_exp - logits[next_token];
    const float nll_base = -stored_log_prob(base_row, scale, min_log_prob, next_token);
    sum_nll_ += nll;
    sum_nll2_ += nll * nll;
    sum_nll_base_ += nll_base;
    sum_nll_base2_ += nll_base * nll_base;
    sum_nll_nll_base_ += nll * nll_base;

    const float log_norm = max_logit + log_sum_exp;  // ln p_Q(i) = logits[i] - log_norm
    double kld = 0, entropy = 0;
    int imax_base = 0;
    float max_base = 0;
    for (int i = 0; i < n_vocab_; i++) {
        const float lp_base = stored_log_prob(base_row, scale, min_log_prob, i);
        if (i == 0 || lp_base > max_base) {
            max_base = lp_base;
            imax_base = i;
        }
        if (lp_base > -16.f) {
            const float p_base = std::exp(lp_base);
            kld += p_base * (lp_base - logits[i] + log_norm);
            entropy -= double(p_base) * double(lp_base);
        }
    }
    sum_kld_ += kld;
    sum_kld2_ += kld * kld;
    const double gap = std::log(double(n_vocab_)) - entropy;
    sum_gap_ += gap;
    sum_gap2_ += gap * gap;
    count_++;
    if (imax == imax_base) n_same_top_++;

    const float p_diff = std::exp(-nll) - std::exp(-nll_base);
    sum_p_diff_ += p_diff;
    const double p_diff2 = p_diff * p_diff;
    sum_p_diff2_ += p_diff2;
    sum_p_diff4_ += p_diff2 * p_diff2;
    max_p_diff_ = std::max(max_p_diff_, std::fabs(p_diff));
    kld_values_.push_back(float(kld));
    p_diff_values_.push_back(p_diff);
}

std::string KldStats::chunk_header() {
    return "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
           "Δp RMS            Same top p\n";
}

std::string KldStats::chunk_line(int chunk) const {
    const Estimate log_ppl = mean_and_error(sum_nll_, sum_nll2_, count_);
    const Estimate log_base = mean_and_error(sum_nll_base_, sum_nll_base2_, count_);
    const double cov = covariance(sum_nll_, sum_nll_base_, sum_nll_nll_base_, count_);
    const double ppl = std::exp(log_ppl.value);
    const double ratio_err = root(log_ppl.error * log_ppl.error + log_base.error * log_base.error - 2 * cov);
    const Estimate kld = mean_and_error(sum_kld_, sum_kld2_, count_);
    const Estimate rms = rms_of(mean_and_error(sum_p_diff2_, sum_p_diff4_, count_));
    const Estimate top = share(n_same_top_, count_);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%4d    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%    %6.3f ± %6.3f %%\n",
                  chunk, ppl, ppl * log_ppl.error, log_ppl.value - log_base.value, ratio_err, kld.value, kld.error,
                  100 * rms.value, 100 * rms.error, 100 * top.value, 100 * top.error);
    return buf;
}

KldReport KldStats::report() const {
    KldReport r;
    r.count = count_;
    if (count_ == 0) return r;
    const Estimate log_ppl = mean_and_error(sum_nll_, sum_nll2_, count_);
    const Estimate log_base = mean_and_error(sum_nll_base_, sum_nll_base2_, count_);
    const double cov = covariance(sum_nll_, sum_nll_base_, sum_nll_nll_base_, count_);
    r.ppl = {std::exp(log_ppl.value), std::exp(log_ppl.value) * log_ppl.error};
    r.ppl_base = {std::exp(log_base.value), std::exp(log_base.value) * log_base.error};
    r.log_ppl_cor = cov / (log_ppl.error * log_base.error);
    r.log_ppl_ratio = {log_ppl.value - log_base.value,
                       root(log_ppl.error * log_ppl.error + log_base.error * log_base.error - 2 * cov)};
    r.ppl_ratio = {std::exp(r.log_ppl_ratio.value), std::exp(r.log_ppl_ratio.value) * r.log_ppl_ratio.error};
    // The covariance of the two PPLs from that of their logarithms (first order).
    const double ppl_cov = r.ppl.value * r.ppl_base.value * cov;
    r.ppl_diff = {r.ppl.value - r.ppl_base.value,
                  root(r.ppl.error * r.ppl.error + r.ppl_base.error * r.ppl_base.error - 2 * ppl_cov)};

    std::vector<float> kld = kld_values_, p_diff = p_diff_values_;
    std::sort(kld.begin(), kld.end());
    std::sort(p_diff.begin(), p_diff.end());
    r.kld = mean_and_error(sum_kld_, sum_kld2_, count_);
    r.kld_max = kld.back();
    r.kld_median = median(kld);
    r.kld_min = kld.front();
    for (float f : {0.999f, 0.990f, 0.950f, 0.900f}) r.kld_percentiles.emplace_back(f, percentile(kld, f));
    for (float f : {0.100f, 0.050f, 0.010f, 0.001f}) r.kld_percentiles.emplace_back(f, percentile(kld, f));

    r.p_diff = mean_and_error(sum_p_diff_, sum_p_diff2_, count_);
    r.p_diff_max = p_diff.back();
    r.p_diff_median = median(p_diff);
    r.p_diff_min = p_diff.front();
    for (float f : {0.999f, 0.990f, 0.950f, 0.900f, 0.750f})
        r.p_diff_percentiles.emplace_back(f, percentile(p_diff, f));
    for (float f : {0.250f, 0.100f, 0.050f, 0.010f, 0.001f})
        r.p_diff_percentiles.emplace_back(f, percentile(p_diff, f));
    r.p_diff_rms = rms_of(mean_and_error(sum_p_diff2_, sum_p_diff4_, count_));
    r.same_top = share(n_same_top_, count_);
    r.entropy_gap = mean_and_error(sum_gap_, sum_gap2_, count_);
    return r;
}

std::string format_kld_report(const KldReport& r) {
    std::string out;
    char buf[160];
    auto line = [&](const char* fmt, auto... v) {
        std::snprintf(buf, sizeof buf, fmt, v...);
        out += buf;
    };
    // The upper percentiles come before the median, the lower ones after it.
    auto percentiles = [&](const std::vector<std::pair<double, double>>& ps, bool upper, const char* fmt, double mul) {
        for (const auto& [f, v] : ps)
            if ((f > 0.5) == upper) line(fmt, 100 * f, mul * v);
    };
    out += "====== Perplexity statistics ======\n";
    line("Mean PPL(Q)                   : %10.6f ± %10.6f\n", r.ppl.value, r.ppl.error);
    line("Mean PPL(base)                : %10.6f ± %10.6f\n", r.ppl_base.value, r.ppl_base.error);
    line("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100 * r.log_ppl_cor);
    line("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", r.log_ppl_ratio.value, r.log_ppl_ratio.error);
    line("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", r.ppl_ratio.value, r.ppl_ratio.error);
    line("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", r.ppl_diff.value, r.ppl_diff.error);
    out += "\n====== KL divergence statistics ======\n";
    line("Mean    KLD: %10.6f ± %10.6f\n", r.kld.value, r.kld.error);
    line("Maximum KLD: %10.6f\n", r.kld_max);
    percentiles(r.kld_percentiles, true, "%4.1f%%   KLD: %10.6f\n", 1);
    line("Median  KLD: %10.6f\n", r.kld_median);
    percentiles(r.kld_percentiles, false, "%4.1f%%   KLD: %10.6f\n", 1);
    line("Minimum KLD: %10.6f\n", r.kld_min);
    out += "\n====== Token probability statistics ======\n";
    line("Mean    Δp: %6.3f ± %5.3f %%\n", 100 * r.p_diff.value, 100 * r.p_diff.error);
    line("Maximum Δp: %6.3f%%\n", 100 * r.p_diff_max);
    percentiles(r.p_diff_percentiles, true, "%4.1f%%   Δp: %6.3f%%\n", 100);
    line("Median  Δp: %6.3f%%\n", 100 * r.p_diff_median);
    percentiles(r.p_diff_percentiles, false, "%4.1f%%   Δp: %6.3f%%\n", 100);
    line("Minimum Δp: %6.3f%%\n", 100 * r.p_diff_min);
    line("RMS Δp    : %6.3f ± %5.3f %%\n", 100 * r.p_diff_rms.value, 100 * r.p_diff_rms.error);
    line("Same top p: %6.3f ± %5.3f %%\n", 100 * r.same_top.value, 100 * r.same_top.error);
    line("\nMean ln(vocab) - entropy(base): %10.6f ± %10.6f nats\n", r.entropy_gap.value, r.entropy_gap.error);
    return out;
}

}  // namespace lumen
