// safetensors files built byte by byte: every dtype, metadata, alignment, and each validation rule.
#include "io/pytorch/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/pytorch/checkpoint.h"
#include "io_test_util.h"

namespace modex {
namespace {

std::string st_file(const std::string& header, const std::string& data) {
  std::string out;
  test::put_le(out, header.size(), 8);
  return out + header + data;
}

std::shared_ptr<Buffer> to_buffer(const std::string& bytes) {
  std::shared_ptr<Buffer> b = Buffer::allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(b->data(), bytes.data(), bytes.size());
  return b;
}

Checkpoint load(const std::string& bytes) {
  return load_checkpoint_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                     "mem.safetensors");
}

std::string error_of(const std::string& bytes, ErrorKind kind) {
  try {
    load(bytes);
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_EQ(e.location().file, "mem.safetensors");
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error";
  return "";
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), t.raw(), t.nbytes());
  return out;
}

TEST(Safetensors, EveryDtype) {
  std::string data;
  std::string header = "{";
  size_t offset = 0;
  auto add = [&](const std::string& name, const char* code, const std::string& shape,
                 const std::string& bytes) {
    if (header.size() > 1) header += ",";
    header += "\"" + name + "\":{\"dtype\":\"" + code + "\",\"shape\":" + shape +
              ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes.size()) + "]}";
    data += bytes;
    offset += bytes.size();
  };
  // Largest elements first so every tensor is naturally aligned (as real writers arrange).
  add("f64", "F64", "[2]", test::bytes_of(std::vector<double>{1.5, -2.25}));
  add("i64", "I64", "[2]", test::bytes_of(std::vector<int64_t>{INT64_MIN, 42}));
  add("u64", "U64", "[1]", test::bytes_of(std::vector<uint64_t>{UINT64_MAX}));
  add("f32", "F32", "[2,2]", test::bytes_of(std::vector<float>{1, 2, 3, 4}));
  add("i32", "I32", "[1]", test::bytes_of(std::vector<int32_t>{-7}));
  add("u32", "U32", "[1]", test::bytes_of(std::vector<uint32_t>{4000000000u}));
  add("f16", "F16", "[2]", test::bytes_of(std::vector<uint16_t>{0x3c00, 0x7e00}));
  add("bf16", "BF16", "[1]", test::bytes_of(std::vector<uint16_t>{0x3f80}));
  add("i16", "I16", "[1]", test::bytes_of(std::vector<int16_t>{-300}));
  add("u16", "U16", "[1]", test::bytes_of(std::vector<uint16_t>{65535}));
  add("i8", "I8", "[2]", test::bytes_of(std::vector<int8_t>{-128, 127}));
  add("u8", "U8", "[1]", test::bytes_of(std::vector<uint8_t>{200}));
  add("bool", "BOOL", "[3]", std::string("\1\0\1", 3));
  add("scalar", "F32", "[]", test::bytes_of(std::vector<float>{9}));
  add("empty", "F32", "[0,4]", "");
  header += ",\"__metadata__\":{\"format\":\"pt\"}}";
  while ((8 + header.size()) % 8) header += ' ';
  Checkpoint ck = load(st_file(header, data));
  EXPECT_EQ(ck.format, "safetensors");
  EXPECT_EQ(ck.path, "mem.safetensors");
  const auto& e = ck.weights.entries();
  ASSERT_EQ(e.size(), 15u);
  const char* order[] = {"f64", "i64", "u64", "f32", "i32",  "u32",    "f16",  "bf16",
                         "i16", "u16", "i8",  "u8",  "bool", "scalar", "empty"};
  for (size_t i = 0; i < e.size(); ++i) EXPECT_EQ(e[i].first, order[i]);  // header order
  const StateDict& w = ck.weights;
  EXPECT_EQ(values_of<double>(*w.find("f64")), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(values_of<int64_t>(*w.find("i64")), (std::vector<int64_t>{INT64_MIN, 42}));
  EXPECT_EQ(w.find("u64")->dtype(), DType::kUInt64);
  EXPECT_EQ(values_of<uint64_t>(*w.find("u64"))[0], UINT64_MAX);
  EXPECT_EQ(w.find("f32")->shape(), (Dims{2, 2}));
  EXPECT_EQ(values_of<float>(*w.find("f32")), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(values_of<int32_t>(*w.find("i32"))[0], -7);
  EXPECT_EQ(values_of<uint32_t>(*w.find("u32"))[0], 4000000000u);
  EXPECT_EQ(w.find("f16")->dtype(), DType::kFloat16);
  EXPECT_EQ(values_of<uint16_t>(*w.find("f16")), (std::vector<uint16_t>{0x3c00, 0x7e00}));
  EXPECT_EQ(w.find("bf16")->dtype(), DType::kBFloat16);
  EXPECT_EQ(values_of<int16_t>(*w.find("i16"))[0], -300);
  EXPECT_EQ(w.find("u16")->dtype(), DType::kUInt16);
  EXPECT_EQ(values_of<int8_t>(*w.find("i8")), (std::vector<int8_t>{-128, 127}));
  EXPECT_EQ(values_of<uint8_t>(*w.find("u8"))[0], 200);
  EXPECT_EQ(w.find("bool")->dtype(), DType::kBool);
  EXPECT_EQ(values_of<uint8_t>(*w.find("bool")), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(w.find("scalar")->shape(), Dims{});
  EXPECT_EQ(values_of<float>(*w.find("scalar"))[0], 9.0f);
  EXPECT_EQ(w.find("empty")->numel(), 0);
}

TEST(Safetensors, AlignedDataIsViewedMisalignedDataIsCopied) {
  const std::string data = test::bytes_of(std::vector<float>{1, 2, 3});
  std::string aligned = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
  while ((8 + aligned.size()) % 8) aligned += ' ';
  std::shared_ptr<Buffer> file = to_buffer(st_file(aligned, data));
  safetensors::File parsed = safetensors::parse(file);
  EXPECT_EQ(parsed.weights.find("a")->raw(), file->data() + 8 + aligned.size());

  std::string misaligned = aligned + " ";
  std::shared_ptr<Buffer> file2 = to_buffer(st_file(misaligned, data));
  safetensors::File parsed2 = safetensors::parse(file2);
  const Tensor& t = *parsed2.weights.find("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % alignof(float), 0u);
  EXPECT_EQ(values_of<float>(t), (std::vector<float>{1, 2, 3}));
}

TEST(Safetensors, MetadataBecomesConfig) {
  std::string header =
      R"({"__metadata__":{"architecture":"mobilenet_v2","num_classes":"3",)"
      R"("input_size":"[3, 160, 160]","class_names":"[\"a\", \"b\", \"c\"]"},)"
      R"("w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  Checkpoint ck = load(st_file(header, "x"));
  EXPECT_EQ(ck.config.architecture, "mobilenet_v2");
  EXPECT_EQ(ck.config.num_classes, 3);
  EXPECT_EQ(ck.config.input_size, 160);
  EXPECT_EQ(ck.config.class_names, (std::vector<std::string>{"a", "b", "c"}));
  // Unparseable values are ignored: the weights, not the metadata, decide.
  std::string odd =
      R"({"__metadata__":{"num_classes":"ten","class_names":"[1,2]","input_size":"224"},)"
      R"("w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  Checkpoint ck2 = load(st_file(odd, "x"));
  EXPECT_FALSE(ck2.config.num_classes);
  EXPECT_TRUE(ck2.config.class_names.empty());
  EXPECT_EQ(ck2.config.input_size, 224);
}

TEST(Safetensors, PrefixesAreStripped) {
  std::string header = R"({"module.a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("module.b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  Checkpoint ck = load(st_file(header, "xy"));
  EXPECT_TRUE(ck.weights.contains("a"));
  EXPECT_TRUE(ck.weights.contains("b"));
  EXPECT_EQ(ck.stripped_prefixes, std::vector<std::string>{"module."});
}

TEST(Safetensors, EmptyHeaderHasNoTensors) {
  Checkpoint ck = load(st_file("{}", ""));
  EXPECT_EQ(ck.weights.size(), 0u);
}

struct BadHeader {
  const char* what;
  std::string header;
  std::string data;
  ErrorKind kind;
  const char* message;
};

TEST(Safetensors, ValidationRules) {
  const std::string t = R"("dtype":"F32","shape":[2])";
  const BadHeader cases[] = {
      {"not json", "{\"a\":", "", ErrorKind::kInvalidInput, "not valid JSON"},
      {"trailing garbage", "{} x", "", ErrorKind::kInvalidInput, "not valid JSON"},
      {"entry not object", R"({"a":3})", "", ErrorKind::kInvalidInput, "must be an object"},
      {"missing offsets", R"({"a":{"dtype":"F32","shape":[2]}})", "", ErrorKind::kInvalidInput,
       "data_offsets"},
      {"unknown dtype", R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x",
       ErrorKind::kUnsupported, "F8_E4M3"},
      {"dtype not string", R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "xxxx",
       ErrorKind::kInvalidInput, "dtype"},
      {"negative dim", R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x",
       ErrorKind::kInvalidInput, "non-negative"},
      {"float dim", R"({"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "x",
       ErrorKind::kInvalidInput, "non-negative"},
      {"shape not array", R"({"a":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", "x",
       ErrorKind::kInvalidInput, "shape"},
      {"three offsets", R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", "x",
       ErrorKind::kInvalidInput, "[begin, end]"},
      {"end before begin", R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}})", "x",
       ErrorKind::kInvalidInput, "outside"},
      {"past the data", "{\"a\":{" + t + ",\"data_offsets\":[0,8]}}", "1234567",
       ErrorKind::kInvalidInput, "outside"},
      {"size mismatch", "{\"a\":{" + t + ",\"data_offsets\":[0,4]}}", "1234",
       ErrorKind::kInvalidInput, "needs 2 elements"},
      {"overflowing shape",
       R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", "12345678",
       ErrorKind::kInvalidInput, ""},
      {"gap", "{\"a\":{" + t + ",\"data_offsets\":[1,9]}}", "123456789", ErrorKind::kInvalidInput,
       "gap"},
      {"overlap",
       "{\"a\":{" + t + ",\"data_offsets\":[0,8]},\"b\":{" + t + ",\"data_offsets\":[4,12]}}",
       "123456789012", ErrorKind::kInvalidInput, "overlaps"},
      {"uncovered tail", "{\"a\":{" + t + ",\"data_offsets\":[0,8]}}", "123456789",
       ErrorKind::kInvalidInput, "cover 8 bytes"},
      {"duplicate name",
       "{\"a\":{" + t + ",\"data_offsets\":[0,8]},\"a\":{" + t + ",\"data_offsets\":[8,16]}}",
       "1234567812345678", ErrorKind::kInvalidInput, "repeats the key 'a'"},
      {"duplicate field", R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})",
       "x", ErrorKind::kInvalidInput, "repeats the key 'dtype'"},
      {"metadata not strings", R"({"__metadata__":{"n":1}})", "", ErrorKind::kInvalidInput,
       "not a string"},
      {"metadata not object", R"({"__metadata__":[]})", "", ErrorKind::kInvalidInput,
       "__metadata__"},
      {"deep nesting", "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", "",
       ErrorKind::kInvalidInput, "nested too deeply"},
  };
  for (const BadHeader& c : cases) {
    SCOPED_TRACE(c.what);
    std::string msg = error_of(st_file(c.header, c.data), c.kind);
    EXPECT_NE(msg.find(c.message), std::string::npos) << msg;
  }
}

