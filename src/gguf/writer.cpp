#include "gguf/writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <unordered_set>

#include "util/error.h"

namespace lumen::gguf {

namespace {

constexpr uint32_t kVersion = 3;
constexpr size_t kDefaultAlignment = 32;
constexpr size_t kMaxKeyBytes = 65535;    // the GGUF spec's limit on key length
constexpr size_t kMaxTensorName = 63;     // ggml's GGML_MAX_NAME, less the terminating NUL
constexpr uint32_t kMaxAlignment = 1u << 20;  // what the reader accepts

size_t scalar_bytes(VType t) {
    switch (t) {
        case VType::UINT8: case VType::INT8: case VType::BOOL: return 1;
        case VType::UINT16: case VType::INT16: return 2;
        case VType::UINT32: case VType::INT32: case VType::FLOAT32: return 4;
        case VType::UINT64: case VType::INT64: case VType::FLOAT64: return 8;
        default: return 0;
    }
}

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

constexpr int kMaxArrayDepth = 8;  // the reader refuses deeper nesting

// MetaValue's fields are public: refuse one whose counts disagree with its contents, rather than
// write a file the reader would reject.
void check_value(const std::string& key, const MetaValue& v, int depth) {
    if (v.type != VType::ARRAY) {
        if (v.type != VType::STRING && scalar_bytes(v.type) == 0)
            fail("gguf writer: key '", key, "': unknown value type ", uint32_t(v.type));
        return;
    }
    if (depth >= kMaxArrayDepth) fail("gguf writer: key '", key, "': arrays nested deeper than ", kMaxArrayDepth);
    size_t have = v.elem == VType::STRING  ? v.strs.size()
                : v.elem == VType::ARRAY   ? v.items.size()
                : scalar_bytes(v.elem) > 0 ? v.raw.size() / scalar_bytes(v.elem)
                                           : size_t(-1);
    if (have == size_t(-1)) fail("gguf writer: key '", key, "': unknown array element type ", uint32_t(v.elem));
    bool whole = scalar_bytes(v.elem) == 0 || v.raw.size() % scalar_bytes(v.elem) == 0;
    if (have != v.count || !whole) fail("gguf writer: key '", key, "': array count ", v.count, " does not match its data");
    for (const MetaValue& item : v.items) {
        if (item.type != VType::ARRAY) fail("gguf writer: key '", key, "': an array of arrays holds a ", vtype_name(item.type));
        check_value(key, item, depth + 1);
    }
}

// The alignment a general.alignment value asks for, or 0 if it is not a usable one.
size_t alignment_of(const MetaValue& v) {
    size_t n = scalar_bytes(v.type);
    if (n == 0 || v.type == VType::BOOL || v.type == VType::FLOAT32 || v.type == VType::FLOAT64) return 0;
    uint64_t a = n == 8 ? v.bits : v.bits & ((uint64_t(1) << (8 * n)) - 1);
    bool is_signed = v.type == VType::INT8 || v.type == VType::INT16 || v.type == VType::INT32 || v.type == VType::INT64;
    if (is_signed && (a >> (8 * n - 1)) & 1) return 0;  // negative
    if (a == 0 || (a & (a - 1)) != 0 || a > kMaxAlignment) return 0;
    return size_t(a);
}

}  // namespace

// ---- MetaValue ----

MetaValue MetaValue::string(std::string s) {
    MetaValue v;
    v.type = VType::STRING;
    v.str = std::move(s);
    return v;
}

MetaValue MetaValue::bools(const std::vector<bool>& xs) {
    MetaValue v;
    v.type = VType::ARRAY;
    v.elem = VType::BOOL;
    v.count = xs.size();
    for (bool b : xs) v.raw.push_back(b ? 1 : 0);
    return v;
}

MetaValue MetaValue::strings(std::vector<std::string> xs) {
    MetaValue v;
    v.type = VType::ARRAY;
    v.elem = VType::STRING;
    v.count = xs.size();
    v.strs = std::move(xs);
    return v;
}

MetaValue MetaValue::arrays(std::vector<MetaValue> xs) {
    for (const MetaValue& x : xs)
        if (x.type != VType::ARRAY) fail("gguf writer: an array of arrays got an item of type ", vtype_name(x.type));
    MetaValue v;
    v.type = VType::ARRAY;
    v.elem = VType::ARRAY;
    v.count = xs.size();
    v.items = std::move(xs);
    return v;
}

MetaValue MetaValue::copy_of(const Value& src) {
    MetaValue v;
    v.type = src.type;
    switch (src.type) {
        case VType::STRING: v.str = std::string(src.str); break;
        case VType::FLOAT32: { float x = float(src.f); std::memcpy(&v.bits, &x, 4); break; }
        case VType::FLOAT64: std::memcpy(&v.bits, &src.f, 8); break;
        case VType::ARRAY:
            v.elem = src.elem;
            v.count = src.count;
            if (src.elem == VType::STRING) {
                v.strs.assign(src.strs.begin(), src.strs.end());
            } else if (src.elem == VType::ARRAY) {
                for (const Value& item : src.items) v.items.push_back(copy_of(item));
            } else if (src.count > 0) {
                v.raw.assign(src.raw, src.raw + src.count * scalar_bytes(src.elem));
            }
            break;
        default: v.bits = src.u; break;  // integers and bool: the low bytes hold the value
    }
    return v;
}

// ---- Writer: metadata ----

void Writer::set(const std::string& key, MetaValue value) {
    if (key.empty() || key.size() > kMaxKeyBytes)
        fail("gguf writer: metadata key length ", key.size(), " is outside 1..", kMaxKeyBytes);
    check_value(key, value, 0);
    if (key == "general.alignment" && alignment_of(value) == 0)
        fail("gguf writer: general.alignment must be an integer power of two up to ", kMaxAlignment);
    for (auto& kv : kvs_)
        if (kv.first == key) { kv.second = std::move(value); return; }
    kvs_.emplace_back(key, std::move(value));
}

bool Writer::remove(const std::string& key) {
    for (auto it = kvs_.begin(); it != kvs_.end(); ++it)
        if (it->first == key) { kvs_.erase(it); return true; }
    return false;
}

const MetaValue* Writer::find(const std::string& key) const {
    for (const auto& kv : kvs_)
        if (kv.first == key) return &kv.second;
    return nullptr;
}

void Writer::set_alignment(uint32_t bytes) { set("general.alignment", MetaValue::u32(bytes)); }

size_t Writer::alignment() const {
    const MetaValue* a = find("general.alignment");
    return a ? alignment_of(*a) : kDefaultAlignment;
}

// ---- Writer: tensors ----

size_t Writer::tensor_bytes(DType type, const std::vector<int64_t>& shape) {
    const DTypeInfo* info = dtype_info(uint32_t(type));
    if (!info) fail("gguf writer: unknown tensor type id ", uint32_t(type));
    if (shape.empty() || shape.size() > 4) fail("gguf writer: a tensor has 1 to 4 dimensions, got ", shape.size());
    int64_t rows = 1;
    for (size_t d = 0; d < shape.size(); d++) {
        if (shape[d] <= 0) fail("gguf writer: dimension ", d, " is ", shape[d], " (must be > 0)");
        if (d > 0 && __builtin_mul_overflow(rows, shape[d], &rows)) fail("gguf writer: tensor too large");
    }
    if (shape[0] % info->block_size != 0)
        fail("gguf writer: row length ", shape[0], " is not a multiple of the ", info->name, " block size ",
             info->block_size);
    // The same limits the reader checks: the element count and the byte size fit in int64.
    int64_t elements = 0, row = 0, bytes = 0;
    if (__builtin_mul_overflow(shape[0], rows, &elements) ||
        __builtin_mul_overflow(shape[0] / info->block_size, int64_t(info->block_bytes), &row) ||
        __builtin_mul_overflow(row, rows, &bytes))
        fail("gguf writer: tensor too large");
    return size_t(bytes);
}

Writer::Tensor& Writer::new_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape) {
    if (name.empty() || name.size() > kMaxTensorName)
        fail("gguf writer: tensor name '", name, "' must be 1 to ", kMaxTensorName, " bytes");
    for (const Tensor& t : tensors_)
        if (t.name == name) fail("gguf writer: duplicate tensor name '", name, "'");
    size_t nbytes;
    try {
        nbytes = tensor_bytes(type, shape);
    } catch (const Error& e) {
        fail(e.what(), " (tensor '", name, "')");
    }
    Tensor& t = tensors_.emplace_back();
    t.name = name;
    t.type = type;
    t.shape = shape;
    t.nbytes = nbytes;
    return t;
}

