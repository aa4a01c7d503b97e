// `modex batch` in-process on a tiny ONNX classifier: each CSV row must be its own image's
// prediction however the images fall into batches (full, short last batch, a batch with an
// unreadable file, whose decoded rows are packed before inference).
#include "app/batch_command.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "../io/image_test_util.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"
#include "tiny_classifier.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// With preprocessing metadata, so that batch resizes and crops every image to 12x12.
fs::path write_tiny_classifier(const fs::path& dir) {
  fs::path path = dir / "tiny.onnx";
  test::write_tiny_classifier(path, 5, {{"preprocessing", R"({"input_size": 12, "resize": "resize_center_crop", "resize_size": 14})"}});
  return path;
}

std::vector<std::vector<std::string>> read_rows(const fs::path& csv) {
  std::ifstream in(csv);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, ',');) fields.push_back(f);
    rows.push_back(fields);
  }
  return rows;
}

TEST(BatchCommand, EveryRowIsItsOwnImageWhateverTheBatching) {
  TempDir d;
  const fs::path model_path = write_tiny_classifier(d.path());
  const fs::path images = d.path() / "images";
  // 11 pictures of different sizes and contents, and an unreadable file sorted among them.
  for (int i = 0; i < 11; ++i)
    test::write_bytes(images / ("img" + std::to_string(10 + i) + ".bmp"),
                      test::encode_bmp24(test::pattern_image(14 + 3 * i, 30 - i, static_cast<uint32_t>(i))));
  test::write_bytes(images / "img13b.bmp", test::encode_bmp24(test::pattern_image(20, 20, 99)).substr(0, 80));

  // The reference: each image on its own, through the same preprocessing.
  auto model = Model::load(model_path, {.threads = 1});
  std::string source;
  const image::Preprocess pre = app::preprocessing_for(*model, {}, source);
  std::map<std::string, std::pair<int64_t, float>> want;  // path -> class, probability
  for (const auto& p : app::collect_images({images})) {
    if (p.filename() == "img13b.bmp") continue;
    Tensor logits = model->run({image::preprocess(image::load_image(p), pre)}).at(0);
    std::vector<float> prob = app::probabilities(logits.data<float>(), logits.numel());
    int64_t best = std::max_element(prob.begin(), prob.end()) - prob.begin();
    want[p.string()] = {best, prob[static_cast<size_t>(best)]};
  }
  ASSERT_EQ(want.size(), 11u);

  for (int64_t batch_size : {1, 4, 5, 16}) {
    for (int decode_threads : {1, 3}) {
      app::BatchOptions o;
      o.model = model_path;
      o.dir = images;
      o.output = d.path() / ("out" + std::to_string(batch_size) + "_" + std::to_string(decode_threads) + ".csv");
      o.threads = 2;
      o.decode_threads = decode_threads;
      o.batch_size = batch_size;
      o.top = 2;
      o.progress = false;
      EXPECT_EQ(app::run_batch(o), 1);  // one image failed
      auto rows = read_rows(o.output);
      ASSERT_EQ(rows.size(), 12u);
      size_t errors = 0;
      for (const auto& r : rows) {
        ASSERT_GE(r.size(), 5u);
        SCOPED_TRACE(r[0] + " batch size " + std::to_string(batch_size));
        if (r[1] == "error") {
          EXPECT_EQ(fs::path(r[0]).filename(), "img13b.bmp");
          ++errors;
          continue;
        }
        ASSERT_EQ(r[1], "ok");
        ASSERT_TRUE(want.count(r[0]));
        EXPECT_EQ(std::stoll(r[2]), want[r[0]].first);
        EXPECT_NEAR(std::stof(r[4]), want[r[0]].second, 2e-6);
      }
      EXPECT_EQ(errors, 1u);
    }
  }
}

}  // namespace
}  // namespace modex
