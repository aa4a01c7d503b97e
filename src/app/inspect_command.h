#pragma once

#include <filesystem>

namespace modex::app {

struct InspectOptions {
  std::filesystem::path model;
  bool json = false;
  bool graph = false;  // print the full IR listing
};

void run_inspect(const InspectOptions& options);

}  // namespace modex::app
