// Loading trained weights from untrusted files: PyTorch zip checkpoints (torch.save, torch >= 1.6)
// through a restricted unpickler that executes nothing, and safetensors files. The result is a
// flat, ordered state dict of contiguous tensors plus whatever training config the file carried.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace modex {

// Ordered name -> tensor map (keeps the file's key order, like collections.OrderedDict).
class StateDict {
 public:
  void insert(std::string name, Tensor t);  // throws Error on a duplicate name
  const Tensor* find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, Tensor>>& entries() const { return entries_; }
  // Removes every entry (to release memory once a graph has taken what it needs).
  void clear();

 private:
  std::vector<std::pair<std::string, Tensor>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// Training config carried next to the weights ({"config": {...}} or top-level keys).
struct CheckpointConfig {
  std::optional<std::string> architecture;  // "architecture", "model_name", "arch"
  std::optional<int64_t> num_classes;
  std::optional<int64_t> input_size;        // an int, or the last element of [h, w] / [c, h, w]
  std::vector<std::string> class_names;     // "class_names" or "classes"
  std::vector<float> mean;                  // "mean": per-channel normalisation (3 values)
  std::vector<float> std;                   // "std"
  // "resize": how images were resized in training, "resize" (straight to input_size) or
  // "resize_center_crop" (shorter side to input_size*256/224, then a center crop).
  std::optional<std::string> resize;
};

struct Checkpoint {
  std::filesystem::path path;
  std::string format;                 // "pytorch-zip" or "safetensors"
  std::string state_dict_key;         // where the weights were found, "" for top level
  std::vector<std::string> stripped_prefixes;  // e.g. "module." (DataParallel)
  StateDict weights;
  CheckpointConfig config;
};

// Detects the format from the file's bytes and loads it. Every size and offset is checked; any
// problem is an Error naming the file and what was expected. Never executes code from the file.
Checkpoint load_checkpoint(const std::filesystem::path& path);

// The same from bytes already in memory (used by fuzz targets). `name` is used in messages.
Checkpoint load_checkpoint_from_memory(const uint8_t* data, size_t size, const std::string& name);

}  // namespace modex
