// GGUF writer -> reader round trips, and the reader's answers to corrupt files: every corruption
// must end in a lumen::Error whose message names the problem (never a crash or a huge allocation).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <unistd.h>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

using lumen::DType;
using lumen::gguf::File;
using lumen::gguf::MetaValue;
using lumen::gguf::Value;
using lumen::gguf::VType;
using lumen::gguf::Writer;

namespace {

using Bytes = std::vector<uint8_t>;

const std::string kVocabDir = LUMEN_SOURCE_DIR "/../shared/tokenizer-tests";

std::unique_ptr<File> parse(const Bytes& b, const std::string& name = "test.gguf") {
    return File::from_memory(b.data(), b.size(), name);
}

// The reader's error for `b`, or "(parsed fine)". Anything but a lumen::Error propagates and fails.
std::string parse_error(const Bytes& b, const std::string& name = "test.gguf") {
    try {
        parse(b, name);
    } catch (const lumen::Error& e) {
        return e.what();
    }
    return "(parsed fine)";
}

#define CHECK_PARSE_ERROR(bytes, want)                                                               \
    do {                                                                                             \
        std::string err_ = parse_error(bytes);                                                       \
        CHECK_MESSAGE(err_.find(want) != std::string::npos, "want '" << (want) << "', got: " << err_); \
        CHECK_MESSAGE(err_.rfind("test.gguf: ", 0) == 0, "error does not name the file: " << err_);  \
    } while (0)

Bytes pattern(size_t n, uint8_t seed) {
    Bytes b(n);
    for (size_t k = 0; k < n; k++) b[k] = uint8_t(k * 31 + seed);
    return b;
}

Bytes read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot read " << path << " (the shared tokenizer test files)");
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> vocab_files() {
    std::vector<std::string> out;
    if (DIR* d = opendir(kVocabDir.c_str())) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 5 && n.compare(n.size() - 5, 5, ".gguf") == 0) out.push_back(kVocabDir + "/" + n);
        }
        closedir(d);
    }
    return out;
}

// Little-endian field access into a file image.
uint32_t get_u32(const Bytes& b, size_t at) { uint32_t x; std::memcpy(&x, &b[at], 4); return x; }
uint64_t get_u64(const Bytes& b, size_t at) { uint64_t x; std::memcpy(&x, &b[at], 8); return x; }
void put_u32(Bytes& b, size_t at, uint32_t x) { REQUIRE(at + 4 <= b.size()); std::memcpy(&b[at], &x, 4); }
void put_u64(Bytes& b, size_t at, uint64_t x) { REQUIRE(at + 8 <= b.size()); std::memcpy(&b[at], &x, 8); }

// Offset just past the GGUF string `s` (its u64 length and bytes) in the file image.
size_t after_string(const Bytes& b, const std::string& s) {
    Bytes needle(8 + s.size());
    uint64_t n = s.size();
    std::memcpy(needle.data(), &n, 8);
    std::memcpy(needle.data() + 8, s.data(), s.size());
    auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
    REQUIRE_MESSAGE(it != b.end(), "string '" << s << "' not in file");
    return size_t(it - b.begin()) + needle.size();
}

// Where a metadata entry's type tag sits; its value follows 4 bytes later.
size_t kv_type_at(const Bytes& b, const std::string& key) { return after_string(b, key); }

// Field offsets of a tensor info record.
struct InfoAt {
    size_t n_dims, ne, type, offset;  // ne: ne[d] at ne + 8 * d
};
InfoAt tensor_info_at(const Bytes& b, const std::string& name) {
    size_t p = after_string(b, name);
    uint32_t nd = get_u32(b, p);
    REQUIRE(nd <= 4);
    return {p, p + 4, p + 4 + 8 * nd, p + 8 + 8 * nd};
}

// Hand-built files, for what the writer refuses to produce.
struct Raw {
    Bytes b;
    Raw& u32(uint32_t x) { b.resize(b.size() + 4); std::memcpy(&b[b.size() - 4], &x, 4); return *this; }
    Raw& u64(uint64_t x) { b.resize(b.size() + 8); std::memcpy(&b[b.size() - 8], &x, 8); return *this; }
    Raw& str(const std::string& s) { u64(s.size()); b.insert(b.end(), s.begin(), s.end()); return *this; }
    Raw& header(uint64_t n_tensors, uint64_t n_kv) {
        b.insert(b.end(), {'G', 'G', 'U', 'F'});
        return u32(3).u64(n_tensors).u64(n_kv);
    }
    Raw& pad(size_t n) { b.resize(b.size() + n, 0); return *this; }
};

// A small valid model: some metadata and three tensors of different types.
//   tensor.a F32 [4, 4] 64 bytes at 0; tensor.b Q8_0 [32, 2] 68 bytes at 64; tensor.c F16 [8, 1, 1] 16 bytes at 160.
Bytes small_model() {
    Writer w;
    w.set("general.architecture", MetaValue::string("llama"));
    w.set_alignment(32);
    w.set("test.count", MetaValue::u32(7));
    w.set("test.words", MetaValue::strings({"alpha", "beta", "gamma"}));
    w.add_tensor("tensor.a", DType::F32, {4, 4}, pattern(64, 1));
    w.add_tensor("tensor.b", DType::Q8_0, {32, 2}, pattern(68, 2));
    w.add_tensor("tensor.c", DType::F16, {8, 1, 1}, pattern(16, 3));
    return w.write_memory();
}

