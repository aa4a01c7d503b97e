#include "models/net_builder.h"

#include <unordered_set>
#include <utility>

namespace modex::models {

namespace {

// torch.nn.Hardsigmoid is relu6(x + 3) / 6, i.e. ONNX HardSigmoid with alpha = 1/6, beta = 0.5
// (ONNX's defaults, 0.2 and 0.5, are Keras's approximation and differ from PyTorch).
constexpr float kTorchHardSigmoidAlpha = 1.0f / 6.0f;
constexpr float kTorchHardSigmoidBeta = 0.5f;

std::pair<ir::OpKind, ir::OpAttrs> activation_op(Act act) {
  auto plain = [](ir::OpKind op) { return std::pair{op, ir::default_attrs(op)}; };
  switch (act) {
    case Act::kNone:  // callers never emit kNone; Identity keeps the switch total
      return plain(ir::OpKind::kIdentity);
    case Act::kRelu:
      return plain(ir::OpKind::kRelu);
    case Act::kRelu6:
      return {ir::OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}};
    case Act::kHardSwish:
      return plain(ir::OpKind::kHardSwish);
    case Act::kHardSigmoid:
      return {ir::OpKind::kHardSigmoid,
              ir::HardSigmoidAttrs{kTorchHardSigmoidAlpha, kTorchHardSigmoidBeta}};
    case Act::kSilu:
      return plain(ir::OpKind::kSilu);
    case Act::kSigmoid:
      return plain(ir::OpKind::kSigmoid);
  }
  throw Error("unknown activation", ErrorKind::kInternal);
}

}  // namespace

NetBuilder::NetBuilder(const StateDict& weights, ir::Graph* graph, size_t max_problems)
    : weights_(weights), graph_(graph), max_problems_(max_problems) {
  found_.reserve(weights.size());
}

NetValue NetBuilder::image() {
  NetValue x{ir::kNoValue, 3};
  if (building())
    x.id = graph_->add_input("image", DType::kFloat32,
                             {ir::Dim::named("batch"), ir::Dim::fixed(3), ir::Dim::named("height"),
                              ir::Dim::named("width")});
  return x;
}

void NetBuilder::note_problem(std::string what) {
  // Build mode only runs after a clean check of the same walk, so a problem here is a modex bug
  // (the two walks disagree), not a user error.
  if (building())
    throw Error("state dict changed between check and build: " + what, ErrorKind::kInternal);
  if (report_.problem_count() > max_problems_) gave_up_ = true;
}

ir::ValueId NetBuilder::param(std::string_view name, const Dims& expected) {
  if (gave_up_) return ir::kNoValue;
  std::string key = key_prefix_;
  key += name;
  const Tensor* t = weights_.find(key);
  if (t == nullptr) {
    report_.missing.push_back(key);
    note_problem("missing " + key);
    return ir::kNoValue;
  }
  found_.push_back(t);
  if (t->shape() != expected) {
    report_.mismatched.push_back({key, t->shape(), expected});
    note_problem("shape of " + key);
    return ir::kNoValue;
  }
  if (!is_float(t->dtype())) {
    report_.non_float.push_back(key + " (" + std::string(dtype_name(t->dtype())) + ")");
    note_problem("dtype of " + key);
    return ir::kNoValue;
  }
  ++report_.matched;
  if (!building()) return ir::kNoValue;
  // Tensor::to shares the buffer when the tensor already is float32: no copy of the weights.
  return graph_->add_constant(std::move(key), t->to(DType::kFloat32));
}

void NetBuilder::optional_buffer(std::string_view name) {
  if (gave_up_) return;
  std::string key = key_prefix_;
  key += name;
  if (const Tensor* t = weights_.find(key)) {
    found_.push_back(t);
    ++report_.matched;
  }
}

std::string NetBuilder::node_name(std::string_view module_path) {
  std::string name = key_prefix_;
  name += module_path;
  int& uses = name_uses_[name];
  if (uses++ == 0) return name;
  return name + "_" + std::to_string(uses - 1);
}

ir::ValueId NetBuilder::add_node(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs,
                                 std::string_view module_path) {
  return graph_->add_node1(op, std::move(attrs), std::move(inputs), node_name(module_path));
}

ir::ValueId NetBuilder::add_node(ir::OpKind op, std::vector<ir::ValueId> inputs,
                                 std::string_view module_path) {
  return add_node(op, ir::default_attrs(op), std::move(inputs), module_path);
}

NetValue NetBuilder::conv(const NetValue& x, std::string_view name, const ConvSpec& spec) {
  std::string path(name);
  ir::ValueId w = param(path + ".weight",
                        {spec.out_channels, x.channels / spec.groups, spec.kernel, spec.kernel});
  ir::ValueId b = spec.bias ? param(path + ".bias", {spec.out_channels}) : ir::kNoValue;
  NetValue y{ir::kNoValue, spec.out_channels};
  if (!building()) return y;
  ir::ConvAttrs a;
  int64_t pad = (spec.kernel - 1) / 2 * spec.dilation;
  a.kernel = {spec.kernel, spec.kernel};
  a.strides = {spec.stride, spec.stride};
  a.pads = {pad, pad, pad, pad};
  a.dilations = {spec.dilation, spec.dilation};
  a.groups = spec.groups;
  std::vector<ir::ValueId> inputs{x.id, w};
  if (spec.bias) inputs.push_back(b);
  y.id = add_node(ir::OpKind::kConv, std::move(a), std::move(inputs), path);
  return y;
}

