#include <string>

#include "runtime/kernels/kernel.h"

namespace modex::runtime {

KernelRegistry& KernelRegistry::instance() {
  static KernelRegistry* registry = [] {
    auto* r = new KernelRegistry;
    register_native_kernels(*r);
    register_native_q8_kernels(*r);
    register_native_dwconv_kernels(*r);
    register_native_elementwise_kernels(*r);
    register_native_transpose_kernels(*r);
    register_xnn_conv_kernels(*r);
    register_xnn_pool_kernels(*r);
    register_xnn_elementwise_kernels(*r);
    register_xnn_int8_kernels(*r);
    register_reference_kernels(*r);
    return r;
  }();
  return *registry;
}

void KernelRegistry::add(ir::OpKind op, DType dtype, KernelBackend backend, KernelFactory factory) {
  entries_.push_back({op, dtype, backend, std::move(factory)});
}

std::unique_ptr<Kernel> KernelRegistry::create(const KernelRequest& request,
                                               std::span<const KernelBackend> backends) const {
  DType dtype = kernel_dtype(request.graph, request.node);
  for (KernelBackend b : backends)
    for (const Entry& e : entries_)
      if (e.op == request.node.op && e.dtype == dtype && e.backend == b)
        if (auto k = e.factory(request)) return k;
  throw Error("no kernel for " + std::string(dtype_name(dtype)) + " inputs", ErrorKind::kUnsupported)
      .node(request.node.name)
      .op(std::string(ir::op_name(request.node.op)));
}

DType kernel_dtype(const ir::Graph& g, const ir::Node& n) {
  for (ir::ValueId v : n.inputs)
    if (v != ir::kNoValue) return g.value(v).dtype;
  return DType::kFloat32;
}

}  // namespace modex::runtime
