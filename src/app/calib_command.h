// `modex calib`: find a dataset's representative images, draw a seeded, stratified sample,
// decode and preprocess it in batches, summarise it, and optionally save it as .npy for reuse by
// int8 calibration.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace modex::app {

struct CalibOptions {
  // Exactly one: a dataset folder (layout discovered) or a flat folder of images.
  std::optional<std::filesystem::path> data_dir;
  std::optional<std::filesystem::path> calibration_dir;
  std::string dataset_type = "auto";  // auto | classification | detection
  int64_t num_samples = 100;
  int64_t batch_size = 32;
  std::optional<int64_t> test_batches;  // decode only the first N batches
  uint64_t seed = 0;
  int64_t input_size = 224;
  std::optional<int64_t> resize_size;  // default: input_size * 256 / 224
  std::string resize = "resize_center_crop";  // resize | resize_center_crop
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};
  std::string layout = "nchw";    // nchw | nhwc
  std::string dtype = "float32";  // float32 | uint8
  int threads = 0;                // 0: one per core
  int64_t max_pixels = 100'000'000;
  std::optional<std::filesystem::path> output;  // .npy of all decoded samples
  bool json = false;
  bool progress = true;  // a progress bar on stderr, only when stderr is a terminal
};

// Throws modex::Error on bad options or when no image is usable. Prints the summary (table or
// JSON) to out.
void run_calib(const CalibOptions& options, std::ostream& out);
void run_calib(const CalibOptions& options);

// Registers the `calib` subcommand on app (options live as long as app).
void add_calib_command(CLI::App& app);

}  // namespace modex::app
