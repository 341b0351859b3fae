// Byte-level BPE merging; see bpe.h.
#include "tokenizer/bpe.h"

#include <algorithm>

#include "gguf/gguf.h"

namespace lumen::tokenizer {

namespace {

constexpr int32_t kNoSymbol = -1;  // a byte whose character is neither a token nor a merge half
constexpr int32_t kMerged = -2;    // a symbol absorbed by its left neighbour

struct Symbol {
    int32_t sym;
    int32_t prev, next;
    uint32_t start;  // byte offset in the word
};

struct Bigram {
    int32_t rank;
    int32_t left, right;        // symbol positions
    int32_t left_sym, right_sym;  // their symbol ids when queued; a change means the entry is stale
    int32_t merged;
};

// Heap order: the smallest rank on top, then the leftmost.
struct BigramAfter {
    bool operator()(const Bigram& a, const Bigram& b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
};

}  // namespace

int32_t BpeModel::intern(const std::string& s) {
    int32_t id = vocab_->find(s);
    if (id != kNoToken) return id;
    auto [it, inserted] = extra_ids_.try_emplace(s, n_vocab_ + int32_t(extra_text_.size()));
    if (inserted) extra_text_.push_back(s);
    return it->second;
}

BpeModel::BpeModel(const Vocab& vocab, const gguf::Value& merges) : vocab_(&vocab), n_vocab_(vocab.n_tokens()) {
    merges_.reserve(size_t(merges.count) * 2);
    std::string first, second;
    for (uint64_t i = 0; i < merges.count; i++) {
        std::string_view m = merges.strs[size_t(i)];
        // Split at the first space after the first byte (a half may itself start with a space).
        size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
        if (sp == std::string_view::npos) {
            first.clear();
            second.clear();
        } else {
            first.assign(m.substr(0, sp));
            second.assign(m.substr(sp + 1));
        }
        int32_t a = intern(first);
        int32_t b = intern(second);
        int32_t ab = intern(first + second);
        merges_.try_emplace(pair_key(a, b), Merge{int32_t(std::min<uint64_t>(i, INT32_MAX)), ab});
    }
    for (int b = 0; b < 256; b++) {
        const std::string& ch = byte_to_gpt2_char(uint8_t(b));
        int32_t id = vocab.find(ch);
        if (id == kNoToken) {
            auto it = extra_ids_.find(ch);
            id = it == extra_ids_.end() ? kNoSymbol : it->second;
        }
        byte_sym_[size_t(b)] = id;
    }
}

void BpeModel::emit_symbol(int32_t sym, uint8_t first_byte, std::vector<int32_t>& out) const {
    if (sym >= 0 && sym < n_vocab_) {
        out.push_back(sym);
        return;
    }
    // Not a token: each byte of its byte-level text that is a one-byte token is emitted; others are
    // dropped (llama.cpp does the same).
    const std::string& s = sym == kNoSymbol ? byte_to_gpt2_char(first_byte) : extra_text_[size_t(sym - n_vocab_)];
    for (char c : s) {
        int32_t id = vocab_->find(std::string_view(&c, 1));
        if (id != kNoToken) out.push_back(id);
    }
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (vocab_->pre.ignore_merges) {
        std::string encoded;
        for (unsigned char c : word) encoded += byte_to_gpt2_char(c);
        int32_t id = vocab_->find(encoded);
        if (id != kNoToken) {
            out.push_back(id);
            return;
        }
    }

    // Per-thread scratch, reused across words.
    thread_local std::vector<Symbol> syms;
    thread_local std::vector<Bigram> heap;
    const int32_t n = int32_t(word.size());
    syms.resize(size_t(n));
    for (int32_t i = 0; i < n; i++)
        syms[size_t(i)] = Symbol{byte_sym_[static_cast<uint8_t>(word[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1,
                                 uint32_t(i)};
    heap.clear();
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        int32_t a = syms[size_t(l)].sym, b = syms[size_t(r)].sym;
        if (a < 0 || b < 0) return;
        auto it = merges_.find(pair_key(a, b));
        if (it == merges_.end()) return;
        heap.push_back(Bigram{it->second.rank, l, r, a, b, it->second.merged});
        std::push_heap(heap.begin(), heap.end(), BigramAfter{});
    };
    for (int32_t i = 1; i < n; i++) try_add(i - 1, i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), BigramAfter{});
        const Bigram bg = heap.back();
        heap.pop_back();
        Symbol& l = syms[size_t(bg.left)];
        Symbol& r = syms[size_t(bg.right)];
        if (l.sym != bg.left_sym || r.sym != bg.right_sym) continue;  // stale
        l.sym = bg.merged;
        r.sym = kMerged;
        l.next = r.next;
        if (r.next >= 0) syms[size_t(r.next)].prev = bg.left;
        try_add(l.prev, bg.left);
        try_add(bg.left, l.next);
    }

    for (int32_t i = 0; i != -1; i = syms[size_t(i)].next)
        emit_symbol(syms[size_t(i)].sym, static_cast<uint8_t>(word[syms[size_t(i)].start]), out);
}

}  // namespace lumen::tokenizer
