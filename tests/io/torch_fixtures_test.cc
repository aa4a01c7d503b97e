// Real files written by torch.save (torch 1.13) and by a reference safetensors writer, produced
// by tests/io/make_fixtures.py (the io_fixtures CTest fixture) into MODEX_TEST_DATA_DIR/io.
// Every tensor is compared with what torch computed, element by element and bit for bit.
//
// A missing fixture directory is a failure, not a skip: these tests are the evidence that real
// checkpoints load.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/pytorch/checkpoint.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

fs::path fixture_dir() { return fs::path(MODEX_TEST_DATA_DIR) / "io"; }

Json read_json(const fs::path& p) {
  std::ifstream in(p);
  return Json::parse(in);
}

::testing::AssertionResult fixtures_present() {
  const fs::path manifest = fixture_dir() / "manifest.json";
  if (fs::exists(manifest)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << manifest << " is missing: run the io_fixtures test first (ctest -R io_fixtures), or "
         << "/usr/bin/python3 tests/io/make_fixtures.py " << fixture_dir();
}

std::string kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::kInvalidInput:
      return "invalid";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kUnsafe:
      return "unsafe";
    case ErrorKind::kIo:
      return "io";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "?";
}

// Element i of t as the integer the fixture stores: the bit pattern for floating point types
// (so NaNs and -0.0 compare exactly), the value for integer types.
uint64_t element_bits(const Tensor& t, int64_t i) {
  const size_t size = dtype_size(t.dtype());
  uint64_t v = 0;
  std::memcpy(&v, t.raw() + i * static_cast<int64_t>(size), size);
  return v;
}

int64_t element_int(const Tensor& t, int64_t i) {
  const uint8_t* p = t.raw() + i * static_cast<int64_t>(dtype_size(t.dtype()));
  switch (t.dtype()) {
    case DType::kInt8:
      return *reinterpret_cast<const int8_t*>(p);
    case DType::kUInt8:
      return *p;
    case DType::kBool:
      return *p;
    case DType::kInt16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case DType::kUInt16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case DType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kUInt32: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::kUInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }  // compared as bits
    default:
      return 0;
  }
}

void check_tensor(const Json& expected, const Tensor& t) {
  const std::string name = expected["name"];
  SCOPED_TRACE(name);
  EXPECT_EQ(dtype_name(t.dtype()), expected["dtype"].get<std::string>());
  EXPECT_EQ(t.shape(), expected["shape"].get<Dims>());
  const Json& values = expected["values"];
  ASSERT_EQ(static_cast<size_t>(t.numel()), values.size());
  const bool bits = expected["encoding"] == "bits";
  int mismatches = 0;
  for (int64_t i = 0; i < t.numel() && mismatches < 5; ++i) {
    const Json& v = values[static_cast<size_t>(i)];
    bool equal;
    if (bits) {
      equal = element_bits(t, i) == v.get<uint64_t>();
    } else if (t.dtype() == DType::kUInt64) {
      equal = static_cast<uint64_t>(element_int(t, i)) == v.get<uint64_t>();
    } else {
      equal = element_int(t, i) == v.get<int64_t>();
    }
    if (!equal) {
      ++mismatches;
      ADD_FAILURE() << "element " << i << ": expected " << v.dump();
    }
  }
}

