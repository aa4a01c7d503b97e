// Architectures built from a state dict: torchvision's key naming for ResNet, EfficientNet,
// MobileNetV2/V3 (and relatives), plus the common "backbone + linear head" wrapper. The
// architecture and number of classes are detected from key names and shapes; a state dict that
// matches nothing gets a report in the style of load_state_dict(strict=True).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/pytorch/checkpoint.h"
#include "ir/graph.h"

namespace modex::models {

struct BuildOptions {
  std::optional<std::string> arch;       // --arch: skip detection (still strictly checked)
  std::optional<int64_t> num_classes;    // --num-classes: must agree with the classifier shape
};

struct WrapperInfo {
  std::string backbone_prefix;  // e.g. "backbone."
  std::string head;             // e.g. "head" or "classifier.1"
};

struct BuiltModel {
  // Input "image": float32 [batch, 3, height, width] (named dynamic dims "batch", "height",
  // "width"); output "logits": float32 [batch, num_classes]. Un-optimised: BatchNorm and
  // activations are separate nodes; passes fold and fuse them.
  ir::Graph graph;
  std::string architecture;          // e.g. "resnet18", "efficientnet_b3"
  int64_t num_classes = 0;
  int64_t default_input_size = 224;  // the resolution torchvision evaluates this architecture at
  std::optional<WrapperInfo> wrapper;
};

BuiltModel build_model(const StateDict& weights, const BuildOptions& options = {});

// Every architecture name build_model accepts for --arch.
std::vector<std::string> architecture_names();

}  // namespace modex::models
