// torch.save-shaped zip archives built in C++: tensor layouts, byte order, lazy storage reads,
// and damaged archives (truncated, corrupted directory, short or missing entries, bad CRCs,
// every single-byte corruption) which must all end in a modex::Error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/pytorch/checkpoint.h"
#include "io_test_util.h"

namespace modex {
namespace {

using test::PickleWriter;
using test::TensorSpec;

Checkpoint load(const std::string& bytes, const std::string& name = "mem.pt") {
  return load_checkpoint_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                     name);
}

Error error_of(const std::string& bytes, ErrorKind kind) {
  try {
    load(bytes);
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_EQ(e.location().file, "mem.pt");
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return Error("");
  }
  ADD_FAILURE() << "no error";
  return Error("");
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), t.raw(), t.nbytes());
  return out;
}

template <typename T>
std::string byteswapped(const std::vector<T>& values) {
  std::string s = test::bytes_of(values);
  for (size_t i = 0; i < s.size(); i += sizeof(T))
    std::reverse(s.begin() + i, s.begin() + i + sizeof(T));
  return s;
}

// A small checkpoint exercising every layout path: views, offsets, transposes, 0-dim, empty,
// 2- and 8-byte gathers, tied storage, and an untyped v3 storage.
struct Sample {
  std::vector<float> f32 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  std::vector<uint16_t> f16 = {0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600};
  std::vector<int64_t> i64 = {-1, 1LL << 40, 3, 4};
  std::vector<uint16_t> u16 = {1, 2, 65535};

  std::string pickle() const {
    PickleWriter w;
    w.proto(2).global("collections", "OrderedDict").empty_tuple().reduce().mark();
    w.str("matrix").tensor_v2("FloatStorage", "0", 12, 0, {3, 4}, {4, 1});
    w.str("row").tensor_v2("FloatStorage", "0", 12, 4, {4}, {1});  // tied, offset
    w.str("transposed").tensor_v2("FloatStorage", "0", 12, 0, {4, 3}, {1, 4});
    w.str("corner").tensor_v2("FloatStorage", "0", 12, 5, {2, 2}, {4, 1});  // offset + strided
    w.str("scalar").tensor_v2("FloatStorage", "0", 12, 11, {}, {});
    w.str("expanded").tensor_v2("FloatStorage", "0", 12, 2, {2, 3}, {0, 1});
    w.str("empty").tensor_v2("FloatStorage", "0", 12, 0, {0, 4}, {4, 1});
    w.str("half_t").tensor_v2("HalfStorage", "1", 6, 0, {3, 2}, {1, 3});
    w.str("long_step").tensor_v2("LongStorage", "2", 4, 1, {2}, {2});
    w.str("count").tensor_v2("LongStorage", "3", 1, 0, {}, {});
    w.str("u16")
        .global("torch._utils", "_rebuild_tensor_v3")
        .mark()
        .storage("UntypedStorage", "4", 6);
    w.integer(0)
        .int_tuple({3})
        .int_tuple({1})
        .boolean(false)
        .none()
        .global("torch", "uint16")
        .tuple()
        .reduce();
    w.str("not a tensor").integer(5);
    return w.setitems().stop().bytes();
  }

  std::string zip(const std::string& prefix, bool big_endian) const {
    auto enc = [&](const auto& v) { return big_endian ? byteswapped(v) : test::bytes_of(v); };
    return test::torch_zip(prefix, pickle(),
                           {{"0", enc(f32)},
                            {"1", enc(f16)},
                            {"2", enc(i64)},
                            {"3", enc(std::vector<int64_t>{77})},
                            {"4", enc(u16)}},
                           big_endian ? "big" : "little");
  }

