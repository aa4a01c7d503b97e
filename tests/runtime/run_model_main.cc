// Test helper for the runtime parity oracle test: runs a model in modex's engine on raw inputs.
//
//   run_model MODEL JOBS.txt [--reference] [--threads N] [--raw]
//
// JOBS.txt: one job per line, "INPUT.bin d0,d1,... OUTPUT.bin [DTYPE]" (raw little-endian data of
// DTYPE, default float32; int8/uint8 for a quantized model's own input type). The model is loaded
// once; each job writes the first output's values: float32 (Model::run), or with --raw in the
// output's own dtype (Model::run_raw: an int8 model's int8 logits).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <modex/runtime.h>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/file_util.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: run_model MODEL JOBS.txt [--reference] [--threads N]\n";
    return 2;
  }
  modex::ModelOptions options;
  bool raw = false;
  for (int i = 3; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reference") == 0) options.backend = modex::Backend::kReference;
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) options.threads = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--raw") == 0) raw = true;
  }
  try {
    auto model = modex::Model::load(argv[1], options);
    std::ifstream jobs(argv[2]);
    std::string line;
    while (std::getline(jobs, line)) {
      if (line.empty()) continue;
      std::istringstream in(line);
      std::string input, dims_text, output, dtype_text = "float32";
      in >> input >> dims_text >> output;
      if (std::string d; in >> d) dtype_text = d;
      auto dtype = modex::dtype_from_name(dtype_text);
      if (!dtype) throw modex::Error("unknown dtype '" + dtype_text + "'");
      modex::Dims dims;
      std::stringstream ds(dims_text);
      for (std::string d; std::getline(ds, d, ',');) dims.push_back(std::stoll(d));
      std::vector<uint8_t> bytes = modex::read_file_bytes(input);
      modex::Tensor x = modex::Tensor::empty(*dtype, dims);
      if (bytes.size() != x.nbytes()) throw modex::Error("input size does not match the dims").file(input);
      std::memcpy(x.raw_mutable(), bytes.data(), bytes.size());
      std::vector<modex::Tensor> out = raw ? model->run_raw({x}) : model->run({x});
      modex::write_file_atomic(output, std::string_view(reinterpret_cast<const char*>(out.at(0).raw()), out.at(0).nbytes()));
    }
  } catch (const modex::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
