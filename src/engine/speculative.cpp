#include "engine/speculative.h"

#include <algorithm>

#include "util/error.h"

namespace lumen {

void check_speculative_params(const SpeculativeParams& p) {
    if (p.draft_max < 1) fail("--draft-max ", p.draft_max, ": must be at least 1");
    if (p.draft_min < 0 || p.draft_min > p.draft_max)
        fail("--draft-min ", p.draft_min, ": must be between 0 and --draft-max (", p.draft_max, ")");
}

void fit_draft(Draft& d, int n_max, int draft_min, int n_vocab) {
    size_t k = 0;
    while (k < d.tokens.size() && int(k) < n_max && d.tokens[k] >= 0 && d.tokens[k] < n_vocab) k++;
    if (!d.dists.empty() && d.dists.size() < k) k = d.dists.size();
    if (int(k) < draft_min) k = 0;
    d.tokens.resize(k);
    if (!d.dists.empty()) d.dists.resize(k);
}

int next_draft_length(const SpeculativeParams& p, int n_draft, int drafted, int accepted) {
    if (!p.adaptive) return n_draft;
    n_draft = accepted == drafted ? std::min(p.draft_max, std::max(n_draft, 2 * drafted)) : accepted + 1;
    return std::max({n_draft, p.draft_min, 1});
}

Verdict check_guess(OutputRows& out, int row, const Draft& d, size_t j, Sampler& sampler, DraftVerifier& v) {
    const int32_t x = d.tokens[j];
    if (sampler.greedy()) {
        const int32_t y = sampler.sample(out, row);
        return {y == x, y};
    }
    return v.verify(sampler.distribution(out, row), x, d.dists.empty() ? nullptr : &d.dists[j], sampler);
}

DraftVerifier::DraftVerifier(int n_vocab, AcceptRule rule) : rule_(rule), q_(size_t(std::max(n_vocab, 1)), 0.0f) {}

Verdict DraftVerifier::verify(const TokenDist& p, int32_t x, const TokenDist* q, Sampler& rng) {
    if (p.empty()) fail("speculative verification: empty target distribution");
    if (x < 0 || size_t(x) >= q_.size()) return {false, rng.draw(p)};
    // Dense q over the ids it covers.
    if (q) {
        for (const TokenProb& c : *q)
            if (c.id >= 0 && size_t(c.id) < q_.size()) q_[size_t(c.id)] = c.p;
    } else {
        q_[size_t(x)] = 1.0f;
    }
    float px = 0.0f;
    for (const TokenProb& c : p)
        if (c.id == x) { px = c.p; break; }
    const float qx = q_[size_t(x)];

    Verdict v{false, x};
    // Keep x with probability min(1, p(x)/q(x)); u < p/q written as u*q < p (q(x) > 0 since x was drawn).
    const double u = rng.uniform();
    if (qx > 0.0f && u * double(qx) < double(px)) {
        v.accepted = true;
    } else if (rule_ == AcceptRule::BrokenResample) {
        v.token = rng.draw(p);
    } else {
        // Residual max(0, p - q), drawn without building it: two passes over p's candidates.
        double total = 0;
        for (const TokenProb& c : p) total += std::max(0.0f, c.p - q_[size_t(c.id)]);
        if (total <= 0) {
            v.token = rng.draw(p);  // p == q up to rounding: rejection had (almost) no probability
        } else {
            const double r = rng.uniform() * total;
            double cum = 0;
            v.token = -1;
            for (const TokenProb& c : p) {
                const float m = std::max(0.0f, c.p - q_[size_t(c.id)]);
                if (m <= 0.0f) continue;
                cum += m;
                v.token = c.id;
                if (r < cum) break;
            }
        }
    }
    // Clear the scratch.
    if (q) {
        for (const TokenProb& c : *q)
            if (c.id >= 0 && size_t(c.id) < q_.size()) q_[size_t(c.id)] = 0.0f;
    } else {
        q_[size_t(x)] = 0.0f;
    }
    return v;
}

}  // namespace lumen
