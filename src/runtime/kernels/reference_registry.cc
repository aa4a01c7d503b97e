// The reference kernels as engine kernels: every op, any float32 attribute combination.
#include <string>

#include "runtime/kernels/kernel.h"
#include "runtime/kernels/reference_int8.h"
#include "runtime/kernels/reference_kernels.h"

namespace modex::runtime {
namespace {

class ReferenceKernel final : public Kernel {
 public:
  explicit ReferenceKernel(const ir::Node& node) : node_(node), name_("ref_" + std::string(ir::op_name(node.op))) {}
  std::string_view name() const override { return name_; }
  void setup(std::span<const Tensor> inputs, std::span<Tensor> outputs, const RunContext&) override {
    inputs_.assign(inputs.begin(), inputs.end());
    output_ = outputs[0];
  }
  void run(const RunContext&) override { ref::run_node(node_, inputs_, output_); }

 private:
  ir::Node node_;
  std::string name_;
  std::vector<Tensor> inputs_;
  Tensor output_;
};

// Quantized nodes (int8/uint8 data, Quantize, Dequantize): TFLite's reference integer kernels.
class ReferenceInt8Kernel final : public Kernel {
 public:
  explicit ReferenceInt8Kernel(q8::Prepared p) : p_(std::move(p)), name_("ref_q8_" + std::string(ir::op_name(p_.node.op))) {}
  std::string_view name() const override { return name_; }
  void setup(std::span<const Tensor> inputs, std::span<Tensor> outputs, const RunContext&) override {
    inputs_.assign(inputs.begin(), inputs.end());
    output_ = outputs[0];
  }
  void run(const RunContext&) override { q8::run(p_, inputs_, output_); }

 private:
  q8::Prepared p_;
  std::string name_;
  std::vector<Tensor> inputs_;
  Tensor output_;
};

}  // namespace

void register_reference_kernels(KernelRegistry& r) {
  // Before the float kernels: a Quantize of float32 data is keyed {Quantize, float32}.
  auto int8_factory = [](const KernelRequest& req) -> std::unique_ptr<Kernel> {
    if (!q8::is_quantized_node(req.graph, req.node)) return nullptr;
    return std::make_unique<ReferenceInt8Kernel>(q8::prepare(req.graph, req.node));
  };
  for (size_t i = 0; i < ir::kOpCount; ++i)
    for (DType d : {DType::kInt8, DType::kUInt8, DType::kInt32})
      r.add(static_cast<ir::OpKind>(i), d, KernelBackend::kReference, int8_factory);
  r.add(ir::OpKind::kQuantize, DType::kFloat32, KernelBackend::kReference, int8_factory);
  for (size_t i = 0; i < ir::kOpCount; ++i)
    r.add(static_cast<ir::OpKind>(i), DType::kFloat32, KernelBackend::kReference,
          [](const KernelRequest& req) { return std::make_unique<ReferenceKernel>(req.node); });
}

}  // namespace modex::runtime
