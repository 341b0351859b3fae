// Speculative decoding's drafter with a second, smaller model of the same tokenizer: it keeps its own
// cache in step with the context (reusing it by common prefix, so rolled-back drafts cost nothing to
// undo) and drafts one token at a time while it is confident enough. DraftModelDrafter serves one
// sequence (complete, chat) through a Session; BatchDraftModel serves the batch scheduler's sequences
// together through one paged cache.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/session.h"
#include "model/forward.h"
#include "model/kv_blocks.h"
#include "model/kv_cache.h"
#include "engine/speculative.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace lumen {

struct DraftModelParams {
    // Stop drafting when the draft model's most likely token has less probability than this.
    float p_min = 0.75f;
    // false: draft the argmax (a point mass). true: draw each token from the draft model's
    // distribution under `sampling` (penalties left out), and hand that distribution to the verifier.
    bool sample = false;
    SamplingParams sampling;
};

// Appends the draft model's next guess after these logits to `out` (with its distribution when
// sampling); false, adding nothing, when the model is less confident than p.p_min.
bool pick_draft_token(const float* logits, int n_vocab, const DraftModelParams& p, Sampler& sampler, Draft& out);

class DraftModelDrafter : public Drafter {
public:
    DraftModelDrafter(Session& session, const DraftModelParams& p);
    void draft(const std::vector<int32_t>& context, int n_max, Draft& out) override;
    const char* name() const override { return "draft model"; }
    // Draft-model forward passes and tokens fed so far.
    int evals() const { return evals_; }

private:
    Session& s_;
    DraftModelParams p_;
    Sampler sampler_;
    std::vector<int32_t> cached_;  // what the draft session's cache holds
    int evals_ = 0;
};

struct BatchDraftOptions {
    int n_slots = 1;        // the scheduler's sequences (-np)
    int n_ctx = 0;          // positions per sequence (the scheduler's)
    int n_batch = 512;      // most tokens per forward pass
    int64_t kv_tokens = 0;  // cache size in tokens over all slots; 0: n_slots * n_ctx
    DType cache_type = DType::F16;
};

// The draft model for the batch scheduler. Per-sequence sessions would each need a backend (a thread
// pool, an arena) and would draft one sequence at a time; instead one paged KV cache serves every
// slot, and each call drafts for all its jobs in shared forward passes: a pass reads what each
// sequence still lacks (the tokens the target kept since its last draft, then its latest guess), so
// k guesses for n sequences cost about k passes, not n*k. It runs on the target's backend: on the
// CPU one thread pool (two would spin against each other between passes), on a GPU one arena and
// stream (the draft weights are uploaded there once, like the target's).
// Memory: kv_tokens positions of the draft model's K and V (by default n_slots * n_ctx, the size of
// the target's pool; KVCache::bytes_per_block() / kKVBlockSize per position). Blocks are taken as
// sequences grow and, on the CPU, untouched pages cost nothing. Full blocks of context tokens are
// shared between slots by prefix hash as in the scheduler (samples of one prompt, a common system
// prompt are read once) and never written again; a slot keeps its cache after its sequence ends, for
// the next one's common prefix, until the pool runs short: then the caches of slots not drafting are
// dropped, and a sequence that still finds no room drafts fewer tokens (or none) this step.
class BatchDraftModel : public BatchDrafter {
public:
    // `backend` (usually the scheduler's) must outlive this.
    BatchDraftModel(const Model& m, Backend& backend, const BatchDraftOptions& o, const DraftModelParams& p);
    ~BatchDraftModel() override;
    // Drafts greedily (a point mass) when `sampling` is greedy, else samples like DraftModelDrafter.
    void start(int slot, const SamplingParams& sampling) override;
    void draft(const std::vector<DraftJob>& jobs) override;
    const char* name() const override { return "draft model"; }
    int evals() const { return evals_; }  // forward passes so far
    int blocks_used() const { return pool_.n_used(); }
    int64_t tokens_shared() const { return tokens_shared_; }  // found in other slots' blocks, not read

private:
    struct Slot {
        std::vector<int> blocks;       // block table
        std::vector<int32_t> cached;   // the tokens whose K/V the blocks hold, from position 0
        std::vector<uint64_t> hashes;  // prefix hashes of its leading full blocks of context tokens
        DraftModelParams params;
        std::unique_ptr<Sampler> sampler;
    };
    // One job's tokens in a pass: n from position start.
    struct Feed {
        size_t job;
        int start, n;
        bool logits;
    };
    void truncate(Slot& s, int n);
    // Publishes the slot's full blocks of context tokens (final: never rolled back), then, when all
    // its blocks are full, takes further full blocks of the context that other slots computed.
    void share(Slot& s, const std::vector<int32_t>& context);
    bool grow(Slot& s, int n_tokens);
    void pass(const std::vector<DraftJob>& jobs);
    ForwardGraph& graph_for(int n_tokens, int n_out);

    const Model& m_;
    Backend& be_;
    BatchDraftOptions o_;
    DraftModelParams p_;
    int max_blocks_;
    BlockPool pool_;
    KVCache kv_;
    std::vector<Slot> slots_;
    std::vector<bool> busy_;  // slots with a job in this call
    std::vector<int> want_;   // per job: the cache length its next guess needs, or -1 when done
    std::vector<Feed> feeds_;
    std::vector<float> logits_;
    struct Cached { std::unique_ptr<ForwardGraph> fg; int64_t used = 0; };
    std::map<std::pair<int, int>, Cached> graphs_;
    int64_t graph_clock_ = 0;
    int evals_ = 0;
    int64_t tokens_shared_ = 0;
};

// Throws lumen::Error (naming the draft file) unless the draft model's tokenizer is the target's:
// the same vocabulary size, BOS/EOS/EOT, and the same text for a spread of token ids.
void check_draft_compatible(const tokenizer::Tokenizer& target, const tokenizer::Tokenizer& draft,
                            const std::string& draft_name);

}  // namespace lumen
