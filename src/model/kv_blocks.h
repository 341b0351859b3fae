// Bookkeeping of the paged KV cache's blocks (host side): reference counts, a free list, and the
// prefix cache that lets sequences share full blocks of identical token prefixes (as in vLLM).
//
// A full block is known by a hash of every token from position 0 to its end, so equal hashes mean
// equal prefixes (the block's own tokens are kept and compared too, against hash collisions).
// A block whose count drops to 0 is free, but stays findable by its hash until it is handed out
// again (least recently freed first), so a later request with the same prefix still finds it.
// Shared blocks are never written: a sequence only appends to its last block, which is private
// (see Scheduler), so no block ever needs copying.
#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace lumen {

// Hash of a block's tokens chained to the hash of the blocks before it (0 for the first block).
uint64_t block_hash(uint64_t prev, const int32_t* tokens, int n);

class BlockPool {
public:
    BlockPool(int n_blocks, int block_size);
    int n_blocks() const { return int(blocks_.size()); }
    int block_size() const { return block_size_; }
    int n_free() const { return n_blocks() - n_used_; }  // cached blocks count as free
    int n_used() const { return n_used_; }                // blocks with a reference
    int refcount(int b) const { return blocks_[size_t(b)].refs; }

    // A block with count 1 and no hash; -1 when every block is in use. Evicts the least recently
    // freed cached block when no block was ever unhashed.
    int alloc();
    void ref(int b);    // one more sequence uses b (which may be free but cached)
    void unref(int b);  // at 0, b is free

    // The cached block with this hash and these tokens, or -1.
    int lookup(uint64_t hash, const int32_t* tokens) const;
    // b holds the full block `tokens` whose prefix hash is `hash` (ignored when another block
    // already has it). Its contents are ready once set_ready(b) is called.
    void publish(int b, uint64_t hash, const int32_t* tokens);
    void set_ready(int b) { blocks_[size_t(b)].ready = true; }
    bool ready(int b) const { return blocks_[size_t(b)].ready; }
    bool hashed(int b) const { return blocks_[size_t(b)].hashed; }

private:
    struct Block {
        int refs = 0;
        bool hashed = false, ready = false;
        uint64_t hash = 0;
        std::vector<int32_t> tokens;
        std::list<int>::iterator lru;  // position in cached_ while free and hashed
    };
    void forget(int b);  // drops b's hash
    int block_size_;
    int n_used_ = 0;
    std::vector<Block> blocks_;
    std::vector<int> plain_;  // free blocks with no hash
    std::list<int> cached_;   // free blocks with a hash, least recently freed first
    std::unordered_map<uint64_t, int> by_hash_;
};

}  // namespace lumen
