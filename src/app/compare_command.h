#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "app/classify.h"

namespace modex::app {

struct CompareOptions {
  std::vector<std::filesystem::path> models;  // the first is the reference
  std::vector<std::filesystem::path> images;  // --image: files and/or folders
  std::optional<std::filesystem::path> data_dir;  // a dataset folder (labels from class folders)
  std::string dataset_type = "auto";
  int64_t num_images = 0;  // 0: all
  uint64_t seed = 0;
  int threads = 0;
  bool json = false;
  PreprocessOverrides pre;
};

// Runs every model on the same images and reports agreement with the first model, confidence and
// probability differences, accuracy when labels are known, and latency.
int run_compare(const CompareOptions& options);

void add_compare_command(CLI::App& app, int& exit_code);

}  // namespace modex::app
