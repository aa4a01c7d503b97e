// The model registry (hot reload, broken files) and the batching dispatcher of `modex serve`,
// on tiny ONNX classifiers written by modex's own writer.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "../io/image_test_util.h"
#include "app/serve/dispatcher.h"
#include "app/serve/model_registry.h"
#include "app/serve/request.h"
#include "core/error.h"
#include "core/file_util.h"
#include "tiny_classifier.h"

namespace modex::app::serve {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void write_classifier(const fs::path& path, uint32_t seed) {
  test::write_tiny_classifier(path, seed,
                              {{"class_names", R"(["a","b","c","d","e"])"},
                               {"preprocessing", R"({"input_size": 16, "resize": "resize"})"}});
}

Tensor image_input(int64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  return test::random_tensor({1, 3, size, size}, rng);
}

// A registry serving one tiny classifier, "m", from its own folder.
struct OneModel {
  TempDir d;
  fs::path p = d.path() / "m.onnx";
  ModelRegistry reg{{.threads = 1}, {}};
  OneModel() {
    write_classifier(p, 1);
    reg.add("m", p);
  }
};

TEST(ServeModels, RegistryLoadsAndReloads) {
  OneModel one;
  auto& [d, p, reg] = one;
  EXPECT_THROW(reg.add("m", p), Error);
  EXPECT_THROW(reg.add("missing", d.path() / "nope.onnx"), Error);
  auto v1 = reg.get("m");
  ASSERT_TRUE(v1);
  EXPECT_EQ(v1->version, 1);
  EXPECT_TRUE(v1->dynamic_batch);
  EXPECT_EQ(v1->preprocess.height, 16);
  EXPECT_EQ(v1->class_names.size(), 5u);
  EXPECT_EQ(v1->sha256, sha256_file(p));
  EXPECT_EQ(reg.get("other"), nullptr);

  std::vector<std::pair<std::string, ReloadResult>> seen;
  reg.on_reload = [&](const std::string& n, const ReloadResult& r) { seen.emplace_back(n, r); };

  // A broken file: the old version keeps serving and the error is kept.
  write_file_atomic(p, "this is not an onnx file");
  ReloadResult bad = reg.reload("m");
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.version, 1);
  EXPECT_NE(bad.error.find("m.onnx"), std::string::npos) << bad.error;
  EXPECT_EQ(reg.get("m"), v1);
  EXPECT_EQ(reg.status("m").failed_reloads, 1);
  EXPECT_EQ(reg.status("m").last_error, bad.error);

  // A good file: version 2, different weights; the old object stays valid for its holders.
  write_classifier(p, 2);
  ReloadResult good = reg.reload("m");
  EXPECT_TRUE(good.ok) << good.error;
  EXPECT_EQ(good.version, 2);
  auto v2 = reg.get("m");
  EXPECT_EQ(v2->version, 2);
  EXPECT_NE(v2->sha256, v1->sha256);
  EXPECT_EQ(reg.status("m").last_error, "");
  Tensor x = image_input(16, 5);
  EXPECT_NE(v1->model->run({x})[0].values<float>()[0], v2->model->run({x})[0].values<float>()[0]);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen[0].second.ok);
  EXPECT_TRUE(seen[1].second.ok);
  EXPECT_FALSE(reg.reload("other").ok);
}

TEST(ServeModels, PollReloadsChangedFilesOnceSettled) {
  OneModel one;
  auto& [d, p, reg] = one;
  EXPECT_EQ(reg.poll_changes(), 0);
  fs::path tmp = d.path() / "new.onnx";
  write_classifier(tmp, 3);
  fs::rename(tmp, p);
  EXPECT_EQ(reg.poll_changes(), 0);  // changed: wait one poll for it to settle
  EXPECT_EQ(reg.get("m")->version, 1);
  EXPECT_EQ(reg.poll_changes(), 1);
  EXPECT_EQ(reg.get("m")->version, 2);
  EXPECT_EQ(reg.poll_changes(), 0);

  // A broken replacement is tried once, then not again until the file changes.
  write_file_atomic(p, "garbage");
  reg.poll_changes();
  EXPECT_EQ(reg.poll_changes(), 1);
  EXPECT_EQ(reg.poll_changes(), 0);
  EXPECT_EQ(reg.get("m")->version, 2);
  EXPECT_EQ(reg.status("m").failed_reloads, 1);

  // The watcher thread does the same on its own.
  write_classifier(tmp, 4);
  fs::rename(tmp, p);
  reg.start_watching(std::chrono::milliseconds(20));
  for (int i = 0; i < 200 && reg.get("m")->version < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  reg.stop_watching();
  EXPECT_EQ(reg.get("m")->version, 3);
}

TEST(ServeModels, BatchedResultsEqualSingleRuns) {
  OneModel one;
  auto& [d, p, reg] = one;
  auto m = reg.get("m");
  Dispatcher disp({.workers = 1, .max_batch = 4, .batch_timeout = std::chrono::milliseconds(500), .max_queue = 16});
  std::vector<int> batches;
  disp.on_batch = [&](const std::string& name, int n) { batches.push_back(n); };
  auto deadline = Clock::now() + std::chrono::seconds(30);
  std::vector<std::shared_ptr<Dispatcher::Job>> jobs;
  for (uint32_t i = 0; i < 4; ++i) jobs.push_back(disp.submit(m, image_input(16, 10 + i), deadline));
  for (uint32_t i = 0; i < 4; ++i) {
    InferenceResult r = disp.wait(jobs[i]);
    EXPECT_EQ(r.batch_size, 4);
    std::vector<Tensor> out = m->model->run({image_input(16, 10 + i)});
    std::span<const float> want = out[0].values<float>();
    ASSERT_EQ(r.output.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(r.output[k], want[k], 1e-5f);
  }
  disp.shutdown();
  EXPECT_EQ(batches, std::vector<int>{4});
}

TEST(ServeModels, FullQueueAndDeadlines) {
  OneModel one;
  auto& [d, p, reg] = one;
  auto m = reg.get("m");
  Dispatcher disp({.workers = 1, .max_batch = 1, .max_queue = 2});
  auto later = Clock::now() + std::chrono::seconds(60);
  std::vector<std::shared_ptr<Dispatcher::Job>> accepted;
  int refused = 0;
  Tensor big = image_input(384, 1);  // a few ms per run: submitting is much faster
  for (int i = 0; i < 40; ++i) {
    try {
      accepted.push_back(disp.submit(m, big, later));
    } catch (const HttpError& e) {
      EXPECT_EQ(e.status(), 503);
      EXPECT_EQ(e.retry_after_seconds(), 1);
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  for (auto& j : accepted) EXPECT_EQ(disp.wait(j).batch_size, 1);

  auto job = disp.submit(m, image_input(16, 2), Clock::now() - std::chrono::milliseconds(1));
  try {
    disp.wait(job);
    ADD_FAILURE() << "an expired request was answered";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status(), 504);
  }
  disp.shutdown();
  EXPECT_THROW(disp.submit(m, big, later), HttpError);  // shutting down: 503
}

}  // namespace
}  // namespace modex::app::serve