TEST(Safetensors, NamesInErrorsAreMadePrintable) {
  std::string msg = error_of(
      st_file(R"({"a\u001b[2J":{"dtype":"X9","shape":[1],"data_offsets":[0,1]}})", "x"),
      ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("a\\x1b[2J"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\x1b'), std::string::npos);
}

TEST(Safetensors, HeaderLengthChecks) {
  // Header length beyond the file, or beyond the sanity limit: never allocated or parsed.
  std::string beyond;
  test::put_le(beyond, 1000, 8);
  beyond += "{}";
  EXPECT_FALSE(safetensors::looks_like_safetensors(reinterpret_cast<const uint8_t*>(beyond.data()),
                                                   beyond.size(), beyond.size()));
  EXPECT_THROW(safetensors::parse(to_buffer(beyond)), Error);
  std::string huge;
  test::put_le(huge, (uint64_t{100} << 20) + 1, 8);
  huge += "{}";
  EXPECT_THROW(safetensors::parse(to_buffer(huge)), Error);
  std::string max;
  test::put_le(max, UINT64_MAX, 8);
  max += "{}";
  EXPECT_THROW(safetensors::parse(to_buffer(max)), Error);
  EXPECT_THROW(safetensors::parse(to_buffer("1234")), Error);
  // Not starting with '{' is not a safetensors file at all.
  std::string array = st_file("[]", "");
  EXPECT_FALSE(safetensors::looks_like_safetensors(reinterpret_cast<const uint8_t*>(array.data()),
                                                   array.size(), array.size()));
  EXPECT_THROW(safetensors::parse(to_buffer(array)), Error);
  error_of(array, ErrorKind::kInvalidInput);
}

TEST(Safetensors, EveryTruncationFailsCleanly) {
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string full = st_file(header, test::bytes_of(std::vector<float>{1, 2}));
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THROW(load(full.substr(0, n)), Error);
  }
  EXPECT_NO_THROW(load(full));
}

}  // namespace
}  // namespace modex
