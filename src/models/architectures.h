// The architecture table: one entry per torchvision constructor, each with the function that walks
// its modules through a NetBuilder (checking or building) and what detection needs to know about
// its keys. Families register their entries from their own files (resnet.cc, efficientnet.cc,
// mobilenet.cc), each written from torchvision 0.14's stage tables.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "models/net_builder.h"

namespace modex::models {

// How much of the architecture's own classifier the state dict carries. A wrapper that puts its
// own head on a backbone usually drops the backbone's (`fc = nn.Identity()`); MobileNetV3's
// classifier has a hidden Linear + Hardswish that a wrapper may keep (`classifier[3] =
// Identity()`).
enum class ClassifierMode {
  kFull,    // features -> pool -> flatten -> classifier: logits [N, num_classes]
  kHidden,  // ... -> the classifier's hidden layers only (MobileNetV3: classifier.0 + Hardswish)
  kNone,    // features -> pool -> flatten: [N, feature channels]
};

struct ClassifierSpec {
  ClassifierMode mode = ClassifierMode::kFull;
  int64_t num_classes = 0;  // used for kFull
};

// Walks the architecture from `image`; returns logits (kFull) or features (otherwise).
using ArchitectureFn = std::function<NetValue(NetBuilder&, NetValue image, const ClassifierSpec&)>;

struct Architecture {
  std::string name;  // torchvision's constructor name, e.g. "resnet50"
  // The stem convolution's key, present in every state dict of the family: where it is found
  // tells detection the prefix the model sits under.
  std::string stem_key;
  std::string classifier;  // module path of the Linear producing the logits: "fc", "classifier.1"
  std::string hidden_classifier;     // module path of a hidden Linear before it (kHidden), or ""
  int64_t default_input_size = 224;  // the crop size of torchvision's DEFAULT weights
  ArchitectureFn build;
};

// Every supported architecture, in a fixed order (smallest of each family first).
const std::vector<Architecture>& architectures();
// Exact name lookup; nullptr when unknown.
const Architecture* find_architecture(std::string_view name);

// Registration, one function per family file.
void add_resnets(std::vector<Architecture>& out);
void add_efficientnets(std::vector<Architecture>& out);
void add_mobilenets(std::vector<Architecture>& out);

// torchvision.models._utils._make_divisible: rounds `v` to the nearest multiple of `divisor`
// (at least `min_value`, default `divisor`) without going more than 10% below `v`.
int64_t make_divisible(double v, int64_t divisor, int64_t min_value = 0);

}  // namespace modex::models
