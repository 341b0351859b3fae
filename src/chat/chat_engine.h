// One chat over one session: formats the conversation with its template, keeps the KV cache across
// turns (each turn evaluates only the tokens the cache does not already hold), samples and streams
// the reply, and forgets the oldest turns when the context fills.
//
// The cache is reused by prefix: the whole conversation is formatted and tokenized each turn, its
// common token prefix with what the cache holds is kept, and the rest is evaluated. So edits anywhere
// (a new system prompt, /load, a reply that re-tokenizes differently) cost only the changed tail.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/conversation.h"
#include "chat/template.h"
#include "engine/generator.h"
#include "engine/session.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace lumen::chat {

struct ChatOptions {
    int n_predict = -1;         // most tokens per reply; -1: until the model ends its turn
    bool context_shift = true;  // when the context fills, forget the oldest turns; false: stop with an error
    bool kv_reuse = true;       // false: re-read the whole conversation every turn (to test the reuse)
};

struct ReplyStats {
    enum class End { EndOfTurn, Length, Interrupted, ContextFull };
    End end = End::EndOfTurn;
    int prompt_tokens = 0;  // the formatted conversation, in tokens
    int evaluated = 0;      // of those, how many the cache did not hold
    double prompt_s = 0;
    int generated = 0;
    double gen_s = 0;
    int forgotten = 0;      // messages dropped by context shifts during this turn
    GenerateStats gen;      // the generation loop's own figures (speculation included)
};

class ChatEngine {
public:
    using TextSink = std::function<void(std::string_view)>;     // reply text, whole UTF-8 characters
    using NoticeSink = std::function<void(const std::string&)>; // e.g. "context full: forgot ..."

    ChatEngine(Session& session, const tokenizer::Tokenizer& tok, ChatTemplate tmpl, const SamplingParams& sp,
               const ChatOptions& opt);

    const Conversation& conversation() const { return conv_; }
    void set_conversation(Conversation c) { conv_ = std::move(c); }
    void set_system(std::string text) { conv_.system = std::move(text); }
    void reset() { conv_.turns.clear(); }  // keeps the system prompt
    // Speculative or lookup decoding for the replies (nullptr: plain). The drafter must outlive the engine.
    void set_drafter(Drafter* d, const SpeculativeParams& p) {
        drafter_ = d;
        spec_ = p;
    }
    bool speculative() const { return drafter_ != nullptr; }

    // Adds the user's message, answers it and adds the answer (also a partial one). Stops at the end of
    // the model's turn, after n_predict tokens, when *stop becomes true, or when the context is full
    // (with context_shift off, or when the current exchange alone fills it). A message that cannot fit
    // at all is a lumen::Error, and the conversation is left as it was.
    ReplyStats reply(const std::string& user_text, const TextSink& on_text, const NoticeSink& on_notice,
                     const std::atomic<bool>* stop);

    int cached_tokens() const { return int(cached_.size()); }
    const std::vector<int32_t>& cached() const { return cached_; }  // what the KV cache holds
    int n_ctx() const { return session_.n_ctx(); }
    const ReplyStats& last_stats() const { return last_; }
    const ChatTemplate& chat_template() const { return tmpl_; }
    // The conversation's prompt (with the assistant's generation prompt) with the first `skip_turns`
    // turns left out, in tokens.
    std::vector<int32_t> prompt_tokens(size_t skip_turns) const;
    // Whether, after this user message, the generation prompt already opens a <think> block
    // (reasoning templates do), so the reply starts inside it.
    bool reply_opens_in_reasoning(const std::string& user_text) const;

private:
    // The prompt for the conversation with the new user message, after forgetting old exchanges if
    // it does not fit (or an error, with context shift off or when nothing can be forgotten).
    std::vector<int32_t> prompt_that_fits(const NoticeSink& on_notice);
    // Reads the prompt, samples and streams the reply, and adds it to the conversation.
    void generate(const std::vector<int32_t>& prompt, const TextSink& on_text, const NoticeSink& on_notice,
                  const std::atomic<bool>* stop);
    // Makes the cache hold exactly `tokens` (reusing its common prefix); the session's outputs are
    // then those after the last token.
    void sync_cache(const std::vector<int32_t>& tokens);
    // Forgets whole exchanges before the current user message so that the prompt plus `tail` tokens
    // fits with `room` to spare; returns how many messages went (0 if none could).
    size_t forget_for(size_t tail, int room);

    Session& session_;
    const tokenizer::Tokenizer& tok_;
    ChatTemplate tmpl_;
    SamplingParams sampling_;
    uint64_t base_seed_;
    ChatOptions opt_;
    Conversation conv_;
    std::vector<int32_t> cached_;  // the tokens the session's KV cache holds, in order
    int n_replies_ = 0;
    ReplyStats last_;
    Drafter* drafter_ = nullptr;
    SpeculativeParams spec_;
};

}  // namespace lumen::chat
