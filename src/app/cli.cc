#include "app/cli.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

#include "app/batch_command.h"
#include "app/bench_command.h"
#include "app/calib_command.h"
#include "app/compare_command.h"
#include "app/export_command.h"
#include "app/inspect_command.h"
#include "app/predict_command.h"
#include "app/serve_command.h"
#include "core/error.h"

namespace modex::app {

int run_cli(int argc, char** argv) {
  CLI::App app{"modex: export trained PyTorch image classifiers to ONNX and TFLite, verify, run and benchmark them"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("modex ") + MODEX_VERSION);

  ExportOptions ex;
  auto* exp = app.add_subcommand("export", "Export a checkpoint or an ONNX classifier to ONNX and TFLite");
  auto* src_ckpt = exp->add_option("--checkpoint", ex.checkpoint, "PyTorch checkpoint (.pth/.pt) or .safetensors");
  auto* src_onnx = exp->add_option("--onnx", ex.onnx, "An ONNX classifier (any exporter) instead of a checkpoint");
  src_ckpt->excludes(src_onnx);
  exp->add_option("--format", ex.format, "onnx | tflite | both")
      ->check(CLI::IsMember({"onnx", "tflite", "both"}))
      ->capture_default_str();
  exp->add_option("--quantize", ex.quantize, "TFLite precision(s), comma-separated: none (float32) | float16 | int8 | dynamic")
      ->delimiter(',')
      ->check(CLI::IsMember({"none", "float16", "int8", "dynamic"}))
      ->capture_default_str();
  exp->add_flag("--nchw-input", ex.nchw_input, "TFLite: keep the [N,3,H,W] input (one transpose inside) instead of [N,H,W,3]");
  exp->add_option("--output-dir", ex.output_dir, "Directory for the exported files")->capture_default_str();
  exp->add_option("--name", ex.name, "Output file stem (default: the source file's stem)");
  exp->add_option("--arch", ex.arch, "Architecture (default: detected from the weights)");
  exp->add_option("--num-classes", ex.num_classes, "Number of classes (default: from the classifier weights)");
  exp->add_option("--input-size", ex.input_size, "Square input size: validation, --static, TFLite's fixed H and W (default: config, file or architecture)");
  exp->add_option("--opset", ex.opset, "ONNX opset, 11-17")->check(CLI::Range(11, 17))->capture_default_str();
  exp->add_flag("--static", ex.static_shapes, "Fixed input shape [1,3,S,S] instead of dynamic batch/height/width");
  exp->add_option("--dataset-dir", ex.dataset_dir, "Representative images for int8 calibration");
  exp->add_option("--dataset-type", ex.dataset_type, "classification | detection")
      ->check(CLI::IsMember({"classification", "detection", "auto"}))
      ->capture_default_str();
  exp->add_option("--num-calib-samples", ex.num_calib_samples, "Calibration images for int8")->capture_default_str();
  exp->add_option("--calibration-dir", ex.calibration_dir, "A flat folder of calibration images");
  exp->add_option("--calibration", ex.calibration, "int8 range calibration: minmax | percentile | entropy | image-percentile")
      ->check(CLI::IsMember({"minmax", "percentile", "entropy", "image-percentile"}))
      ->capture_default_str();
  exp->add_option("--io-type", ex.io_type, "int8 model input/output type: int8 | uint8 | float32")
      ->check(CLI::IsMember({"int8", "uint8", "float32"}))
      ->capture_default_str();
  exp->add_option("--seed", ex.seed, "Calibration sampling seed (same seed, same images)")->capture_default_str();
  exp->add_flag("!--no-progress", ex.progress, "No calibration progress bar");
  exp->add_option("--report-images", ex.report_images, "Held-out images the int8 accuracy report compares on")
      ->capture_default_str();
  exp->add_option("--min-agreement", ex.min_agreement,
                  "Fail (exit 1, nothing written) when int8 top-1 agreement with float is below this fraction");
  exp->add_option("--device", ex.device, "cpu")->check(CLI::IsMember({"cpu"}))->capture_default_str();
  exp->add_flag("--json", ex.json, "Print a JSON summary");
  exp->add_flag("-v,--verbose", ex.verbose, "Print stage timings");
  exp->callback([&] {
    if (ex.checkpoint.empty() && ex.onnx.empty()) throw CLI::RequiredError("--checkpoint or --onnx");
    run_export(ex);
  });

  add_calib_command(app);
  int exit_code = 0;
  add_predict_command(app, exit_code);
  add_compare_command(app, exit_code);
  add_batch_command(app, exit_code);
  add_bench_command(app);
  add_serve_command(app, exit_code);

  InspectOptions in;
  auto* ins = app.add_subcommand("inspect", "Describe a checkpoint, ONNX or TFLite model");
  ins->add_option("model", in.model, "Model or checkpoint file")->required();
  ins->add_flag("--json", in.json, "Print JSON");
  ins->add_flag("--graph", in.graph, "Print the IR listing (checkpoints)");
  ins->callback([&] { run_inspect(in); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: internal error: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}

}  // namespace modex::app
