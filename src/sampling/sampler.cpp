#include "sampling/sampler.h"

#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace lumen {

int32_t argmax(const float* logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

Sampler::Sampler(const SamplingParams& p, int n_vocab) : p_(p), n_vocab_(n_vocab) {
    seed_ = p.seed == 0xFFFFFFFF ? std::random_device{}() : p.seed;
    rng_.seed(seed_);
}

void Sampler::reset() {
    recent_.clear();
    rng_.seed(seed_);
}

void Sampler::accept(int32_t token) {
    if (p_.penalty_last_n <= 0) return;
    recent_.push_back(token);
    while (int(recent_.size()) > p_.penalty_last_n) recent_.pop_front();
}

bool Sampler::penalise() const {
    return !recent_.empty() &&
           (p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f);
}

void Sampler::apply_penalties() {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : recent_) counts[t]++;
    for (const auto& [id, n] : counts) {
        if (id < 0 || id >= n_vocab_) continue;
        float& l = cand_[size_t(id)].logit;
        l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
        l -= float(n) * p_.frequency_penalty + p_.presence_penalty;
    }
}

double Sampler::uniform() {
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    return uni(rng_);
}

int32_t Sampler::draw(const TokenDist& d) {
    const double r = uniform();
    double cum = 0;
    for (const TokenProb& c : d) {
        cum += c.p;
        if (r < cum) return c.id;
    }
    return d.back().id;
}

int32_t Sampler::sample(const float* logits) {
    if (p_.temp <= 0.0f && !penalise()) return argmax(logits, n_vocab_);
    const TokenDist& d = distribution(logits);
    return p_.temp <= 0.0f ? d[0].id : draw(d);
}

const TokenDist& Sampler::distribution(const float* logits) {
    const bool pen = penalise();
    dist_.clear();
    if (p_.temp <= 0.0f && !pen) {
        dist_.push_back({argmax(logits, n_vocab_), 1.0f});
        return dist_;
    }
    cand_.resize(size_t(n_vocab_));
    for (int i = 0; i < n_vocab_; i++) cand_[size_t(i)] = {i, logits[i], 0.0f};
    if (pen) apply_penalties();
    if (p_.temp <= 0.0f) {
        const int32_t best = std::max_element(cand_.begin(), cand_.end(), [](const Cand& a, const Cand& b) {
                                 return a.logit < b.logit || (a.logit == b.logit && a.id > b.id);
                             })->id;
        dist_.push_back({best, 1.0f});
        return dist_;
    }

    return finish(cand_.size());
}

bool Sampler::exact_from(int k) const {
    if (penalise() || k < 1) return false;
    return p_.temp <= 0.0f || (p_.top_k > 0 && p_.top_k <= k);
}

int32_t Sampler::sample(const Candidates& c) {
    if (!exact_from(c.k)) fail("sampler: ", c.k, " candidates cannot stand for the whole row");
    if (p_.temp <= 0.0f) return c.ids[0];
    return draw(distribution(c));
}

const TokenDist& Sampler::distribution(const Candidates& c) {
    if (!exact_from(c.k)) fail("sampler: ", c.k, " candidates cannot stand for the whole row");
    dist_.clear();
    if (p_.temp <= 0.0f) {
        dist_.push_back({c.ids[0], 1.0f});
        return dist_;
    }
    cand_.resize(size_t(c.k));
    for (int i = 0; i < c.k; i++) cand_[size_t(i)] = {c.ids[i], c.logits[i], 0.0f};
    return finish(cand_.size());
}

int32_t Sampler::sample(OutputRows& out, int row) {
    const Candidates c = out.candidates(row);
    return exact_from(c.k) ? sample(c) : sample(out.logits(row));
}

const TokenDist& Sampler::distribution(OutputRows& out, int row) {
    const Candidates c = out.candidates(row);
    return exact_from(c.k) ? distribution(c) : distribution(out.logits(row));
}

// top-k (a partial sort), softmax, top-p, min-p, temperature over the first n of cand_.
const TokenDist& Sampler::finish(size_t n) {
    auto by_logit = [](const Cand& a, const Cand& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
    if (p_.top_k > 0 && size_t(p_.top_k) < n) {
        std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
        n = size_t(p_.top_k);
    } else {
        std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    auto softmax = [&](float temp) {
        const float mx = cand_[0].logit;
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += cand_[i].p = std::exp((cand_[i].logit - mx) / temp);
        for (size_t i = 0; i < n; i++) cand_[i].p = float(cand_[i].p / sum);
    };
    softmax(1.0f);
    if (p_.top_p < 1.0f) {
        double cum = 0;
        size_t keep = n;
        for (size_t i = 0; i < n; i++) {
            cum += cand_[i].p;
            if (cum >= p_.top_p) { keep = i + 1; break; }
        }
        n = std::max<size_t>(1, keep);
    }
    if (p_.min_p > 0.0f) {
        const float floor = cand_[0].p * p_.min_p;
        size_t keep = 1;
        while (keep < n && cand_[keep].p >= floor) keep++;
        n = keep;
    }
    softmax(p_.temp);
    dist_.reserve(n);
    for (size_t i = 0; i < n; i++) dist_.push_back({cand_[i].id, cand_[i].p});
    return dist_;
}

}  // namespace lumen
