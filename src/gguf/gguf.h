// GGUF reader: maps a file and exposes its metadata and tensor table without copying.
// Every count, length, offset and size is checked against the file before it is used, so a
// truncated or corrupt file ends in a lumen::Error naming the file and the problem.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tensor/dtype.h"

namespace lumen::gguf {

enum class VType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* vtype_name(VType t);

// One metadata value. Strings and arrays point into the mapped file.
struct Value {
    VType type = VType::UINT8;
    // Scalars: integers in `i` (signed) or `u` (unsigned), floats in `f`, bools in `u`.
    int64_t i = 0;
    uint64_t u = 0;
    double f = 0;
    std::string_view str;                // STRING
    VType elem = VType::UINT8;           // ARRAY: element type
    uint64_t count = 0;                  // ARRAY: number of elements
    const uint8_t* raw = nullptr;        // ARRAY of fixed-size scalars: little-endian elements
    std::vector<std::string_view> strs;  // ARRAY of STRING
    std::vector<Value> items;            // ARRAY of ARRAY

    bool is_int() const;    // any integer type (not bool)
    bool is_float() const;  // FLOAT32 / FLOAT64
    // Scalar element k of an array of fixed-size scalars, converted.
    double num_at(uint64_t k) const;
    int64_t int_at(uint64_t k) const;
    // Short human-readable rendering (arrays abbreviated to `max_items`).
    std::string to_string(size_t max_items = 8) const;
};

struct KV {
    std::string key;
    Value value;
};

struct TensorInfo {
    std::string name;
    DType type;
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
    uint64_t offset = 0;           // relative to the data section
    size_t nbytes = 0;
    const uint8_t* data = nullptr; // into the mapping
    int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    std::string shape_string() const;
};

class File {
public:
    // Maps and validates the file. Throws lumen::Error("PATH: what is wrong").
    static std::unique_ptr<File> open(const std::string& path);
    // Validates a buffer the caller keeps alive (tests, fuzzing). `name` is used in errors.
    static std::unique_ptr<File> from_memory(const uint8_t* data, size_t size, const std::string& name);
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    size_t file_size() const { return size_; }
    size_t data_offset() const { return data_offset_; }
    const uint8_t* base() const { return base_; }

    const std::vector<KV>& kvs() const { return kvs_; }
    const Value* find(std::string_view key) const;
    // Typed getters: absent key gives `def`; a present key of the wrong type is an error naming it.
    std::string get_str(std::string_view key, const std::string& def = "") const;
    int64_t get_int(std::string_view key, int64_t def) const;
    double get_float(std::string_view key, double def) const;
    bool get_bool(std::string_view key, bool def) const;
    // Array getters: nullptr if absent; error if present but of another element type.
    const Value* get_array(std::string_view key, VType elem) const;

    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(std::string_view name) const;

    // Throws lumen::Error prefixed with this file's path.
    [[noreturn]] void error(const std::string& what) const;

private:
    File() = default;
    void parse();

    std::string path_;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    bool owns_map_ = false;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::vector<KV> kvs_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lumen::gguf
