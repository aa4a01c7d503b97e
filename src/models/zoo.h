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
  // --arch: skip detection (still strictly checked). Case-insensitive, '-' read as '_'
  // ("EfficientNet-B0" is efficientnet_b0), so a checkpoint config's name can be passed as is.
  // (Explicit initializers keep -Wextra quiet about designated initializers naming one field.)
  std::optional<std::string> arch = std::nullopt;
  std::optional<int64_t> num_classes =
      std::nullopt;  // --num-classes: must agree with the classifier shape
};

// How a torchvision model sits in a state dict that is not exactly its own.
//  - backbone + head: the backbone under `backbone_prefix` (with or without its own classifier;
//    "" when it is at the top level, e.g. a module holding `features` of a MobileNet) and a Linear
//    `head` at the top level ("fc", "classifier", "head", optionally ".N": "classifier.1");
//  - the whole model under a prefix ("model." from PyTorch Lightning): `head` is "".
struct WrapperInfo {
  std::string backbone_prefix;  // e.g. "backbone."
  std::string head;  // e.g. "head" or "classifier.1"; "" when the backbone's classifier is the head
};

// What detection found; nothing is allocated or converted to find it.
struct Detection {
  std::string architecture;
  int64_t num_classes = 0;
  std::optional<WrapperInfo> wrapper;
};

struct BuiltModel {
  // Input "image": float32 [batch, 3, height, width] (named dynamic dims "batch", "height",
  // "width"); output "logits": float32 [batch, num_classes]. Un-optimised: BatchNorm and
  // activations are separate nodes; passes fold and fuse them.
  ir::Graph graph;
  std::string architecture;  // e.g. "resnet18", "efficientnet_b3"
  int64_t num_classes = 0;
  int64_t default_input_size = 224;  // the resolution torchvision evaluates this architecture at
  std::optional<WrapperInfo> wrapper;
};

// Detects (or, with options.arch, checks) the architecture and builds its graph. Weight
// constants share the state dict's buffers when they already are float32 (other float dtypes are
// converted), so the state dict may be cleared afterwards to release nothing but its index.
// Throws Error: kUnsupported when no architecture matches (the message is the strict-load report
// of the closest one) or options.arch is unknown; kInvalidInput when the state dict does not match
// options.arch or options.num_classes disagrees with the classifier's shape.
BuiltModel build_model(const StateDict& weights, const BuildOptions& options = {});

// Detection alone (same rules and errors as build_model), for inspecting a checkpoint.
Detection detect_architecture(const StateDict& weights, const BuildOptions& options = {});

// Every architecture name build_model accepts for --arch.
std::vector<std::string> architecture_names();

// torchvision's evaluation crop size for `arch` (e.g. 224, or 600 for efficientnet_b7); throws
// Error (kUnsupported) for an unknown name.
int64_t default_input_size(const std::string& arch);

}  // namespace modex::models
