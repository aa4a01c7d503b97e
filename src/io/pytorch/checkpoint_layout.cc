#include "io/pytorch/checkpoint_layout.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "core/error.h"

namespace modex::pytorch {
namespace {

using pickle::Value;
using pickle::ValueKind;

bool holds_tensors(const Value* v) {
  if (v == nullptr || !v->is(ValueKind::kDict)) return false;
  const auto& items = v->dict->items();
  return std::any_of(items.begin(), items.end(),
                     [](const auto& kv) { return kv.second->is(ValueKind::kTensor); });
}

bool only_tensors(const Value* v) {
  if (v == nullptr || !v->is(ValueKind::kDict) || v->dict->size() == 0) return false;
  const auto& items = v->dict->items();
  return std::all_of(items.begin(), items.end(),
                     [](const auto& kv) { return kv.second->is(ValueKind::kTensor); });
}

// Two levels cover {"model": {"state_dict": ...}} without wandering through arbitrary data.
constexpr int kMaxSearchDepth = 2;

std::optional<StateDictLocation> search_conventional_keys(const Value* d, const std::string& path,
                                                          int depth) {
  for (const char* key : kStateDictKeys) {
    const Value* v = d->dict->find(key);
    if (v == nullptr || !v->is(ValueKind::kDict)) continue;
    if (holds_tensors(v)) return StateDictLocation{v->dict.get(), path + key};
    if (depth + 1 < kMaxSearchDepth) {
      if (auto found = search_conventional_keys(v, path + key + ".", depth + 1)) return found;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> positive_int(const Value* v) {
  if (v != nullptr && v->is(ValueKind::kInt) && v->integer > 0) return v->integer;
  return std::nullopt;
}

// Three channel statistics (mean or std), from a list/tuple of numbers or a single number.
std::vector<float> channel_stats(const Value* v, bool positive) {
  std::vector<float> out;
  auto number = [](const Value* x, double& r) {
    if (x->is(ValueKind::kFloat)) r = x->real;
    else if (x->is(ValueKind::kInt)) r = static_cast<double>(x->integer);
    else return false;
    return std::isfinite(r);
  };
  double r;
  if (v == nullptr) return out;
  if (v->is_sequence()) {
    if (v->items.size() != 3) return out;
    for (const Value* x : v->items) {
      if (!number(x, r) || (positive && r <= 0)) return {};
      out.push_back(static_cast<float>(r));
    }
  } else if (number(v, r) && (!positive || r > 0)) {
    out.assign(3, static_cast<float>(r));
  }
  return out;
}

void fill_config(const pickle::Dict& d, CheckpointConfig& config) {
  if (config.mean.empty()) config.mean = channel_stats(d.find("mean"), false);
  if (config.std.empty()) config.std = channel_stats(d.find("std"), true);
  if (!config.architecture) {
    for (const char* key : {"architecture", "model_name", "arch"}) {
      const Value* v = d.find(key);
      if (v != nullptr && v->is(ValueKind::kString) && !v->text.empty()) {
        config.architecture = v->text;
        break;
      }
    }
  }
  if (!config.num_classes) config.num_classes = positive_int(d.find("num_classes"));
  if (!config.resize) {
    const Value* v = d.find("resize");
    if (v != nullptr && v->is(ValueKind::kString) && (v->text == "resize" || v->text == "resize_center_crop"))
      config.resize = v->text;
  }
  if (!config.input_size) {
    const Value* v = d.find("input_size");
    if (v != nullptr && v->is_sequence() && !v->items.empty())
      v = v->items.back();  // [c, h, w] -> w
    config.input_size = positive_int(v);
  }
  if (config.class_names.empty()) {
    for (const char* key : {"class_names", "classes"}) {
      const Value* v = d.find(key);
      if (v == nullptr || !v->is_sequence() || v->items.empty()) continue;
      if (!std::all_of(v->items.begin(), v->items.end(),
                       [](const Value* x) { return x->is(ValueKind::kString); }))
        continue;
      for (const Value* x : v->items) config.class_names.push_back(x->text);
      break;
    }
  }
}

std::optional<int64_t> parse_positive(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

}  // namespace

StateDictLocation find_state_dict(const pickle::Value* root) {
  if (root == nullptr || !root->is(ValueKind::kDict)) {
    throw Error("the checkpoint holds a " +
                    std::string(pickle::value_kind_name(root ? root->kind : ValueKind::kNone)) +
                    " (" + pickle::describe(root, 1) + "), not a dict of weights",
                ErrorKind::kUnsupported)
        .hint("save the weights with torch.save(model.state_dict(), path)");
  }
  if (auto found = search_conventional_keys(root, "", 0)) return *found;
  if (holds_tensors(root)) return {root->dict.get(), ""};
  for (const auto& [key, value] : root->dict->items()) {
    if (key->is(ValueKind::kString) && only_tensors(value)) return {value->dict.get(), key->text};
  }
  throw Error("no tensors found in the checkpoint; its top-level object is " +
              pickle::describe(root, 1))
      .hint("save the weights with torch.save(model.state_dict(), path)");
}

CheckpointConfig read_config(const pickle::Value* root) {
  CheckpointConfig config;
  if (root == nullptr || !root->is(ValueKind::kDict)) return config;
  const Value* nested = root->dict->find("config");
  if (nested != nullptr && nested->is(ValueKind::kDict)) fill_config(*nested->dict, config);
  fill_config(*root->dict, config);
  return config;
}

CheckpointConfig config_from_metadata(
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  CheckpointConfig config;
  auto find = [&](std::string_view key) -> const std::string* {
    for (const auto& [k, v] : metadata) {
      if (k == key) return &v;
    }
    return nullptr;
  };
  for (const char* key : {"architecture", "model_name", "arch"}) {
    const std::string* v = find(key);
    if (v != nullptr && !v->empty()) {
      config.architecture = *v;
      break;
    }
  }
  if (const std::string* v = find("num_classes")) config.num_classes = parse_positive(*v);
  if (const std::string* v = find("resize"); v != nullptr && (*v == "resize" || *v == "resize_center_crop"))
    config.resize = *v;
  if (const std::string* v = find("input_size")) {
    config.input_size = parse_positive(*v);
    if (!config.input_size) {
      nlohmann::json j = nlohmann::json::parse(*v, nullptr, /*allow_exceptions=*/false);
      if (j.is_array() && !j.empty() && j.back().is_number_integer() && j.back().get<int64_t>() > 0)
        config.input_size = j.back().get<int64_t>();
    }
  }
  for (const char* key : {"class_names", "classes"}) {
    const std::string* v = find(key);
    if (v == nullptr) continue;
    nlohmann::json j = nlohmann::json::parse(*v, nullptr, /*allow_exceptions=*/false);
    if (!j.is_array() || j.empty() ||
        !std::all_of(j.begin(), j.end(), [](const auto& x) { return x.is_string(); }))
      continue;
    for (const auto& x : j) config.class_names.push_back(x.template get<std::string>());
    break;
  }
  return config;
}

void strip_wrapper_prefixes(StateDict& weights, std::vector<std::string>& stripped) {
  static constexpr std::string_view kPrefixes[] = {"module.", "_orig_mod."};
  bool changed = true;
  while (changed && weights.size() > 0) {
    changed = false;
    for (std::string_view prefix : kPrefixes) {
      const auto& entries = weights.entries();
      bool all = std::all_of(entries.begin(), entries.end(), [&](const auto& e) {
        return e.first.size() > prefix.size() && e.first.starts_with(prefix);
      });
      if (!all) continue;
      StateDict renamed;
      for (const auto& [name, tensor] : entries) renamed.insert(name.substr(prefix.size()), tensor);
      weights = std::move(renamed);
      stripped.emplace_back(prefix);
      changed = true;
    }
  }
}

}  // namespace modex::pytorch
