// Special-token partition of raw text; see special.h.
//
// llama.cpp makes one pass over the text per special token, in order (longest first). The result is
// the same as: take the (token, position) occurrences in token order, then position order, and accept
// each one none of whose bytes is claimed yet. Two observations keep this linear in memory:
//  - the tokens occurring at one position are prefixes of each other (one path in the trie), tried
//    longest first; once one is accepted the shorter ones there must fail, so each position only needs
//    its current candidate, and moves to the next shorter one when that candidate is rejected;
//  - candidates are kept in one bucket per token rank, each bucket sorted by position when its turn
//    comes, which reproduces the (token, position) order.
#include "tokenizer/special.h"

#include <algorithm>

#include "util/error.h"

namespace lumen::tokenizer {

namespace {
bool is_c_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }  // isspace() in the C locale
enum : uint8_t { kFree = 0, kToken = 1, kStripped = 2 };
}  // namespace

SpecialMatcher::SpecialMatcher(const Vocab& vocab) : vocab_(&vocab) {
    std::fill(std::begin(root_next_), std::end(root_next_), -1);
    nodes_.emplace_back();
    node_of_.resize(vocab.special_by_length.size());
    for (size_t rank = 0; rank < vocab.special_by_length.size(); rank++) {
        const int32_t id = vocab.special_by_length[rank];
        int32_t node = 0;
        for (unsigned char c : vocab.text[size_t(id)]) {
            int32_t nx = child(node, c);
            if (nx < 0) {
                nx = int32_t(nodes_.size());
                nodes_.emplace_back();
                nodes_.back().parent = node;
                nodes_.back().depth = nodes_[size_t(node)].depth + 1;
                if (node == 0) root_next_[c] = nx;
                else nodes_[size_t(node)].next.emplace_back(c, nx);
            }
            node = nx;
        }
        node_of_[rank] = node;
        Node& nd = nodes_[size_t(node)];
        // Ranks come in increasing order, so the first one stored is the lowest.
        if (nd.rank_any < 0) nd.rank_any = int32_t(rank);
        if (nd.rank_plain < 0 && !(vocab.attr[size_t(id)] & (kAttrControl | kAttrUnknown))) nd.rank_plain = int32_t(rank);
    }
}

int32_t SpecialMatcher::child(int32_t node, uint8_t b) const {
    if (node == 0) return root_next_[b];
    for (const auto& [c, nx] : nodes_[size_t(node)].next)
        if (c == b) return nx;
    return -1;
}

int32_t SpecialMatcher::shorter_match(int32_t node, size_t max_len, bool parse_special) const {
    for (int32_t p = nodes_[size_t(node)].parent; p > 0; p = nodes_[size_t(p)].parent)
        if (size_t(nodes_[size_t(p)].depth) <= max_len && rank_at(p, parse_special) >= 0) return p;
    return -1;
}

std::vector<Fragment> SpecialMatcher::partition(std::string_view text, bool parse_special) const {
    const Vocab& v = *vocab_;
    const size_t n = text.size();
    std::vector<Fragment> out;
    if (n == 0) return out;
    if (n > UINT32_MAX) fail("tokenizer: text of ", n, " bytes is too long (at most 4 GiB)");

    // Each position's longest matching token, filed under that token's rank.
    std::vector<std::vector<uint32_t>> bucket;
    for (size_t i = 0; i < n; i++) {
        int32_t node = root_next_[static_cast<uint8_t>(text[i])];
        int32_t longest = -1;
        for (size_t j = i + 1; node >= 0; j++) {
            if (rank_at(node, parse_special) >= 0) longest = node;
            if (j >= n) break;
            node = child(node, static_cast<uint8_t>(text[j]));
        }
        if (longest < 0) continue;
        if (bucket.empty()) bucket.resize(node_of_.size());
        bucket[size_t(rank_at(longest, parse_special))].push_back(uint32_t(i));
    }
    if (bucket.empty()) {
        out.push_back(Fragment{kNoToken, 0, n});
        return out;
    }

    std::vector<uint8_t> claimed(n, kFree);
    std::vector<std::pair<size_t, int32_t>> accepted;  // position, token
    for (size_t rank = 0; rank < bucket.size(); rank++) {
        std::vector<uint32_t> positions;
        positions.swap(bucket[rank]);
        if (positions.empty()) continue;
        if (!std::is_sorted(positions.begin(), positions.end())) std::sort(positions.begin(), positions.end());
        const int32_t id = v.special_by_length[rank];
        const size_t len = v.text[size_t(id)].size();
        const uint32_t attr = v.attr[size_t(id)];
        for (uint32_t pos : positions) {
            size_t free_len = 0;
            while (free_len < len && claimed[pos + free_len] == kFree) free_len++;
            if (free_len < len) {
                // Claimed bytes stay claimed: only a shorter token that ends before the first one can
                // still match here. Queue it for its turn.
                int32_t shorter = shorter_match(node_of_[rank], free_len, parse_special);
                if (shorter >= 0) bucket[size_t(rank_at(shorter, parse_special))].push_back(pos);
                continue;
            }
            std::fill(claimed.begin() + long(pos), claimed.begin() + long(pos + len), uint8_t(kToken));
            accepted.emplace_back(pos, id);
            if (attr & kAttrLstrip)
                for (size_t q = pos; q > 0 && claimed[q - 1] == kFree && is_c_space(text[q - 1]); q--)
                    claimed[q - 1] = kStripped;
            if (attr & kAttrRstrip)
                for (size_t q = pos + len; q < n && claimed[q] == kFree && is_c_space(text[q]); q++)
                    claimed[q] = kStripped;
        }
    }
    std::sort(accepted.begin(), accepted.end());

    size_t next_token = 0;
    for (size_t i = 0; i < n;) {
        if (claimed[i] == kFree) {
            size_t j = i;
            while (j < n && claimed[j] == kFree) j++;
            out.push_back(Fragment{kNoToken, i, j});
            i = j;
        } else if (claimed[i] == kToken) {
            const auto& [pos, id] = accepted[next_token++];
            const size_t len = v.text[size_t(id)].size();
            out.push_back(Fragment{id, pos, pos + len});
            i += len;
        } else {
            i++;
        }
    }
    return out;
}

}  // namespace lumen::tokenizer