  void check(const Checkpoint& ck) const {
    const StateDict& w = ck.weights;
    ASSERT_EQ(w.size(), 11u);  // the int is skipped
    EXPECT_EQ(w.entries()[0].first, "matrix");
    EXPECT_EQ(w.entries()[10].first, "u16");
    EXPECT_EQ(values_of<float>(*w.find("matrix")), f32);
    EXPECT_EQ(w.find("matrix")->shape(), (Dims{3, 4}));
    EXPECT_EQ(values_of<float>(*w.find("row")), (std::vector<float>{4, 5, 6, 7}));
    EXPECT_EQ(values_of<float>(*w.find("transposed")),
              (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
    EXPECT_EQ(values_of<float>(*w.find("corner")), (std::vector<float>{5, 6, 9, 10}));
    EXPECT_EQ(w.find("scalar")->shape(), Dims{});
    EXPECT_EQ(values_of<float>(*w.find("scalar")), std::vector<float>{11});
    EXPECT_EQ(values_of<float>(*w.find("expanded")), (std::vector<float>{2, 3, 4, 2, 3, 4}));
    EXPECT_EQ(w.find("empty")->shape(), (Dims{0, 4}));
    EXPECT_EQ(w.find("half_t")->dtype(), DType::kFloat16);
    EXPECT_EQ(values_of<uint16_t>(*w.find("half_t")),
              (std::vector<uint16_t>{0x3c00, 0x4400, 0x4000, 0x4500, 0x4200, 0x4600}));
    EXPECT_EQ(values_of<int64_t>(*w.find("long_step")), (std::vector<int64_t>{1LL << 40, 4}));
    EXPECT_EQ(values_of<int64_t>(*w.find("count")), std::vector<int64_t>{77});
    EXPECT_EQ(w.find("u16")->dtype(), DType::kUInt16);
    EXPECT_EQ(values_of<uint16_t>(*w.find("u16")), u16);
  }
};

TEST(TorchZip, EveryLayoutWithAnyFolderName) {
  Sample s;
  for (const char* prefix : {"archive/", "my model.v1-final/", "x/"}) {
    SCOPED_TRACE(prefix);
    Checkpoint ck = load(s.zip(prefix, false));
    EXPECT_EQ(ck.format, "pytorch-zip");
    EXPECT_EQ(ck.state_dict_key, "");
    s.check(ck);
  }
}

TEST(TorchZip, ContiguousTensorsViewTheirStorage) {
  Sample s;
  Checkpoint ck = load(s.zip("archive/", false));
  const Tensor& matrix = *ck.weights.find("matrix");
  const Tensor& row = *ck.weights.find("row");
  EXPECT_EQ(row.raw(), matrix.raw() + 4 * sizeof(float));  // tied: one storage, no copy
  // Storages are movable buffers (std::string-backed, handed to writers without a copy): 16-byte
  // aligned, enough for SIMD loads; kernels that need more pack their weights anyway.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(matrix.raw()) % 16, 0u);
  // A storage used by one tensor only is that tensor's alone once the state dict lets go, so
  // later passes may modify it in place.
  Tensor count = *ck.weights.find("count");
  EXPECT_FALSE(count.unique());
  ck.weights.clear();
  EXPECT_TRUE(count.unique());
}

TEST(TorchZip, BigEndianStoragesAreSwapped) {
  Sample s;
  Checkpoint ck = load(s.zip("archive/", true));
  s.check(ck);
}

TEST(TorchZip, BigEndianStorageViewedWithTwoElementSizesIsRefused) {
  PickleWriter w;
  w.proto(2).empty_dict().mark();
  w.str("a").global("torch._utils", "_rebuild_tensor_v3").mark().storage("UntypedStorage", "0", 8);
  w.integer(0)
      .int_tuple({2})
      .int_tuple({1})
      .boolean(false)
      .none()
      .global("torch", "float32")
      .tuple()
      .reduce();
  w.str("b").global("torch._utils", "_rebuild_tensor_v3").mark().storage("UntypedStorage", "0", 8);
  w.integer(0)
      .int_tuple({4})
      .int_tuple({1})
      .boolean(false)
      .none()
      .global("torch", "float16")
      .tuple()
      .reduce();
  w.setitems().stop();
  std::string data(8, '\1');
  EXPECT_NO_THROW(load(test::torch_zip("archive/", w.bytes(), {{"0", data}}, "little")));
  Error e = error_of(test::torch_zip("archive/", w.bytes(), {{"0", data}}, "big"),
                     ErrorKind::kInvalidInput);
  EXPECT_TRUE(contains(e.what(), "element sizes")) << e.what();
}

TEST(TorchZip, ByteorderEntry) {
  std::string pkl = test::state_dict_pickle({{"w", "IntStorage", "0", 1, 0, {1}, {1}}});
  std::string le = test::bytes_of(std::vector<int32_t>{0x01020304});
  EXPECT_EQ(values_of<int32_t>(
                *load(test::torch_zip("a/", pkl, {{"0", le}}, "little\n")).weights.find("w"))[0],
            0x01020304);
  EXPECT_EQ(
      values_of<int32_t>(*load(test::torch_zip("a/", pkl, {{"0", le}}, "")).weights.find("w"))[0],
      0x01020304);
  EXPECT_EQ(values_of<int32_t>(
                *load(test::torch_zip("a/", pkl, {{"0", le}}, "big")).weights.find("w"))[0],
            0x04030201);
  EXPECT_TRUE(contains(
      error_of(test::torch_zip("a/", pkl, {{"0", le}}, "middle"), ErrorKind::kInvalidInput).what(),
      "middle"));
  error_of(test::torch_zip("a/", pkl, {{"0", le}}, std::string(100, 'l')),
           ErrorKind::kInvalidInput);
}

TEST(TorchZip, StorageEntryTooSmall) {
  std::string pkl =
      test::state_dict_pickle({{"conv.weight", "FloatStorage", "17", 4, 0, {4}, {1}}});
  Error e = error_of(test::torch_zip("archive/", pkl, {{"17", std::string(15, '\0')}}),
                     ErrorKind::kInvalidInput);
  EXPECT_TRUE(contains(e.what(), "storage '17'")) << e.what();
  EXPECT_TRUE(contains(e.what(), "15 bytes")) << e.what();
  EXPECT_EQ(e.location().tensor, "conv.weight");
  // A larger entry is fine: only the declared part is used.
  EXPECT_NO_THROW(load(test::torch_zip("archive/", pkl, {{"17", std::string(17, '\0')}})));
}

TEST(TorchZip, HugeExpandedViewsAreRefused) {
  // torch.zeros(1).expand(2**40): four bytes of storage, four terabytes once contiguous.
  std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 1, 0, {1LL << 40}, {0}}});
  Error e =
      error_of(test::torch_zip("a/", pkl, {{"0", std::string(4, '\0')}}), ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(e.what(), "strided view")) << e.what();
  EXPECT_EQ(e.location().tensor, "w");
  std::string overflow =
      test::state_dict_pickle({{"w", "DoubleStorage", "0", 1, 0, {1LL << 61}, {0}}});
  error_of(test::torch_zip("a/", overflow, {{"0", std::string(8, '\0')}}), ErrorKind::kUnsupported);
  // Modest expansions are copied.
  std::string small =
      test::state_dict_pickle({{"w", "FloatStorage", "0", 1, 0, {1000, 10}, {0, 0}}});
  Checkpoint ck =
      load(test::torch_zip("a/", small, {{"0", test::bytes_of(std::vector<float>{2.5f})}}));
  EXPECT_EQ(values_of<float>(*ck.weights.find("w")), std::vector<float>(10000, 2.5f));
}

