// Test helper for tests/oracle/test_calib.py: exposes decoding, preprocessing and the calib
// command so Python can compare them with Pillow and torchvision.
//   preprocess_tool decode IMAGE OUT.npy [--no-exif] [--max-pixels N]     [H, W, 3] uint8
//   preprocess_tool preprocess IMAGE OUT.npy [--size H W] [--resize resize|resize_center_crop]
//                   [--resize-size S] [--layout NCHW|NHWC] [--dtype float32|uint8] [--metadata JSON]
//   preprocess_tool calib ARGS...                                         the `calib` subcommand
// Errors print "error: ..." and exit 1.
#include <CLI/CLI.hpp>

#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "app/calib_command.h"
#include "core/error.h"
#include "io/dataset/npy.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

namespace {

using namespace modex;

int run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: preprocess_tool decode|preprocess|calib ...\n";
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "calib") {
    CLI::App app{"preprocess_tool"};
    app::add_calib_command(app);
    std::vector<std::string> args;
    for (int i = argc - 1; i >= 1; --i) args.push_back(argv[i]);  // CLI11 wants them reversed
    try {
      app.parse(args);
    } catch (const CLI::ParseError& e) {
      return app.exit(e) == 0 ? 0 : 2;
    }
    return 0;
  }
  if (argc < 4) {
    std::cerr << "usage: preprocess_tool " << cmd << " IMAGE OUT.npy [options]\n";
    return 2;
  }
  image::DecodeOptions dopt;
  image::Preprocess pre;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return argv[++i];
    };
    if (a == "--no-exif") {
      dopt.apply_exif_orientation = false;
    } else if (a == "--max-pixels") {
      dopt.max_pixels = std::stoll(next());
    } else if (a == "--size") {
      pre.height = std::stoll(next());
      pre.width = std::stoll(next());
    } else if (a == "--resize") {
      pre.resize = next() == "resize" ? image::Preprocess::Resize::kResize : image::Preprocess::Resize::kResizeCenterCrop;
    } else if (a == "--resize-size") {
      pre.resize_size = std::stoll(next());
    } else if (a == "--layout") {
      pre.layout = next() == "NHWC" ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
    } else if (a == "--dtype") {
      pre.output = next() == "uint8" ? image::Preprocess::Output::kUInt8 : image::Preprocess::Output::kFloat32;
    } else if (a == "--metadata") {
      pre = image::Preprocess::from_metadata(nlohmann::json::parse(next()));
    } else {
      throw Error("unknown option " + a);
    }
  }
  image::Image img = image::load_image(argv[2], dopt);
  if (cmd == "decode") {
    Tensor t = Tensor::empty(DType::kUInt8, {img.height, img.width, 3});
    std::memcpy(t.raw_mutable(), img.pixels.data(), img.pixels.size());
    npy::write(argv[3], t);
  } else if (cmd == "preprocess") {
    npy::write(argv[3], image::preprocess(img, pre));
  } else {
    std::cerr << "unknown command " << cmd << "\n";
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const modex::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
