#include "tensor/tensor.h"

namespace lumen {

const char* op_name(Op op) {
    switch (op) {
        case Op::None: return "none";
        case Op::View: return "view";
        case Op::GetRows: return "get_rows";
        case Op::MulMat: return "mul_mat";
        case Op::Add: return "add";
        case Op::Mul: return "mul";
        case Op::Scale: return "scale";
        case Op::RmsNorm: return "rms_norm";
        case Op::Rope: return "rope";
        case Op::SwiGLU: return "swiglu";
        case Op::GeGLU: return "geglu";
        case Op::KVWrite: return "kv_write";
        case Op::Attention: return "attention";
        case Op::TopK: return "top_k";
    }
    return "?";
}

size_t Tensor::nbytes() const {
    size_t n = row_size();
    for (int d = 1; d < 4; d++) n += size_t(ne[d] - 1) * nb[d];
    return n;
}

bool Tensor::contiguous() const {
    size_t expect = row_size();
    if (nb[0] != dtype_info(type).block_bytes) return false;
    for (int d = 1; d < 4; d++) {
        if (ne[d] > 1 && nb[d] != expect) return false;
        expect *= size_t(ne[d]);
    }
    return true;
}

}  // namespace lumen
