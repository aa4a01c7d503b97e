// The engine's kernel interface and registry. A kernel is created once per node and executor
// (packing weights then), bound to concrete tensors by setup() whenever the planned shape or the
// arena changes, and run() any number of times after that. Kernels are chosen per {op, dtype}:
// each backend registers factories, a factory may decline a node (returns nullptr), and the
// reference backend accepts every op, so a node always gets a kernel.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "ir/graph.h"

typedef struct pthreadpool* pthreadpool_t;

namespace modex::runtime {

struct RunContext {
  pthreadpool_t pool = nullptr;  // nullptr: run on the calling thread
  // Held around each parallelised call, so concurrent runs can share one pool.
  std::mutex* pool_mutex = nullptr;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual std::string_view name() const = 0;
  // Binds to inputs (undefined tensors for omitted optional inputs) and outputs: views whose shape
  // and storage stay fixed until the next setup.
  virtual void setup(std::span<const Tensor> inputs, std::span<Tensor> outputs, const RunContext& ctx) = 0;
  virtual void run(const RunContext& ctx) = 0;
};

// Tried in this order by Backend::kAuto: modex's own optimised kernels, XNNPACK, reference.
enum class KernelBackend : uint8_t { kNative, kXnnpack, kReference };

// What a factory sees: the planned (NHWC, optimised) graph with its declared shapes, which may
// hold dynamic dims; constants are float32 except quantized ones (int8 weights, int32 biases).
struct KernelRequest {
  const ir::Graph& graph;
  const ir::Node& node;
};

using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelRequest&)>;

class KernelRegistry {
 public:
  static KernelRegistry& instance();
  void add(ir::OpKind op, DType dtype, KernelBackend backend, KernelFactory factory);
  // The first accepting factory among `backends`, tried in order; throws when none accepts.
  std::unique_ptr<Kernel> create(const KernelRequest& request, std::span<const KernelBackend> backends) const;

 private:
  struct Entry {
    ir::OpKind op;
    DType dtype;
    KernelBackend backend;
    KernelFactory factory;
  };
  std::vector<Entry> entries_;
};

// Registration functions, one per kernel family file (called once by KernelRegistry::instance();
// explicit calls rather than static initialisers, which a static library would drop).
void register_reference_kernels(KernelRegistry& r);
void register_native_kernels(KernelRegistry& r);
void register_native_q8_kernels(KernelRegistry& r);
void register_native_dwconv_kernels(KernelRegistry& r);
void register_native_elementwise_kernels(KernelRegistry& r);
void register_native_transpose_kernels(KernelRegistry& r);
void register_xnn_conv_kernels(KernelRegistry& r);
void register_xnn_pool_kernels(KernelRegistry& r);
void register_xnn_elementwise_kernels(KernelRegistry& r);
void register_xnn_int8_kernels(KernelRegistry& r);

// The engine's conversion of a caller's NCHW float image to the graph's NHWC input: dst[n][p][c] =
// src[n][c][p] for p < HW, over ctx's threads (native_transpose.cc; 3 channels interleaved in
// AVX-512 registers where the CPU has them).
void planes_to_pixels(const RunContext& ctx, const float* src, int64_t N, int64_t C, int64_t HW, float* dst);

// The dtype a node's kernel is chosen by: its first input's.
DType kernel_dtype(const ir::Graph& g, const ir::Node& n);

}  // namespace modex::runtime
