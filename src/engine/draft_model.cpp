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

bool pick_draft_token(const float* logits, int n_vocab, const DraftModelParams& p, Sampler& sampler, Draft& out) {
    int32_t x;
    if (p.sample) {
        const TokenDist& q = sampler.distribution(logits);
        if (q[0].p < p.p_min) return false;
        x = sampler.draw(q);
        out.dists.push_back(q);
    } else {
        x = argmax(logits, n_vocab);
        if (p.p_min > 0.0f && top_probability(logits, n_vocab, x) < p.p_min) return false;
    }
    out.tokens.push_back(x);
    return true;
}

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
        if (!pick_draft_token(logits->data(), V, p_, sampler_, out)) break;
        const int32_t x = out.tokens.back();
        // The last drafted token is not fed: the next call feeds it if the target keeps it.
        if (i + 1 == n_max || s_.n_past() >= s_.n_ctx()) break;
        logits = &s_.eval({x});
        evals_++;
        cached_.push_back(x);
    }
}

BatchDraftModel::BatchDraftModel(const Model& m, Backend& backend, const BatchDraftOptions& o, const DraftModelParams& p)
    : m_(m), be_(backend), o_(o), p_(p), max_blocks_((o.n_ctx + kKVBlockSize - 1) / kKVBlockSize),
      pool_(int(((o.kv_tokens > 0 ? o.kv_tokens : int64_t(o.n_slots) * o.n_ctx) + kKVBlockSize - 1) / kKVBlockSize),
            kKVBlockSize),
      slots_(size_t(std::max(o.n_slots, 1))), busy_(slots_.size(), false) {
    if (!(p.p_min >= 0.0f && p.p_min <= 1.0f)) fail("--draft-p-min ", p.p_min, ": want a probability in [0, 1]");
    if (o.n_ctx < 1 || o.n_batch < 1) fail("draft model: bad sizes (context ", o.n_ctx, ", batch ", o.n_batch, ")");
    kv_.init(m_, be_, pool_.n_blocks(), kKVBlockSize, o.cache_type);
    for (size_t i = 0; i < slots_.size(); i++) start(int(i), SamplingParams{0.0f});
}

// The backend lives on: it must forget the graphs (a GPU keeps captures of them).
BatchDraftModel::~BatchDraftModel() {
    for (auto& [shape, c] : graphs_) be_.release(c.fg->g);
}

void BatchDraftModel::start(int slot, const SamplingParams& sampling) {
    Slot& s = slots_.at(size_t(slot));
    s.params = p_;
    s.params.sample = sampling.temp > 0.0f;
    s.params.sampling = sampling;
    s.sampler = std::make_unique<Sampler>(draft_sampling(s.params), m_.hp.n_vocab);
}

void BatchDraftModel::truncate(Slot& s, int n) {
    const int bs = kKVBlockSize;
    // A published block is never written again: cut back to its start (rare: a new sequence whose
    // context leaves the old one inside a block of context tokens).
    if (n % bs != 0 && n / bs < int(s.blocks.size()) && pool_.hashed(s.blocks[size_t(n / bs)])) n -= n % bs;
    s.cached.resize(size_t(n));
    if (int(s.hashes.size()) > n / bs) s.hashes.resize(size_t(n / bs));
    while (int(s.blocks.size()) * kKVBlockSize - kKVBlockSize >= n) {
        pool_.unref(s.blocks.back());
        s.blocks.pop_back();
    }
}

void BatchDraftModel::share(Slot& s, const std::vector<int32_t>& ctx) {
    const int bs = kKVBlockSize;
    const int final_tokens = int(std::min(s.cached.size(), ctx.size()));
    for (int b = int(s.hashes.size()); (b + 1) * bs <= final_tokens; b++) {
        const uint64_t h = block_hash(b ? s.hashes[size_t(b - 1)] : 0, &s.cached[size_t(b * bs)], bs);
        s.hashes.push_back(h);
        pool_.publish(s.blocks[size_t(b)], h, &s.cached[size_t(b * bs)]);  // ignored when another has it
        pool_.set_ready(s.blocks[size_t(b)]);
    }
    // The block holding the context's last token is always computed: its logits start the draft.
    for (int b = int(s.blocks.size()); int(s.cached.size()) == b * bs && (b + 1) * bs <= int(ctx.size()) - 1; b++) {
        const uint64_t h = block_hash(b ? s.hashes[size_t(b - 1)] : 0, &ctx[size_t(b * bs)], bs);
        const int id = pool_.lookup(h, &ctx[size_t(b * bs)]);
        if (id < 0 || !pool_.ready(id)) break;
        pool_.ref(id);
        s.blocks.push_back(id);
        s.hashes.push_back(h);
        s.cached.insert(s.cached.end(), ctx.begin() + b * bs, ctx.begin() + (b + 1) * bs);
        tokens_shared_ += bs;
    }
}