TEST(TorchZip, MissingStorageEntry) {
  std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 1, 0, {1}, {1}}});
  Error e = error_of(test::torch_zip("archive/", pkl, {}), ErrorKind::kInvalidInput);
  EXPECT_TRUE(contains(e.what(), "archive/data/0")) << e.what();
}

TEST(TorchZip, StoragesOutsideTheStateDictAreNeverRead) {
  // The optimizer's storage "9" is missing from the archive: only a reader that touched it would
  // notice.
  PickleWriter w;
  w.proto(2).empty_dict().mark();
  w.str("model_state_dict")
      .empty_dict()
      .str("w")
      .tensor_v2("FloatStorage", "0", 1, 0, {1}, {1})
      .setitem();
  w.str("optimizer_state_dict")
      .empty_dict()
      .str("exp_avg")
      .tensor_v2("FloatStorage", "9", 1000, 0, {1000}, {1})
      .setitem();
  w.setitems().stop();
  Checkpoint ck = load(test::torch_zip("archive/", w.bytes(), {{"0", std::string(4, '\0')}}));
  EXPECT_EQ(ck.state_dict_key, "model_state_dict");
  EXPECT_EQ(ck.weights.size(), 1u);
}

TEST(TorchZip, ArchiveLayoutErrors) {
  std::string pkl = test::state_dict_pickle({});
  // Nothing at all.
  test::ZipWriter empty;
  EXPECT_TRUE(contains(error_of(empty.build(), ErrorKind::kInvalidInput).what(), "no entries"));
  // Not inside a folder.
  test::ZipWriter flat;
  flat.add("data.pkl", pkl);
  EXPECT_TRUE(
      contains(error_of(flat.build(), ErrorKind::kInvalidInput).what(), "top-level folder"));
  // No data.pkl in the folder of the first entry.
  test::ZipWriter other;
  other.add("a/version", "3").add("b/data.pkl", pkl);
  EXPECT_TRUE(contains(error_of(other.build(), ErrorKind::kInvalidInput).what(), "a/data.pkl"));
  // The same name twice.
  test::ZipWriter twice;
  twice.add("a/data.pkl", pkl).add("a/data.pkl", pkl);
  error_of(twice.build(), ErrorKind::kInvalidInput);
}

