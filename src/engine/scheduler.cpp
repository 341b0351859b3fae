// Continuous batching over the paged KV cache. Each step: admit queued requests into free slots
// (sharing the cached full blocks of their prompt's prefix), then one forward pass holding the
// decode token of every running sequence and prompt chunks of the sequences still reading their
// prompt, up to n_batch tokens; then sample the sequences that produced logits and retire those
// that are done, freeing their slots and blocks for the next step.
// A request is admitted only when blocks for its prompt plus n_predict can be promised, so a
// running sequence never has to be preempted. Prefix blocks are shared read-only: the block holding
// a prompt's last token is always the sequence's own, so nothing is ever copied on write.
#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>

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
    Request req;
    Sampler sampler;
    int64_t order = 0;             // admission order: earlier prompts are prefilled first
    std::vector<int> blocks;       // block table: the block of positions [i*bs, (i+1)*bs)
    std::vector<uint64_t> hashes;  // prefix hash of each full block of the prompt
    int n_shared = 0;              // leading blocks taken from the prefix cache
    int n_past = 0;                // positions whose K/V are in the cache
    int reserved = 0;              // blocks promised to this sequence, not yet taken
    std::vector<int32_t> out;
    Clock::time_point t_admit, t_first;

    Seq(Request r, int n_vocab) : req(std::move(r)), sampler(req.sampling, n_vocab) {}
    int n_prompt() const { return int(req.prompt.size()); }
    bool prefilling() const { return n_past < n_prompt(); }
    int32_t token_at(int p) const { return p < n_prompt() ? req.prompt[size_t(p)] : out[size_t(p - n_prompt())]; }
};

// One sequence's part of a step: n tokens from position start.
struct Part {
    int slot, start, n;
    bool logits;
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
    std::vector<float> logits;

    Impl(const Model& model, std::unique_ptr<Backend> backend, const SchedulerOptions& o, IsEog eog, int ctx,
         int64_t kv_tokens)
        : m(model), be(std::move(backend)), opt(o), is_eog(std::move(eog)), n_ctx(ctx), bs(kKVBlockSize),
          max_blocks((ctx + kKVBlockSize - 1) / kKVBlockSize),
          pool(int((kv_tokens + kKVBlockSize - 1) / kKVBlockSize), kKVBlockSize) {
        kv.init(m, *be, pool.n_blocks(), bs, o.cache_type);
        slots.resize(size_t(o.n_parallel));
        stats.kv_blocks_total = pool.n_blocks();
        stats.block_size = bs;
        stats.kv_bytes_per_block = int64_t(kv.bytes_per_block());
    }

    int blocks_for(int64_t tokens) const { return int((tokens + bs - 1) / bs); }
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
        c.fg = build_forward(m, kv, n_tokens, n_out, int(slots.size()), max_blocks);
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
            for (int32_t t : s->req.prompt) s->sampler.accept(t);
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
            if (b < int(s.hashes.size())) pool.publish(id, s.hashes[size_t(b)], &s.req.prompt[size_t(b * bs)]);
        }
        stats.kv_blocks_used = pool.n_used();
        stats.kv_blocks_peak = std::max(stats.kv_blocks_peak, stats.kv_blocks_used);
        return true;
    }

    Finished retire(size_t slot, FinishReason why) {
        Seq& s = *slots[slot];
        Finished f;
        f.id = s.req.id;
        f.tokens = std::move(s.out);
        f.reason = why;
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
        return f;
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
            parts.push_back({slot, s->n_past, 1, true});
            budget--;
        }
        rr = (rr + 1) % n_slots;
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
            parts.push_back({slot, s.n_past, n, s.n_past + n == s.n_prompt()});
            budget -= n;
        }
        if (parts.empty()) return done;

        int T = 0, n_out = 0;
        for (const Part& p : parts) {
            T += p.n;
            n_out += p.logits;
        }
        // A step with no sampling still needs a logits row to be a valid graph.
        ForwardGraph& fg = graph_for(T, std::max(n_out, 1));
        int row = 0, o = 0;
        for (const Part& p : parts) {
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
            if (p.logits) fg.out_buf[size_t(o++)] = row - 1;
            std::copy(s.blocks.begin(), s.blocks.end(), fg.table_buf.begin() + int64_t(p.slot) * max_blocks);
        }
        if (n_out == 0) fg.out_buf[0] = T - 1;
        be->compute(fg.g);
        stats.steps++;
        const size_t V = size_t(m.hp.n_vocab);
        if (n_out > 0) {
            logits.resize(size_t(n_out) * V);
            be->read(fg.logits, logits.data(), logits.size() * sizeof(float));
        }

        o = 0;
        for (const Part& p : parts) {
            Seq& s = *slots[size_t(p.slot)];
            s.n_past += p.n;
            for (int b = 0; (b + 1) * bs <= s.n_past; b++) pool.set_ready(s.blocks[size_t(b)]);
            if (!p.logits) continue;
            const float* l = logits.data() + size_t(o++) * V;
            if (s.out.empty()) s.t_first = Clock::now();
            if (int(s.out.size()) >= s.req.n_predict) {  // n_predict <= 0: the prompt only
                done.push_back(retire(size_t(p.slot), FinishReason::Length));
                continue;
            }
            const int32_t next = s.sampler.sample(l);
            if (!s.req.ignore_eos && is_eog(next)) {
                done.push_back(retire(size_t(p.slot), FinishReason::Stop));
                continue;
            }
            s.sampler.accept(next);
            s.out.push_back(next);
            stats.gen_tokens++;
            if (int(s.out.size()) == s.req.n_predict) done.push_back(retire(size_t(p.slot), FinishReason::Length));
            else if (s.n_past >= n_ctx) done.push_back(retire(size_t(p.slot), FinishReason::Context));
        }
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

std::vector<Finished> Scheduler::step() { return impl_->step(); }
bool Scheduler::idle() const { return impl_->queue.empty() && !impl_->any_running(); }
int Scheduler::n_ctx() const { return impl_->n_ctx; }
const SchedulerStats& Scheduler::stats() const { return impl_->stats; }
Backend& Scheduler::backend() { return *impl_->be; }

}  // namespace lumen