NetValue NetBuilder::batch_norm(const NetValue& x, std::string_view name, float eps) {
  std::string path(name);
  const Dims c{x.channels};
  ir::ValueId scale = param(path + ".weight", c);
  ir::ValueId bias = param(path + ".bias", c);
  ir::ValueId mean = param(path + ".running_mean", c);
  ir::ValueId var = param(path + ".running_var", c);
  optional_buffer(path + ".num_batches_tracked");
  NetValue y{ir::kNoValue, x.channels};
  if (!building()) return y;
  y.id = add_node(ir::OpKind::kBatchNorm, ir::BatchNormAttrs{eps}, {x.id, scale, bias, mean, var},
                  path);
  return y;
}

NetValue NetBuilder::activation(const NetValue& x, Act act, std::string_view name) {
  if (act == Act::kNone || !building()) return x;
  auto [op, attrs] = activation_op(act);
  return {add_node(op, std::move(attrs), {x.id}, name), x.channels};
}

NetValue NetBuilder::linear(const NetValue& x, std::string_view name, int64_t out_features,
                            bool bias) {
  std::string path(name);
  ir::ValueId w = param(path + ".weight", {out_features, x.channels});
  ir::ValueId b = bias ? param(path + ".bias", {out_features}) : ir::kNoValue;
  NetValue y{ir::kNoValue, out_features};
  if (!building()) return y;
  std::vector<ir::ValueId> inputs{x.id, w};
  if (bias) inputs.push_back(b);
  y.id = add_node(ir::OpKind::kGemm, ir::GemmAttrs{}, std::move(inputs), path);
  return y;
}

NetValue NetBuilder::max_pool(const NetValue& x, std::string_view name, int64_t kernel,
                              int64_t stride, int64_t pad) {
  if (!building()) return x;
  ir::PoolAttrs a;
  a.kernel = {kernel, kernel};
  a.strides = {stride, stride};
  a.pads = {pad, pad, pad, pad};
  return {add_node(ir::OpKind::kMaxPool, std::move(a), {x.id}, name), x.channels};
}

NetValue NetBuilder::global_pool_flatten(const NetValue& x, std::string_view pool_name,
                                         std::string_view flatten_name) {
  if (!building()) return x;
  ir::ValueId pooled = add_node(ir::OpKind::kGlobalAveragePool, {x.id}, pool_name);
  return {add_node(ir::OpKind::kFlatten, ir::FlattenAttrs{1}, {pooled}, flatten_name), x.channels};
}

NetValue NetBuilder::add(const NetValue& a, const NetValue& b, std::string_view name) {
  if (a.channels != b.channels)
    throw Error("residual add of " + std::to_string(a.channels) + " and " +
                    std::to_string(b.channels) + " channels at " + key_prefix_ + std::string(name),
                ErrorKind::kInternal);
  if (!building()) return a;
  return {add_node(ir::OpKind::kAdd, {a.id, b.id}, name), a.channels};
}

NetValue NetBuilder::conv_norm_act(const NetValue& x, std::string_view name, const ConvSpec& spec,
                                   float eps, Act act) {
  std::string path(name);
  NetValue y = conv(x, path + ".0", spec);
  y = batch_norm(y, path + ".1", eps);
  return activation(y, act, path + ".2");
}

NetValue NetBuilder::squeeze_excitation(const NetValue& x, std::string_view name,
                                        int64_t squeeze_channels, Act activation_kind,
                                        Act scale_activation) {
  std::string path(name);
  NetValue s = x;
  if (building()) s.id = add_node(ir::OpKind::kGlobalAveragePool, {x.id}, path + ".avgpool");
  s = conv(s, path + ".fc1", {.out_channels = squeeze_channels, .bias = true});
  s = activation(s, activation_kind, path + ".activation");
  s = conv(s, path + ".fc2", {.out_channels = x.channels, .bias = true});
  s = activation(s, scale_activation, path + ".scale_activation");
  if (!building()) return x;
  // [N, C, H, W] * [N, C, 1, 1]: the scale broadcasts over the spatial dims.
  return {add_node(ir::OpKind::kMul, {x.id, s.id}, path + ".mul"), x.channels};
}

LoadReport NetBuilder::finish() {
  if (!gave_up_ && found_.size() != weights_.size()) {
    std::unordered_set<const Tensor*> found(found_.begin(), found_.end());
    for (const auto& [key, tensor] : weights_.entries())
      if (!found.count(&tensor)) report_.unexpected.push_back(key);
  }
  if (building() && !report_.ok())
    throw Error("state dict changed between check and build:\n" + report_.describe(),
                ErrorKind::kInternal);
  return std::move(report_);
}

}  // namespace modex::models
