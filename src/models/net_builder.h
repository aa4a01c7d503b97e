// The layer vocabulary architectures are written in: torchvision's modules (Conv2d, BatchNorm2d,
// Conv2dNormActivation, SqueezeExcitation, Linear, ...) as calls that take their parameters from a
// state dict by module path, with the shape torchvision's own channel arithmetic expects.
//
// One architecture function serves two purposes:
//  - check mode (no graph): every parameter request is a name lookup and a shape comparison and
//    every problem is recorded, like load_state_dict(strict=True). Nothing is allocated for
//    weights, so detection can afford to try every candidate;
//  - build mode: the same walk also adds IR nodes and float32 weight constants.
// Node names are the torch module paths (prefix included), so dumps and errors read like the model.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/pytorch/checkpoint.h"
#include "ir/graph.h"
#include "models/load_report.h"

namespace modex::models {

// A feature map (or feature vector) flowing through the network being described, with the channel
// count the architecture says it has. In check mode `id` stays ir::kNoValue.
struct NetValue {
  ir::ValueId id = ir::kNoValue;
  int64_t channels = 0;
};

// Activation modules, each emitted as its own node (passes fuse them later).
enum class Act : uint8_t {
  kNone,
  kRelu,
  kRelu6,  // Clip(0, 6)
  kHardSwish,
  kHardSigmoid,  // torch's relu6(x + 3) / 6: HardSigmoid(alpha = 1/6, beta = 0.5)
  kSilu,
  kSigmoid,
};

// nn.Conv2d with a square kernel. Padding is always torchvision's "same"-style (k - 1) / 2 *
// dilation: every convolution in the supported families uses it (conv3x3, conv1x1, the 7x7 ResNet
// stem, Conv2dNormActivation's default).
struct ConvSpec {
  int64_t out_channels = 0;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t groups = 1;
  int64_t dilation = 1;
  bool bias = false;
};

class NetBuilder {
 public:
  static constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();

  // `graph` == nullptr selects check mode. In check mode the builder stops looking after
  // `max_problems` problems (0: at the first one), which makes rejecting a wrong candidate cost a
  // handful of lookups; the report is then incomplete (see gave_up()).
  NetBuilder(const StateDict& weights, ir::Graph* graph, size_t max_problems = kNoLimit);

  bool building() const { return graph_ != nullptr; }
  bool gave_up() const { return gave_up_; }

  // Prepended to every key and node name (e.g. "backbone." for a wrapped backbone).
  void set_key_prefix(std::string prefix) { key_prefix_ = std::move(prefix); }
  const std::string& key_prefix() const { return key_prefix_; }

  // The graph input "image": float32 [batch, 3, height, width] with named dynamic dims.
  NetValue image();

  // Takes `key_prefix + name` from the state dict, checked against `expected`. Returns its float32
  // constant in build mode, ir::kNoValue in check mode.
  ir::ValueId param(std::string_view name, const Dims& expected);
  // A buffer the model may or may not carry (BatchNorm's num_batches_tracked): consumed when
  // present, never missing.
  void optional_buffer(std::string_view name);

  // --- torch modules; `name` is the module path ---
  NetValue conv(const NetValue& x, std::string_view name, const ConvSpec& spec);
  NetValue batch_norm(const NetValue& x, std::string_view name, float eps);
  NetValue activation(const NetValue& x, Act act, std::string_view name);
  NetValue linear(const NetValue& x, std::string_view name, int64_t out_features, bool bias = true);
  NetValue max_pool(const NetValue& x, std::string_view name, int64_t kernel, int64_t stride,
                    int64_t pad);
  // AdaptiveAvgPool2d(1) then torch.flatten(x, 1): [N, C, H, W] -> [N, C] for any H, W.
  NetValue global_pool_flatten(const NetValue& x, std::string_view pool_name,
                               std::string_view flatten_name = "flatten");
  NetValue add(const NetValue& a, const NetValue& b, std::string_view name);

  // torchvision.ops.Conv2dNormActivation: `name.0` conv (no bias), `name.1` BatchNorm, `name.2`
  // activation (absent for Act::kNone).
  NetValue conv_norm_act(const NetValue& x, std::string_view name, const ConvSpec& spec, float eps,
                         Act act);
  // torchvision.ops.SqueezeExcitation: avgpool -> fc1 (1x1 conv, bias) -> activation -> fc2 ->
  // scale_activation -> x * scale.
  NetValue squeeze_excitation(const NetValue& x, std::string_view name, int64_t squeeze_channels,
                              Act activation, Act scale_activation);

  // Completes the strict check: every state-dict key never requested is unexpected.
  LoadReport finish();

 private:
  void note_problem(std::string what);
  std::string node_name(std::string_view module_path);
  ir::ValueId add_node(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs,
                       std::string_view module_path);
  // An op without attributes of its own (the IR's defaults).
  ir::ValueId add_node(ir::OpKind op, std::vector<ir::ValueId> inputs,
                       std::string_view module_path);

  const StateDict& weights_;
  ir::Graph* graph_;
  size_t max_problems_;
  bool gave_up_ = false;
  std::string key_prefix_;
  LoadReport report_;
  // Entries found, by address inside the state dict, for listing unexpected keys.
  std::vector<const Tensor*> found_;
  // Node names already used, so a module called twice (ResNet's `relu`) gets `relu_1`, ...
  std::unordered_map<std::string, int> name_uses_;
};

}  // namespace modex::models
