// What predict, compare and batch share: finding images, the preprocessing a model wants (its
// metadata, its input shape, then flags), class names, logits -> probabilities.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <modex/runtime.h>

#include "io/image/preprocess.h"

namespace modex::app {

struct PreprocessOverrides {
  std::optional<int64_t> input_size;
  std::optional<std::string> resize;  // resize | resize_center_crop
  std::vector<float> mean, std;       // 3 values each when given
  std::optional<std::string> layout;  // nchw | nhwc
  void validate() const;
};

// Image files given directly, and every image under given folders (recursive, sorted, hidden
// entries skipped). Throws Error naming a path that does not exist or a folder without images.
std::vector<std::filesystem::path> collect_images(const std::vector<std::filesystem::path>& inputs);

// The model's embedded "preprocessing" metadata, else what its input shape says (size, NCHW or
// NHWC) with ImageNet conventions; then the overrides. `source` says which, for reports.
image::Preprocess preprocessing_for(const Model& model, const PreprocessOverrides& o, std::string& source);

// From the model's "class_names" metadata, else empty.
std::vector<std::string> class_names_of(const Model& model);
std::vector<std::string> read_class_names(const std::filesystem::path& path);  // one per line

// Softmax of logits; outputs that already are probabilities (non-negative, summing to 1) are kept.
std::vector<float> probabilities(const float* x, int64_t n);

}  // namespace modex::app