void check_case(const Json& spec) {
  const fs::path file = fixture_dir() / spec["file"].get<std::string>();
  SCOPED_TRACE(spec["name"].get<std::string>() + " (" + file.string() + ")");
  ASSERT_TRUE(fs::exists(file));
  if (spec["expect"] == "error") {
    if (spec.contains("marker")) fs::remove(spec["marker"].get<std::string>());
    try {
      // Storages are read (and their CRC checked) on first use: a load reads them all.
      Checkpoint ck = load_checkpoint(file);
      for (const auto& entry : ck.weights.entries()) (void)entry.second.raw();
      ADD_FAILURE() << "loaded without error";
    } catch (const Error& e) {
      EXPECT_EQ(kind_name(e.kind()), spec["error_kind"].get<std::string>()) << e.what();
      EXPECT_EQ(e.location().file, file.string());
      for (const auto& part : spec["message_contains"]) {
        EXPECT_NE(std::string(e.what()).find(part.get<std::string>()), std::string::npos)
            << "'" << part.get<std::string>() << "' not in: " << e.what();
      }
      if (spec.contains("hint_contains")) {
        EXPECT_NE(e.hint_text().find(spec["hint_contains"].get<std::string>()), std::string::npos)
            << e.hint_text();
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "unexpected exception type: " << e.what();
    }
    if (spec.contains("marker")) {
      EXPECT_FALSE(fs::exists(spec["marker"].get<std::string>())) << "the pickle's payload ran";
    }
    return;
  }

  Checkpoint ck;
  try {
    ck = load_checkpoint(file);
  } catch (const Error& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(ck.path, file);
  EXPECT_EQ(ck.format, spec["format"].get<std::string>());
  EXPECT_EQ(ck.state_dict_key, spec["state_dict_key"].get<std::string>());
  EXPECT_EQ(ck.stripped_prefixes, spec["stripped_prefixes"].get<std::vector<std::string>>());
  const Json& config = spec["config"];
  EXPECT_EQ(ck.config.architecture,
            config.contains("architecture")
                ? std::optional<std::string>(config["architecture"].get<std::string>())
                : std::nullopt);
  EXPECT_EQ(ck.config.num_classes,
            config.contains("num_classes")
                ? std::optional<int64_t>(config["num_classes"].get<int64_t>())
                : std::nullopt);
  EXPECT_EQ(ck.config.input_size, config.contains("input_size")
                                      ? std::optional<int64_t>(config["input_size"].get<int64_t>())
                                      : std::nullopt);
  EXPECT_EQ(ck.config.class_names, config.contains("class_names")
                                       ? config["class_names"].get<std::vector<std::string>>()
                                       : std::vector<std::string>{});

  const Json& tensors = spec["tensors"];
  ASSERT_EQ(ck.weights.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = ck.weights.entries()[i];
    EXPECT_EQ(name, tensors[i]["name"].get<std::string>()) << "position " << i;
    check_tensor(tensors[i], tensor);
  }
}

void check_named(const std::string& name) {
  ASSERT_TRUE(fixtures_present());
  const fs::path spec = fixture_dir() / (name + ".json");
  ASSERT_TRUE(fs::exists(spec)) << spec;
  check_case(read_json(spec));
}

TEST(TorchFixtures, EveryCaseMatchesTorch) {
  ASSERT_TRUE(fixtures_present());
  const Json manifest = read_json(fixture_dir() / "manifest.json");
  ASSERT_GE(manifest["cases"].size(), 40u);
  for (const auto& name : manifest["cases"])
    check_case(read_json(fixture_dir() / (name.get<std::string>() + ".json")));
}

// The cases that matter most, individually, so a failure names them.
TEST(TorchFixtures, PlainStateDict) { check_named("plain_state_dict"); }
TEST(TorchFixtures, TrainingCheckpointWithOptimizerAndConfig) {
  check_named("training_checkpoint");
}
TEST(TorchFixtures, DataParallelPrefix) { check_named("data_parallel"); }
TEST(TorchFixtures, CompiledDataParallelPrefixes) { check_named("compiled_data_parallel"); }
TEST(TorchFixtures, PickleProtocols4And5) {
  check_named("protocol4");
  check_named("protocol5");
}
TEST(TorchFixtures, TiedWeights) { check_named("tied"); }
TEST(TorchFixtures, OffsetsStridesEmptyAndZeroDim) { check_named("strided"); }
TEST(TorchFixtures, EveryDtype) { check_named("dtypes"); }
TEST(TorchFixtures, BigEndian) { check_named("big_endian"); }
TEST(TorchFixtures, TopLevelArchAndStateDict) { check_named("arch_state_dict"); }
TEST(TorchFixtures, HarmlessPythonValuesAroundTheWeights) {
  check_named("misc_values_p2");
  check_named("misc_values_p4");
}
TEST(TorchFixtures, MaliciousPicklesNeverRun) {
  check_named("malicious_os_system");
  check_named("malicious_eval");
  check_named("malicious_protocol4");
}
TEST(TorchFixtures, WholePickledModulesAreRefused) {
  check_named("whole_module");
  check_named("whole_sequential");
}
TEST(TorchFixtures, LegacyAndTorchScriptAreUnsupported) {
  check_named("legacy");
  check_named("torchscript");
}
TEST(TorchFixtures, DamagedArchives) {
  for (const char* name : {"short_storage", "missing_storage", "crc_mismatch", "truncated",
                           "no_data_pkl", "bad_byteorder"})
    check_named(name);
}
TEST(TorchFixtures, Safetensors) {
  check_named("safetensors");
  check_named("safetensors_unaligned");
}

TEST(TorchFixtures, TiedWeightsShareMemory) {
  ASSERT_TRUE(fixtures_present());
  Checkpoint ck = load_checkpoint(fixture_dir() / "tied.pt");
  const Tensor* embed = ck.weights.find("embed.weight");
  const Tensor* head = ck.weights.find("head.weight");
  const Tensor* tail = ck.weights.find("tail");
  ASSERT_TRUE(embed && head && tail);
  EXPECT_EQ(embed->raw(), head->raw());
  EXPECT_EQ(tail->raw(), embed->raw() + 3 * sizeof(float));
}

TEST(TorchFixtures, MaliciousPickleErrorIsUnsafeAndNamesTheGlobal) {
  ASSERT_TRUE(fixtures_present());
  const fs::path marker = fixture_dir() / "PWNED_os_system";
  fs::remove(marker);
  try {
    load_checkpoint(fixture_dir() / "malicious_os_system.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsafe);
    EXPECT_NE(std::string(e.what()).find(
                  "refusing to load: the pickle names the global 'posix.system', which is not "
                  "on the allowlist of tensor and container types (a checkpoint that runs "
                  "code is never executed)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(marker));
}

}  // namespace
}  // namespace modex
