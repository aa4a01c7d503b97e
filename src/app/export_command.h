#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace modex::app {

struct ExportOptions {
  // Exactly one source: a PyTorch checkpoint or an ONNX file.
  std::filesystem::path checkpoint;
  std::filesystem::path onnx;
  std::string format = "onnx";                     // onnx | tflite | both
  std::vector<std::string> quantize = {"none"};    // TFLite precisions: none (float32), float16, int8, dynamic
  std::filesystem::path output_dir = ".";
  std::optional<std::string> name;   // output file stem; default: the source's stem
  std::optional<std::string> arch;
  std::optional<int64_t> num_classes;
  std::optional<int64_t> input_size;
  int opset = 11;
  bool static_shapes = false;
  bool nchw_input = false;           // TFLite: keep the [N,3,H,W] input
  bool json = false;
  bool verbose = false;
  // Calibration (int8): representative images, a dataset folder or a flat one, of which
  // num_calib_samples are drawn (seeded, class-stratified) and run through the float model.
  std::optional<std::filesystem::path> dataset_dir;
  std::string dataset_type = "classification";
  int64_t num_calib_samples = 100;
  std::optional<std::filesystem::path> calibration_dir;
  uint64_t seed = 0;
  // minmax | percentile | entropy | image-percentile. image-percentile is the default: on the
  // trained Fashion-MNIST fixtures (100 val images; 1,000 test images, modex's report, whose
  // integers are LiteRT's) its int8 top-1 agreement with float is 99.5 / 97.5 / 96.1% (resnet18 /
  // mobilenet_v2 / efficientnet_b0), percentile's (99.99% of |x|) 99.4 / 97.3 / 87.1%, minmax's
  // 99.4 / 98.2 / 86.7% and entropy's 99.4 / 94.5 / 87.4%.
  std::string calibration = "image-percentile";
  std::string io_type = "int8";        // int8 TFLite model input/output: int8 | uint8 | float32
  bool progress = true;                // calibration progress bar (only when stderr is a terminal)
  // int8 accuracy report: held-out images compared float vs int8 (STEM_int8.report.{json,html});
  // below min_agreement top-1 agreement the export fails and writes nothing.
  int64_t report_images = 200;
  std::optional<double> min_agreement;
  std::string device = "cpu";
};

struct ExportedFile {
  std::string format;     // onnx | tflite
  std::string precision;  // float32 | float16 | int8 | dynamic
  std::filesystem::path path;
  size_t bytes = 0;
};

// Runs the export; throws modex::Error on bad input. Prints the summary (table or JSON).
void run_export(const ExportOptions& options);

}  // namespace modex::app
