#include "ir/ops.h"

#include <array>

namespace modex::ir {
namespace {

constexpr std::array<std::string_view, kOpCount> kOpNames = {
#define MODEX_OP(name, attrs) #name,
#include "ir/ops.def"
#undef MODEX_OP
};

// Index of each op's attribute type in the OpAttrs variant.
const std::array<size_t, kOpCount> kAttrIndex = {
#define MODEX_OP(name, attrs) OpAttrs(attrs{}).index(),
#include "ir/ops.def"
#undef MODEX_OP
};

}  // namespace

std::string_view activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kRelu6: return "relu6";
    case Activation::kHardSwish: return "hardswish";
    case Activation::kSigmoid: return "sigmoid";
    case Activation::kSilu: return "silu";
  }
  return "?";
}

std::string_view op_name(OpKind op) { return kOpNames[static_cast<size_t>(op)]; }

std::optional<OpKind> op_from_name(std::string_view name) {
  for (size_t i = 0; i < kOpCount; ++i)
    if (kOpNames[i] == name) return static_cast<OpKind>(i);
  return std::nullopt;
}

OpAttrs default_attrs(OpKind op) {
  switch (op) {
#define MODEX_OP(name, attrs) \
  case OpKind::k##name:       \
    return attrs{};
#include "ir/ops.def"
#undef MODEX_OP
  }
  return NoAttrs{};
}

bool attrs_match(OpKind op, const OpAttrs& attrs) {
  return attrs.index() == kAttrIndex[static_cast<size_t>(op)];
}

bool is_elementwise_unary(OpKind op) {
  switch (op) {
    case OpKind::kRelu:
    case OpKind::kClip:
    case OpKind::kLeakyRelu:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
    case OpKind::kHardSwish:
    case OpKind::kSilu:
    case OpKind::kTanh:
    case OpKind::kIdentity:
      return true;
    default:
      return false;
  }
}

bool is_elementwise_binary(OpKind op) {
  return op == OpKind::kAdd || op == OpKind::kSub || op == OpKind::kMul || op == OpKind::kDiv;
}

}  // namespace modex::ir
