// Continuous batching over the paged KV cache. Each step: admit queued requests into free slots
// (sharing the cached full blocks of their prompt's prefix), then one forward pass holding the
// decode token of every running sequence and prompt chunks of the sequences still reading their
// prompt, up to n_batch tokens; then sample the sequences that produced logits and retire those
// that are done, freeing their slots and blocks for the next step.
// A request is admitted only when blocks for its prompt plus n_predict can be promised, so a
// running sequence never has to be preempted. Prefix blocks are shared read-only: the block holding
// a prompt's last token is always the sequence's own, so nothing is ever copied on write.
// Guesses never reach past a sequence's n_predict, so their blocks come out of its promise; the
// blocks of rejected guesses go back to the pool and to the promise. A block is marked full (and
// so never written again) only once every position in it is kept.
#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>

#include "engine/pass_outputs.h"
#include "engine/session.h"
#include "model/forward.h"
#include "model/kv_blocks.h"
#include "model/kv_cache.h"
#include "util/error.h"

namespace lumen {

const char* finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::Stop: return "stop";
        case FinishReason::Length: return "length";
        case FinishReason::Context: return "context";
    }
    return "?";
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Seq {
    Request req;                   // its prompt moved to `toks`
    Sampler sampler;
    int n_prompt_ = 0;
    int64_t order = 0;             // admission order: earlier prompts are prefilled first
    // The prompt, then the generated tokens: the context a drafter reads. Once decoding, the last one
    // is pending (sampled, not yet in the cache).
    std::vector<int32_t> toks;
    std::vector<int> blocks;       // block table: the block of positions [i*bs, (i+1)*bs)
    std::vector<uint64_t> hashes;  // prefix hash of each full block of the prompt
    int n_shared = 0;              // leading blocks taken from the prefix cache
    int n_past = 0;                // positions whose K/V are in the cache
    int reserved = 0;              // blocks promised to this sequence, not yet taken
    int n_draft = 0;               // guesses to ask for next (adaptive)
    Draft draft;                   // this step's guesses, read after the pending token
    int target_evals = 0, rounds = 0, drafted = 0, accepted = 0;
    Clock::time_point t_admit, t_first;

    Seq(Request r, int n_vocab)
        : req(std::move(r)), sampler(req.sampling, n_vocab), n_prompt_(int(req.prompt.size())), toks(std::move(req.prompt)) {}
    int n_prompt() const { return n_prompt_; }
    int n_out() const { return int(toks.size()) - n_prompt_; }
    bool prefilling() const { return n_past < n_prompt(); }
    // Positions past the tokens are this step's guesses.
    int32_t token_at(int p) const {
        return p < int(toks.size()) ? toks[size_t(p)] : draft.tokens[size_t(p) - toks.size()];
    }
};

// One sequence's part of a step: n tokens from position start, the last n_logits of them producing
// logits; of those, the last `guesses` tokens are guesses.
struct Part {
    int slot, start, n, n_logits, guesses;
};

}  // namespace

struct Scheduler::Impl {
    const Model& m;
    std::unique_ptr<Backend> be;
    SchedulerOptions opt;
    IsEog is_eog;
    int n_ctx = 0, bs = 0, max_blocks = 0;
    KVCache kv;
    BlockPool pool;
    std::vector<std::unique_ptr<Seq>> slots;
    std::deque<Request> queue;
    int64_t n_admitted = 0;
    int reserved = 0;  // blocks promised to running sequences, over all of them
    int rr = 0;        // first slot to get a decode token when n_batch is short
    SchedulerStats stats;
    struct Cached { std::unique_ptr<ForwardGraph> fg; int64_t used = 0; };
    std::map<std::pair<int, int>, Cached> graphs;
    int64_t graph_clock = 0;
    PassOutputs outputs;  // the last step's rows, read when sampled
    bool pad = false;     // steps padded to pad_shape() sizes
    std::vector<int> first_out;  // per part of the step: its first output row
    BatchDrafter* drafter = nullptr;
    SpeculativeParams sp;
    DraftVerifier verifier;
    std::vector<DraftJob> jobs;