TEST(TorchZip, TorchScriptArchivesAreUnsupported) {
  std::string pkl = test::state_dict_pickle({});
  test::ZipWriter constants;
  constants.add("m/data.pkl", pkl).add("m/constants.pkl", pkl);
  Error e = error_of(constants.build(), ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(e.what(), "TorchScript"));
  EXPECT_TRUE(contains(e.hint_text(), "state_dict()"));
  test::ZipWriter code;
  code.add("m/data.pkl", pkl).add("m/code/__torch__/m.py", "def forward(self): pass");
  error_of(code.build(), ErrorKind::kUnsupported);
}

TEST(TorchZip, ImplausibleCompressionRatioIsRefusedBeforeAllocating) {
  std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 1000000000, 0, {1}, {1}}});
  test::ZipWriter bomb;
  bomb.add("a/data.pkl", pkl).add_claiming("a/data/0", std::string(100, '\0'), 8, 4000000000u);
  EXPECT_TRUE(contains(error_of(bomb.build(), ErrorKind::kInvalidInput).what(), "expand"));
}

TEST(TorchZip, CrcMismatch) {
  Sample s;
  std::string zip = s.zip("archive/", false);
  // Flip a byte inside storage "0" (the float 5.0 at element 5: 0x40a00000).
  std::string needle = test::bytes_of(std::vector<float>{5});
  size_t at = zip.find(needle);
  ASSERT_NE(at, std::string::npos);
  zip[at + 3] ^= 0x01;
  Error e = error_of(zip, ErrorKind::kInvalidInput);
  EXPECT_TRUE(contains(e.what(), "archive/data/0")) << e.what();
  EXPECT_TRUE(contains(e.what(), "CRC")) << e.what();
}

