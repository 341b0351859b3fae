#include "engine/speculative.h"

#include <algorithm>

#include "util/error.h"

namespace lumen {

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
