#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "app/classify.h"

namespace modex::app {

struct PredictOptions {
  std::filesystem::path model;
  std::vector<std::filesystem::path> inputs;  // image files and/or folders (searched recursively)
  int top = 5;
  int threads = 0;
  bool json = false;
  PreprocessOverrides pre;  // default: the model's embedded metadata, else ImageNet conventions
  std::optional<std::filesystem::path> class_names;  // a text file, one name per line
};

// Classifies each image; prints a table or JSON. Images that cannot be read are reported and
// make the exit status 1 after the others are done.
int run_predict(const PredictOptions& options);

void add_predict_command(CLI::App& app, int& exit_code);

}  // namespace modex::app