// An array nested `levels` deep whose innermost array is an empty u8 array.
Bytes nested_arrays(int levels) {
    Raw r;
    r.header(0, 1).str("test.deep").u32(uint32_t(VType::ARRAY));
    for (int k = 1; k < levels; k++) r.u32(uint32_t(VType::ARRAY)).u64(1);
    r.u32(uint32_t(VType::UINT8)).u64(0);
    return r.b;
}

bool names_truncation(const std::string& e) {
    for (const char* w : {"truncated", "past the end", "bad magic", "larger than the file can hold"})
        if (e.find(w) != std::string::npos) return true;
    return false;
}

std::string temp_path(const std::string& stem) {
    return "/tmp/lumen-test-gguf-" + std::to_string(getpid()) + "-" + stem;
}

bool exists(const std::string& p) { return access(p.c_str(), F_OK) == 0; }

}  // namespace

TEST_SUITE("gguf") {

// ---------------- round trips ----------------

TEST_CASE("every scalar type round-trips through writer and reader") {
    Writer w;
    w.set("u8", MetaValue::u8(250));
    w.set("i8", MetaValue::i8(-120));
    w.set("u16", MetaValue::u16(65000));
    w.set("i16", MetaValue::i16(-32000));
    w.set("u32", MetaValue::u32(4000000000u));
    w.set("i32", MetaValue::i32(-2000000000));
    w.set("u64", MetaValue::u64(std::numeric_limits<uint64_t>::max()));
    w.set("i64", MetaValue::i64(std::numeric_limits<int64_t>::min()));
    w.set("f32", MetaValue::f32(1.5e-5f));
    w.set("f64", MetaValue::f64(-3.25e100));
    w.set("yes", MetaValue::boolean(true));
    w.set("no", MetaValue::boolean(false));
    w.set("str", MetaValue::string("héllo\nworld"));
    w.set("empty", MetaValue::string(""));
    w.set("nul", MetaValue::string(std::string("a\0b", 3)));
    Bytes b = w.write_memory();
    auto f = parse(b);

    CHECK(f->version() == 3);
    CHECK(f->tensors().empty());
    REQUIRE(f->kvs().size() == 15);
    CHECK(f->kvs()[0].key == "u8");  // order kept
    CHECK(f->kvs()[14].key == "nul");
    CHECK(f->find("u8")->type == VType::UINT8);
    CHECK(f->get_int("u8", 0) == 250);
    CHECK(f->get_int("i8", 0) == -120);
    CHECK(f->get_int("u16", 0) == 65000);
    CHECK(f->get_int("i16", 0) == -32000);
    CHECK(f->get_int("u32", 0) == 4000000000ll);
    CHECK(f->get_int("i32", 0) == -2000000000);
    CHECK(f->find("u64")->type == VType::UINT64);
    CHECK(f->find("u64")->u == std::numeric_limits<uint64_t>::max());
    CHECK(f->get_int("i64", 0) == std::numeric_limits<int64_t>::min());
    CHECK(f->find("f32")->type == VType::FLOAT32);
    CHECK(f->get_float("f32", 0) == doctest::Approx(1.5e-5).epsilon(1e-6));
    CHECK(f->get_float("f64", 0) == -3.25e100);
    CHECK(f->get_bool("yes", false) == true);
    CHECK(f->get_bool("no", true) == false);
    CHECK(f->get_str("str") == "héllo\nworld");
    CHECK(f->get_str("empty", "x") == "");
    CHECK(f->get_str("nul") == std::string("a\0b", 3));
    CHECK(f->find("i8")->to_string() == "-120");
    CHECK(f->find("yes")->to_string() == "true");
    CHECK(f->find("str")->to_string() == "\"héllo world\"");
    // Wrong-type getters name the key.
    CHECK_THROWS_WITH_AS(f->get_str("u8"), doctest::Contains("key 'u8' should be a string"), lumen::Error);
    CHECK_THROWS_WITH_AS(f->get_int("str", 0), doctest::Contains("should be an integer"), lumen::Error);
}

TEST_CASE("arrays of every element type, strings and nested arrays round-trip") {
    Writer w;
    w.set("a.u8", MetaValue::array(std::vector<uint8_t>{0, 7, 255}));
    w.set("a.i8", MetaValue::array(std::vector<int8_t>{-128, 0, 127}));
    w.set("a.u16", MetaValue::array(std::vector<uint16_t>{1, 65535}));
    w.set("a.i16", MetaValue::array(std::vector<int16_t>{-32768, 5}));
    w.set("a.u32", MetaValue::array(std::vector<uint32_t>{4294967295u}));
    w.set("a.i32", MetaValue::array(std::vector<int32_t>{-7, 1 << 30}));
    w.set("a.u64", MetaValue::array(std::vector<uint64_t>{1ull << 40}));
    w.set("a.i64", MetaValue::array(std::vector<int64_t>{-(1ll << 50), 3}));
    w.set("a.f32", MetaValue::array(std::vector<float>{0.5f, -2.0f, 1e30f, NAN}));
    w.set("a.f64", MetaValue::array(std::vector<double>{1e-300, -1.0}));
    w.set("a.bool", MetaValue::bools({true, false, true}));
    w.set("a.str", MetaValue::strings({"one", "", "three\tfour", std::string(300, 'x')}));
    w.set("a.empty", MetaValue::array(std::vector<float>{}));
    w.set("a.nested", MetaValue::arrays({MetaValue::array(std::vector<int32_t>{1, 2}),
                                         MetaValue::strings({"p", "q", "r"}),
                                         MetaValue::arrays({MetaValue::arrays({MetaValue::bools({true})})}),
                                         MetaValue::array(std::vector<uint8_t>{})}));
    auto b = w.write_memory();
    auto f = parse(b);

    auto arr = [&](const char* key, VType elem, uint64_t count) {
        const Value* v = f->get_array(key, elem);
        REQUIRE_MESSAGE(v, key);
        CHECK(v->count == count);
        return v;
    };
    const Value* u8 = arr("a.u8", VType::UINT8, 3);
    CHECK(u8->int_at(0) == 0);
    CHECK(u8->int_at(2) == 255);
    CHECK(arr("a.i8", VType::INT8, 3)->int_at(0) == -128);
    CHECK(arr("a.u16", VType::UINT16, 2)->int_at(1) == 65535);
    CHECK(arr("a.i16", VType::INT16, 2)->int_at(0) == -32768);
    CHECK(arr("a.u32", VType::UINT32, 1)->int_at(0) == 4294967295ll);
    CHECK(arr("a.i32", VType::INT32, 2)->int_at(1) == (1 << 30));
    CHECK(arr("a.u64", VType::UINT64, 1)->int_at(0) == (1ll << 40));
    CHECK(arr("a.i64", VType::INT64, 2)->int_at(0) == -(1ll << 50));
    const Value* f32 = arr("a.f32", VType::FLOAT32, 4);
    CHECK(f32->num_at(0) == 0.5);
    CHECK(f32->num_at(1) == -2.0);
    CHECK(std::isnan(f32->num_at(3)));
    // int_at on floats saturates instead of converting out-of-range values (undefined behaviour).
    CHECK(f32->int_at(1) == -2);
    CHECK(f32->int_at(2) == std::numeric_limits<int64_t>::max());
    CHECK(f32->int_at(3) == 0);
    CHECK(arr("a.f64", VType::FLOAT64, 2)->num_at(0) == 1e-300);
    const Value* bools = arr("a.bool", VType::BOOL, 3);
    CHECK(bools->int_at(0) == 1);
    CHECK(bools->int_at(1) == 0);
    const Value* strs = arr("a.str", VType::STRING, 4);
    REQUIRE(strs->strs.size() == 4);
    CHECK(strs->strs[0] == "one");
    CHECK(strs->strs[1] == "");
    CHECK(strs->strs[2] == "three\tfour");
    CHECK(strs->strs[3] == std::string(300, 'x'));
    arr("a.empty", VType::FLOAT32, 0);
    CHECK(f->find("a.empty")->to_string() == "[f32 x 0] []");

    const Value* nested = arr("a.nested", VType::ARRAY, 4);
    REQUIRE(nested->items.size() == 4);
    CHECK(nested->items[0].elem == VType::INT32);
    CHECK(nested->items[0].int_at(1) == 2);
    CHECK(nested->items[1].elem == VType::STRING);
    CHECK(nested->items[1].strs.at(2) == "r");
    const Value& deep = nested->items[2].items.at(0).items.at(0);
    CHECK(deep.elem == VType::BOOL);
    CHECK(deep.count == 1);
    CHECK(deep.int_at(0) == 1);
    CHECK(nested->items[3].count == 0);
    CHECK(nested->to_string() == "[arr x 4] [[i32 x 2], [str x 3], [arr x 1], [u8 x 0]]");
    CHECK(u8->to_string() == "[u8 x 3] [0, 7, 255]");
    CHECK(strs->to_string(2) == "[str x 4] [\"one\", \"\", ...]");
    // Wrong element type is an error naming the key.
    CHECK_THROWS_WITH_AS(f->get_array("a.u8", VType::STRING), doctest::Contains("'a.u8' should be an array of str"),
                         lumen::Error);
}

TEST_CASE("arrays nested 8 deep parse; the reader's limit is exactly there") {
    auto f = parse(nested_arrays(8));
    const Value* v = f->find("test.deep");
    REQUIRE(v);
    int depth = 1;
    while (v->elem == VType::ARRAY) { v = &v->items.at(0); depth++; }
    CHECK(depth == 8);
    CHECK_PARSE_ERROR(nested_arrays(9), "arrays nested too deeply");
}

TEST_CASE("tensors round-trip from bytes, views and fill callbacks") {
    Bytes a = pattern(4 * 3 * 4, 9);          // F32 [4, 3]
    Bytes q = pattern(144 * 2 * 2, 10);       // Q4_K [256, 2, 2]
    Bytes h = pattern(2 * 64, 11);            // F16 [64]
    int fills = 0;
    Writer w;
    w.set("general.architecture", MetaValue::string("test"));
    w.add_tensor("a", DType::F32, {4, 3}, a);
    w.add_tensor_view("q", DType::Q4_K, {256, 2, 2}, q.data());
    w.add_tensor_fill("h", DType::F16, {64}, [&](uint8_t* dst, size_t n) {
        REQUIRE(n == h.size());
        std::memcpy(dst, h.data(), n);
        fills++;
    });
    w.add_tensor("q8", DType::Q8_0, {32, 1, 1, 3}, pattern(34 * 3, 12));
    CHECK(w.n_tensors() == 4);
    Bytes b = w.write_memory();
    CHECK(fills == 1);
    auto f = parse(b);
    REQUIRE(f->tensors().size() == 4);
    CHECK(f->data_offset() % 32 == 0);

    const auto* ta = f->find_tensor("a");
    REQUIRE(ta);
    CHECK(ta->type == DType::F32);
    CHECK(ta->n_dims == 2);
    CHECK(ta->ne[0] == 4);
    CHECK(ta->ne[1] == 3);
    CHECK(ta->ne[2] == 1);
    CHECK(ta->nbytes == a.size());
    CHECK(Bytes(ta->data, ta->data + ta->nbytes) == a);
    CHECK(ta->shape_string() == "[4, 3]");

    const auto* tq = f->find_tensor("q");
    REQUIRE(tq);
    CHECK(tq->type == DType::Q4_K);
    CHECK(tq->n_dims == 3);
    CHECK(tq->n_elements() == 1024);
    CHECK(Bytes(tq->data, tq->data + tq->nbytes) == q);

    const auto* th = f->find_tensor("h");
    REQUIRE(th);
    CHECK(th->n_dims == 1);
    CHECK(Bytes(th->data, th->data + th->nbytes) == h);

    const auto* t8 = f->find_tensor("q8");
    REQUIRE(t8);
    CHECK(t8->n_dims == 4);
    CHECK(t8->ne[3] == 3);
    CHECK(Bytes(t8->data, t8->data + t8->nbytes) == pattern(34 * 3, 12));
    for (const auto& t : f->tensors()) {
        CHECK(t.offset % 32 == 0);
        CHECK(size_t(t.data - f->base()) % 32 == 0);
    }
    CHECK(f->tensors()[0].name == "a");  // order kept
    CHECK(f->tensors()[3].name == "q8");
    CHECK(f->find_tensor("nope") == nullptr);
}

TEST_CASE("general.alignment is honoured for data offsets") {
    for (uint32_t align : {1u, 8u, 64u, 4096u}) {
        CAPTURE(align);
        Writer w;
        w.set_alignment(align);
        CHECK(w.alignment() == align);
        w.add_tensor("x", DType::F32, {3}, pattern(12, 1));
        w.add_tensor("y", DType::F32, {5}, pattern(20, 2));
        w.add_tensor("z", DType::I8, {7}, pattern(7, 3));
        Bytes b = w.write_memory();
        auto f = parse(b);
        CHECK(f->alignment() == align);
        CHECK(f->get_int("general.alignment", 0) == int64_t(align));
        CHECK(f->data_offset() % align == 0);
        const auto& ts = f->tensors();
        REQUIRE(ts.size() == 3);
        for (const auto& t : ts) CHECK(t.offset % align == 0);
        CHECK(ts[1].offset == (12 + align - 1) / align * align);
        CHECK(Bytes(ts[2].data, ts[2].data + 7) == pattern(7, 3));
        CHECK(b.size() % align == 0);
    }
    Writer dflt;
    CHECK(dflt.alignment() == 32);
    CHECK(parse(dflt.write_memory())->alignment() == 32);
}

TEST_CASE("a vocab-only file (no tensors) round-trips") {
    Writer w;
    w.set("tokenizer.ggml.model", MetaValue::string("llama"));
    w.set("tokenizer.ggml.tokens", MetaValue::strings({"<unk>", "<s>", "</s>", "▁the"}));
    w.set("tokenizer.ggml.scores", MetaValue::array(std::vector<float>{0, 0, 0, -1.5f}));
    w.set("tokenizer.ggml.token_type", MetaValue::array(std::vector<int32_t>{2, 3, 3, 1}));
    Bytes b = w.write_memory();
    auto f = parse(b);
    CHECK(f->tensors().empty());
    CHECK(f->kvs().size() == 4);
    CHECK(f->get_array("tokenizer.ggml.tokens", VType::STRING)->strs.at(3) == "▁the");
    CHECK(f->get_array("tokenizer.ggml.scores", VType::FLOAT32)->num_at(3) == -1.5);
}

TEST_CASE("writer: set replaces in place, remove, copy_of") {
    Writer w;
    w.set("k1", MetaValue::u32(1));
    w.set("k2", MetaValue::string("two"));
    w.set("k1", MetaValue::f32(1.5f));
    CHECK(w.remove("k2"));
    CHECK_FALSE(w.remove("k2"));
    w.set("k3", MetaValue::i64(-3));
    REQUIRE(w.find("k1"));
    CHECK(w.find("k1")->type == VType::FLOAT32);
    auto f = parse(w.write_memory());
    REQUIRE(f->kvs().size() == 2);
    CHECK(f->kvs()[0].key == "k1");
    CHECK(f->get_float("k1", 0) == 1.5);
    CHECK(f->kvs()[1].key == "k3");

    // copy_of: a second generation written from the first reads the same.
    Bytes src;
    {
        Writer a;
        a.set("s", MetaValue::string("x"));
        a.set("n", MetaValue::arrays({MetaValue::strings({"y"}), MetaValue::array(std::vector<int16_t>{-4})}));
        a.set("f", MetaValue::f32(0.25f));
        a.set("i", MetaValue::i8(-5));
        src = a.write_memory();
    }
    auto g1 = parse(src);
    Writer copy;
    for (const auto& kv : g1->kvs()) copy.set(kv.key, MetaValue::copy_of(kv.value));
    CHECK(copy.write_memory() == src);
}

TEST_CASE("writer: copying every real vocab file's metadata reproduces its bytes") {
    auto files = vocab_files();
    REQUIRE_MESSAGE(files.size() >= 5, "expected the shared vocab GGUFs in " << kVocabDir);
    for (const std::string& path : files) {
        CAPTURE(path);
        Bytes orig = read_file(path);
        auto f = parse(orig, path);
        REQUIRE(f->tensors().empty());
        Writer w;
        for (const auto& kv : f->kvs()) w.set(kv.key, MetaValue::copy_of(kv.value));
        Bytes out = w.write_memory();
        // Our output ends with zero padding up to the data section; llama.cpp's may stop earlier.
        CHECK(out.size() == f->data_offset());
        size_t n = std::min(out.size(), orig.size());
        CHECK(std::equal(out.begin(), out.begin() + long(n), orig.begin()));
        auto again = parse(out);
        CHECK(again->kvs().size() == f->kvs().size());
    }
}

TEST_CASE("writer: write_file is atomic and reports I/O errors") {
    std::string path = temp_path("model.gguf");
    Writer w;
    w.set("general.architecture", MetaValue::string("llama"));
    w.add_tensor("t", DType::F32, {8}, pattern(32, 4));
    w.write_file(path);
    CHECK_FALSE(exists(path + ".tmp"));
    {
        auto f = File::open(path);
        CHECK(f->get_str("general.architecture") == "llama");
        REQUIRE(f->find_tensor("t"));
        CHECK(Bytes(f->find_tensor("t")->data, f->find_tensor("t")->data + 32) == pattern(32, 4));
        CHECK(f->file_size() == w.write_memory().size());
    }

    // A fill callback that fails leaves the old file untouched and no .tmp behind.
    Writer bad;
    bad.add_tensor_fill("t", DType::F32, {8}, [](uint8_t*, size_t) { lumen::fail("synthetic failure"); });
    CHECK_THROWS_WITH_AS(bad.write_file(path), doctest::Contains("synthetic failure"), lumen::Error);
    CHECK_FALSE(exists(path + ".tmp"));
    CHECK(File::open(path)->find_tensor("t") != nullptr);
    std::remove(path.c_str());

    CHECK_THROWS_WITH_AS(w.write_file("/nonexistent-dir/x.gguf"), doctest::Contains("/nonexistent-dir/x.gguf.tmp: cannot create"),
                         lumen::Error);
}

TEST_CASE("writer: refuses what GGUF cannot hold") {
    Writer w;
    w.add_tensor("t", DType::F32, {4}, pattern(16, 0));
    CHECK_THROWS_WITH_AS(w.add_tensor("t", DType::F32, {4}, pattern(16, 0)), doctest::Contains("duplicate tensor name 't'"),
                         lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor("u", DType::F32, {4}, pattern(15, 0)), doctest::Contains("needs 16"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor_fill("v", DType::Q4_0, {16}, [](uint8_t*, size_t) {}),
                         doctest::Contains("not a multiple of the Q4_0 block size 32"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor_fill("v", DType::F32, {1, 1, 1, 1, 1}, [](uint8_t*, size_t) {}),
                         doctest::Contains("1 to 4 dimensions"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor_fill("v", DType::F32, {4, 0}, [](uint8_t*, size_t) {}),
                         doctest::Contains("dimension 1 is 0"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor_fill("v", DType::F32, {1ll << 62, 4}, [](uint8_t*, size_t) {}),
                         doctest::Contains("too large"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.add_tensor_fill(std::string(64, 'n'), DType::F32, {4}, [](uint8_t*, size_t) {}),
                         doctest::Contains("1 to 63 bytes"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.set_alignment(3), doctest::Contains("power of two"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.set_alignment(0), doctest::Contains("power of two"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.set("general.alignment", MetaValue::f32(32)), doctest::Contains("power of two"), lumen::Error);
    CHECK_THROWS_WITH_AS(w.set("", MetaValue::u8(0)), doctest::Contains("key length 0"), lumen::Error);
    CHECK_THROWS_AS(MetaValue::arrays({MetaValue::u8(1)}), lumen::Error);
    MetaValue inconsistent = MetaValue::strings({"a", "b"});
    inconsistent.count = 3;
    CHECK_THROWS_WITH_AS(w.set("k", inconsistent), doctest::Contains("array count 3 does not match"), lumen::Error);
    MetaValue deep = MetaValue::array(std::vector<uint8_t>{1});
    for (int k = 1; k < 8; k++) deep = MetaValue::arrays({deep});
    w.set("deep8", deep);  // as deep as the reader accepts
    CHECK_THROWS_WITH_AS(w.set("deep9", MetaValue::arrays({deep})), doctest::Contains("nested deeper than 8"), lumen::Error);
    CHECK(w.n_tensors() == 1);
    CHECK(Writer::tensor_bytes(DType::Q6_K, {512, 3}) == 2 * 210 * 3);
}

// ---------------- corruptions ----------------

TEST_CASE("the small test model is valid, with the layout the corruption tests assume") {
    auto f = parse(small_model());
    REQUIRE(f->tensors().size() == 3);
    CHECK(f->find_tensor("tensor.a")->offset == 0);
    CHECK(f->find_tensor("tensor.b")->offset == 64);
    CHECK(f->find_tensor("tensor.c")->offset == 160);
    CHECK(f->find_tensor("tensor.c")->n_dims == 3);
    CHECK(f->file_size() == f->data_offset() + 192);
}

TEST_CASE("corrupt header: magic, version, counts") {
    Bytes m = small_model();
    { Bytes b = m; b[0] = 'X'; CHECK_PARSE_ERROR(b, "not a GGUF file (bad magic)"); }
    { Bytes b = m; put_u32(b, 4, 1); CHECK_PARSE_ERROR(b, "GGUF version 1 is too old"); }
    { Bytes b = m; put_u32(b, 4, 99); CHECK_PARSE_ERROR(b, "unsupported GGUF version 99"); }
    { Bytes b = m; put_u32(b, 4, 0x03000000); CHECK_PARSE_ERROR(b, "big-endian GGUF files are not supported"); }
    { Bytes b = m; put_u64(b, 8, 1ull << 40); CHECK_PARSE_ERROR(b, "tensor count 1099511627776 is larger than the file"); }
    { Bytes b = m; put_u64(b, 8, ~0ull); CHECK_PARSE_ERROR(b, "tensor count"); }
    { Bytes b = m; put_u64(b, 16, 1ull << 50); CHECK_PARSE_ERROR(b, "metadata count 1125899906842624 is larger than the file"); }
    CHECK_PARSE_ERROR(Bytes{}, "bad magic");
    CHECK_PARSE_ERROR(Bytes({'G', 'G', 'U'}), "bad magic");
}

TEST_CASE("corrupt metadata") {
    Bytes m = small_model();
    const size_t arch = kv_type_at(m, "general.architecture");
    const size_t words = kv_type_at(m, "test.words");
    { Bytes b = m; put_u32(b, kv_type_at(m, "test.count"), 13); CHECK_PARSE_ERROR(b, "key 'test.count': unknown value type 13"); }
    { Bytes b = m; put_u64(b, arch + 4, 1ull << 40); CHECK_PARSE_ERROR(b, "string value at offset"); }
    { Bytes b = m; put_u64(b, arch + 4, 1ull << 40); CHECK_PARSE_ERROR(b, "past the end of the file"); }
    { Bytes b = m; put_u64(b, arch - 8 - 20, 1ull << 33); CHECK_PARSE_ERROR(b, "metadata key at offset 24 has length 8589934592, past the end"); }
    { Bytes b = m; put_u64(b, arch - 8 - 20, 0); CHECK_PARSE_ERROR(b, "metadata entry 0 has an empty key"); }
    { Bytes b = m; put_u32(b, words + 4, 77); CHECK_PARSE_ERROR(b, "key 'test.words': unknown array element type 77"); }
    { Bytes b = m; put_u64(b, words + 8, 1ull << 50); CHECK_PARSE_ERROR(b, "key 'test.words': array of 1125899906842624 str elements runs past the end of the file"); }
    { Bytes b = m; put_u64(b, words + 16, 1ull << 40); CHECK_PARSE_ERROR(b, "array string at offset"); }
    // The array's elements re-read as u64: "alpha"'s length and bytes run into nonsense, caught as a count.
    { Bytes b = m; put_u32(b, words + 4, uint32_t(VType::ARRAY)); CHECK_PARSE_ERROR(b, "key 'test.words'"); }
    {   // Two keys that differ in one byte made equal.
        Raw r;
        r.header(0, 2).str("dup.key1").u32(uint32_t(VType::UINT8)).pad(1).str("dup.key1").u32(uint32_t(VType::UINT8)).pad(1);
        CHECK_PARSE_ERROR(r.b, "duplicate metadata key 'dup.key1'");
    }
    {   // A key longer than the spec's 65535 bytes, in a file otherwise valid.
        Raw r;
        r.header(0, 1).str(std::string(70000, 'k')).u32(uint32_t(VType::UINT8)).pad(1);
        CHECK_PARSE_ERROR(r.b, "is 70000 bytes long (GGUF allows at most 65535)");
        Raw ok;
        ok.header(0, 1).str(std::string(65535, 'k')).u32(uint32_t(VType::UINT8)).pad(1);
        CHECK(parse_error(ok.b) == "(parsed fine)");
    }
    {   // A scalar cut off by the end of the file.
        Raw r;
        r.header(0, 1).str("x").u32(uint32_t(VType::UINT64)).pad(3);
        CHECK_PARSE_ERROR(r.b, "truncated: scalar value at offset 37 needs 8 bytes, 3 left");
    }
    {   // An array of arrays whose count is absurd (each item needs at least 12 bytes).
        Raw r;
        r.header(0, 1).str("x").u32(uint32_t(VType::ARRAY)).u32(uint32_t(VType::ARRAY)).u64(~0ull).pad(24);
        CHECK_PARSE_ERROR(r.b, "array of 18446744073709551615 arr elements runs past the end of the file (24 bytes left)");
    }
}

TEST_CASE("corrupt general.alignment") {
    Bytes m = small_model();
    const size_t at = kv_type_at(m, "general.alignment");
    REQUIRE(get_u32(m, at) == uint32_t(VType::UINT32));
    REQUIRE(get_u32(m, at + 4) == 32);
    { Bytes b = m; put_u32(b, at + 4, 0); CHECK_PARSE_ERROR(b, "general.alignment must be a power of two up to 1 MiB, got 0"); }
    { Bytes b = m; put_u32(b, at + 4, 3); CHECK_PARSE_ERROR(b, "general.alignment must be a power of two up to 1 MiB, got 3"); }
    { Bytes b = m; put_u32(b, at + 4, 1u << 30); CHECK_PARSE_ERROR(b, "general.alignment must be a power of two"); }
    {   // Same 4 bytes read as a float: not an integer type.
        Bytes b = m;
        put_u32(b, at, uint32_t(VType::FLOAT32));
        CHECK_PARSE_ERROR(b, "general.alignment must be a power of two up to 1 MiB, got 4.48416e-44");
    }
    {
        Raw r;
        r.header(0, 1).str("general.alignment").u32(uint32_t(VType::STRING)).str("32");
        CHECK_PARSE_ERROR(r.b, "general.alignment must be a power of two up to 1 MiB, got \"32\"");
    }
    {
        Raw r;
        r.header(0, 1).str("general.alignment").u32(uint32_t(VType::INT32)).u32(uint32_t(-32));
        CHECK_PARSE_ERROR(r.b, "general.alignment must be a power of two up to 1 MiB, got -32");
    }
    {   // A valid but different alignment moves the data section: tensor offsets no longer line up.
        Bytes b = m;
        put_u32(b, at + 4, 128);
        CHECK_PARSE_ERROR(b, "tensor 'tensor.b': data offset 64 is not aligned to 128");
    }
}

TEST_CASE("corrupt tensor table") {
    Bytes m = small_model();
    const InfoAt a = tensor_info_at(m, "tensor.a"), b8 = tensor_info_at(m, "tensor.b"), c = tensor_info_at(m, "tensor.c");
    { Bytes b = m; put_u64(b, c.offset, 1ull << 40); CHECK_PARSE_ERROR(b, "tensor 'tensor.c': data [1099511627776, +16) runs past the end"); }
    { Bytes b = m; put_u64(b, c.offset, ~0ull << 5); CHECK_PARSE_ERROR(b, "tensor 'tensor.c': data [18446744073709551584, +16) runs past the end"); }
    { Bytes b = m; put_u64(b, b8.offset, 32); CHECK_PARSE_ERROR(b, "tensors 'tensor.a' and 'tensor.b' overlap"); }
    { Bytes b = m; put_u64(b, c.offset, 64); CHECK_PARSE_ERROR(b, "overlap"); }
    { Bytes b = m; put_u64(b, b8.offset, 65); CHECK_PARSE_ERROR(b, "tensor 'tensor.b': data offset 65 is not aligned to 32"); }
    { Bytes b = m; put_u64(b, c.ne, 1ull << 40); put_u64(b, c.ne + 8, 1ull << 40); CHECK_PARSE_ERROR(b, "tensor 'tensor.c': element count overflows"); }
    { Bytes b = m; put_u64(b, a.ne, 1ull << 61); put_u64(b, a.ne + 8, 2); CHECK_PARSE_ERROR(b, "tensor 'tensor.a': byte size overflows"); }
    { Bytes b = m; put_u64(b, a.ne, 1ull << 63); CHECK_PARSE_ERROR(b, "tensor 'tensor.a': dimension 0 is 9223372036854775808"); }
    { Bytes b = m; put_u64(b, c.ne + 8, 0); CHECK_PARSE_ERROR(b, "tensor 'tensor.c': dimension 1 is 0"); }
    { Bytes b = m; put_u32(b, a.n_dims, 5); CHECK_PARSE_ERROR(b, "tensor 'tensor.a' has 5 dimensions (1 to 4 allowed)"); }
    { Bytes b = m; put_u32(b, a.n_dims, 0); CHECK_PARSE_ERROR(b, "tensor 'tensor.a' has 0 dimensions"); }
    { Bytes b = m; put_u32(b, a.type, 4); CHECK_PARSE_ERROR(b, "tensor 'tensor.a': unknown type id 4"); }
    { Bytes b = m; put_u32(b, a.type, 1000); CHECK_PARSE_ERROR(b, "tensor 'tensor.a': unknown type id 1000"); }
    { Bytes b = m; put_u64(b, b8.ne, 48); CHECK_PARSE_ERROR(b, "tensor 'tensor.b': row length 48 is not a multiple of the Q8_0 block size 32"); }
    {   // Bigger than it was: now runs into tensor.c.
        Bytes b = m; put_u64(b, b8.ne + 8, 3); CHECK_PARSE_ERROR(b, "tensors 'tensor.b' and 'tensor.c' overlap");
    }
    {   // "tensor.b" renamed "tensor.a".
        Bytes b = m; b[b8.n_dims - 1] = 'a'; CHECK_PARSE_ERROR(b, "duplicate tensor name 'tensor.a'");
    }
    {   // Tensor name length past the end.
        Bytes b = m; put_u64(b, b8.n_dims - 8 - 8, 1ull << 40); CHECK_PARSE_ERROR(b, "tensor name at offset");
    }
    {   // Last tensor's data cut by one byte.
        auto f = parse(m);
        Bytes b(m.begin(), m.begin() + long(f->data_offset() + 160 + 16 - 1));
        CHECK_PARSE_ERROR(b, "tensor 'tensor.c': data [160, +16) runs past the end of the file (data section holds 175 bytes");
    }
    {   // Cut inside the padding before the data section (a large alignment makes sure there is some).
        Writer w;
        w.set_alignment(4096);
        w.add_tensor("t", DType::F32, {4}, pattern(16, 0));
        Bytes big = w.write_memory();
        const size_t infos_end = tensor_info_at(big, "t").offset + 8;
        REQUIRE(infos_end < 4096);
        CHECK_PARSE_ERROR(Bytes(big.begin(), big.begin() + long(infos_end + 1)), "truncated: the tensor data section is missing");
        CHECK_PARSE_ERROR(Bytes(big.begin(), big.begin() + 4096), "tensor 't': data [0, +16) runs past the end");
    }
}

TEST_CASE("truncation at every byte of a small model fails cleanly") {
    Bytes m = small_model();
    auto f = parse(m);
    const size_t data_end = f->data_offset() + 176;  // tensor.c ends there; only padding follows
    REQUIRE(data_end <= m.size());
    int failures = 0;
    for (size_t n = 0; n < data_end; n++) {
        Bytes b(m.begin(), m.begin() + long(n));
        std::string e = parse_error(b);
        if (!names_truncation(e) && e.find("data section is missing") == std::string::npos) {
            FAIL_CHECK("prefix of " << n << " bytes: " << e);
            failures++;
        }
    }
    CHECK(failures == 0);
    // Dropping only the trailing padding is harmless.
    CHECK(parse_error(Bytes(m.begin(), m.begin() + long(data_end))) == "(parsed fine)");
}

TEST_CASE("truncations of a real vocab file fail cleanly") {
    const std::string path = kVocabDir + "/ggml-vocab-llama-spm.gguf";
    Bytes m = read_file(path);
    auto f = parse(m, path);
    REQUIRE(f->find("tokenizer.ggml.tokens"));
    // Every prefix that ends before the last metadata byte must fail; sample them.
    const size_t meta_end = f->data_offset() - f->alignment();
    std::vector<size_t> cuts;
    for (size_t n = 0; n < 600; n++) cuts.push_back(n);
    for (size_t k = 0; k <= 400; k++) cuts.push_back(meta_end * k / 400);
    for (size_t n : {meta_end - 1, meta_end - 7, meta_end / 2 + 3}) cuts.push_back(n);
    int failures = 0;
    for (size_t n : cuts) {
        std::string e = parse_error(Bytes(m.begin(), m.begin() + long(n)));
        if (!names_truncation(e)) {
            FAIL_CHECK("prefix of " << n << " bytes: " << e);
            failures++;
        }
    }
    CHECK(failures == 0);
}

TEST_CASE("corruptions of a real vocab file") {
    const std::string path = kVocabDir + "/ggml-vocab-llama-spm.gguf";
    const Bytes m = read_file(path);
    const size_t tokens = kv_type_at(m, "tokenizer.ggml.tokens");
    REQUIRE(get_u32(m, tokens) == uint32_t(VType::ARRAY));
    REQUIRE(get_u32(m, tokens + 4) == uint32_t(VType::STRING));
    const uint64_t n_tokens = get_u64(m, tokens + 8);
    REQUIRE(n_tokens == 32000);
    { Bytes b = m; put_u64(b, tokens + 8, 1ull << 45); CHECK_PARSE_ERROR(b, "key 'tokenizer.ggml.tokens': array of 35184372088832 str elements runs past the end of the file"); }
    { Bytes b = m; put_u64(b, tokens + 8, n_tokens * 1000); CHECK_PARSE_ERROR(b, "key 'tokenizer.ggml.tokens': array of 32000000 str elements runs past the end of the file"); }
    { Bytes b = m; put_u32(b, tokens + 4, 42); CHECK_PARSE_ERROR(b, "unknown array element type 42"); }
    {   // Token 1000's length made absurd.
        size_t at = tokens + 16;
        for (int k = 0; k < 1000; k++) at += 8 + get_u64(m, at);
        Bytes b = m;
        put_u64(b, at, 1ull << 40);
        CHECK_PARSE_ERROR(b, "array string at offset " + std::to_string(at) + " has length 1099511627776, past the end");
    }
    {   // "tokenizer.ggml.scores" renamed to the key before it.
        Bytes b = m;
        size_t at = kv_type_at(m, "tokenizer.ggml.scores") - 6;
        std::memcpy(&b[at], "tokens", 6);
        CHECK_PARSE_ERROR(b, "duplicate metadata key 'tokenizer.ggml.tokens'");
    }
    { Bytes b = m; put_u32(b, kv_type_at(m, "tokenizer.ggml.model"), 0x1000); CHECK_PARSE_ERROR(b, "unknown value type 4096"); }
    { Bytes b = m; put_u32(b, 4, 99); CHECK_PARSE_ERROR(b, "unsupported GGUF version 99"); }
    {   // Claims a tensor it does not have: the metadata is read as a tensor info and fails.
        Bytes b = m;
        put_u64(b, 8, 1);
        std::string e = parse_error(b);
        CHECK_MESSAGE((e.find("truncated") != std::string::npos || e.find("tensor") != std::string::npos), e);
    }
}

TEST_CASE("a corrupt count in a huge file is a named error, not an attempt to allocate for it") {
    // A sparse 16 GiB file whose header claims a billion metadata entries: the count passes the
    // "fits in the file" test, so reserving for it up front would ask for ~150 GiB (std::bad_alloc).
    std::string path = temp_path("sparse.gguf");
    Raw r;
    r.header(0, 1000000000);
    {
        std::ofstream o(path, std::ios::binary);
        o.write(reinterpret_cast<const char*>(r.b.data()), long(r.b.size()));
    }
    REQUIRE(truncate(path.c_str(), 16ll << 30) == 0);
    CHECK_THROWS_WITH_AS(File::open(path), doctest::Contains("metadata entry 0 has an empty key"), lumen::Error);
    std::remove(path.c_str());
}

TEST_CASE("open: missing files, directories and empty files are named errors") {
    CHECK_THROWS_WITH_AS(File::open("/nonexistent/x.gguf"), doctest::Contains("/nonexistent/x.gguf: No such file"), lumen::Error);
    CHECK_THROWS_WITH_AS(File::open("/tmp"), doctest::Contains("/tmp: is a directory"), lumen::Error);
    std::string empty = temp_path("empty.gguf");
    { std::ofstream o(empty); }
    CHECK_THROWS_WITH_AS(File::open(empty), doctest::Contains("empty file"), lumen::Error);
    std::remove(empty.c_str());
    // A corrupt file on disk gives the same error as in memory, prefixed with its path.
    std::string bad = temp_path("bad.gguf");
    Bytes b = small_model();
    put_u32(b, 4, 99);
    {
        std::ofstream o(bad, std::ios::binary);
        o.write(reinterpret_cast<const char*>(b.data()), long(b.size()));
    }
    CHECK_THROWS_WITH_AS(File::open(bad), doctest::Contains((bad + ": unsupported GGUF version 99").c_str()), lumen::Error);
    std::remove(bad.c_str());
}

}  // TEST_SUITE
