// The modex inference engine: load a classifier (.onnx, .tflite or a PyTorch checkpoint), plan
// it once per input shape (shapes checked, memory planned, weights packed) and run it many times.
//
//   auto model = modex::Model::load("resnet18.onnx", {.threads = 2});
//   std::vector<modex::Tensor> logits = model->run({image});  // image: float32 [N, 3, H, W]
//
// Inputs are given in the source model's layout: NCHW images for ONNX and checkpoints, NHWC for
// TFLite. A new input shape (batch, height, width) is planned on first use and cached.
// run() is thread-safe: one Model serves many concurrent callers.
//
// Int8 models (a quantized .tflite, or an int8 IR graph) run in the integer domain with TFLite's
// reference semantics (XNNPACK's int8 kernels where they apply). Their int8/uint8 inputs and
// outputs carry TensorInfo::quant; run() quantizes float inputs with it and dequantizes the
// outputs, run_raw() returns the outputs' integers as computed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
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

// Affine quantization of an int8/uint8 model input or output: real = (q - zero_point) * scale.
struct QuantInfo {
  float scale = 1.0f;
  int64_t zero_point = 0;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;           // -1 for a dynamic dim
  std::vector<std::string> dim_names;   // the dynamic dims' names ("batch"), "" otherwise
  std::optional<QuantInfo> quant;       // set for quantized int8/uint8 inputs and outputs
};

class Model {
 public:
  // Reads .onnx, .tflite, or a checkpoint (.pth/.pt/.bin/.safetensors) whose architecture
  // models::build_model recognises. Throws Error on unreadable or unsupported models.
  static std::shared_ptr<Model> load(const std::filesystem::path& path, const ModelOptions& options = {});
  // An engine for an IR graph already in memory (NCHW graphs take NCHW inputs, NHWC ones NHWC).
  static std::shared_ptr<Model> from_graph(const ir::Graph& graph, const ModelOptions& options = {});
  // The same, taking the graph over: weights the engine rewrites (NHWC layout, folding) are
  // released as they are replaced instead of staying held by the caller's graph.
  static std::shared_ptr<Model> from_graph(ir::Graph&& graph, const ModelOptions& options = {});

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<TensorInfo>& inputs() const;
  const std::vector<TensorInfo>& outputs() const;
  const std::map<std::string, std::string>& metadata() const;
  int threads() const;

  // One tensor per model input, in order (float32; other float dtypes are converted). A quantized
  // (int8/uint8) input also takes float data, quantized with its params (round half away from
  // zero, clamped), or a tensor of its own dtype as is. Returns one float32 tensor per model
  // output (quantized outputs dequantized). Thread-safe. Throws Error when shapes or dtypes do
  // not fit the model.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;
  // As run(), but each output in its own dtype (int8 logits of an int8 model, unconverted): for
  // bit-exact comparisons with other int8 runtimes.
  std::vector<Tensor> run_raw(const std::vector<Tensor>& inputs) const;
  // As run_raw(), but the outputs are handed to `use` as views of the engine's own memory, valid
  // only during that call: nothing is copied. For callers that only read them, like
  // calibration, which observes every activation of a model this way.
  void run_with(const std::vector<Tensor>& inputs, const std::function<void(std::span<const Tensor>)>& use) const;

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
