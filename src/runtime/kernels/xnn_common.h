// Shared pieces of the XNNPACK kernels: library initialisation, operator ownership, status
// checks and fused activations.
#pragma once

#include <xnnpack.h>

#include <limits>
#include <memory>
#include <vector>

#include "runtime/kernels/kernel.h"

namespace modex::runtime::xnn {

// xnn_initialize once per process; false when XNNPACK cannot run on this CPU.
bool available();

struct OperatorDeleter {
  void operator()(xnn_operator_t op) const { xnn_delete_operator(op); }
};
using Operator = std::unique_ptr<xnn_operator, OperatorDeleter>;

// Throws Error (kInternal) naming `what` unless status is success.
void check(xnn_status status, const char* what);
// xnn_run_operator under the context's pool mutex.
void run(xnn_operator_t op, const RunContext& ctx);

inline constexpr float kInf = std::numeric_limits<float>::infinity();

// The output clamp range an activation folds into (Relu, Relu6); [-inf, inf] for the others.
struct Range {
  float min = -kInf;
  float max = kInf;
};
Range clamp_range(ir::Activation a);

// Activations XNNPACK operators cannot fuse (HardSwish, Sigmoid, SiLU), applied in place on an
// operator's output by separate element-wise operators.
class PostActivation {
 public:
  // Creates the operators; false when `a` needs none (or XNNPACK cannot create them).
  bool init(ir::Activation a);
  void setup(float* data, size_t count, const RunContext& ctx);
  void run(const RunContext& ctx);

 private:
  ir::Activation activation_ = ir::Activation::kNone;
  // SiLU on AVX2 machines: one in-place pass of modex's own vector code instead of XNNPACK's
  // sigmoid into scratch + multiply (two passes and a scratch buffer).
  bool native_silu_ = false;
  float* data_ = nullptr;
  size_t count_ = 0;
  Operator first_, multiply_;
  std::vector<float> scratch_;  // SiLU: sigmoid(x), then x * sigmoid(x)
};

// True when the activation is handled by clamp_range alone.
inline bool fused_by_clamp(ir::Activation a) {
  return a == ir::Activation::kNone || a == ir::Activation::kRelu || a == ir::Activation::kRelu6;
}

// The static dims of a value's declared shape, or nullopt.
std::optional<Dims> static_dims(const ir::Graph& g, ir::ValueId v);
// A declared dim when static, else -1.
int64_t static_dim(const ir::Graph& g, ir::ValueId v, int64_t axis);

}  // namespace modex::runtime::xnn
