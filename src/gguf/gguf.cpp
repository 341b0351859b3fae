#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "util/error.h"

namespace lumen::gguf {

namespace {

constexpr int kMaxArrayDepth = 8;
constexpr uint64_t kMaxDims = 4;
constexpr size_t kMaxKeyBytes = 65535;  // the GGUF spec's limit on a metadata key
// Counts in the file are only trusted up to this many elements for up-front reservations;
// beyond it containers grow as elements are actually parsed, so a corrupt count in a large
// file cannot make us allocate many times the file's size before the parse fails.
constexpr uint64_t kMaxReserve = 1 << 16;

size_t reserve_for(uint64_t count) { return size_t(std::min(count, kMaxReserve)); }

size_t scalar_size(VType t) {
    switch (t) {
        case VType::UINT8: case VType::INT8: case VType::BOOL: return 1;
        case VType::UINT16: case VType::INT16: return 2;
        case VType::UINT32: case VType::INT32: case VType::FLOAT32: return 4;
        case VType::UINT64: case VType::INT64: case VType::FLOAT64: return 8;
        default: return 0;  // STRING, ARRAY: variable size
    }
}

bool valid_vtype(uint32_t t) { return t <= uint32_t(VType::FLOAT64); }

// Reads a scalar of type t at p into the Value's numeric fields.
void decode_scalar(VType t, const uint8_t* p, Value& v) {
    auto rd = [&](auto x) { std::memcpy(&x, p, sizeof x); return x; };
    switch (t) {
        case VType::UINT8: v.u = rd(uint8_t{}); v.i = int64_t(v.u); break;
        case VType::INT8: v.i = rd(int8_t{}); v.u = uint64_t(v.i); break;
        case VType::UINT16: v.u = rd(uint16_t{}); v.i = int64_t(v.u); break;
        case VType::INT16: v.i = rd(int16_t{}); v.u = uint64_t(v.i); break;
        case VType::UINT32: v.u = rd(uint32_t{}); v.i = int64_t(v.u); break;
        case VType::INT32: v.i = rd(int32_t{}); v.u = uint64_t(v.i); break;
        case VType::UINT64: v.u = rd(uint64_t{}); v.i = int64_t(v.u); break;
        case VType::INT64: v.i = rd(int64_t{}); v.u = uint64_t(v.i); break;
        case VType::FLOAT32: v.f = rd(float{}); break;
        case VType::FLOAT64: v.f = rd(double{}); break;
        case VType::BOOL: v.u = rd(uint8_t{}) != 0; v.i = int64_t(v.u); break;
        default: break;
    }
}

// A bounds-checked cursor over the file.
struct Reader {
    const File& file;
    const uint8_t* base;
    size_t size;
    size_t pos = 0;

