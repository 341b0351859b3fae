#include "engine/draft_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace lumen {

namespace {

// The softmax probability of the largest logit.
float top_probability(const float* logits, int n, int32_t best) {
    const float mx = logits[best];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += std::exp(double(logits[i] - mx));
    return float(1.0 / sum);
}

// A token's text for a one-line message: control bytes as \xNN.
std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    return out;
}

SamplingParams draft_sampling(const DraftModelParams& p) {
    SamplingParams s = p.sampling;
    s.repeat_penalty = 1.0f;
    s.presence_penalty = 0.0f;
    s.frequency_penalty = 0.0f;
    s.penalty_last_n = 0;
    // Its own stream of random numbers, fixed by the target's seed.
    if (s.seed != 0xFFFFFFFF) s.seed = (s.seed * 0x9E3779B97F4A7C15ull + 1) & 0xFFFFFFFEull;
    return s;
}

}  // namespace

DraftModelDrafter::DraftModelDrafter(Session& session, const DraftModelParams& p)
    : s_(session), p_(p), sampler_(draft_sampling(p), session.model().hp.n_vocab) {
    if (!(p.p_min >= 0.0f && p.p_min <= 1.0f)) fail("--draft-p-min ", p.p_min, ": want a probability in [0, 1]");
}

void DraftModelDrafter::draft(const std::vector<int32_t>& context, int n_max, Draft& out) {
    out.clear();
    if (context.empty() || n_max <= 0) return;
    if (int(context.size()) >= s_.n_ctx()) return;  // no room to draft
    // Bring the cache in step with the context: keep the common prefix, feed the rest (at least the
    // last token, whose logits start the draft).
    size_t keep = 0;
    const size_t lim = std::min(cached_.size(), context.size());
    while (keep < lim && cached_[keep] == context[keep]) keep++;
    if (keep == context.size()) keep--;
    keep = std::min(keep, size_t(s_.n_past()));
    s_.truncate(int(keep));
    cached_.resize(keep);
    const std::vector<int32_t> rest(context.begin() + long(keep), context.end());
    const std::vector<float>* logits = &s_.eval(rest);
    evals_++;
    cached_ = context;

    const int V = s_.model().hp.n_vocab;
    for (int i = 0; i < n_max; i++) {
        int32_t x;
        if (p_.sample) {
            const TokenDist& q = sampler_.distribution(logits->data());
            if (q[0].p < p_.p_min) break;
            x = sampler_.draw(q);
            out.dists.push_back(q);
        } else {
            x = argmax(logits->data(), V);
            if (p_.p_min > 0.0f && top_probability(logits->data(), V, x) < p_.p_min) break;
        }
        out.tokens.push_back(x);
        // The last drafted token is not fed: the next call feeds it if the target keeps it.
        if (i + 1 == n_max || s_.n_past() >= s_.n_ctx()) break;
        logits = &s_.eval({x});
        evals_++;
        cached_.push_back(x);
    }
}

void check_draft_compatible(const tokenizer::Tokenizer& t, const tokenizer::Tokenizer& d, const std::string& name) {
    const std::string what = "--draft-model " + name + ": ";
    const std::string tail = "; the draft model must share the target's tokenizer";
    if (t.n_vocab() != d.n_vocab())
        fail(what, "its vocabulary has ", d.n_vocab(), " tokens, the target's ", t.n_vocab(), tail);
    auto same_special = [&](const char* label, int32_t a, int32_t b) {
        if (a != b) fail(what, "its ", label, " token is ", b, ", the target's ", a, tail);
    };
    same_special("BOS", t.bos(), d.bos());
    same_special("EOS", t.eos(), d.eos());
    same_special("EOT", t.eot(), d.eot());
    // Token texts: the specials, the first and last few hundred ids, and a spread over the rest.
    const int V = t.n_vocab();
    std::vector<int32_t> ids = {t.bos(), t.eos(), t.eot()};
    for (int i = 0; i < std::min(V, 300); i++) ids.push_back(i);
    for (int i = std::max(0, V - 300); i < V; i++) ids.push_back(i);
    for (int k = 0; k < 1000; k++) ids.push_back(int32_t((int64_t(k) * 7919 * 104729) % V));
    for (int32_t id : ids) {
        if (id < 0) continue;
        if (t.token_text(id) != d.token_text(id))
            fail(what, "token ", id, " is '", printable(d.token_text(id)), "', the target's is '", printable(t.token_text(id)),
                 "'", tail);
    }
}

}  // namespace lumen
