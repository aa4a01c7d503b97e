// The modex inference engine: load a classifier (.onnx, .tflite or a PyTorch checkpoint), plan
// it once per input shape (shapes checked, memory planned, weights packed) and run it many times.
//
//   auto model = modex::Model::load("resnet18.onnx", {.threads = 2});
//   std::vector<modex::Tensor> logits = model->run({image});  // image: float32 [N, 3, H, W]
//
// Inputs are given in the source model's layout: NCHW images for ONNX and checkpoints, NHWC for
// TFLite. A new input shape (batch, height, width) is planned on first use and cached.
// run() is thread-safe: one Model serves many concurrent callers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace modex {

namespace ir {
class Graph;
}

enum class Backend : uint8_t {
  kAuto,       // XNNPACK kernels where they apply, reference kernels for the rest
  kReference,  // reference kernels only: slow, the source of truth for tests
};

struct ModelOptions {
  int threads = 0;  // 0: all cores; 1: run on the calling thread only
  Backend backend = Backend::kAuto;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;           // -1 for a dynamic dim
  std::vector<std::string> dim_names;   // the dynamic dims' names ("batch"), "" otherwise
};

class Model {
 public:
  // Reads .onnx, .tflite, or a checkpoint (.pth/.pt/.bin/.safetensors) whose architecture
  // models::build_model recognises. Throws Error on unreadable or unsupported models.
  static std::shared_ptr<Model> load(const std::filesystem::path& path, const ModelOptions& options = {});
  // An engine for an IR graph already in memory (NCHW graphs take NCHW inputs, NHWC ones NHWC).
  static std::shared_ptr<Model> from_graph(const ir::Graph& graph, const ModelOptions& options = {});

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<TensorInfo>& inputs() const;
  const std::vector<TensorInfo>& outputs() const;
  const std::map<std::string, std::string>& metadata() const;
  int threads() const;

  // One tensor per model input, in order (float32; other float dtypes are converted). Returns one
  // float32 tensor per model output. Thread-safe. Throws Error when shapes do not fit the model.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;

  // The optimised NHWC graph the engine executes, for inspection and tests.
  const ir::Graph& graph() const;
  // Which kernel runs each node at the last planned shape ("xnn_conv2d_nhwc_f32", "ref_softmax"
  // ...), in node order; for tests and `MODEX_PROFILE`.
  std::vector<std::string> kernel_names() const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modex
