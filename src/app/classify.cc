#include "app/classify.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"
#include "io/dataset/dataset.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// Metadata values are JSON text (lists, objects) or plain strings.
Json meta_json(const std::map<std::string, std::string>& meta, const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) return nullptr;
  Json j = Json::parse(it->second, nullptr, false);
  return j.is_discarded() ? Json(it->second) : j;
}

}  // namespace

void PreprocessOverrides::validate() const {
  if ((!mean.empty() && mean.size() != 3) || (!std.empty() && std.size() != 3))
    throw Error("--mean and --std take 3 comma-separated values");
  for (float s : std)
    if (!(s > 0)) throw Error("--std values must be positive");
  if (input_size && (*input_size < 1 || *input_size > 8192)) throw Error("--input-size must be between 1 and 8192");
}

std::vector<fs::path> collect_images(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, fs::directory_options::skip_permission_denied, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->path().filename().string().starts_with(".")) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && dataset::is_image_file(it->path())) found.push_back(it->path());
      }
      if (ec) throw Error("cannot list folder: " + ec.message(), ErrorKind::kIo).file(in.string());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw Error("no images (*.jpg, *.jpeg, *.png, *.bmp) in this folder", ErrorKind::kIo).file(in.string());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(in, ec)) {
      out.push_back(in);
    } else {
      throw Error("file not found", ErrorKind::kIo).file(in.string());
    }
  }
  return out;
}

image::Preprocess preprocessing_for(const Model& model, const PreprocessOverrides& o, std::string& source) {
  image::Preprocess p;
  Json meta = meta_json(model.metadata(), "preprocessing");
  if (meta.is_object()) {
    p = image::Preprocess::from_metadata(meta);
    source = "model metadata";
  } else {
    source = "defaults (no preprocessing metadata in the model)";
  }
  const TensorInfo& in = model.inputs().at(0);
  if (in.shape.size() != 4) throw Error(fmt::format("model input '{}' is not an image batch (rank {})", in.name, in.shape.size()));
  if (!meta.is_object()) {
    // Channels last when the last dim is 3 and the second is not.
    bool nhwc = in.shape[3] == 3 && in.shape[1] != 3;
    p.layout = nhwc ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
    int64_t h = nhwc ? in.shape[1] : in.shape[2], w = nhwc ? in.shape[2] : in.shape[3];
    if (h > 0) p.height = h;
    if (w > 0) p.width = w;
  }
  if (o.input_size) p.width = p.height = *o.input_size, p.resize_size = 0;
  if (o.resize) p.resize = *o.resize == "resize" ? image::Preprocess::Resize::kResize : image::Preprocess::Resize::kResizeCenterCrop;
  if (!o.mean.empty()) std::copy(o.mean.begin(), o.mean.end(), p.mean.begin());
  if (!o.std.empty()) std::copy(o.std.begin(), o.std.end(), p.std.begin());
  if (o.layout) p.layout = *o.layout == "nhwc" ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
  if (o.input_size || o.resize || !o.mean.empty() || !o.std.empty() || o.layout) source += ", overridden by flags";
  return p;
}

std::vector<std::string> class_names_of(const Model& model) {
  std::vector<std::string> names;
  if (Json cn = meta_json(model.metadata(), "class_names"); cn.is_array())
    for (const auto& v : cn)
      if (v.is_string()) names.push_back(v.get<std::string>());
  return names;
}

std::vector<std::string> read_class_names(const fs::path& path) {
  std::string text = read_file_text(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

std::vector<float> probabilities(const float* x, int64_t n) {
  bool probs = n > 0;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(x[i] >= 0 && x[i] <= 1)) probs = false;
    sum += x[i];
  }
  std::vector<float> p(x, x + n);
  if (n == 0 || (probs && std::abs(sum - 1.0) < 1e-3)) return p;
  float m = *std::max_element(p.begin(), p.end());
  double z = 0;
  for (float& v : p) z += (v = std::exp(v - m));
  for (float& v : p) v = static_cast<float>(v / z);
  return p;
}

}  // namespace modex::app