void Writer::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                        std::vector<uint8_t> bytes) {
    size_t want = tensor_bytes(type, shape);
    if (bytes.size() != want)
        fail("gguf writer: tensor '", name, "' has ", bytes.size(), " bytes of data, its shape needs ", want);
    new_tensor(name, type, shape).owned = std::move(bytes);
}

void Writer::add_tensor_view(const std::string& name, DType type, const std::vector<int64_t>& shape,
                             const void* data) {
    if (!data) fail("gguf writer: tensor '", name, "' has no data");
    new_tensor(name, type, shape).view = data;
}

void Writer::add_tensor_fill(const std::string& name, DType type, const std::vector<int64_t>& shape, Fill fill) {
    if (!fill) fail("gguf writer: tensor '", name, "' has no fill function");
    new_tensor(name, type, shape).fill = std::move(fill);
}

// ---- Writer: output ----

// Where the bytes go: a file or a vector. Counts what it has written, for padding.
struct ByteSink {
    virtual ~ByteSink() = default;
    virtual void put(const void* p, size_t n) = 0;
    size_t written = 0;

    template <class T> void num(T x) { put(&x, sizeof x); }
    void str(const std::string& s) {
        num<uint64_t>(s.size());
        put(s.data(), s.size());
    }
    void pad_to(size_t alignment) {
        static const uint8_t zeros[256] = {};
        size_t n = align_up(written, alignment) - written;
        for (size_t k = 0; k < n; k += sizeof zeros) put(zeros, std::min(sizeof zeros, n - k));
    }
};

