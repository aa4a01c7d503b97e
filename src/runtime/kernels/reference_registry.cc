// The reference kernels as engine kernels: every op, any float32 attribute combination.
#include <string>

#include "runtime/kernels/kernel.h"
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

}  // namespace

void register_reference_kernels(KernelRegistry& r) {
  for (size_t i = 0; i < ir::kOpCount; ++i)
    r.add(static_cast<ir::OpKind>(i), DType::kFloat32, KernelBackend::kReference,
          [](const KernelRequest& req) { return std::make_unique<ReferenceKernel>(req.node); });
}

}  // namespace modex::runtime
