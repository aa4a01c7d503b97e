// Representative data for int8 calibration, predict, batch and serve: find the images of a
// dataset folder, draw a seeded, class-stratified sample, and decode + preprocess it in batches.
//
// Layouts recognised (split preference val, then test, then train):
//   classification  DIR/{val,test,train}/<class>/<image>   or  DIR/<class>/<image>
//   detection       DIR/images/{val,test,train}/<image>    or  DIR/output/images/{val,test,train}/...
//                   (YOLO; also DIR/images/<image> with no split folders)
//   flat            DIR/<image> (--calibration-dir)
// Images are *.jpg, *.jpeg, *.png, *.bmp in any letter case; names starting with '.' are skipped;
// directory symlinks are followed once (a loop is visited once).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

namespace modex::dataset {

enum class DatasetType { kAuto, kClassification, kDetection, kFlat };
std::string_view dataset_type_name(DatasetType t);
// "auto" | "classification" | "detection" | "flat"; throws Error otherwise.
DatasetType parse_dataset_type(std::string_view name);

struct Sample {
  std::filesystem::path path;
  int class_index = -1;  // into DatasetInfo::classes; -1 when the layout has no classes
};

struct ClassInfo {
  std::string name;
  int64_t count = 0;
};

struct DatasetInfo {
  std::filesystem::path root;
  DatasetType type = DatasetType::kAuto;  // what was found (never kAuto after discover)
  std::string layout;                     // e.g. "DIR/<split>/<class>/<image>"
  std::filesystem::path image_root;       // the folder the images were taken from
  std::string split;                      // "val" | "test" | "train" | "" (no split folders)
  std::string split_reason;               // why that split, for the summary
  std::vector<ClassInfo> classes;         // sorted by name; empty for detection and flat folders
  std::vector<Sample> images;             // sorted by class, then path
};

bool is_image_file(const std::filesystem::path& path);

// Throws Error (kIo / kInvalidInput, naming the folder) when nothing usable is found.
DatasetInfo discover(const std::filesystem::path& dir, DatasetType type = DatasetType::kAuto);

// n images, the same for the same (dataset, n, seed) on every platform: each class's images are
// shuffled with a splitmix64-seeded Fisher-Yates, then classes are visited round-robin in a
// shuffled order, so every class is represented when n >= the number of classes. n >= the total
// returns every image (in that same interleaved order).
std::vector<Sample> sample(const DatasetInfo& info, int64_t n, uint64_t seed);

// A small deterministic PRNG (splitmix64): the same sequence everywhere, unlike std:: engines'
// distributions and std::shuffle.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), without modulo bias; bound > 0.
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

struct Failure {
  std::filesystem::path path;
  std::string reason;
};

struct CalibrationSet {
  std::vector<Tensor> batches;   // [B,3,H,W] / [B,H,W,3]; the last may be smaller
  std::vector<Sample> used;      // the samples that decoded, in batch order
  std::vector<Failure> skipped;  // corrupt or unreadable images, in sample order
  int64_t count() const { return static_cast<int64_t>(used.size()); }
  // All batches as one [N,...] tensor (undefined when nothing decoded).
  Tensor stacked() const;
};

struct LoadOptions {
  int64_t batch_size = 32;
  int threads = 0;  // 0: std::thread::hardware_concurrency()
  image::DecodeOptions decode;
  // Called on the calling thread with (images done, total) now and then, and once at the end.
  std::function<void(int64_t, int64_t)> progress;
};

// Decodes and preprocesses the samples on a pool of threads, keeping their order. Images that
// fail (corrupt, truncated, unsupported, too large) are skipped and listed, never fatal.
CalibrationSet load_batches(const std::vector<Sample>& samples, const image::Preprocess& preprocess,
                            const LoadOptions& options = {});

}  // namespace modex::dataset
