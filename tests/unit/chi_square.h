// Pearson's chi-square goodness-of-fit test for the statistical tests of sampled output (speculative
// decoding keeps the target's distribution): the p-value from the regularised incomplete gamma function.
#pragma once
#include <algorithm>
#include <cmath>
#include <map>

namespace lumen {

// ln Gamma(a) (Lanczos, g = 7, n = 9).
inline double log_gamma(double x) {
    static const double c[9] = {0.99999999999980993,  676.5203681218851,     -1259.1392167224028,
                                771.32342877765313,   -176.61502916214059,   12.507343278686905,
                                -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7};
    if (x < 0.5) return std::log(M_PI / std::sin(M_PI * x)) - log_gamma(1 - x);
    x -= 1;
    double a = c[0];
    const double t = x + 7.5;
    for (int i = 1; i < 9; i++) a += c[i] / (x + i);
    return 0.5 * std::log(2 * M_PI) + (x + 0.5) * std::log(t) - t + std::log(a);
}

// Regularised upper incomplete gamma Q(a, x): the series for x < a + 1, else a continued fraction.
inline double gamma_q(double a, double x) {
    if (x <= 0) return 1.0;
    const double lg = a * std::log(x) - x - log_gamma(a);
    if (x < a + 1) {
        double term = 1.0 / a, sum = term;
        for (int n = 1; n < 1000; n++) {
            term *= x / (a + n);
            sum += term;
            if (std::fabs(term) < std::fabs(sum) * 1e-15) break;
        }
        return 1.0 - sum * std::exp(lg);
    }
    // Lentz's method for the continued fraction of Q.
    const double tiny = 1e-300;
    double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int i = 1; i < 1000; i++) {
        const double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (std::fabs(d) < tiny) d = tiny;
        c = b + an / c;
        if (std::fabs(c) < tiny) c = tiny;
        d = 1 / d;
        const double delta = d * c;
        h *= delta;
        if (std::fabs(delta - 1) < 1e-15) break;
    }
    return std::exp(lg) * h;
}

struct ChiSquare {
    double stat = 0;
    int df = 0;
    double p_value = 1;
};

// Goodness of fit of observed counts against expected probabilities (keys: outcomes). Outcomes
// expected fewer than 5 times are pooled into one cell; an observed outcome with no expected
// probability lands in the pool too.
template <class Key>
ChiSquare chi_square(const std::map<Key, double>& expected_p, const std::map<Key, int>& observed, int n) {
    double pool_e = 0, pool_o = 0;
    ChiSquare r;
    int cells = 0;
    for (const auto& [k, p] : expected_p) {
        const double e = p * n;
        const auto it = observed.find(k);
        const double o = it == observed.end() ? 0 : it->second;
        if (e < 5) {
            pool_e += e;
            pool_o += o;
            continue;
        }
        r.stat += (o - e) * (o - e) / e;
        cells++;
    }
    for (const auto& [k, o] : observed)
        if (!expected_p.count(k)) pool_o += o;
    if (pool_e > 0) {
        r.stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        cells++;
    } else if (pool_o > 0) {
        r.stat = 1e30;  // impossible outcomes seen
    }
    r.df = std::max(1, cells - 1);
    r.p_value = gamma_q(r.df / 2.0, r.stat / 2.0);
    return r;
}

}  // namespace lumen
