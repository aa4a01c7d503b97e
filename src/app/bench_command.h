// `modex bench MODEL`: how fast modex's engine runs a model on this machine. Loads the model,
// plans it for one input shape, warms up, then times single runs and reports load time, latency
// statistics, throughput and the process's peak memory, as a table or JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <vector>

namespace CLI {
class App;
}

namespace modex::app {

struct BenchOptions {
  std::filesystem::path model;  // .onnx, .tflite or a checkpoint (.pth/.pt/.bin/.safetensors)
  std::optional<std::filesystem::path>
      image;  // a real image, preprocessed as the model's metadata says
  int64_t batch = 1;
  int threads = 0;  // 0: one per core
  int64_t iterations = 50;
  int64_t warmup = 5;
  // Height and width for inputs whose spatial dims are dynamic (default: the model's
  // "preprocessing" / "input_size" metadata, else 224).
  std::optional<int64_t> input_size;
  uint64_t seed = 0;  // random input, when no image is given
  bool json = false;
};

struct LatencyStats {
  double mean = 0, median = 0, p90 = 0, p99 = 0, min = 0, max = 0, stddev = 0;  // milliseconds
};

// Percentiles by linear interpolation between order statistics (numpy's default); samples
// need not be sorted. Throws Error when empty.
LatencyStats latency_stats(std::vector<double> samples_ms);

// Runs the benchmark; throws modex::Error on bad options or models. Prints to out.
void run_bench(const BenchOptions& options, std::ostream& out);
void run_bench(const BenchOptions& options);

// Registers the `bench` subcommand on app (options live as long as app).
void add_bench_command(CLI::App& app);

}  // namespace modex::app
