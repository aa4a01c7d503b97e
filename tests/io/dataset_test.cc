// Dataset discovery, seeded stratified sampling, batch loading and .npy files. The folders are
// built in the test with hand-encoded BMP images (discovery only looks at names).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "image_test_util.h"
#include "io/dataset/dataset.h"
#include "io/dataset/npy.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using dataset::DatasetType;
using test::TempDir;

void image_at(const fs::path& p, uint32_t seed = 1) {
  test::write_bytes(p, test::encode_bmp24(test::pattern_image(12, 10, seed)));
}

// DIR/<split>/<class>/<i>.bmp for every split and class.
void classification_tree(const fs::path& root, std::vector<std::string> splits, std::vector<std::pair<std::string, int>> classes) {
  for (const auto& s : splits) {
    for (const auto& [c, n] : classes) {
      for (int i = 0; i < n; ++i) image_at(root / s / c / (std::to_string(i) + ".bmp"), static_cast<uint32_t>(i));
    }
  }
}

TEST(DatasetDiscover, ClassificationPrefersValThenTestThenTrain) {
  TempDir d;
  classification_tree(d.path(), {"train"}, {{"cat", 2}, {"dog", 3}});
  auto info = dataset::discover(d.path());
  EXPECT_EQ(info.type, DatasetType::kClassification);
  EXPECT_EQ(info.split, "train");
  EXPECT_NE(info.split_reason.find("training"), std::string::npos);
  classification_tree(d.path(), {"test"}, {{"cat", 1}, {"dog", 1}, {"eel", 1}});
  info = dataset::discover(d.path(), DatasetType::kClassification);
  EXPECT_EQ(info.split, "test");
  EXPECT_EQ(info.classes.size(), 3u);
  classification_tree(d.path(), {"val"}, {{"ant", 4}, {"bee", 1}});
  info = dataset::discover(d.path());
  EXPECT_EQ(info.split, "val");
  EXPECT_EQ(info.layout, "DIR/<split>/<class>/<image>");
  ASSERT_EQ(info.classes.size(), 2u);
  EXPECT_EQ(info.classes[0].name, "ant");
  EXPECT_EQ(info.classes[0].count, 4);
  EXPECT_EQ(info.classes[1].count, 1);
  EXPECT_EQ(info.images.size(), 5u);
  EXPECT_EQ(info.images[4].class_index, 1);
}

TEST(DatasetDiscover, ClassFoldersWithoutSplitsAndFlatFolders) {
  TempDir d;
  classification_tree(d.path(), {"."}, {{"a", 2}, {"b", 2}});
  auto info = dataset::discover(d.path());
  EXPECT_EQ(info.type, DatasetType::kClassification);
  EXPECT_EQ(info.layout, "DIR/<class>/<image>");
  EXPECT_EQ(info.split, "");
  EXPECT_EQ(info.classes.size(), 2u);

  TempDir flat;
  image_at(flat.path() / "x.JPG");  // extension case does not matter (content is BMP: fine here)
  image_at(flat.path() / "y.png");
  image_at(flat.path() / ".hidden.png");
  test::write_bytes(flat.path() / "notes.txt", "hi");
  info = dataset::discover(flat.path());
  EXPECT_EQ(info.type, DatasetType::kFlat);
  EXPECT_EQ(info.images.size(), 2u);
  EXPECT_TRUE(info.classes.empty());
  EXPECT_THROW(dataset::discover(flat.path(), DatasetType::kDetection), Error);
}

TEST(DatasetDiscover, DetectionLayouts) {
  TempDir d;
  image_at(d.path() / "images" / "train" / "a.jpg");
  image_at(d.path() / "images" / "test" / "b.jpg");
  image_at(d.path() / "images" / "test" / "c.jpg");
  test::write_bytes(d.path() / "labels" / "test" / "b.txt", "0 0.5 0.5 0.1 0.1\n");
  auto info = dataset::discover(d.path());
  EXPECT_EQ(info.type, DatasetType::kDetection);
  EXPECT_EQ(info.split, "test");
  EXPECT_EQ(info.images.size(), 2u);
  EXPECT_EQ(info.layout, "DIR/images/<split>/<image>");

  TempDir o;
  image_at(o.path() / "output" / "images" / "val" / "a.png");
  image_at(o.path() / "output" / "images" / "train" / "b.png");
  info = dataset::discover(o.path(), DatasetType::kDetection);
  EXPECT_EQ(info.split, "val");
  EXPECT_EQ(info.layout, "DIR/output/images/<split>/<image>");
  EXPECT_EQ(info.images.size(), 1u);
}

