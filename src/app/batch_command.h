#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "app/classify.h"

namespace modex::app {

struct BatchOptions {
  std::filesystem::path model;
  std::filesystem::path dir;
  std::filesystem::path output;  // CSV
  int threads = 0;               // inference threads (0: all cores)
  int decode_threads = 0;        // image decoding threads (0: as many as keep inference busy)
  int64_t batch_size = 8;
  int top = 5;
  bool resume = false;     // skip images already in the CSV and append
  bool overwrite = false;  // replace an existing CSV
  std::string shard;       // "K/N": this process's share (K in 0..N-1)
  bool json = false;
  bool progress = true;    // a progress bar on stderr when it is a terminal
  PreprocessOverrides pre;
};

// Classifies every image under dir into a CSV (path, status, class, name, confidence, top-k,
// error). Returns 1 when some images failed (they are in the CSV), 0 otherwise.
int run_batch(const BatchOptions& options);

void add_batch_command(CLI::App& app, int& exit_code);

// Which shard an image belongs to: a hash of its path relative to the folder, so a file keeps its
// shard when others are added. Exposed for tests.
int64_t shard_of(const std::string& relative_path, int64_t shards);

}  // namespace modex::app
