// `modex calib` run in-process on a dataset built in the test.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "../io/image_test_util.h"
#include "app/calib_command.h"
#include "core/error.h"
#include "io/dataset/npy.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void classification_tree(const fs::path& root, std::vector<std::string> splits, std::vector<std::pair<std::string, int>> classes) {
  for (const auto& s : splits) {
    for (const auto& [c, n] : classes) {
      for (int i = 0; i < n; ++i) {
        test::write_bytes(root / s / c / (std::to_string(i) + ".bmp"),
                          test::encode_bmp24(test::pattern_image(12, 10, static_cast<uint32_t>(i))));
      }
    }
  }
}

TEST(CalibCommand, SummarisesAndWritesNpy) {
  TempDir d;
  classification_tree(d.path() / "data", {"val", "train"}, {{"a", 5}, {"b", 5}});
  test::write_bytes(d.path() / "data" / "val" / "a" / "broken.png", "\x89PNG\r\n\x1a\nnope");
  app::CalibOptions o;
  o.data_dir = d.path() / "data";
  o.num_samples = 11;
  o.batch_size = 4;
  o.input_size = 16;
  o.json = true;
  o.progress = false;
  o.output = d.path() / "calib.npy";
  std::ostringstream out;
  app::run_calib(o, out);
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["dataset"]["split"], "val");
  EXPECT_EQ(j["samples_drawn"], 11);
  EXPECT_EQ(j["decoded"], 10);
  EXPECT_EQ(j["skipped"].size(), 1u);
  EXPECT_EQ(j["classes"][0]["name"], "a");
  EXPECT_EQ(j["classes"][0]["images"], 6);
  EXPECT_EQ(j["channels"].size(), 3u);
  Tensor t = npy::read(d.path() / "calib.npy");
  EXPECT_EQ(t.shape(), (Dims{10, 3, 16, 16}));

  o.json = false;
  o.test_batches = 1;
  o.output.reset();
  std::ostringstream text;
  app::run_calib(o, text);
  EXPECT_NE(text.str().find("DIR/<split>/<class>/<image>"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("channel"), std::string::npos);
  EXPECT_NE(text.str().find("decoded      4 images in 1 batch(es)"), std::string::npos) << text.str();

  o.mean = {1, 2};
  EXPECT_THROW(app::run_calib(o, text), Error);
}

}  // namespace
}  // namespace modex
