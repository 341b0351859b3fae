#include "chat/chat_engine.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::chat {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
constexpr size_t kCannotFit = std::string::npos;
}  // namespace

ChatEngine::ChatEngine(Session& session, const tokenizer::Tokenizer& tok, ChatTemplate tmpl, const SamplingParams& sp,
                       const ChatOptions& opt)
    : session_(session), tok_(tok), tmpl_(tmpl), sampling_(sp), opt_(opt) {
    // Each reply gets its own sampler seeded base + reply number: a fixed --seed replays a whole chat,
    // and the penalty window holds only the current prompt and reply.
    base_seed_ = sp.seed == 0xFFFFFFFF ? std::random_device{}() : sp.seed;
    if (opt_.n_predict == 0 || opt_.n_predict < -1) fail("-n ", opt_.n_predict, ": want a positive count or -1");
}

std::vector<int32_t> ChatEngine::prompt_tokens(size_t skip_turns) const {
    std::vector<Message> msgs;
    if (!conv_.system.empty()) msgs.push_back({"system", conv_.system});
    msgs.insert(msgs.end(), conv_.turns.begin() + long(std::min(skip_turns, conv_.turns.size())), conv_.turns.end());
    const std::string text = tmpl_.format(msgs, true);
    // A template that writes the BOS itself (Llama 3's does) must not get a second one.
    bool add_special = true;
    if (tok_.bos() >= 0) {
        const std::string& bos = tok_.token_text(tok_.bos());
        if (!bos.empty() && text.compare(0, bos.size(), bos) == 0) add_special = false;
    }
    return tok_.encode(text, add_special, true);
}

bool ChatEngine::reply_opens_in_reasoning(const std::string& user_text) const {
    std::vector<Message> msgs = conv_.messages();
    msgs.push_back({"user", user_text});
    const std::string text = tmpl_.format(msgs, true);
    const size_t end = text.find_last_not_of(" \t\r\n");
    const std::string_view open = "<think>";
    return end != std::string::npos && end + 1 >= open.size() && text.compare(end + 1 - open.size(), open.size(), open) == 0;
}

void ChatEngine::sync_cache(const std::vector<int32_t>& tokens) {
    if (tokens.empty()) fail("nothing to evaluate");
    size_t keep = opt_.kv_reuse ? common_prefix(cached_, tokens) : 0;
    if (keep == tokens.size()) keep--;  // evaluate at least the last token to get its logits
    session_.truncate(int(keep));
    cached_.resize(keep);
    const std::vector<int32_t> rest(tokens.begin() + long(keep), tokens.end());
    try {
        session_.decode(rest);
        cached_ = tokens;
        last_.evaluated += int(rest.size());
    } catch (...) {
        session_.truncate(std::min(session_.n_past(), int(keep)));  // keep the cache and cached_ in step
        throw;
    }
}

size_t ChatEngine::forget_for(size_t tail, int room) {
    const int budget = session_.n_ctx() - int(tail) - room;
    const size_t n = turns_to_forget(conv_.turns, 1, budget, [&](size_t skip) { return int(prompt_tokens(skip).size()); });
    if (n == kCannotFit || n == 0) return n;
    conv_.turns.erase(conv_.turns.begin(), conv_.turns.begin() + long(n));
    return n;
}

std::vector<int32_t> ChatEngine::prompt_that_fits(const NoticeSink& on_notice) {
    const int n_ctx = session_.n_ctx();
    std::vector<int32_t> prompt = prompt_tokens(0);
    if (!opt_.context_shift) {
        const size_t need = prompt.size() + size_t(std::max(opt_.n_predict - 1, 0));
        if (prompt.size() >= size_t(n_ctx) || need > size_t(n_ctx))
            fail("context full: the conversation takes ", prompt.size(), " tokens",
                 opt_.n_predict > 0 ? " plus -n " + std::to_string(opt_.n_predict) + " for the reply" : std::string(),
                 ", the context holds ", n_ctx, " (raise -c, /reset, or drop --no-context-shift)");
        return prompt;
    }
    // Room for the whole reply when -n bounds it (up to half the context), else for a quarter of the
    // context; failing that, for at least one token.
    const int reserve = opt_.n_predict > 0 ? std::min(opt_.n_predict, n_ctx / 2) : n_ctx / 4;
    size_t n = forget_for(0, reserve);
    if (n == kCannotFit) n = forget_for(0, 1);
    if (n == kCannotFit)
        fail("the message does not fit: with the system prompt it takes ",
             prompt_tokens(conv_.turns.size() - 1).size(), " tokens, the context holds ", n_ctx, " (raise -c)");
    if (n == 0) return prompt;
    last_.forgotten += int(n);
    on_notice("context full: forgot the oldest " + std::to_string(n) + " messages");
    return prompt_tokens(0);
}

