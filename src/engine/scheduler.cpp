// PLACEHOLDER implementation of the Scheduler interface: one sequence at a time on a Session, so the
// batch command can be built and tested against the interface. To be replaced by continuous batching
// over the paged KV cache (issue 5).
#include "engine/scheduler.h"

#include <chrono>
#include <deque>

#include "engine/session.h"
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

struct Scheduler::Impl {
    const Model& m;
    std::unique_ptr<Session> session;
    IsEog is_eog;
    std::deque<Request> queue;
    SchedulerStats stats;
};

Scheduler::Scheduler(const Model& m, std::unique_ptr<Backend> backend, const SchedulerOptions& o, IsEog is_eog)
    : impl_(new Impl{m, nullptr, std::move(is_eog), {}, {}}) {
    SessionOptions so;
    so.n_ctx = o.n_ctx;
    so.n_batch = o.n_batch;
    so.n_threads = o.n_threads;
    so.cache_type = o.cache_type;
    impl_->session = std::make_unique<Session>(m, std::move(backend), so);
}

Scheduler::~Scheduler() = default;

void Scheduler::submit(Request r) {
    if (r.prompt.empty()) fail("request ", r.id, ": the prompt is empty");
    for (int32_t t : r.prompt)
        if (t < 0 || t >= impl_->m.hp.n_vocab) fail("request ", r.id, ": token id ", t, " is outside the vocabulary");
    if (int(r.prompt.size()) >= n_ctx())
        fail("request ", r.id, ": the prompt has ", r.prompt.size(), " tokens, the context holds ", n_ctx());
    impl_->queue.push_back(std::move(r));
}

std::vector<Finished> Scheduler::step() {
    std::vector<Finished> done;
    if (impl_->queue.empty()) return done;
    Request r = std::move(impl_->queue.front());
    impl_->queue.pop_front();
    Session& s = *impl_->session;
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    s.truncate(0);
    Sampler sampler(r.sampling, impl_->m.hp.n_vocab);
    for (int32_t t : r.prompt) sampler.accept(t);
    const std::vector<float>* logits = &s.eval(r.prompt);
    auto t1 = clock::now();
    Finished f;
    f.id = r.id;
    f.n_prompt = int(r.prompt.size());
    f.reason = FinishReason::Length;
    while (int(f.tokens.size()) < r.n_predict) {
        int32_t next = sampler.sample(logits->data());
        if (!r.ignore_eos && impl_->is_eog(next)) { f.reason = FinishReason::Stop; break; }
        sampler.accept(next);
        f.tokens.push_back(next);
        if (int(f.tokens.size()) == r.n_predict) break;
        if (s.n_past() >= s.n_ctx()) { f.reason = FinishReason::Context; break; }
        logits = &s.eval({next});
    }
    f.prompt_s = std::chrono::duration<double>(t1 - t0).count();
    f.gen_s = std::chrono::duration<double>(clock::now() - t1).count();
    impl_->stats.steps++;
    impl_->stats.prompt_tokens += f.n_prompt;
    impl_->stats.gen_tokens += int64_t(f.tokens.size());
    done.push_back(std::move(f));
    return done;
}

bool Scheduler::idle() const { return impl_->queue.empty(); }
int Scheduler::n_ctx() const { return impl_->session->n_ctx(); }
const SchedulerStats& Scheduler::stats() const { return impl_->stats; }
Backend& Scheduler::backend() { return impl_->session->backend(); }

}  // namespace lumen
