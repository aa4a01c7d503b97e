// Whole zoo models from the ONNX fixtures (exported by PyTorch, with PyTorch's logits for a fixed
// input): the engine against PyTorch and against the reference kernels. The fixtures are made by
// tests/oracle (cached under ~/.cache/modex/onnx-fixtures/<hash>/<case>/); a missing fixture fails.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "modex/runtime.h"
#include "runtime_test_util.h"

namespace modex::runtime_test {
namespace {
namespace fs = std::filesystem;

// PyTorch vs modex logits: different summation orders over long reductions.
constexpr float kZooTolerance = 1e-4f;

fs::path fixture_dir(const std::string& name) {
  const char* home = std::getenv("HOME");
  fs::path root = fs::path(home ? home : "/root") / ".cache/modex/onnx-fixtures";
  if (fs::is_directory(root))
    for (const auto& hash : fs::directory_iterator(root))
      if (fs::exists(hash.path() / name / "model.onnx")) return hash.path() / name;
  return {};
}

Tensor read_floats(const fs::path& p, Dims shape) {
  std::ifstream f(p, std::ios::binary);
  Tensor t = Tensor::zeros(DType::kFloat32, shape);
  f.read(reinterpret_cast<char*>(t.raw_mutable()), static_cast<std::streamsize>(t.nbytes()));
  EXPECT_EQ(static_cast<size_t>(f.gcount()), t.nbytes()) << p;
  return t;
}

class ZooFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooFixture, MatchesPyTorchAndReference) {
  fs::path dir = fixture_dir(GetParam());
  ASSERT_FALSE(dir.empty()) << "ONNX fixture " << GetParam()
                            << " not found under ~/.cache/modex/onnx-fixtures/*/ (made by tests/io/make_onnx_fixtures.py, ctest runtime_onnx_fixtures)";
  Tensor x = read_floats(dir / "b1.input.bin", {1, 3, 224, 224});
  auto fast = Model::load(dir / "model.onnx", {.threads = 2});
  Tensor got = fast->run({x})[0];
  Tensor want = read_floats(dir / "b1.logits.bin", got.shape());
  EXPECT_TRUE(close(want, got, kZooTolerance)) << "vs PyTorch";

  auto ref = Model::load(dir / "model.onnx", {.threads = 1, .backend = Backend::kReference});
  EXPECT_TRUE(close(ref->run({x})[0], got, kF32Tolerance * 10)) << "vs reference kernels";

  // Nothing a zoo model needs runs on the reference kernels.
  for (const std::string& k : fast->kernel_names())
    EXPECT_TRUE(k.rfind("xnn_", 0) == 0 || k.rfind("native_", 0) == 0 || k == "alias")
        << "slow kernel " << k << " in " << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Onnx, ZooFixture,
                         ::testing::Values("resnet18-op11", "mobilenet_v2-op13", "efficientnet_b0-op13",
                                           "mobilenet_v3_small-op11"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace modex::runtime_test
