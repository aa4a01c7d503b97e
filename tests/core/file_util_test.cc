#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"

#include <unistd.h>

namespace modex {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("modex_core_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

TEST(AtomicFile, CommitRenamesIntoPlace) {
  fs::path d = temp_dir();
  fs::path p = d / "out.bin";
  write_file_atomic(p, "hello");
  EXPECT_EQ(read_file_text(p), "hello");
  EXPECT_EQ(std::distance(fs::directory_iterator(d), fs::directory_iterator()), 1);
  fs::remove_all(d);
}

TEST(AtomicFile, AbandonedWriteLeavesNothing) {
  fs::path d = temp_dir();
  fs::path p = d / "out.bin";
  {
    AtomicFile f(p);
    f.write("partial");
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(d));
  fs::remove_all(d);
}

TEST(AtomicFile, ReplacesExistingFileOnlyOnCommit) {
  fs::path d = temp_dir();
  fs::path p = d / "out.bin";
  write_file_atomic(p, "old");
  {
    AtomicFile f(p);
    f.write("new");
    EXPECT_EQ(read_file_text(p), "old");
  }
  EXPECT_EQ(read_file_text(p), "old");
  fs::remove_all(d);
}

TEST(AtomicFile, UnwritableDirectoryIsAClearError) {
  try {
    AtomicFile f("/nonexistent-dir/x.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.onnx"), std::string::npos);
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
  }
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_bytes("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  fs::path d = temp_dir();
  write_file_atomic(d / "f", "abc");
  EXPECT_EQ(sha256_file(d / "f"), sha256_bytes("abc", 3));
  fs::remove_all(d);
  EXPECT_THROW(sha256_file("/nonexistent-file"), Error);
}

TEST(ErrorFormat, NamesFileNodeOpTensorAndHint) {
  Error e("weight has 3 channels, expected 4");
  e.node("layer1.0.conv1").op("Conv").tensor("layer1.0.conv1.weight").file("m.pth").hint("check --arch");
  std::string s = e.what();
  EXPECT_EQ(s,
            "m.pth: node 'layer1.0.conv1' (Conv): tensor 'layer1.0.conv1.weight': weight has 3 channels, expected 4\n"
            "  hint: check --arch");
}

}  // namespace
}  // namespace modex