    size_t left() const { return size - pos; }
    void need(size_t n, const char* what) const {
        if (n > left()) {
            std::ostringstream os;
            os << "truncated: " << what << " at offset " << pos << " needs " << n << " bytes, "
               << left() << " left";
            file.error(os.str());
        }
    }
    template <class T> T get(const char* what) {
        need(sizeof(T), what);
        T x;
        std::memcpy(&x, base + pos, sizeof x);
        pos += sizeof x;
        return x;
    }
    std::string_view str(const char* what) {
        uint64_t n = get<uint64_t>(what);
        if (n > left()) {
            std::ostringstream os;
            os << what << " at offset " << pos - 8 << " has length " << n << ", past the end of the file";
            file.error(os.str());
        }
        std::string_view s(reinterpret_cast<const char*>(base + pos), size_t(n));
        pos += size_t(n);
        return s;
    }
};

void read_value(Reader& r, VType t, Value& v, const std::string& key, int depth);

void read_array(Reader& r, Value& v, const std::string& key, int depth) {
    if (depth >= kMaxArrayDepth) r.file.error("key '" + key + "': arrays nested too deeply");
    uint32_t et = r.get<uint32_t>("array element type");
    if (!valid_vtype(et))
        r.file.error("key '" + key + "': unknown array element type " + std::to_string(et));
    v.elem = VType(et);
    v.count = r.get<uint64_t>("array length");
    // Each element takes at least this many bytes, so the count can be checked before any work.
    size_t min_elem = v.elem == VType::STRING ? 8 : v.elem == VType::ARRAY ? 12 : scalar_size(v.elem);
    if (v.count > r.left() / min_elem) {
        std::ostringstream os;
        os << "key '" << key << "': array of " << v.count << " " << vtype_name(v.elem)
           << " elements runs past the end of the file (" << r.left() << " bytes left)";
        r.file.error(os.str());
    }
    if (v.elem == VType::STRING) {
        v.strs.reserve(reserve_for(v.count));
        for (uint64_t k = 0; k < v.count; k++) v.strs.push_back(r.str("array string"));
    } else if (v.elem == VType::ARRAY) {
        v.items.reserve(reserve_for(v.count));
        for (uint64_t k = 0; k < v.count; k++) {
            Value& item = v.items.emplace_back();
            item.type = VType::ARRAY;
            read_array(r, item, key, depth + 1);
        }
    } else {
        v.raw = r.base + r.pos;
        r.pos += size_t(v.count) * min_elem;
    }
}

void read_value(Reader& r, VType t, Value& v, const std::string& key, int depth) {
    v.type = t;
    if (t == VType::STRING) {
        v.str = r.str("string value");
    } else if (t == VType::ARRAY) {
        read_array(r, v, key, depth);
    } else {
        size_t n = scalar_size(t);
        r.need(n, "scalar value");
        decode_scalar(t, r.base + r.pos, v);
        r.pos += n;
    }
}

bool mul_ok(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

}  // namespace

const char* vtype_name(VType t) {
    static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "str", "arr", "u64", "i64", "f64"};
    return uint32_t(t) <= 12 ? names[uint32_t(t)] : "?";
}

bool Value::is_int() const {
    switch (type) {
        case VType::UINT8: case VType::INT8: case VType::UINT16: case VType::INT16:
        case VType::UINT32: case VType::INT32: case VType::UINT64: case VType::INT64: return true;
        default: return false;
    }
}
bool Value::is_float() const { return type == VType::FLOAT32 || type == VType::FLOAT64; }

double Value::num_at(uint64_t k) const {
    Value x;
    decode_scalar(elem, raw + k * scalar_size(elem), x);
    return (elem == VType::FLOAT32 || elem == VType::FLOAT64) ? x.f : double(x.i);
}

int64_t Value::int_at(uint64_t k) const {
    Value x;
    decode_scalar(elem, raw + k * scalar_size(elem), x);
    if (elem != VType::FLOAT32 && elem != VType::FLOAT64) return x.i;
    // Converting a NaN or out-of-range double to int64 is undefined: saturate instead.
    if (!(x.f == x.f)) return 0;
    if (x.f >= 9.2233720368547758e18) return INT64_MAX;
    if (x.f <= -9.2233720368547758e18) return INT64_MIN;
    return int64_t(x.f);
}

std::string Value::to_string(size_t max_items) const {
    std::ostringstream os;
    switch (type) {
        case VType::STRING: {
            std::string s(str.substr(0, 120));
            for (char& c : s) if (c == '\n') c = ' ';
            os << '"' << s << (str.size() > 120 ? "...\"" : "\"");
            break;
        }
        case VType::BOOL: os << (u ? "true" : "false"); break;
        case VType::FLOAT32: case VType::FLOAT64: os << f; break;
        case VType::UINT8: case VType::UINT16: case VType::UINT32: case VType::UINT64: os << u; break;
        case VType::ARRAY: {
            os << "[" << vtype_name(elem) << " x " << count << "]";
            if (max_items == 0) break;
            os << " [";
            size_t n = size_t(std::min<uint64_t>(count, max_items));
            for (size_t k = 0; k < n; k++) {
                if (k) os << ", ";
                if (elem == VType::STRING) os << '"' << strs[k] << '"';
                else if (elem == VType::ARRAY) os << items[k].to_string(0);
                else if (elem == VType::FLOAT32 || elem == VType::FLOAT64) os << num_at(k);
                else os << int_at(k);
            }
            if (count > n) os << ", ...";
            os << "]";
            break;
        }
        default: os << i; break;
    }
    return os.str();
}

std::string TensorInfo::shape_string() const {
    std::string s = "[";
    for (int d = 0; d < n_dims; d++) s += (d ? ", " : "") + std::to_string(ne[d]);
    return s + "]";
}

void File::error(const std::string& what) const { throw Error(path_ + ": " + what); }

std::unique_ptr<File> File::open(const std::string& path) {
    std::unique_ptr<File> f(new File());
    f->path_ = path;
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) f->error(std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; ::close(fd); f->error(std::strerror(e)); }
    if (S_ISDIR(st.st_mode)) { ::close(fd); f->error("is a directory, not a GGUF file"); }
    f->size_ = size_t(st.st_size);
    if (f->size_ == 0) { ::close(fd); f->error("empty file, not a GGUF model"); }
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) f->error(std::string("cannot map file: ") + std::strerror(e));
    f->base_ = static_cast<const uint8_t*>(p);
    f->owns_map_ = true;
    f->parse();
    return f;
}