namespace {

// Writes an array's element type, count and elements (the part after an ARRAY type tag).
void put_array(ByteSink& out, const MetaValue& v);

void put_value(ByteSink& out, const MetaValue& v) {
    if (v.type == VType::STRING) out.str(v.str);
    else if (v.type == VType::ARRAY) put_array(out, v);
    else out.put(&v.bits, scalar_bytes(v.type));
}

void put_array(ByteSink& out, const MetaValue& v) {
    out.num<uint32_t>(uint32_t(v.elem));
    out.num<uint64_t>(v.count);
    if (v.elem == VType::STRING) {
        for (const std::string& s : v.strs) out.str(s);
    } else if (v.elem == VType::ARRAY) {
        for (const MetaValue& item : v.items) put_array(out, item);
    } else {
        out.put(v.raw.data(), v.raw.size());
    }
}

}  // namespace

void Writer::write_to(ByteSink& out) const {
    const size_t align = alignment();
    out.put("GGUF", 4);
    out.num<uint32_t>(kVersion);
    out.num<uint64_t>(tensors_.size());
    out.num<uint64_t>(kvs_.size());
    for (const auto& [key, value] : kvs_) {
        out.str(key);
        out.num<uint32_t>(uint32_t(value.type));
        put_value(out, value);
    }
    size_t offset = 0;  // within the data section
    for (const Tensor& t : tensors_) {
        out.str(t.name);
        out.num<uint32_t>(uint32_t(t.shape.size()));
        for (int64_t d : t.shape) out.num<uint64_t>(uint64_t(d));
        out.num<uint32_t>(uint32_t(t.type));
        out.num<uint64_t>(offset);
        offset += align_up(t.nbytes, align);
    }
    out.pad_to(align);

    std::vector<uint8_t> buffer;  // for fill callbacks; reused, so it holds one tensor at a time
    for (const Tensor& t : tensors_) {
        if (t.fill) {
            if (buffer.size() < t.nbytes) buffer.resize(t.nbytes);
            t.fill(buffer.data(), t.nbytes);
            out.put(buffer.data(), t.nbytes);
        } else {
            out.put(t.view ? t.view : t.owned.data(), t.nbytes);
        }
        out.pad_to(align);
    }
}

std::vector<uint8_t> Writer::write_memory() const {
    struct ToVector : ByteSink {
        std::vector<uint8_t> bytes;
        void put(const void* p, size_t n) override {
            const uint8_t* b = static_cast<const uint8_t*>(p);
            bytes.insert(bytes.end(), b, b + n);
            written += n;
        }
    } out;
    write_to(out);
    return std::move(out.bytes);
}

void Writer::write_file(const std::string& path) const {
    struct ToFile : ByteSink {
        std::string path;
        std::FILE* f = nullptr;
        void put(const void* p, size_t n) override {
            if (n && std::fwrite(p, 1, n, f) != n) fail(path, ": write failed: ", std::strerror(errno));
            written += n;
        }
    } out;
    const std::string tmp = path + ".tmp";
    out.path = tmp;
    out.f = std::fopen(tmp.c_str(), "wb");
    if (!out.f) fail(tmp, ": cannot create: ", std::strerror(errno));
    std::setvbuf(out.f, nullptr, _IOFBF, 1 << 20);
    try {
        write_to(out);
        std::FILE* f = out.f;
        out.f = nullptr;
        if (std::fclose(f) != 0) fail(tmp, ": write failed: ", std::strerror(errno));
        if (std::rename(tmp.c_str(), path.c_str()) != 0)
            fail(path, ": cannot rename ", tmp, " to it: ", std::strerror(errno));
    } catch (...) {
        if (out.f) std::fclose(out.f);
        std::remove(tmp.c_str());
        throw;
    }
}

}  // namespace lumen::gguf