    Impl(const Model& model, std::unique_ptr<Backend> backend, const SchedulerOptions& o, IsEog eog, int ctx,
         int64_t kv_tokens)
        : m(model), be(std::move(backend)), opt(o), is_eog(std::move(eog)), n_ctx(ctx), bs(kKVBlockSize),
          // (at least the padding sequence's blocks)
          max_blocks(std::max((ctx + kKVBlockSize - 1) / kKVBlockSize, kPadBlocks)),
          pool(int((kv_tokens + kKVBlockSize - 1) / kKVBlockSize), kKVBlockSize), verifier(model.hp.n_vocab) {
        // Blocks beyond those the pool hands out, for the padding tokens (see pad_shape).
        kv.init(m, *be, pool.n_blocks() + kPadBlocks, bs, o.cache_type);
        pad = o.pad_shapes < 0 ? be->replays_graphs() : o.pad_shapes > 0;
        slots.resize(size_t(o.n_parallel));
        stats.kv_blocks_total = pool.n_blocks();
        stats.block_size = bs;
        stats.kv_bytes_per_block = int64_t(kv.bytes_per_block());
    }

    int blocks_for(int64_t tokens) const { return int((tokens + bs - 1) / bs); }
    // The sizes steps are padded to: powers of two up to 8 (decode products keep their few-column
    // kernels), then multiples of 16 up to 128, then of 64.
    static constexpr int kPadMax = 63;  // the most padding pad_shape adds
    static constexpr int kPadBlocks = (kPadMax + kKVBlockSize - 1) / kKVBlockSize;
    static int pad_shape(int n) {
        if (n <= 8) {
            int p = 1;
            while (p < n) p *= 2;
            return p;
        }
        const int q = n <= 128 ? 16 : 64;
        return (n + q - 1) / q * q;
    }
    bool any_running() const {
        return std::any_of(slots.begin(), slots.end(), [](const auto& s) { return s != nullptr; });
    }