std::unique_ptr<File> File::from_memory(const uint8_t* data, size_t size, const std::string& name) {
    std::unique_ptr<File> f(new File());
    f->path_ = name;
    f->base_ = data;
    f->size_ = size;
    f->parse();
    return f;
}

File::~File() {
    if (owns_map_ && base_) munmap(const_cast<uint8_t*>(base_), size_);
}

void File::parse() {
    Reader r{*this, base_, size_};
    if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) error("not a GGUF file (bad magic)");
    r.pos = 4;
    version_ = r.get<uint32_t>("version");
    if (version_ == 1) error("GGUF version 1 is too old; convert the model again with a current llama.cpp");
    if (version_ > 0xFFFF && (version_ & 0xFFFF) == 0) error("big-endian GGUF files are not supported");
    if (version_ != 2 && version_ != 3) error("unsupported GGUF version " + std::to_string(version_));
    uint64_t n_tensors = r.get<uint64_t>("tensor count");
    uint64_t n_kv = r.get<uint64_t>("metadata count");
    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at
    // least 8 + 4 + 8 + 4 + 8. Larger counts cannot be real: refuse before allocating anything.
    if (n_kv > r.left() / 13) error("metadata count " + std::to_string(n_kv) + " is larger than the file can hold");
    if (n_tensors > r.left() / 32) error("tensor count " + std::to_string(n_tensors) + " is larger than the file can hold");

    kvs_.reserve(reserve_for(n_kv));
    for (uint64_t k = 0; k < n_kv; k++) {
        KV kv;
        size_t key_at = r.pos;
        kv.key = std::string(r.str("metadata key"));
        if (kv.key.empty()) error("metadata entry " + std::to_string(k) + " has an empty key");
        if (kv.key.size() > kMaxKeyBytes)
            error("metadata key at offset " + std::to_string(key_at) + " is " + std::to_string(kv.key.size()) +
                  " bytes long (GGUF allows at most " + std::to_string(kMaxKeyBytes) + ")");
        uint32_t t = r.get<uint32_t>("metadata value type");
        if (!valid_vtype(t)) error("key '" + kv.key + "': unknown value type " + std::to_string(t));
        read_value(r, VType(t), kv.value, kv.key, 0);
        if (!kv_index_.emplace(kv.key, kvs_.size()).second) error("duplicate metadata key '" + kv.key + "'");
        kvs_.push_back(std::move(kv));
    }

    if (const Value* a = find("general.alignment")) {
        if (!a->is_int() || a->i <= 0 || (a->u & (a->u - 1)) != 0 || a->u > (1u << 20))
            error("general.alignment must be a power of two up to 1 MiB, got " + a->to_string());
        alignment_ = size_t(a->u);
    }

    tensors_.reserve(reserve_for(n_tensors));
    for (uint64_t k = 0; k < n_tensors; k++) {
        TensorInfo t;
        t.name = std::string(r.str("tensor name"));
        uint32_t nd = r.get<uint32_t>("tensor dimension count");
        if (nd == 0 || nd > kMaxDims)
            error("tensor '" + t.name + "' has " + std::to_string(nd) + " dimensions (1 to 4 allowed)");
        t.n_dims = int(nd);
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = r.get<uint64_t>("tensor dimension");
            if (ne == 0 || ne > uint64_t(INT64_MAX))
                error("tensor '" + t.name + "': dimension " + std::to_string(d) + " is " + std::to_string(ne));
            t.ne[d] = int64_t(ne);
        }
        uint32_t type = r.get<uint32_t>("tensor type");
        const DTypeInfo* info = dtype_info(type);
        if (!info) error("tensor '" + t.name + "': unknown type id " + std::to_string(type));
        t.type = DType(type);
        t.offset = r.get<uint64_t>("tensor offset");
        int64_t n = 1, rows = 1;
        if (!mul_ok(t.ne[1], t.ne[2], rows) || !mul_ok(rows, t.ne[3], rows) || !mul_ok(t.ne[0], rows, n))
            error("tensor '" + t.name + "': element count overflows");
        if (t.ne[0] % info->block_size != 0)
            error("tensor '" + t.name + "': row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                  info->name + " block size " + std::to_string(info->block_size));
        int64_t row = 0, bytes = 0;
        if (!mul_ok(t.ne[0] / info->block_size, int64_t(info->block_bytes), row) || !mul_ok(row, rows, bytes))
            error("tensor '" + t.name + "': byte size overflows");
        t.nbytes = size_t(bytes);
        if (!tensor_index_.emplace(t.name, tensors_.size()).second)
            error("duplicate tensor name '" + t.name + "'");
        tensors_.push_back(std::move(t));
    }

    data_offset_ = (r.pos + alignment_ - 1) / alignment_ * alignment_;
    if (!tensors_.empty() && data_offset_ > size_) error("truncated: the tensor data section is missing");
    size_t data_size = tensors_.empty() ? 0 : size_ - data_offset_;

    std::vector<const TensorInfo*> by_offset;
    for (TensorInfo& t : tensors_) {
        if (t.offset % alignment_ != 0)
            error("tensor '" + t.name + "': data offset " + std::to_string(t.offset) + " is not aligned to " +
                  std::to_string(alignment_));
        if (t.offset > data_size || t.nbytes > data_size - t.offset) {
            std::ostringstream os;
            os << "tensor '" << t.name << "': data [" << t.offset << ", +" << t.nbytes
               << ") runs past the end of the file (data section holds " << data_size
               << " bytes; truncated download?)";
            error(os.str());
        }
        t.data = base_ + data_offset_ + t.offset;
        by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); k++) {
        const TensorInfo* prev = by_offset[k - 1];
        if (by_offset[k]->offset < prev->offset + prev->nbytes)
            error("tensors '" + prev->name + "' and '" + by_offset[k]->name + "' overlap");
    }
}

