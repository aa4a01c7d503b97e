#include "passes/passes.h"

namespace modex::passes {
namespace {

std::optional<ir::Activation> as_activation(const ir::Node& n) {
  switch (n.op) {
    case ir::OpKind::kRelu: return ir::Activation::kRelu;
    case ir::OpKind::kHardSwish: return ir::Activation::kHardSwish;
    case ir::OpKind::kSigmoid: return ir::Activation::kSigmoid;
    case ir::OpKind::kSilu: return ir::Activation::kSilu;
    case ir::OpKind::kClip: {
      const auto& a = n.attr<ir::ClipAttrs>();
      if (a.min == 0.0f && a.max == 6.0f) return ir::Activation::kRelu6;
      return std::nullopt;
    }
    default: return std::nullopt;
  }
}

ir::Activation* fused_slot(ir::Node& n) {
  switch (n.op) {
    case ir::OpKind::kConv: return &n.attr<ir::ConvAttrs>().activation;
    case ir::OpKind::kGemm: return &n.attr<ir::GemmAttrs>().activation;
    case ir::OpKind::kAdd:
    case ir::OpKind::kSub:
    case ir::OpKind::kMul:
    case ir::OpKind::kDiv: return &n.attr<ir::BinaryAttrs>().activation;
    default: return nullptr;
  }
}

}  // namespace

bool fuse_activation(ir::Graph& g) {
  bool changed = false;
  auto consumers = g.consumers();
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    ir::Node& act = g.node(static_cast<ir::NodeId>(k));
    if (act.dead) continue;
    auto kind = as_activation(act);
    if (!kind) continue;
    ir::ValueId x = act.inputs[0];
    ir::NodeId pid = g.value(x).producer;
    if (pid < 0 || consumers[static_cast<size_t>(x)].size() != 1 || g.is_graph_output(x)) continue;
    ir::Activation* slot = fused_slot(g.node(pid));
    if (!slot || *slot != ir::Activation::kNone) continue;
    *slot = *kind;
    ir::ValueId out = act.outputs[0];
    g.replace_value(out, x);
    act.dead = true;
    consumers = g.consumers();
    changed = true;
  }
  if (changed) g.compact();
  return changed;
}

}  // namespace modex::passes
