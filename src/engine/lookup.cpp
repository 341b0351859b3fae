#include "engine/lookup.h"

#include "util/error.h"

namespace lumen {

void lookup_continuation(const std::vector<int32_t>& ctx, const LookupParams& p, int n_max, std::vector<int32_t>& out) {
    out.clear();
    const long L = long(ctx.size());
    if (n_max <= 0 || L < 2 || p.ngram_min < 1) return;
    const long max_n = std::min<long>(p.ngram_max, L - 1);
    // An earlier match ends at e (e < L-1, so that ctx[e+1] follows it): the length of the common
    // suffix of ctx[..e] and ctx[..L-1], capped at max_n. Scanning e downwards, the first longest wins.
    long best_len = 0, best_end = -1;
    const int32_t last = ctx[size_t(L - 1)];
    for (long e = L - 2; e >= 0; e--) {
        if (ctx[size_t(e)] != last) continue;
        long n = 1;
        while (n < max_n && e - n >= 0 && ctx[size_t(e - n)] == ctx[size_t(L - 1 - n)]) n++;
        if (n > best_len) {
            best_len = n;
            best_end = e;
            if (n == max_n) break;
        }
    }
    if (best_len < p.ngram_min) return;
    // Copy what followed; indices past the context read the draft itself.
    for (long i = best_end + 1; long(out.size()) < n_max; i++)
        out.push_back(i < L ? ctx[size_t(i)] : out[size_t(i - L)]);
}

LookupDrafter::LookupDrafter(const LookupParams& p) : p_(p) {
    if (p.ngram_min < 1) fail("--lookup-ngram-min ", p.ngram_min, ": must be at least 1");
    if (p.ngram_max < p.ngram_min)
        fail("--lookup-ngram-max ", p.ngram_max, ": must be at least --lookup-ngram-min (", p.ngram_min, ")");
}

void LookupDrafter::draft(const std::vector<int32_t>& context, int n_max, Draft& out) {
    out.clear();
    lookup_continuation(context, p_, n_max, out.tokens);
}

}  // namespace lumen
