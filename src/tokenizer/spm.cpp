// SentencePiece-style merging by score; see spm.h.
#include "tokenizer/spm.h"

#include <algorithm>
#include <queue>

#include "tokenizer/unicode.h"
#include "util/error.h"

namespace lumen::tokenizer {

namespace {

struct Symbol {
    uint32_t start;
    uint32_t n;  // byte length; 0 once merged into the left neighbour
    int32_t prev, next;
};

struct Bigram {
    float score;
    int32_t left, right;
    uint32_t size;  // bytes of the pair when queued; a different sum later means the entry is stale
};

// Heap order: the highest score on top, then the leftmost.
struct BigramBelow {
    bool operator()(const Bigram& a, const Bigram& b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
};

}  // namespace

void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) {
    if (text.empty()) return;
    std::vector<Symbol> syms;
    syms.reserve(text.size());
    for (size_t off = 0; off < text.size();) {
        // Characters are cut by their lead byte alone, as llama.cpp does.
        size_t len = std::min(unicode::seq_len_by_lead(static_cast<uint8_t>(text[off])), text.size() - off);
        int32_t index = int32_t(syms.size());
        syms.push_back(Symbol{uint32_t(off), uint32_t(len), index - 1, off + len == text.size() ? -1 : index + 1});
        off += len;
    }

    std::priority_queue<Bigram, std::vector<Bigram>, BigramBelow> queue;
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const Symbol& a = syms[size_t(l)];
        const Symbol& b = syms[size_t(r)];
        std::string_view pair = text.substr(a.start, a.n + b.n);
        int32_t id = vocab.find(pair);
        if (id == kNoToken) return;
        queue.push(Bigram{vocab.score[size_t(id)], l, r, uint32_t(pair.size())});
    };
    for (int32_t i = 1; i < int32_t(syms.size()); i++) try_add(i - 1, i);

    while (!queue.empty()) {
        Bigram bg = queue.top();
        queue.pop();
        Symbol& l = syms[size_t(bg.left)];
        Symbol& r = syms[size_t(bg.right)];
        if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size) continue;
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) syms[size_t(r.next)].prev = bg.left;
        try_add(l.prev, bg.left);
        try_add(bg.left, l.next);
    }

    for (int32_t i = 0; i != -1; i = syms[size_t(i)].next) {
        const Symbol& s = syms[size_t(i)];
        std::string_view piece = text.substr(s.start, s.n);
        int32_t id = vocab.find(piece);
        if (id != kNoToken) {
            out.push_back(id);
            continue;
        }
        // A character with no token: byte fallback.
        for (char c : piece) {
            int32_t b = vocab.byte_token(static_cast<uint8_t>(c));
            if (b == kNoToken) b = vocab.unk;
            if (b == kNoToken)
                fail("tokenizer: byte 0x", std::hex, int(static_cast<uint8_t>(c)),
                     " has no <0xNN> token and the vocab has no unknown token");
            out.push_back(b);
        }
    }
}

}  // namespace lumen::tokenizer
