#include "model/kv_blocks.h"

#include <algorithm>

#include "util/error.h"

namespace lumen {

uint64_t block_hash(uint64_t prev, const int32_t* tokens, int n) {
    // FNV-1a over the previous hash and the tokens' bytes, then a final mix (splitmix64).
    uint64_t h = 0xcbf29ce484222325ull;
    auto eat = [&](uint64_t x, int bytes) {
        for (int i = 0; i < bytes; i++) {
            h ^= (x >> (8 * i)) & 0xff;
            h *= 0x100000001b3ull;
        }
    };
    eat(prev, 8);
    for (int i = 0; i < n; i++) eat(uint32_t(tokens[i]), 4);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

BlockPool::BlockPool(int n_blocks, int block_size) : block_size_(block_size), blocks_(size_t(n_blocks)) {
    plain_.reserve(size_t(n_blocks));
    for (int b = n_blocks - 1; b >= 0; b--) plain_.push_back(b);  // hand out low ids first
}

int BlockPool::alloc() {
    int b;
    if (!plain_.empty()) {
        b = plain_.back();
        plain_.pop_back();
    } else if (!cached_.empty()) {
        b = cached_.front();
        cached_.pop_front();
        forget(b);
    } else {
        return -1;
    }
    blocks_[size_t(b)].refs = 1;
    blocks_[size_t(b)].ready = false;
    n_used_++;
    return b;
}

void BlockPool::ref(int b) {
    Block& k = blocks_[size_t(b)];
    if (k.refs == 0) {  // a cached free block comes back into use
        if (!k.hashed) fail("KV blocks: reference to free block ", b, " that holds nothing");
        cached_.erase(k.lru);
        n_used_++;
    }
    k.refs++;
}

void BlockPool::unref(int b) {
    Block& k = blocks_[size_t(b)];
    if (k.refs <= 0) fail("KV blocks: block ", b, " released more often than taken");
    if (--k.refs > 0) return;
    n_used_--;
    if (k.hashed && k.ready) {
        k.lru = cached_.insert(cached_.end(), b);
    } else {
        if (k.hashed) forget(b);  // never finished: its contents are not what the hash says
        plain_.push_back(b);
    }
}

int BlockPool::lookup(uint64_t hash, const int32_t* tokens) const {
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return -1;
    const Block& k = blocks_[size_t(it->second)];
    if (!std::equal(k.tokens.begin(), k.tokens.end(), tokens)) return -1;
    return it->second;
}

void BlockPool::publish(int b, uint64_t hash, const int32_t* tokens) {
    if (by_hash_.count(hash)) return;
    Block& k = blocks_[size_t(b)];
    if (k.hashed) forget(b);
    k.hashed = true;
    k.hash = hash;
    k.tokens.assign(tokens, tokens + block_size_);
    by_hash_[hash] = b;
}

void BlockPool::forget(int b) {
    Block& k = blocks_[size_t(b)];
    auto it = by_hash_.find(k.hash);
    if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
    k.hashed = false;
    k.tokens.clear();
}

}  // namespace lumen