const Value* File::find(std::string_view key) const {
    auto it = kv_index_.find(std::string(key));
    return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::string File::get_str(std::string_view key, const std::string& def) const {
    const Value* v = find(key);
    if (!v) return def;
    if (v->type != VType::STRING) error("key '" + std::string(key) + "' should be a string, is " + vtype_name(v->type));
    return std::string(v->str);
}

int64_t File::get_int(std::string_view key, int64_t def) const {
    const Value* v = find(key);
    if (!v) return def;
    if (!v->is_int()) error("key '" + std::string(key) + "' should be an integer, is " + vtype_name(v->type));
    return v->i;
}

double File::get_float(std::string_view key, double def) const {
    const Value* v = find(key);
    if (!v) return def;
    if (v->is_float()) return v->f;
    if (v->is_int()) return double(v->i);
    error("key '" + std::string(key) + "' should be a number, is " + vtype_name(v->type));
}

bool File::get_bool(std::string_view key, bool def) const {
    const Value* v = find(key);
    if (!v) return def;
    if (v->type != VType::BOOL) error("key '" + std::string(key) + "' should be a bool, is " + vtype_name(v->type));
    return v->u != 0;
}

const Value* File::get_array(std::string_view key, VType elem) const {
    const Value* v = find(key);
    if (!v) return nullptr;
    if (v->type != VType::ARRAY || v->elem != elem)
        error("key '" + std::string(key) + "' should be an array of " + vtype_name(elem));
    return v;
}

}  // namespace lumen::gguf
