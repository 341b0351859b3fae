// GGUF writer: builds a GGUF v3 file from metadata and tensors, to a path or to memory.
// Tensor data can be given as bytes, as a pointer the caller keeps alive, or as a callback that
// fills one tensor at write time, so a multi-GB model is written holding one tensor at a time.
//
//   gguf::Writer w;
//   w.set("general.architecture", gguf::MetaValue::string("llama"));
//   w.set("llama.block_count", gguf::MetaValue::u32(2));
//   w.add_tensor_fill("output.weight", DType::Q8_0, {64, 32}, [&](uint8_t* dst, size_t n) { ... });
//   w.write_file("model.gguf");  // writes model.gguf.tmp, then renames it
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "gguf/gguf.h"
#include "tensor/dtype.h"

namespace lumen::gguf {

struct ByteSink;  // writer.cpp: where write_to puts the bytes

// An owned metadata value to write. Build it with the named constructors.
struct MetaValue {
    VType type = VType::UINT8;
    uint64_t bits = 0;              // scalars: the value's little-endian bit pattern (low bytes used)
    std::string str;                // STRING
    VType elem = VType::UINT8;      // ARRAY: element type
    uint64_t count = 0;             // ARRAY: number of elements
    std::vector<uint8_t> raw;       // ARRAY of scalars: the packed little-endian elements
    std::vector<std::string> strs;  // ARRAY of STRING
    std::vector<MetaValue> items;   // ARRAY of ARRAY

    static MetaValue u8(uint8_t x) { return scalar(VType::UINT8, x); }
    static MetaValue i8(int8_t x) { return scalar(VType::INT8, x); }
    static MetaValue u16(uint16_t x) { return scalar(VType::UINT16, x); }
    static MetaValue i16(int16_t x) { return scalar(VType::INT16, x); }
    static MetaValue u32(uint32_t x) { return scalar(VType::UINT32, x); }
    static MetaValue i32(int32_t x) { return scalar(VType::INT32, x); }
    static MetaValue u64(uint64_t x) { return scalar(VType::UINT64, x); }
    static MetaValue i64(int64_t x) { return scalar(VType::INT64, x); }
    static MetaValue f32(float x) { return scalar(VType::FLOAT32, x); }
    static MetaValue f64(double x) { return scalar(VType::FLOAT64, x); }
    static MetaValue boolean(bool x) { return scalar(VType::BOOL, uint8_t(x ? 1 : 0)); }
    static MetaValue string(std::string s);

    // An array of scalars; the element type follows T (any fixed-width integer, float, double).
    template <class T> static MetaValue array(const std::vector<T>& xs);
    static MetaValue bools(const std::vector<bool>& xs);
    static MetaValue strings(std::vector<std::string> xs);
    // An array of arrays; each item must itself be an array (their element types may differ).
    static MetaValue arrays(std::vector<MetaValue> xs);

    // A copy of a value read from a file, for tools that rewrite a model (quantize).
    static MetaValue copy_of(const Value& v);

private:
    template <class T> static MetaValue scalar(VType t, T x) {
        MetaValue v;
        v.type = t;
        std::memcpy(&v.bits, &x, sizeof x);  // little-endian hosts only, as GGUF itself
        return v;
    }
    template <class T> static constexpr VType vtype_of();
};

class Writer {
public:
    // Fills `dst` with a tensor's `nbytes` bytes when the file is written.
    using Fill = std::function<void(uint8_t* dst, size_t nbytes)>;

    // Metadata is written in the order keys were first set; setting a key again replaces its value.
    void set(const std::string& key, MetaValue value);
    bool remove(const std::string& key);
    const MetaValue* find(const std::string& key) const;
    // Sets general.alignment (a power of two); tensor data offsets are multiples of it.
    void set_alignment(uint32_t bytes);
    size_t alignment() const;

    // Tensors are written in the order added. `shape` is in ggml order: shape[0] is the row
    // (contiguous) length, 1 to 4 dimensions, each > 0; shape[0] a multiple of the block size.
    void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                    std::vector<uint8_t> bytes);
    // `data` (tensor_bytes(type, shape) bytes) must stay alive until the file is written.
    void add_tensor_view(const std::string& name, DType type, const std::vector<int64_t>& shape,
                         const void* data);
    // `fill` is called once per write with a buffer of the tensor's size.
    void add_tensor_fill(const std::string& name, DType type, const std::vector<int64_t>& shape, Fill fill);
    size_t n_tensors() const { return tensors_.size(); }

    // Bytes of a tensor of this type and shape; throws lumen::Error on a shape GGUF cannot hold.
    static size_t tensor_bytes(DType type, const std::vector<int64_t>& shape);

    // Writes PATH.tmp and renames it to PATH, so PATH never holds a partial file.
    // Throws lumen::Error("PATH: ...") on I/O errors; the .tmp file is removed.
    void write_file(const std::string& path) const;
    std::vector<uint8_t> write_memory() const;

private:
    struct Tensor {
        std::string name;
        DType type;
        std::vector<int64_t> shape;
        size_t nbytes = 0;
        std::vector<uint8_t> owned;  // add_tensor
        const void* view = nullptr;  // add_tensor_view
        Fill fill;                   // add_tensor_fill
    };
    Tensor& new_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape);
    void write_to(ByteSink& out) const;

    std::vector<std::pair<std::string, MetaValue>> kvs_;
    std::vector<Tensor> tensors_;
};

template <class T> constexpr VType MetaValue::vtype_of() {
    static_assert(!std::is_same_v<T, bool>, "use MetaValue::bools for arrays of bool");
    static_assert(std::is_arithmetic_v<T>, "GGUF arrays hold numbers, strings or arrays");
    if constexpr (std::is_floating_point_v<T>) {
        static_assert(sizeof(T) == 4 || sizeof(T) == 8, "GGUF floats are 32 or 64 bits");
        return sizeof(T) == 4 ? VType::FLOAT32 : VType::FLOAT64;
    } else if constexpr (std::is_signed_v<T>) {
        return sizeof(T) == 1 ? VType::INT8 : sizeof(T) == 2 ? VType::INT16 : sizeof(T) == 4 ? VType::INT32 : VType::INT64;
    } else {
        return sizeof(T) == 1 ? VType::UINT8 : sizeof(T) == 2 ? VType::UINT16 : sizeof(T) == 4 ? VType::UINT32 : VType::UINT64;
    }
}

template <class T> MetaValue MetaValue::array(const std::vector<T>& xs) {
    MetaValue v;
    v.type = VType::ARRAY;
    v.elem = vtype_of<T>();
    v.count = xs.size();
    v.raw.resize(xs.size() * sizeof(T));
    if (!xs.empty()) std::memcpy(v.raw.data(), xs.data(), v.raw.size());
    return v;
}

}  // namespace lumen::gguf
