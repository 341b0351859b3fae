// The outcome the statistical tests of sampled output count: the first three generated tokens as one
// key, and their exact distribution under a sampler chain, read branch by branch from a Session.
#pragma once
#include <cstdint>
#include <map>
#include <vector>

#include "engine/session.h"
#include "sampling/sampler.h"

namespace lumen {

inline int64_t first_three_key(int32_t a, int32_t b, int32_t c, int n_vocab) {
    return (int64_t(a) * n_vocab + b) * n_vocab + c;
}

// Every branch of the chain `sp` (no penalties, so the sampler's state does not matter) after
// `prompt`; leaves `s` holding some branch.
inline std::map<int64_t, double> exact_first_three(Session& s, const std::vector<int32_t>& prompt,
                                                   const SamplingParams& sp, int n_vocab) {
    Sampler chain(sp, n_vocab);
    const int P = int(prompt.size());
    std::map<int64_t, double> exact;
    s.truncate(0);
    const TokenDist d1 = chain.distribution(s.eval(prompt).data());
    for (const TokenProb& a : d1) {
        s.truncate(P);
        const TokenDist d2 = chain.distribution(s.eval({a.id}).data());
        for (const TokenProb& b : d2) {
            s.truncate(P + 1);
            const TokenDist d3 = chain.distribution(s.eval({b.id}).data());
            for (const TokenProb& c : d3) exact[first_three_key(a.id, b.id, c.id, n_vocab)] += double(a.p) * b.p * c.p;
        }
    }
    return exact;
}

}  // namespace lumen