TEST(TorchZip, CorruptCentralDirectory) {
  Sample s;
  const std::string zip = s.zip("archive/", false);
  const size_t central = zip.find("PK\x01\x02");
  const size_t end = zip.find("PK\x05\x06");
  ASSERT_NE(central, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  {
    std::string bad = zip;
    bad[central + 2] = 9;  // signature
    error_of(bad, ErrorKind::kInvalidInput);
  }
  {
    std::string bad = zip;
    bad[end + 16] ^= 0x10;  // directory offset
    error_of(bad, ErrorKind::kInvalidInput);
  }
  {
    std::string bad = zip;
    bad[end + 10] = 99;  // entry count
    error_of(bad, ErrorKind::kInvalidInput);
  }
  {
    std::string bad = zip;
    bad[central + 42] ^= 0x04;  // first entry's local header offset: headers disagree
    error_of(bad, ErrorKind::kInvalidInput);
  }
  {
    std::string bad = zip;
    bad[central + 20] ^= 0x01;  // compressed size of a stored entry
    error_of(bad, ErrorKind::kInvalidInput);
  }
}

TEST(TorchZip, EveryTruncationFailsCleanly) {
  Sample s;
  const std::string zip = s.zip("archive/", false);
  for (size_t n = 0; n < zip.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THROW(load(zip.substr(0, n)), Error);
  }
}

TEST(TorchZip, EverySingleByteCorruptionFailsCleanlyOrLoads) {
  // Whatever byte is damaged, the result is a checkpoint or a modex::Error: never a crash and
  // never another exception. Damage to tensor data must be caught by the CRC.
  Sample s;
  const std::string zip = s.zip("archive/", false);
  int loaded = 0;
  int refused = 0;
  for (size_t i = 0; i < zip.size(); ++i) {
    std::string bad = zip;
    bad[i] ^= 0xff;
    try {
      Checkpoint ck = load(bad);
      ++loaded;
      EXPECT_EQ(values_of<float>(*ck.weights.find("matrix")), s.f32) << "byte " << i;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(loaded + refused, static_cast<int>(zip.size()));
}

TEST(TorchZip, FormatDetection) {
  const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                            0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  Error e = error_of(std::string(reinterpret_cast<const char*>(legacy), sizeof legacy),
                     ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(
      e.what(),
      "legacy (pre-1.6) torch.save format; re-save with torch >= 1.6 (torch.save(obj, path))"));
  EXPECT_TRUE(contains(
      error_of(PickleWriter().proto(4).none().stop().bytes(), ErrorKind::kUnsupported).what(),
      "bare pickle"));
  EXPECT_TRUE(contains(error_of("hello world, not a model", ErrorKind::kInvalidInput).what(),
                       "unrecognised"));
  EXPECT_TRUE(contains(error_of("", ErrorKind::kInvalidInput).what(), "empty"));
  EXPECT_TRUE(contains(error_of("PK\x03\x04", ErrorKind::kInvalidInput).what(), "zip"));
  EXPECT_THROW(load_checkpoint_from_memory(nullptr, 0, "null"), Error);
}

TEST(TorchZip, FileErrors) {
  try {
    load_checkpoint("/nonexistent/dir/model.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_EQ(e.location().file, "/nonexistent/dir/model.pt");
  }
  try {
    load_checkpoint(std::filesystem::temp_directory_path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
  }
}

TEST(TorchZip, LoadsFromAFileAndFromMemoryAlike) {
  Sample s;
  const std::string zip = s.zip("model/", false);
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / "modex_io_test_model.pt";
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(zip.data(), 1, zip.size(), f);
    std::fclose(f);
  }
  Checkpoint ck = load_checkpoint(path);
  std::filesystem::remove(path);
  EXPECT_EQ(ck.path, path);
  s.check(ck);
}

TEST(TorchZip, FromAFileStoragesAreReadAndCheckedOnFirstUse) {
  // "count" (storage "1") comes first in the archive, a 256 KiB storage after it, so that nothing
  // of the count's bytes is still in a read buffer when it is read again.
  const std::string pkl = test::state_dict_pickle({{"count", "LongStorage", "1", 1, 0, {}, {}},
                                                   {"big", "FloatStorage", "0", 65536, 0, {65536}, {1}}});
  const std::string count_bytes = test::bytes_of(std::vector<int64_t>{77});
  const std::string zip = test::torch_zip("m/", pkl, {{"1", count_bytes}, {"0", std::string(65536 * 4, '\0')}});
  const size_t at = zip.find(count_bytes);
  ASSERT_NE(at, std::string::npos);
  std::string damaged = zip;
  damaged[at] ^= 0x01;
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / "modex_io_test_lazy.pt";
  auto write = [&](const std::string& bytes) {
    // In place (the same file), as a torch.save over it while modex runs would.
    FILE* f = std::fopen(path.c_str(), std::filesystem::exists(path) ? "r+b" : "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  };
  auto expect_error_on_use = [&](Tensor& t, const std::string& what) {
    try {
      (void)t.raw();
      FAIL() << "the storage was read without an error from " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.location().file, path.string()) << what;
      EXPECT_TRUE(contains(e.what(), "corrupt zip entry")) << what << ": " << e.what();
    }
  };
  write(zip);

  Checkpoint ck = load_checkpoint(path);
  Tensor count = *ck.weights.find("count");
  EXPECT_FALSE(count.in_memory());
  EXPECT_EQ(values_of<int64_t>(count), std::vector<int64_t>{77});
  EXPECT_TRUE(count.in_memory());

  // Damaged data (a flipped bit fails the CRC) is found when the storage is first read, and
  // every later use fails too.
  write(damaged);
  ck = load_checkpoint(path);
  count = *ck.weights.find("count");
  expect_error_on_use(count, "a damaged file");
  expect_error_on_use(count, "a damaged file, the second time");

  // A file cut short after load ("big", after "count", is no longer all there).
  write(zip);
  ck = load_checkpoint(path);
  Tensor big = *ck.weights.find("big");
  std::filesystem::resize_file(path, at + count_bytes.size() + 1000);
  expect_error_on_use(big, "a truncated file");
  std::filesystem::remove(path);
}

TEST(StateDictClass, InsertFindClear) {
  StateDict sd;
  sd.insert("a", Tensor::scalar_float(1));
  sd.insert("b", Tensor::scalar_float(2));
  EXPECT_THROW(sd.insert("a", Tensor::scalar_float(3)), Error);
  EXPECT_EQ(sd.size(), 2u);
  ASSERT_NE(sd.find("b"), nullptr);
  EXPECT_EQ(sd.find("b")->to_float_vector()[0], 2.0f);
  EXPECT_EQ(sd.find("c"), nullptr);
  EXPECT_EQ(sd.entries()[0].first, "a");
  sd.clear();
  EXPECT_EQ(sd.size(), 0u);
  EXPECT_FALSE(sd.contains("a"));
  sd.insert("a", Tensor::scalar_float(3));  // usable again
  EXPECT_TRUE(sd.contains("a"));
}

}  // namespace
}  // namespace modex
