#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace lumen {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

Generator::Generator(Session& target, Sampler& sampler, IsEog is_eog)
    : s_(target), sampler_(sampler), is_eog_(std::move(is_eog)), verifier_(target.model().hp.n_vocab) {}

void Generator::set_drafter(Drafter* drafter, const SpeculativeParams& p) {
    if (drafter) check_speculative_params(p);
    drafter_ = drafter;
    sp_ = p;
    verifier_ = DraftVerifier(s_.model().hp.n_vocab, p.rule);
}

GenerateEnd Generator::run(std::vector<int32_t>& context, OutputRows& first, const GenerateOptions& o,
                           const TokenSink& on_token, const MakeRoom& make_room) {
    if (int(context.size()) != s_.n_past())
        fail("generator: the context has ", context.size(), " tokens, the cache ", s_.n_past());
    stats_ = GenerateStats{};
    const auto t_start = Clock::now();
    const int V = s_.model().hp.n_vocab;
    const int n_ctx = s_.n_ctx();
    int n_draft = sp_.draft_max;  // current guess length (adaptive)
    GenerateEnd end = GenerateEnd::EndOfGeneration;

    // Hands out one token; false when generation ends with it (or, for an end-of-generation token,
    // before it).
    auto emit = [&](int32_t tok) {
        if (!o.ignore_eos && is_eog_(tok)) { end = GenerateEnd::EndOfGeneration; return false; }
        sampler_.accept(tok);
        stats_.generated++;
        on_token(tok);
        if (o.n_predict > 0 && stats_.generated >= o.n_predict) { end = GenerateEnd::Length; return false; }
        if (o.stop && o.stop->load()) { end = GenerateEnd::Interrupted; return false; }
        return true;
    };

    int32_t t = sampler_.sample(first, 0);  // the pending token: handed out next, then read
    for (;;) {
        if (!emit(t)) break;
        if (s_.n_past() >= n_ctx) {
            OutputRows* out = nullptr;
            if (make_room) {
                context.push_back(t);
                out = make_room(context);
                if (!out) context.pop_back();
            }
            if (!out) { end = GenerateEnd::ContextFull; break; }
            t = sampler_.sample(*out, 0);
            continue;
        }

        // Guess what follows t. Room: the cache must hold t and the guesses; guesses past the token
        // budget would be wasted (the step's own sampled token is the last one handed out).
        draft_.clear();
        int n_max = std::min(n_draft, n_ctx - s_.n_past() - 1);
        if (o.n_predict > 0) n_max = std::min(n_max, o.n_predict - stats_.generated - 1);
        if (drafter_ && n_max >= std::max(1, sp_.draft_min)) {
            const auto t_draft = Clock::now();
            context.push_back(t);
            drafter_->draft(context, n_max, draft_);
            context.pop_back();
            stats_.draft_seconds += since(t_draft);
            fit_draft(draft_, n_max, sp_.draft_min, V);
        }
        const int k = int(draft_.tokens.size());

        batch_.assign(1, t);
        batch_.insert(batch_.end(), draft_.tokens.begin(), draft_.tokens.end());
        s_.decode(batch_, k > 0);  // row j: the target's outputs after t and guesses < j
        stats_.target_evals++;
        context.push_back(t);
        if (k == 0) {
            t = sampler_.sample(s_, 0);
            continue;
        }

        // Verify the guesses in order.
        stats_.rounds++;
        stats_.drafted += k;
        int j = 0;
        bool done = false;
        int32_t next = -1;
        for (; j < k; j++) {
            const int32_t x = draft_.tokens[size_t(j)];
            const Verdict v = check_guess(s_, j, draft_, size_t(j), sampler_, verifier_);
            if (!v.accepted) { next = v.token; break; }
            stats_.accepted++;
            if (!emit(x)) {
                if (end != GenerateEnd::EndOfGeneration) context.push_back(x);  // read already: keep it
                done = true;
                break;
            }
            context.push_back(x);
        }
        if (!done && j == k) next = sampler_.sample(s_, k);  // the bonus token
        s_.truncate(int(context.size()));  // forget the rejected guesses
        n_draft = next_draft_length(sp_, n_draft, k, j);
        if (done) break;
        t = next;
    }
    stats_.seconds = since(t_start);
    return end;
}

}  // namespace lumen
