// The batch scheduler: many independent sequences generated together (continuous batching).
//
// Callers submit requests (a tokenized prompt, a token budget, sampling settings) and call step()
// until idle(). Each step runs one forward pass over up to n_parallel running sequences: decode
// tokens of running sequences plus chunks of waiting prompts (chunked prefill), so a long prompt
// never stalls the others. A finished sequence's slot is refilled at once from the queue.
// The KV cache is paged: fixed-size blocks, a block table per sequence, and full prefix blocks
// shared between sequences (reference counted) so K samples of one prompt, or prompts with one
// system prompt, store the common prefix once.
// With a drafter (prompt lookup, a draft model) a decoding sequence may carry guesses: its pending
// token and k guesses go into the same forward pass as everyone else's tokens (logits for all k+1),
// the sequence's own sampler verifies them as the Generator does (speculative.h), and its KV cache is
// rolled back past the first rejected guess, the blocks past its new length going back to the pool.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/speculative.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tensor/backend.h"

namespace lumen {

struct SchedulerOptions {
    int n_parallel = 8;       // sequences decoded together
    int n_ctx = 0;            // most tokens (prompt + generation) of one sequence; 0: model default
    int n_batch = 512;        // most tokens in one forward pass (decode tokens + prefill chunks)
    int n_threads = 0;        // CPU threads; 0: all cores
    DType cache_type = DType::F16;
    int64_t kv_tokens = 0;    // KV pool size in tokens over all sequences; 0: n_parallel * n_ctx
    // Round each step's token and output counts up to a few sizes (padding tokens that touch a
    // scratch KV block only), so a backend that captures a graph per shape captures few.
    // -1: when the backend replays captured graphs.
    int pad_shapes = -1;
};

struct Request {
    int64_t id = 0;                  // the caller's handle, returned in Finished
    std::vector<int32_t> prompt;     // tokenized, BOS included when the model wants one
    int n_predict = 128;             // most new tokens
    SamplingParams sampling;
    bool ignore_eos = false;
};

enum class FinishReason { Stop, Length, Context };  // end-of-generation token, n_predict, context full
const char* finish_reason_name(FinishReason r);     // "stop", "length", "context"

struct Finished {
    int64_t id = 0;
    std::vector<int32_t> tokens;     // generated tokens (no end-of-generation token)
    FinishReason reason = FinishReason::Stop;
    int n_prompt = 0;
    int n_prompt_cached = 0;         // prompt tokens found in shared prefix blocks (not recomputed)
    double prompt_s = 0, gen_s = 0;  // wall time from admission to first token, and after it
    // Speculation: forward passes that read its pending token (the first token comes from the
    // prompt's pass), of those the ones with guesses, guesses verified and kept.
    int target_evals = 0, rounds = 0, drafted = 0, accepted = 0;
};

struct SchedulerStats {
    int64_t steps = 0, prompt_tokens = 0, gen_tokens = 0;
    int64_t prompt_tokens_cached = 0;  // of prompt_tokens: found in shared blocks, not recomputed
    int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_peak = 0;
    int block_size = 0;                // tokens per KV block
    int64_t kv_bytes_per_block = 0;    // all layers, K and V
    // Speculation, summed over the sequences (see Finished); draft_s: time spent drafting.
    int64_t target_evals = 0, rounds = 0, drafted = 0, accepted = 0;
    double draft_s = 0;
};

class Scheduler {
public:
    using IsEog = std::function<bool(int32_t)>;
    Scheduler(const Model& m, std::unique_ptr<Backend> backend, const SchedulerOptions& o, IsEog is_eog);
    ~Scheduler();
    // Queues a request (validated here: empty prompts, ids outside the vocabulary and prompts
    // longer than n_ctx are lumen::Error).
    void submit(Request r);
    // Guesses for every decoding sequence from `drafter` (nullptr: none), which must outlive the
    // scheduler's use of it. Guesses count against n_batch after each sequence's pending token.
    void set_drafter(BatchDrafter* drafter, const SpeculativeParams& p);
    // One forward pass; returns the sequences that finished in it.
    std::vector<Finished> step();
    bool idle() const;
    int n_ctx() const;
    const SchedulerStats& stats() const;
    Backend& backend();

    struct Impl;
private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace lumen
