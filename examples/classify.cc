// A small program using modex as a library: load an exported model, preprocess an image the way
// the model's metadata says, run it, print the top-5 classes.
//
//   build/examples/classify out/model.tflite photo.jpg
//
// Built with the project (target `classify_example`); link against modex_app (or modex_runtime
// plus modex_io for images only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <modex/runtime.h>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL IMAGE\n", argv[0]);
    return 2;
  }
  try {
    // One Model can serve many threads; plans are made per input shape on first use.
    std::shared_ptr<modex::Model> model = modex::Model::load(argv[1], {.threads = 0});

    // modex export embeds how images must be prepared (size, resize mode, mean/std, layout).
    const auto& meta = model->metadata();
    modex::image::Preprocess pre;
    if (auto it = meta.find("preprocessing"); it != meta.end())
      pre = modex::image::Preprocess::from_metadata(nlohmann::json::parse(it->second));
    std::vector<std::string> names;
    if (auto it = meta.find("class_names"); it != meta.end())
      for (const auto& n : nlohmann::json::parse(it->second)) names.push_back(n.get<std::string>());

    modex::Tensor input = modex::image::preprocess(modex::image::load_image(argv[2]), pre);
    std::vector<modex::Tensor> outputs = model->run({input});

    const float* logits = outputs.at(0).data<float>();
    int64_t n = outputs.at(0).numel();
    float m = *std::max_element(logits, logits + n);
    std::vector<double> p(static_cast<size_t>(n));
    double z = 0;
    for (int64_t i = 0; i < n; ++i) z += p[static_cast<size_t>(i)] = std::exp(logits[i] - m);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    int64_t k = std::min<int64_t>(5, n);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t a, int64_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
    for (int64_t i = 0; i < k; ++i) {
      int64_t c = order[static_cast<size_t>(i)];
      std::printf("%5lld  %-24s %6.2f%%\n", static_cast<long long>(c),
                  c < static_cast<int64_t>(names.size()) ? names[static_cast<size_t>(c)].c_str() : "",
                  100.0 * p[static_cast<size_t>(c)] / z);
    }
  } catch (const modex::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
