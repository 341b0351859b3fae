#include "model/kv_cache.h"

#include "util/error.h"

namespace lumen {

void KVCache::init(const Model& m, Backend& be, int blocks, int bs, DType t) {
    if (t != DType::F16 && t != DType::F32 && t != DType::Q8_0)
        fail("--cache-type ", dtype_name(t), " is not supported (use f16, f32 or q8_0)");
    const HParams& h = m.hp;
    const int64_t kv_dim = int64_t(h.head_dim) * h.n_head_kv;
    if (h.head_dim % int64_t(dtype_info(t).block_size) != 0)
        fail("--cache-type ", dtype_name(t), " needs a head size that is a multiple of ", dtype_info(t).block_size);
    if (blocks < 1 || bs < 1) fail("KV cache: ", blocks, " blocks of ", bs, " tokens");
    type = t;
    block_size = bs;
    n_blocks = blocks;
    const int64_t rows = n_rows();
    k.assign(size_t(h.n_layer), Tensor{});
    v.assign(size_t(h.n_layer), Tensor{});
    for (int il = 0; il < h.n_layer; il++) {
        for (Tensor* c : {&k[size_t(il)], &v[size_t(il)]}) {
            c->type = t;
            c->ne[0] = kv_dim;
            c->ne[1] = rows;
            c->nb[0] = dtype_info(t).block_bytes;
            c->nb[1] = row_bytes(t, kv_dim);
            c->nb[2] = c->nb[3] = c->nb[1] * size_t(rows);
            c->is_state = true;
            c->name = (c == &k[size_t(il)] ? "cache_k." : "cache_v.") + std::to_string(il);
            be.alloc_state(c);
        }
    }
}

size_t KVCache::bytes() const {
    size_t n = 0;
    for (const Tensor& t : k) n += t.nbytes();
    for (const Tensor& t : v) n += t.nbytes();
    return n;
}

size_t KVCache::bytes_per_block() const {
    size_t n = 0;
    for (const Tensor& t : k) n += t.nb[1] * size_t(block_size);
    for (const Tensor& t : v) n += t.nb[1] * size_t(block_size);
    return n;
}

}  // namespace lumen