TEST(DatasetDiscover, ErrorsNameTheFolderAndSymlinkLoopsAreSafe) {
  TempDir d;
  try {
    dataset::discover(d.path() / "missing");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
  try {
    dataset::discover(d.path());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(d.path().string()), std::string::npos);
  }
  image_at(d.path() / "cls" / "a.png");
  fs::create_directory_symlink(d.path() / "cls", d.path() / "cls" / "loop");
  fs::create_directory_symlink(d.path(), d.path() / "cls" / "up");
  auto info = dataset::discover(d.path());
  EXPECT_EQ(info.images.size(), 1u);
}

TEST(SplitMix64, KnownSequenceAndUnbiasedRange) {
  dataset::SplitMix64 r(0);
  EXPECT_EQ(r.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(r.next(), 0x6e789e6aa1b965f4ULL);
  dataset::SplitMix64 b(42);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(b.below(7), 7u);
}

dataset::DatasetInfo three_classes(const fs::path& root) {
  classification_tree(root, {"val"}, {{"a", 10}, {"b", 3}, {"c", 20}});
  return dataset::discover(root);
}

TEST(DatasetSample, SeededStratifiedAndDeterministic) {
  TempDir d;
  auto info = three_classes(d.path());
  auto s1 = dataset::sample(info, 9, 7), s2 = dataset::sample(info, 9, 7), s3 = dataset::sample(info, 9, 8);
  auto paths = [](const std::vector<dataset::Sample>& s) {
    std::vector<std::string> p;
    for (const auto& x : s) p.push_back(x.path.lexically_relative(x.path.parent_path().parent_path()).string());
    return p;
  };
  EXPECT_EQ(paths(s1), paths(s2));
  EXPECT_NE(paths(s1), paths(s3));
  std::map<int, int> per_class;
  for (const auto& x : s1) ++per_class[x.class_index];
  EXPECT_EQ(per_class[0], 3);
  EXPECT_EQ(per_class[1], 3);
  EXPECT_EQ(per_class[2], 3);
  // b has only 3: the others fill in.
  auto s4 = dataset::sample(info, 15, 7);
  per_class.clear();
  for (const auto& x : s4) ++per_class[x.class_index];
  EXPECT_EQ(per_class[1], 3);
  EXPECT_EQ(per_class[0] + per_class[2], 12);
  EXPECT_GE(per_class[0], 6);
  // More than there is: everything, once.
  auto all = dataset::sample(info, 1000, 1);
  EXPECT_EQ(all.size(), 33u);
  std::set<fs::path> unique;
  for (const auto& x : all) unique.insert(x.path);
  EXPECT_EQ(unique.size(), 33u);
  EXPECT_THROW(dataset::sample(info, 0, 1), Error);
}

TEST(DatasetSample, FixedSeedGivesAFixedListOnEveryPlatform) {
  // The algorithm is ours (splitmix64 + Fisher-Yates), so this list must never change.
  dataset::DatasetInfo info;
  info.classes = {{"x", 4}, {"y", 4}};
  for (int i = 0; i < 8; ++i) info.images.push_back({std::to_string(i), i / 4});
  std::string got;
  for (const auto& s : dataset::sample(info, 8, 0)) got += s.path.string();
  std::string again;
  for (const auto& s : dataset::sample(info, 8, 0)) again += s.path.string();
  EXPECT_EQ(got, again);
  EXPECT_EQ(got.size(), 8u);
  // Round-robin: classes alternate.
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_NE((got[i] - '0') / 4, (got[i + 1] - '0') / 4);
}

TEST(DatasetLoad, BatchesKeepOrderAndSkipCorruptImages) {
  TempDir d;
  std::vector<dataset::Sample> samples;
  for (int i = 0; i < 11; ++i) {
    const fs::path p = d.path() / (std::to_string(i) + ".bmp");
    if (i == 3 || i == 7) {
      test::write_bytes(p, test::encode_bmp24(test::pattern_image(12, 10, 1)).substr(0, 60));  // truncated
    } else {
      test::write_bytes(p, test::encode_bmp24(test::solid_image(12, 10, static_cast<uint8_t>(i * 10), 0, 0)));
    }
    samples.push_back({p, -1});
  }
  samples.push_back({d.path() / "gone.png", -1});
  image::Preprocess pre;
  pre.width = pre.height = 8;
  pre.output = image::Preprocess::Output::kUInt8;
  pre.layout = image::Preprocess::Layout::kNHWC;
  int64_t last_done = -1, last_total = -1;
  dataset::LoadOptions lo;
  lo.batch_size = 4;
  lo.threads = 3;
  lo.progress = [&](int64_t done, int64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
  };
  auto set = dataset::load_batches(samples, pre, lo);
  EXPECT_EQ(last_done, 12);
  EXPECT_EQ(last_total, 12);
  EXPECT_EQ(set.count(), 9);
  ASSERT_EQ(set.skipped.size(), 3u);
  EXPECT_EQ(set.skipped[0].path.filename(), "3.bmp");
  EXPECT_NE(set.skipped[0].reason.find("truncated"), std::string::npos) << set.skipped[0].reason;
  EXPECT_EQ(set.skipped[2].path.filename(), "gone.png");
  ASSERT_EQ(set.batches.size(), 3u);
  EXPECT_EQ(set.batches[0].shape(), (Dims{4, 8, 8, 3}));
  EXPECT_EQ(set.batches[2].shape(), (Dims{1, 8, 8, 3}));
  Tensor all = set.stacked();
  ASSERT_EQ(all.shape(), (Dims{9, 8, 8, 3}));
  const std::vector<int> expected_red = {0, 10, 20, 40, 50, 60, 80, 90, 100};
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(all.values<uint8_t>()[i * 192], expected_red[i]) << i;

  dataset::LoadOptions single;
  single.batch_size = 4;
  single.threads = 1;
  auto one = dataset::load_batches(samples, pre, single);
  Tensor again = one.stacked();
  EXPECT_EQ(std::memcmp(again.raw(), all.raw(), all.nbytes()), 0);
}

TEST(Npy, RoundTripAndHeaderLayout) {
  TempDir d;
  std::vector<float> v(2 * 3 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f - 3;
  Tensor t = Tensor::from_floats({2, 3, 5}, v);
  const std::string bytes = npy::encode(t);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ((bytes.size() - t.nbytes()) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (2, 3, 5)"), std::string::npos);
  npy::write(d.path() / "t.npy", t);
  Tensor back = npy::read(d.path() / "t.npy");
  EXPECT_EQ(back.shape(), t.shape());
  EXPECT_EQ(back.to_float_vector(), v);
  Tensor u = Tensor::zeros(DType::kUInt8, {7});
  EXPECT_NE(npy::encode(u).find("'shape': (7,)"), std::string::npos);
  EXPECT_EQ(npy::decode(test::as_bytes(npy::encode(u)), "u").shape(), (Dims{7}));
  Tensor s = Tensor::scalar_float(2.5f);
  EXPECT_EQ(npy::decode(test::as_bytes(npy::encode(s)), "s").to_float_vector(), std::vector<float>{2.5f});
}

TEST(Npy, MalformedFilesAreErrorsNamingTheFile) {
  const std::string good = npy::encode(Tensor::from_floats({2, 2}, std::vector<float>{1, 2, 3, 4}));
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      npy::decode(test::as_bytes(good.substr(0, n)), "bad.npy");
      ADD_FAILURE() << n;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.npy"), std::string::npos) << e.what();
    }
  }
  auto with_header = [](const std::string& dict) {
    std::string s("\x93NUMPY\x01\x00", 8);
    s += static_cast<char>(dict.size());
    s += '\0';
    return s + dict;
  };
  for (const char* h : {"{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                        "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                        "{'descr': '<f4', 'shape': (1,), }", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                        "{'descr': '<f4' 'fortran_order': False}", "", "{"}) {
    EXPECT_THROW(npy::decode(test::as_bytes(with_header(h) + std::string(4, '\0')), "h.npy"), Error) << h;
  }
}

}  // namespace
}  // namespace modex