void ChatEngine::generate(const std::vector<int32_t>& prompt, const TextSink& on_text, const NoticeSink& on_notice,
                          const std::atomic<bool>* stop) {
    const int n_ctx = session_.n_ctx();
    SamplingParams sp = sampling_;
    sp.seed = (base_seed_ + uint64_t(n_replies_++)) & 0xFFFFFFFFull;
    if (sp.seed == 0xFFFFFFFF) sp.seed = 0;  // keep clear of the "random seed" marker
    Sampler sampler(sp, tok_.n_vocab());
    for (int32_t t : prompt) sampler.accept(t);

    auto t0 = Clock::now();
    sync_cache(prompt);
    last_.prompt_s = seconds_since(t0);

    auto t1 = Clock::now();
    std::vector<int32_t> gen;
    std::string content;
    unicode::Utf8Stream utf8;
    auto say = [&](const std::string& s) {
        if (s.empty()) return;
        content += s;
        on_text(s);
    };
    // The cache is full and the last token still has to be read: forget old exchanges (keeping a
    // quarter of the context free if possible) and re-read the shortened prompt plus the reply so far.
    auto make_room = [&](std::vector<int32_t>& context) -> OutputRows* {
        if (!opt_.context_shift) return nullptr;
        size_t n = forget_for(gen.size(), std::max(1, n_ctx / 4));
        if (n == kCannotFit) n = forget_for(gen.size(), 1);
        if (n == kCannotFit) return nullptr;
        if (n > 0) {
            last_.forgotten += int(n);
            on_notice("context full: forgot the oldest " + std::to_string(n) + " messages");
        }
        std::vector<int32_t> all = prompt_tokens(0);
        all.insert(all.end(), gen.begin(), gen.end());
        cached_ = context;
        cached_.pop_back();  // what the cache holds now
        sync_cache(all);
        context = all;
        return &session_;
    };

    Generator g(session_, sampler, [this](int32_t t) { return tok_.is_eog(t); });
    g.set_drafter(drafter_, spec_);
    GenerateOptions go;
    go.n_predict = opt_.n_predict;
    go.stop = stop;
    std::vector<int32_t> context = cached_;
    GenerateEnd end;
    try {
        end = g.run(
            context, session_, go,
            [&](int32_t t) {
                gen.push_back(t);
                say(utf8.push(tok_.piece(t)));
            },
            make_room);
    } catch (...) {
        session_.truncate(0);  // the cache's contents are unknown: start afresh next time
        cached_.clear();
        throw;
    }
    cached_ = context;
    switch (end) {
        case GenerateEnd::EndOfGeneration: last_.end = ReplyStats::End::EndOfTurn; break;
        case GenerateEnd::Length: last_.end = ReplyStats::End::Length; break;
        case GenerateEnd::Interrupted: last_.end = ReplyStats::End::Interrupted; break;
        case GenerateEnd::ContextFull: last_.end = ReplyStats::End::ContextFull; break;
    }
    say(utf8.flush());
    last_.gen = g.stats();
    last_.generated = int(gen.size());
    last_.gen_s = seconds_since(t1);
    conv_.turns.push_back({"assistant", content});
}

ReplyStats ChatEngine::reply(const std::string& user_text, const TextSink& on_text, const NoticeSink& on_notice,
                             const std::atomic<bool>* stop) {
    last_ = ReplyStats{};
    const Conversation before = conv_;
    conv_.turns.push_back({"user", user_text});
    try {
        const std::vector<int32_t> prompt = prompt_that_fits(on_notice);
        last_.prompt_tokens = int(prompt.size());
        generate(prompt, on_text, on_notice, stop);
    } catch (...) {
        conv_ = before;  // a failed turn leaves no trace in the conversation
        throw;
    }
    return last_;
}

}  // namespace lumen::chat