bool BatchDraftModel::grow(Slot& s, int n_tokens) {
    while (int(s.blocks.size()) * kKVBlockSize < n_tokens) {
        int b = pool_.alloc();
        if (b < 0) {  // the caches slots keep for their next sequence go first
            for (size_t i = 0; i < slots_.size(); i++)
                if (!busy_[i]) truncate(slots_[i], 0);
            b = pool_.alloc();
        }
        if (b < 0) return false;
        s.blocks.push_back(b);
    }
    return true;
}

ForwardGraph& BatchDraftModel::graph_for(int n_tokens, int n_out) {
    Cached& c = graphs_[{n_tokens, n_out}];
    c.used = ++graph_clock_;
    if (c.fg) return *c.fg;
    if (graphs_.size() > 16) {  // keep the most recently used few shapes
        auto old = std::min_element(graphs_.begin(), graphs_.end(),
                                    [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
        be_.release(old->second.fg->g);
        graphs_.erase(old);
    }
    c.fg = build_forward(m_, kv_, n_tokens, n_out, int(slots_.size()), max_blocks_);
    be_.prepare(c.fg->g);
    return *c.fg;
}

void BatchDraftModel::draft(const std::vector<DraftJob>& jobs) {
    std::fill(busy_.begin(), busy_.end(), false);
    want_.assign(jobs.size(), -1);
    for (size_t j = 0; j < jobs.size(); j++) {
        const DraftJob& job = jobs[j];
        job.out->clear();
        const std::vector<int32_t>& ctx = *job.context;
        if (ctx.empty() || job.n_max <= 0 || int(ctx.size()) >= o_.n_ctx) continue;  // no room to draft
        Slot& s = slots_.at(size_t(job.slot));
        busy_[size_t(job.slot)] = true;
        // Keep the common prefix; the context's last token is read again at least: its logits start
        // the draft.
        size_t keep = 0;
        const size_t lim = std::min(s.cached.size(), ctx.size() - 1);
        while (keep < lim && s.cached[keep] == ctx[keep]) keep++;
        truncate(s, int(keep));
        share(s, ctx);
        want_[j] = int(ctx.size());
    }
    // Passes until every job is done: each reads, in job order and up to n_batch tokens, what each job
    // lacks before its next guess.
    for (;;) {
        feeds_.clear();
        int budget = o_.n_batch;
        for (size_t j = 0; j < jobs.size() && budget > 0; j++) {
            if (want_[j] < 0) continue;
            Slot& s = slots_[size_t(jobs[j].slot)];
            const int have = int(s.cached.size()), n = std::min(want_[j] - have, budget);
            if (!grow(s, have + n)) {
                want_[j] = -1;  // no room: keeps the guesses it has
                continue;
            }
            feeds_.push_back({j, have, n, have + n == want_[j]});
            budget -= n;
        }
        if (feeds_.empty()) break;
        pass(jobs);
    }
    for (const DraftJob& job : jobs) share(slots_[size_t(job.slot)], *job.context);
}

void BatchDraftModel::pass(const std::vector<DraftJob>& jobs) {
    const int bs = kKVBlockSize, V = m_.hp.n_vocab;
    int T = 0, n_out = 0;
    for (const Feed& f : feeds_) {
        T += f.n;
        n_out += f.logits;
    }
    ForwardGraph& fg = graph_for(T, std::max(n_out, 1));
    int row = 0, o = 0;
    for (const Feed& f : feeds_) {
        const DraftJob& job = jobs[f.job];
        Slot& s = slots_[size_t(job.slot)];
        const std::vector<int32_t>& ctx = *job.context;
        for (int i = 0; i < f.n; i++, row++) {
            const int pos = f.start + i;
            // Past the context: the guesses so far.
            const int32_t t = pos < int(ctx.size()) ? ctx[size_t(pos)] : job.out->tokens[size_t(pos) - ctx.size()];
            fg.tokens_buf[size_t(row)] = t;
            fg.pos_buf[size_t(row)] = pos;
            fg.seq_buf[size_t(row)] = job.slot;
            fg.rows_buf[size_t(row)] = s.blocks[size_t(pos / bs)] * bs + pos % bs;
            s.cached.push_back(t);
        }
        if (f.logits) fg.out_buf[size_t(o++)] = row - 1;
        std::copy(s.blocks.begin(), s.blocks.end(), fg.table_buf.begin() + int64_t(job.slot) * max_blocks_);
    }
    if (n_out == 0) fg.out_buf[0] = T - 1;
    be_.compute(fg.g);
    evals_++;
    if (n_out == 0) return;
    logits_.resize(size_t(n_out) * size_t(V));
    be_.read(fg.logits, logits_.data(), logits_.size() * sizeof(float));
    o = 0;
    for (const Feed& f : feeds_) {
        if (!f.logits) continue;
        const DraftJob& job = jobs[f.job];
        Slot& s = slots_[size_t(job.slot)];
        const float* l = logits_.data() + size_t(o++) * size_t(V);
        if (!pick_draft_token(l, V, s.params, *s.sampler, *job.out)) {
            want_[f.job] = -1;
            continue;
        }
        // The last guess is not read: the next call reads it if the target keeps it.
        if (int(job.out->tokens.size()) == job.n_max || want_[f.job] >= o_.n_ctx) want_[f.job] = -1;
        else want_[f.job]++;
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