    ForwardGraph& graph_for(int n_tokens, int n_out) {
        Cached& c = graphs[{n_tokens, n_out}];
        c.used = ++graph_clock;
        if (c.fg) return *c.fg;
        // Steps come in many shapes (decode count, chunk length): keep the most recently used few.
        if (graphs.size() > 16) {
            auto old = std::min_element(graphs.begin(), graphs.end(),
                                        [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
            be->release(old->second.fg->g);
            graphs.erase(old);
        }
        // Sequence column slots.size() belongs to the padding tokens.
        c.fg = build_forward(m, kv, n_tokens, n_out, int(slots.size()) + 1, max_blocks, kSampleCandidates);
        be->prepare(c.fg->g);
        return *c.fg;
    }

    // Moves queued requests into free slots while their blocks can be promised.
    void admit() {
        for (size_t slot = 0; slot < slots.size() && !queue.empty(); slot++) {
            if (slots[slot]) continue;
            const Request& r = queue.front();
            const int P = int(r.prompt.size());
            auto s = std::make_unique<Seq>(r, m.hp.n_vocab);
            // Full prompt blocks, and those of them found in the prefix cache. The block holding
            // the last prompt token is recomputed even when cached: its logits are needed, and a
            // sequence never writes into a block it shares.
            uint64_t h = 0;
            for (int b = 0; (b + 1) * bs <= P; b++) s->hashes.push_back(h = block_hash(h, &r.prompt[size_t(b * bs)], bs));
            std::vector<int> found;
            for (int b = 0; (b + 1) * bs <= P - 1; b++) {
                const int id = pool.lookup(s->hashes[size_t(b)], &r.prompt[size_t(b * bs)]);
                if (id < 0) break;
                found.push_back(id);
            }
            const int newly_used = int(std::count_if(found.begin(), found.end(), [&](int b) { return pool.refcount(b) == 0; }));
            const int avail = pool.n_free() - newly_used - reserved;
            int need = blocks_for(std::min<int64_t>(int64_t(P) + std::max(r.n_predict, 0), n_ctx)) - int(found.size());
            if (need > avail) {
                if (any_running()) return;  // wait for blocks to come back
                need = avail;               // alone and still short: runs until its blocks run out
            }
            for (int b : found) pool.ref(b);
            s->blocks = found;
            s->n_shared = int(found.size());
            s->n_past = s->n_shared * bs;
            s->reserved = need;
            reserved += need;
            // The prompt's blocks now, so that requests admitted after this one (in this very step,
            // say K samples of one prompt) find its full blocks and wait for them to be computed.
            grow(*s, s->n_past, P - s->n_past);
            s->order = n_admitted++;
            s->t_admit = Clock::now();
            s->n_draft = sp.draft_max;
            for (int32_t t : s->toks) s->sampler.accept(t);
            if (drafter) drafter->start(int(slot), s->req.sampling);
            stats.prompt_tokens += P;
            stats.prompt_tokens_cached += s->n_past;
            queue.pop_front();
            slots[slot] = std::move(s);
        }
    }

    // A sequence may read a shared block only once whoever computes it has finished.
    bool shared_ready(const Seq& s) const {
        for (int i = 0; i < s.n_shared; i++)
            if (!pool.ready(s.blocks[size_t(i)])) return false;
        return true;
    }

    // Takes the blocks for positions [start, start + n); false when the pool has none left.
    bool grow(Seq& s, int start, int n) {
        for (int b = int(s.blocks.size()); b * bs < start + n; b++) {
            if (s.reserved == 0 && pool.n_free() - reserved <= 0) return false;
            const int id = pool.alloc();
            if (id < 0) return false;
            if (s.reserved > 0) {
                s.reserved--;
                reserved--;
            }
            s.blocks.push_back(id);
            if (b < int(s.hashes.size())) pool.publish(id, s.hashes[size_t(b)], &s.toks[size_t(b * bs)]);
        }
        stats.kv_blocks_used = pool.n_used();
        stats.kv_blocks_peak = std::max(stats.kv_blocks_peak, stats.kv_blocks_used);
        return true;
    }

    Finished retire(size_t slot, FinishReason why) {
        Seq& s = *slots[slot];
        Finished f;
        f.id = s.req.id;
        f.tokens.assign(s.toks.begin() + s.n_prompt(), s.toks.end());
        f.reason = why;
        f.target_evals = s.target_evals;
        f.rounds = s.rounds;
        f.drafted = s.drafted;
        f.accepted = s.accepted;
        f.n_prompt = s.n_prompt();
        f.n_prompt_cached = s.n_shared * bs;
        const auto now = Clock::now();
        if (s.t_first == Clock::time_point{}) s.t_first = now;
        f.prompt_s = seconds(s.t_admit, s.t_first);
        f.gen_s = seconds(s.t_first, now);
        // Last block first: the cache then evicts a prefix's tail before its head.
        for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) pool.unref(*it);
        reserved -= s.reserved;
        stats.kv_blocks_used = pool.n_used();
        slots[slot].reset();
        if (drafter) drafter->finish(int(slot));
        return f;
    }

    // Blocks whose every position is kept are full: shareable, and never written again.
    void mark_ready(const Seq& s) {
        for (int b = 0; (b + 1) * bs <= s.n_past; b++) pool.set_ready(s.blocks[size_t(b)]);
    }

    // Forgets rejected guesses: blocks past the sequence's length go back to the pool and are promised
    // to it again, so what admission sees as free is what it was before the guesses. Shared blocks all
    // lie before the prompt's last token, which is never rolled back.
    void release_tail(Seq& s) {
        const int keep = blocks_for(s.n_past);
        while (int(s.blocks.size()) > keep) {
            if (int(s.blocks.size()) <= s.n_shared) fail("KV cache: rollback would release shared block ", s.blocks.back());
            pool.unref(s.blocks.back());
            s.blocks.pop_back();
            s.reserved++;
            reserved++;
        }
        stats.kv_blocks_used = pool.n_used();
    }

    // Asks the drafter for guesses to follow the pending token of each decoding sequence in `parts`:
    // as many as the step's budget, the context, the sequence's token budget and its blocks allow.
    void add_guesses(std::vector<Part>& parts, int& budget) {
        jobs.clear();
        std::vector<size_t> of_job;
        int left = budget;
        for (size_t i = 0; i < parts.size() && left > 0; i++) {
            Seq& s = *slots[size_t(parts[i].slot)];
            s.draft.clear();
            // The cache must hold the pending token and the guesses; guesses past the token budget would
            // be wasted (the step's own sampled token is the last one handed out).
            const int n_max = std::min({s.n_draft, n_ctx - s.n_past - 1, s.req.n_predict - s.n_out() - 1, left});
            if (n_max < std::max(1, sp.draft_min)) continue;
            jobs.push_back({parts[i].slot, &s.toks, n_max, &s.draft});
            of_job.push_back(i);
            left -= n_max;
        }
        if (jobs.empty()) return;
        const auto t0 = Clock::now();
        drafter->draft(jobs);
        stats.draft_s += seconds(t0, Clock::now());
        const int V = m.hp.n_vocab;
        for (size_t j = 0; j < jobs.size(); j++) {
            Part& p = parts[of_job[j]];
            Seq& s = *slots[size_t(p.slot)];
            fit_draft(s.draft, jobs[j].n_max, sp.draft_min, V);
            // A sequence admitted short of blocks guesses only into the blocks it can get.
            if (!s.draft.tokens.empty() && !grow(s, s.n_past, 1 + int(s.draft.tokens.size())))
                fit_draft(s.draft, int(s.blocks.size()) * bs - s.n_past - 1, sp.draft_min, V);
            p.guesses = int(s.draft.tokens.size());
            p.n = p.n_logits = 1 + p.guesses;
            budget -= p.guesses;
        }
    }

    // Hands a sampled or kept token to the sequence; returns why it ends with it, if it does.
    std::optional<FinishReason> take(Seq& s, int32_t tok) {
        if (!s.req.ignore_eos && is_eog(tok)) return FinishReason::Stop;
        s.sampler.accept(tok);
        s.toks.push_back(tok);
        stats.gen_tokens++;
        if (s.n_out() == s.req.n_predict) return FinishReason::Length;
        return std::nullopt;
    }

    // After the pass: the part's tokens are in the cache; with logits, its sequence verifies its
    // guesses in order (row j: the target's logits after the pending token and guesses < j), keeps
    // those accepted plus one token sampled from the target (a replacement or a bonus), and forgets
    // the rest.
    void finish_part(const Part& p, int first_row, std::vector<Finished>& done) {
        Seq& s = *slots[size_t(p.slot)];
        const int k = p.guesses;
        s.n_past = p.start + p.n - k;
        mark_ready(s);
        if (p.n_logits == 0) return;
        if (s.n_out() == 0) s.t_first = Clock::now();
        if (s.n_out() >= s.req.n_predict) {  // n_predict <= 0: the prompt only
            done.push_back(retire(size_t(p.slot), FinishReason::Length));
            return;
        }
        if (p.start >= s.n_prompt()) {  // as the Generator counts: passes after the prompt's
            s.target_evals++;
            stats.target_evals++;
        }
        if (k > 0) {
            s.rounds++;
            s.drafted += k;
            stats.rounds++;
            stats.drafted += k;
        }
        std::optional<FinishReason> end;
        int j = 0;
        int32_t next = -1;
        for (; j < k; j++) {
            const Verdict v = check_guess(outputs, first_row + j, s.draft, size_t(j), s.sampler, verifier);
            if (!v.accepted) {
                next = v.token;
                break;
            }
            s.accepted++;
            stats.accepted++;
            s.n_past++;  // its K/V, computed in this pass, are kept
            if ((end = take(s, v.token))) break;
        }
        if (!end) {
            if (j == k) next = s.sampler.sample(outputs, first_row + k);
            end = take(s, next);
            if (!end && s.n_past >= n_ctx) end = FinishReason::Context;
        }
        if (k > 0) s.n_draft = next_draft_length(sp, s.n_draft, k, j);
        mark_ready(s);
        if (end) done.push_back(retire(size_t(p.slot), *end));
        else release_tail(s);
    }

    std::vector<Finished> step() {
        std::vector<Finished> done;
        admit();
        // Plan: decode tokens first (a running sequence never waits), then prompt chunks, oldest first.
        std::vector<Part> parts;
        int budget = std::max(opt.n_batch, 1);
        const int n_slots = int(slots.size());
        for (int k = 0; k < n_slots && budget > 0; k++) {
            const int slot = (rr + k) % n_slots;
            Seq* s = slots[size_t(slot)].get();
            if (!s || s->prefilling()) continue;
            if (!grow(*s, s->n_past, 1)) {
                done.push_back(retire(size_t(slot), FinishReason::Context));
                continue;
            }
            parts.push_back({slot, s->n_past, 1, 1, 0});
            budget--;
        }
        rr = (rr + 1) % n_slots;
        if (drafter && budget > 0) add_guesses(parts, budget);
        std::vector<int> prefill;
        for (int slot = 0; slot < n_slots; slot++)
            if (slots[size_t(slot)] && slots[size_t(slot)]->prefilling()) prefill.push_back(slot);
        std::sort(prefill.begin(), prefill.end(), [&](int a, int b) { return slots[size_t(a)]->order < slots[size_t(b)]->order; });
        for (int slot : prefill) {
            if (budget == 0) break;
            Seq& s = *slots[size_t(slot)];
            if (!shared_ready(s)) continue;
            const int n = std::min(budget, s.n_prompt() - s.n_past);
            if (!grow(s, s.n_past, n)) {
                done.push_back(retire(size_t(slot), FinishReason::Context));
                continue;
            }
            parts.push_back({slot, s.n_past, n, s.n_past + n == s.n_prompt() ? 1 : 0, 0});
            budget -= n;
        }
        if (parts.empty()) return done;

        int T = 0, n_out = 0;
        for (const Part& p : parts) {
            T += p.n;
            n_out += p.n_logits;
        }
        // A step with no sampling still needs a logits row to be a valid graph.
        const int T_run = pad ? pad_shape(T) : T, out_run = pad ? pad_shape(std::max(n_out, 1)) : std::max(n_out, 1);
        ForwardGraph& fg = graph_for(T_run, out_run);
        // A graph with an output per token gives token i's in row i (out_ids unused); otherwise the
        // outputs are the rows out_ids lists, each part's in turn.
        const bool every_token = out_run == T_run;
        first_out.clear();
        int row = 0, o = 0;
        for (const Part& p : parts) {
            first_out.push_back(every_token ? row + p.n - p.n_logits : o);
            const Seq& s = *slots[size_t(p.slot)];
            for (int i = 0; i < p.n; i++, row++) {
                const int pos = p.start + i, block = s.blocks[size_t(pos / bs)];
                // A full block is never written again; sharers only ever read full blocks.
                if (pool.ready(block)) fail("KV cache: position ", pos, " would overwrite full block ", block);
                fg.tokens_buf[size_t(row)] = s.token_at(pos);
                fg.pos_buf[size_t(row)] = pos;
                fg.seq_buf[size_t(row)] = p.slot;
                fg.rows_buf[size_t(row)] = block * bs + pos % bs;
            }
            for (int i = p.n - p.n_logits; i < p.n; i++) fg.out_buf[size_t(o++)] = row - p.n + i;
            std::copy(s.blocks.begin(), s.blocks.end(), fg.table_buf.begin() + int64_t(p.slot) * max_blocks);
        }
        if (n_out == 0) fg.out_buf[0] = T - 1;
        // Padding tokens: a sequence of their own (token 0 at positions 0, 1, ...) in the blocks kept
        // for them, so they read and write nothing of the real ones; their outputs are never read.
        const int pad_seq = int(slots.size());
        for (int b = 0; b < kPadBlocks; b++)
            fg.table_buf[size_t(pad_seq) * size_t(max_blocks) + size_t(b)] = pool.n_blocks() + b;
        for (int r = T; r < T_run; r++) {
            fg.tokens_buf[size_t(r)] = 0;
            fg.pos_buf[size_t(r)] = r - T;
            fg.seq_buf[size_t(r)] = pad_seq;
            fg.rows_buf[size_t(r)] = pool.n_blocks() * bs + (r - T);
        }
        for (int i = std::max(n_out, 1); i < out_run; i++) fg.out_buf[size_t(i)] = T_run - 1;
        be->compute(fg.g);
        stats.steps++;
        outputs.reset(*be, fg, m.hp.n_vocab);
        for (size_t i = 0; i < parts.size(); i++) finish_part(parts[i], first_out[i], done);
        return done;
    }
};

Scheduler::Scheduler(const Model& m, std::unique_ptr<Backend> backend, const SchedulerOptions& o, IsEog is_eog) {
    if (o.n_parallel < 1) fail("-np ", o.n_parallel, ": at least one sequence");
    if (o.n_batch < 1) fail("-b ", o.n_batch, ": the batch size must be at least 1");
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : default_context(m);
    if (n_ctx < 8) fail("-c ", n_ctx, ": the context must hold at least 8 tokens");
    if (n_ctx > (1 << 22)) fail("-c ", n_ctx, ": context too large");
    const int64_t kv_tokens = o.kv_tokens > 0 ? o.kv_tokens : int64_t(o.n_parallel) * n_ctx;
    if (kv_tokens > (int64_t(1) << 30)) fail("KV pool of ", kv_tokens, " tokens is too large");
    impl_.reset(new Impl(m, std::move(backend), o, std::move(is_eog), n_ctx, kv_tokens));
}

Scheduler::~Scheduler() = default;

void Scheduler::submit(Request r) {
    if (r.prompt.empty()) fail("request ", r.id, ": the prompt is empty");
    for (int32_t t : r.prompt)
        if (t < 0 || t >= impl_->m.hp.n_vocab) fail("request ", r.id, ": token id ", t, " is outside the vocabulary");
    if (int(r.prompt.size()) >= n_ctx())
        fail("request ", r.id, ": the prompt has ", r.prompt.size(), " tokens, the context holds ", n_ctx());
    if (impl_->blocks_for(int64_t(r.prompt.size()) + 1) > impl_->pool.n_blocks())
        fail("request ", r.id, ": the prompt has ", r.prompt.size(), " tokens, the KV pool holds ",
             int64_t(impl_->pool.n_blocks()) * impl_->bs);
    impl_->queue.push_back(std::move(r));
}

void Scheduler::set_drafter(BatchDrafter* drafter, const SpeculativeParams& p) {
    if (drafter) check_speculative_params(p);
    impl_->drafter = drafter;
    impl_->sp = p;
    impl_->verifier = DraftVerifier(impl_->m.hp.n_vocab, p.rule);
}

std::vector<Finished> Scheduler::step() { return impl_->step(); }
bool Scheduler::idle() const { return impl_->queue.empty() && !impl_->any_running(); }
int Scheduler::n_ctx() const { return impl_->n_ctx; }
const SchedulerStats& Scheduler::stats() const { return impl_->stats; }
Backend& Scheduler::backend() { return *impl_->be; }

}  // namespace lumen
