// modex::Model: prepares a graph once (optimise, NHWC, float32 constants; int8 graphs as given), plans each concrete
// input shape once (shapes, arena offsets), and runs it on executors that own the kernels.
//
// Why executors and plans are separate: XNNPACK operators pack their weights when created and
// keep the addresses given at setup, so one set of operators can serve only one run at a time,
// but can be set up again for any shape. An executor (kernels + arena) is therefore the unit a
// run checks out of a pool; a ShapePlan (immutable: value shapes, buffer offsets) is shared by all
// executors, and an executor re-binds (setup only, no re-packing) when handed a run of another
// shape. Concurrent runs create more executors (each packs its own weights) only while all are
// busy.
#include <pthreadpool.h>
#include <xnnpack.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "io/onnx/onnx_reader.h"
#include "io/pytorch/checkpoint.h"
#include "models/metadata.h"
#include "io/tflite/tflite_reader.h"
#include "models/zoo.h"
#include "modex/runtime.h"
#include "passes/passes.h"
#include "runtime/kernels/kernel.h"
#include "runtime/kernels/reference_int8.h"

namespace modex {

using runtime::Kernel;
using runtime::RunContext;

namespace {

constexpr size_t kArenaAlignment = 64;

bool is_alias_op(ir::OpKind op) {
  switch (op) {
    case ir::OpKind::kFlatten:
    case ir::OpKind::kReshape:
    case ir::OpKind::kSqueeze:
    case ir::OpKind::kUnsqueeze:
    case ir::OpKind::kIdentity: return true;
    default: return false;
  }
}

// Where a value lives during a run at one shape.
enum class Home : uint8_t { kUnused, kConstant, kArena, kAlias };

struct ShapePlan {
  std::vector<Dims> dims;         // per value
  std::vector<DType> dtype;       // per value
  std::vector<Home> home;         // per value
  std::vector<size_t> offset;     // kArena: byte offset in the arena
  std::vector<ir::ValueId> root;  // kAlias: the arena value whose storage it shares
  size_t arena_bytes = 0;
};

bool quantized_int(const ir::Value& v) {
  return (v.dtype == DType::kInt8 || v.dtype == DType::kUInt8) && v.quant && !v.quant->scale.empty();
}

TensorInfo info_of(const ir::Value& v) {
  TensorInfo t;
  t.name = v.name;
  t.dtype = v.dtype;
  if (quantized_int(v))
    t.quant = QuantInfo{v.quant->scale[0], v.quant->zero_point.empty() ? 0 : v.quant->zero_point[0]};
  for (const ir::Dim& d : v.shape) {
    t.shape.push_back(d.is_static() ? d.value : -1);
    t.dim_names.push_back(d.is_static() ? "" : d.symbol);
  }
  return t;
}

// Greedy-by-size placement: each buffer goes at the lowest offset that does not overlap a
// placed buffer whose lifetime [first, last] (step indices) intersects its own.
struct Block {
  ir::ValueId value;
  size_t bytes;
  int first, last;
  size_t offset = 0;
};

size_t place_blocks(std::vector<Block>& blocks) {
  std::vector<size_t> order(blocks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return blocks[a].bytes > blocks[b].bytes; });
  std::vector<size_t> placed;
  size_t total = 0;
  for (size_t i : order) {
    Block& b = blocks[i];
    std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) of conflicting placed blocks
    for (size_t j : placed) {
      const Block& p = blocks[j];
      if (p.first <= b.last && b.first <= p.last) busy.emplace_back(p.offset, p.offset + p.bytes);
    }
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (auto [begin, end] : busy) {
      if (at + b.bytes <= begin) break;
      at = std::max(at, (end + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment);
    }
    b.offset = at;
    total = std::max(total, at + b.bytes);
    placed.push_back(i);
  }
  return total;
}

}  // namespace

struct Executor {
  std::vector<std::unique_ptr<Kernel>> kernels;  // per node; nullptr for aliases
  const ShapePlan* bound = nullptr;
  std::shared_ptr<Buffer> arena;
  std::vector<Tensor> vals;
  std::vector<double> profile_seconds;  // per node, summed over runs (MODEX_PROFILE=1)
};

struct Model::Impl {
  ir::Graph graph;                // optimised, NHWC; float32 constants except quantized ones
  std::vector<bool> nchw_input;   // per input: callers give NCHW, the graph takes NHWC
  std::vector<TensorInfo> inputs, outputs;
  ModelOptions options;
  int threads = 1;
  pthreadpool_t pool = nullptr;
  mutable std::mutex pool_mutex;
  bool profile = false;

  mutable std::mutex mutex;  // guards plans, idle, profile totals
  mutable std::map<std::vector<Dims>, std::unique_ptr<ShapePlan>> plans;
  mutable std::vector<std::unique_ptr<Executor>> idle;
  mutable std::vector<double> profile_total;
  mutable int64_t profile_runs = 0;
  mutable std::vector<std::string> last_kernel_names;

  ~Impl() {
    if (profile && profile_runs > 0) print_profile();
    idle.clear();  // operators before the pool they were set up with
    if (pool) pthreadpool_destroy(pool);
  }

  RunContext context() const { return RunContext{pool, pool ? &pool_mutex : nullptr}; }

  std::unique_ptr<Executor> make_executor() const {
    auto e = std::make_unique<Executor>();
    std::vector<runtime::KernelBackend> backends;
    if (options.backend == Backend::kAuto) {
      backends.push_back(runtime::KernelBackend::kNative);
      backends.push_back(runtime::KernelBackend::kXnnpack);
    }
    backends.push_back(runtime::KernelBackend::kReference);
    const auto& registry = runtime::KernelRegistry::instance();
    for (const ir::Node& n : graph.nodes()) {
      if (n.dead || is_alias_op(n.op)) {
        e->kernels.emplace_back();
        continue;
      }
      e->kernels.push_back(registry.create({graph, n}, backends));
    }
    e->profile_seconds.assign(graph.nodes().size(), 0.0);
    return e;
  }

  const ShapePlan& plan_for(const std::vector<Dims>& key) const {
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    ir::Graph g = graph;
    for (size_t i = 0; i < key.size(); ++i) g.value(g.inputs()[i]).shape = ir::static_shape(key[i]);
    g.infer_shapes();
    auto p = std::make_unique<ShapePlan>();
    size_t nv = g.values().size();
    p->dims.resize(nv);
    p->home.assign(nv, Home::kUnused);
    p->offset.assign(nv, 0);
    p->root.assign(nv, ir::kNoValue);
    p->dtype.assign(nv, DType::kFloat32);
    for (size_t v = 0; v < nv; ++v) {
      const ir::Value& val = g.values()[v];
      p->dtype[v] = val.dtype;
      if (val.is_constant()) {
        p->home[v] = Home::kConstant;
        p->dims[v] = val.constant.shape();
        continue;
      }
      auto d = ir::to_dims(val.shape);
      if (d) p->dims[v] = *d;
    }
    // Lifetimes in steps: graph inputs are written at step 0, node i runs at step i + 1.
    std::vector<int> first(nv, -1), last(nv, -1);
    auto root_of = [&](ir::ValueId v) { return p->home[static_cast<size_t>(v)] == Home::kAlias ? p->root[static_cast<size_t>(v)] : v; };
    for (ir::ValueId in : g.inputs()) {
      p->home[static_cast<size_t>(in)] = Home::kArena;
      first[static_cast<size_t>(in)] = last[static_cast<size_t>(in)] = 0;
    }
    int step = 0;
    for (const ir::Node& n : g.nodes()) {
      ++step;
      if (n.dead) continue;
      for (ir::ValueId v : n.inputs)
        if (v != ir::kNoValue && p->home[static_cast<size_t>(v)] != Home::kConstant)
          last[static_cast<size_t>(root_of(v))] = step;
      size_t out = static_cast<size_t>(n.outputs[0]);
      if (!ir::to_dims(g.value(n.outputs[0]).shape))
        throw Error("output shape " + ir::shape_to_string(g.value(n.outputs[0]).shape) + " is not concrete", ErrorKind::kUnsupported)
            .node(n.name)
            .op(std::string(ir::op_name(n.op)));
      if (is_alias_op(n.op)) {
        ir::ValueId src = n.inputs[0];
        if (p->home[static_cast<size_t>(src)] == Home::kConstant) {
          p->home[out] = Home::kConstant;  // a view of the constant, reshaped
        } else {
          p->home[out] = Home::kAlias;
          p->root[out] = root_of(src);
        }
        continue;
      }
      p->home[out] = Home::kArena;
      first[out] = last[out] = step;
    }
    for (ir::ValueId o : g.outputs())
      if (p->home[static_cast<size_t>(o)] != Home::kConstant) last[static_cast<size_t>(root_of(o))] = step + 1;
    std::vector<Block> blocks;
    for (size_t v = 0; v < nv; ++v)
      if (p->home[v] == Home::kArena) {
        size_t bytes = static_cast<size_t>(checked_numel(p->dims[v])) * dtype_size(p->dtype[v]);
        blocks.push_back({static_cast<ir::ValueId>(v), std::max<size_t>(bytes, 1), first[v], last[v]});
      }
    p->arena_bytes = place_blocks(blocks);
    for (const Block& b : blocks) p->offset[static_cast<size_t>(b.value)] = b.offset;
    return *plans.emplace(key, std::move(p)).first->second;
  }

  // Points the executor's tensors at its arena for `plan` and sets every kernel up.
  void bind(Executor& e, const ShapePlan& plan) const {
    if (e.bound == &plan) return;
    e.bound = nullptr;  // stays unbound if a setup below throws
    // XNNPACK may read up to XNN_EXTRA_BYTES past an input's end.
    size_t need = plan.arena_bytes + XNN_EXTRA_BYTES + kArenaAlignment;
    if (!e.arena || e.arena->size() < need) e.arena = Buffer::allocate(need);
    size_t nv = graph.values().size();
    e.vals.assign(nv, Tensor());
    for (size_t v = 0; v < nv; ++v) {
      switch (plan.home[v]) {
        case Home::kUnused: break;
        case Home::kConstant:
          e.vals[v] = graph.values()[v].is_constant() ? graph.values()[v].constant : Tensor();
          break;
        case Home::kArena: e.vals[v] = Tensor::view(e.arena, plan.offset[v], plan.dtype[v], plan.dims[v]); break;
        case Home::kAlias: break;
      }
    }
    // Aliases and reshaped constants, in node order (their sources come first).
    for (const ir::Node& n : graph.nodes()) {
      if (n.dead || !is_alias_op(n.op)) continue;
      size_t out = static_cast<size_t>(n.outputs[0]);
      e.vals[out] = e.vals[static_cast<size_t>(n.inputs[0])].reshaped(plan.dims[out]);
    }
    RunContext ctx = context();
    std::vector<Tensor> ins;
    for (size_t i = 0; i < graph.nodes().size(); ++i) {
      const ir::Node& n = graph.nodes()[i];
      if (!e.kernels[i]) continue;
      ins.clear();
      for (ir::ValueId v : n.inputs) ins.push_back(v == ir::kNoValue ? Tensor() : e.vals[static_cast<size_t>(v)]);
      e.kernels[i]->setup(ins, std::span<Tensor>(&e.vals[static_cast<size_t>(n.outputs[0])], 1), ctx);
    }
    e.bound = &plan;
  }

  // `use`, when given, gets views of the outputs instead of copies (raw), and nothing is returned.
  std::vector<Tensor> run(const std::vector<Tensor>& in, bool raw,
                          const std::function<void(std::span<const Tensor>)>* use = nullptr) const {
    if (in.size() != inputs.size())
      throw Error("expected " + std::to_string(inputs.size()) + " inputs, got " + std::to_string(in.size()));
    std::vector<Dims> key;
    for (size_t i = 0; i < in.size(); ++i) {
      const TensorInfo& info = inputs[i];
      const Dims& s = in[i].shape();
      // Float data for float inputs; float data (quantized here) or the exact integer dtype for
      // quantized ones.
      bool ok = in[i].defined() && s.size() == info.shape.size() &&
                (is_float(in[i].dtype()) || (info.quant && in[i].dtype() == info.dtype));
      for (size_t d = 0; ok && d < s.size(); ++d) ok = s[d] > 0 && (info.shape[d] < 0 || info.shape[d] == s[d]);
      if (!ok) {
        std::string want;
        for (size_t d = 0; d < info.shape.size(); ++d)
          want += (d ? ", " : "") + (info.shape[d] >= 0 ? std::to_string(info.shape[d]) : info.dim_names[d].empty() ? "?" : info.dim_names[d]);
        throw Error("input " + (in[i].defined() ? std::string(dtype_name(in[i].dtype())) + " " + dims_to_string(s) : "undefined") +
                    " does not match [" + want + "] " + (info.quant ? "float or " + std::string(dtype_name(info.dtype)) : "float"))
            .tensor(info.name);
      }
      key.push_back(nchw_input[i] ? Dims{s[0], s[2], s[3], s[1]} : s);
    }

    std::unique_ptr<Executor> e;
    const ShapePlan* plan = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex);
      plan = &plan_for(key);
      auto it = std::find_if(idle.begin(), idle.end(), [&](const auto& x) { return x->bound == plan; });
      if (it == idle.end() && !idle.empty()) it = idle.end() - 1;
      if (it != idle.end()) {
        e = std::move(*it);
        idle.erase(it);
      }
    }
    if (!e) e = make_executor();
    struct Checkin {
      const Impl* self;
      std::unique_ptr<Executor>& e;
      ~Checkin() {
        if (!e) return;
        std::lock_guard<std::mutex> lock(self->mutex);
        self->idle.push_back(std::move(e));
      }
    } checkin{this, e};

    bind(*e, *plan);
    RunContext ctx = context();
    for (size_t i = 0; i < in.size(); ++i)
      copy_input(ctx, in[i], inputs[i], nchw_input[i], e->vals[static_cast<size_t>(graph.inputs()[i])]);
    using Clock = std::chrono::steady_clock;
    for (size_t i = 0; i < e->kernels.size(); ++i) {
      if (!e->kernels[i]) continue;
      if (profile) {
        auto t0 = Clock::now();
        e->kernels[i]->run(ctx);
        e->profile_seconds[i] += std::chrono::duration<double>(Clock::now() - t0).count();
      } else {
        e->kernels[i]->run(ctx);
      }
    }
    std::vector<Tensor> outs;
    for (size_t k = 0; k < graph.outputs().size(); ++k) {
      const Tensor& y = e->vals[static_cast<size_t>(graph.outputs()[k])];
      if (use) {
        outs.push_back(y);  // a view: the executor stays checked out until `use` returns
      } else if (raw || !outputs[k].quant) {
        outs.push_back(y.clone());
      } else {
        Tensor f = Tensor::empty(DType::kFloat32, y.shape());
        runtime::q8::dequantize(y, {outputs[k].quant->scale, static_cast<int32_t>(outputs[k].quant->zero_point)}, f);
        outs.push_back(std::move(f));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      last_kernel_names.clear();
      for (const auto& k : e->kernels) last_kernel_names.push_back(k ? std::string(k->name()) : "alias");
      if (profile) {
        profile_total.resize(e->kernels.size(), 0.0);
        for (size_t i = 0; i < e->kernels.size(); ++i) {
          profile_total[i] += e->profile_seconds[i];
          e->profile_seconds[i] = 0;
        }
        ++profile_runs;
      }
    }
    if (use) {
      (*use)(outs);
      return {};
    }
    return outs;
  }

  static void copy_input(const RunContext& ctx, const Tensor& src_any, const TensorInfo& info, bool nchw, Tensor& dst) {
    if (info.quant) {
      if (src_any.dtype() == info.dtype) {
        std::memcpy(dst.raw_mutable(), src_any.raw(), dst.nbytes());
      } else {
        runtime::q8::quantize(src_any.to(DType::kFloat32), {info.quant->scale, static_cast<int32_t>(info.quant->zero_point)}, dst);
      }
      return;
    }
    Tensor src = src_any.to(DType::kFloat32);
    if (!nchw) {
      std::memcpy(dst.raw_mutable(), src.raw(), dst.nbytes());
      return;
    }
    runtime::planes_to_pixels(ctx, src.data<float>(), src.dim(0), src.dim(1), src.dim(2) * src.dim(3),
                              dst.data_mutable<float>());
  }

  void print_profile() const {
    double total = 0;
    for (double t : profile_total) total += t;
    std::fprintf(stderr, "modex profile: %lld runs, %.3f ms per run\n", static_cast<long long>(profile_runs),
                 1e3 * total / static_cast<double>(profile_runs));
    for (size_t i = 0; i < profile_total.size(); ++i) {
      if (profile_total[i] == 0) continue;
      const ir::Node& n = graph.nodes()[i];
      std::fprintf(stderr, "%9.3f ms %5.1f%%  %-36s %-12s %s\n", 1e3 * profile_total[i] / static_cast<double>(profile_runs),
                   100 * profile_total[i] / total, i < last_kernel_names.size() ? last_kernel_names[i].c_str() : "",
                   std::string(ir::op_name(n.op)).c_str(), n.name.c_str());
    }
  }
};

namespace {

bool has_nhwc_ops(const ir::Graph& g) {
  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    if (auto* c = std::get_if<ir::ConvAttrs>(&n.attrs); c && c->layout == ir::Layout::kNHWC) return true;
    if (auto* p = std::get_if<ir::PoolAttrs>(&n.attrs); p && p->layout == ir::Layout::kNHWC) return true;
  }
  return false;
}

// torch.onnx.export writes SiLU (EfficientNet's activation) as Mul(x, Sigmoid(x)): two nodes and
// two passes over memory. As one Silu node it fuses into the convolution before it, whose native
// kernel applies it to the output tile in registers. In an int8 graph (`quantized`: TFLite's
// LOGISTIC then MUL) the Silu node keeps the Mul's output params and is one table of the input
// byte, computed from the two ops' integer semantics (the Sigmoid's output has TFLite's fixed
// params, 1/256 and -128).
void fuse_sigmoid_multiply(ir::Graph& g, bool quantized) {
  auto consumers = g.consumers();
  bool changed = false;
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    ir::Node& mul = g.node(static_cast<ir::NodeId>(k));
    if (mul.dead || mul.op != ir::OpKind::kMul || mul.inputs.size() != 2 ||
        mul.attr<ir::BinaryAttrs>().activation != ir::Activation::kNone)
      continue;
    for (size_t s = 0; s < 2; ++s) {
      ir::ValueId gate = mul.inputs[s], x = mul.inputs[1 - s];
      if (gate == ir::kNoValue || x == ir::kNoValue) break;
      ir::NodeId pid = g.value(gate).producer;
      if (pid < 0) continue;
      ir::Node& sig = g.node(pid);
      if (sig.dead || sig.op != ir::OpKind::kSigmoid || sig.inputs[0] != x || g.is_graph_output(gate) ||
          consumers[static_cast<size_t>(gate)].size() != 1 || g.value(x).shape != g.value(mul.outputs[0]).shape)
        continue;
      if (quantized) {
        const ir::Value &xv = g.value(x), &gv = g.value(gate), &yv = g.value(mul.outputs[0]);
        const ir::QuantParams fixed{{1.0f / 256.0f}, {-128}, 0};
        if (xv.dtype != DType::kInt8 || yv.dtype != DType::kInt8 || gv.dtype != DType::kInt8 || !xv.quant ||
            !yv.quant || !gv.quant || gv.quant->scale != fixed.scale || gv.quant->zero_point != fixed.zero_point)
          continue;
      }
      mul.op = ir::OpKind::kSilu;
      mul.attrs = ir::NoAttrs{};
      mul.inputs = {x};
      sig.dead = true;
      changed = true;
      break;
    }
  }
  if (changed) g.compact();
}

// A ResNet's residual Add (and the ReLU fused into it) becomes the fourth input of the dense
// convolution that produces one of its operands: the convolution's kernel adds the other operand
// to each block of output while the block is in cache, instead of a separate pass reading two
// tensors and writing a third (resnet50's 17 Adds took ~3.6 ms of 78 at 1 thread; fused, the
// network measured 79.2 -> 78.2 ms, medians of 3 alternating runs: most of the cost is reading
// the residual, which the fused kernel still does). The convolution must
// be NHWC, dense (groups 1, the native kernels' case), without an activation of its own and its
// output read only by the Add; the other operand must already exist when it runs (produced by an
// earlier node: when both operands are such convolutions, the later one takes the Add), and both
// shapes the same and known (static, or named dims such as a dynamic batch). Float graphs only;
// the IR's writers never see the fourth input (ConvAttrs).
void fuse_residual_add(ir::Graph& g) {
  auto consumers = g.consumers();
  bool changed = false;
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    ir::Node& add = g.node(static_cast<ir::NodeId>(k));
    if (add.dead || add.op != ir::OpKind::kAdd || add.inputs.size() != 2) continue;
    const ir::ValueId out = add.outputs[0];
    ir::NodeId best = -1;
    size_t best_side = 0;
    for (size_t s = 0; s < 2; ++s) {
      const ir::ValueId v = add.inputs[s], other = add.inputs[1 - s];
      if (v == ir::kNoValue || other == ir::kNoValue || v == other) break;
      const ir::Value &vv = g.value(v), &ov = g.value(other);
      // Equal shapes, every dim static or a named one (the same name is the same size): an
      // unknown dim could be 1 at run time, and the Add would broadcast.
      const bool known = std::all_of(vv.shape.begin(), vv.shape.end(),
                                     [](const ir::Dim& d) { return d.is_static() || !d.symbol.empty(); });
      if (vv.producer < 0 || ov.is_constant() || vv.dtype != DType::kFloat32 || ov.dtype != DType::kFloat32 ||
          !known || vv.shape != g.value(out).shape || ov.shape != vv.shape ||
          consumers[static_cast<size_t>(v)].size() != 1 || g.is_graph_output(v) || ov.producer >= vv.producer)
        continue;
      const ir::Node& conv = g.node(vv.producer);
      if (conv.op != ir::OpKind::kConv || conv.inputs.size() > 3) continue;
      const auto& a = conv.attr<ir::ConvAttrs>();
      if (a.layout != ir::Layout::kNHWC || a.groups != 1 || a.activation != ir::Activation::kNone ||
          !g.value(conv.inputs[1]).is_constant())
        continue;
      if (best < 0 || vv.producer > best) best = vv.producer, best_side = s;
    }
    if (best < 0) continue;
    ir::Node& conv = g.node(best);
    const ir::ValueId sum = add.inputs[best_side], residual = add.inputs[1 - best_side];
    conv.inputs.resize(3, ir::kNoValue);  // an absent bias stays absent
    conv.inputs.push_back(residual);
    conv.attr<ir::ConvAttrs>().activation = add.attr<ir::BinaryAttrs>().activation;
    g.replace_value(out, sum);
    add.dead = true;
    consumers = g.consumers();
    changed = true;
  }
  if (changed) g.compact();
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<Model> Model::from_graph(const ir::Graph& source, const ModelOptions& options) {
  return from_graph(ir::Graph(source), options);  // a copy shares the constants' buffers
}

std::shared_ptr<Model> Model::from_graph(ir::Graph&& source, const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ir::Graph g = std::move(source);
  for (ir::ValueId in : g.inputs()) impl->inputs.push_back(info_of(g.value(in)));
  // An int8 graph is executed as given (but for SiLU's two ops made one table): it is already
  // NHWC, and its every tensor has calibrated params that a float rewrite (fusing, folding) would
  // not keep consistent. A graph is int8 when
  // an input or output is quantized or an op other than Quantize/Dequantize reads a quantized
  // value; a QDQ graph (float ops between Quantize -> Dequantize pairs, ONNX Runtime's int8 form)
  // is a float graph: its constant Dequantizes fold into float weights and its activation pairs
  // run as element-wise kernels.
  auto is_quant = [&](ir::ValueId v) { return v != ir::kNoValue && g.value(v).quant.has_value(); };
  const bool quantized =
      std::any_of(g.inputs().begin(), g.inputs().end(), is_quant) ||
      std::any_of(g.outputs().begin(), g.outputs().end(), is_quant) ||
      std::any_of(g.nodes().begin(), g.nodes().end(), [&](const ir::Node& n) {
        if (n.dead || n.op == ir::OpKind::kQuantize || n.op == ir::OpKind::kDequantize) return false;
        return std::any_of(n.inputs.begin(), n.inputs.end(), is_quant);
      });
  fuse_sigmoid_multiply(g, quantized);
  if (!quantized)
    passes::optimize(g, {.fuse_activations = true});
  else
    g.compact();
  std::vector<bool> nchw(g.inputs().size(), false);
  if (!quantized && !has_nhwc_ops(g)) {
    // The graph's 4-D inputs become NHWC; the engine transposes callers' NCHW images on the way
    // in (cheaper than a Transpose node, and the copy into the arena is needed anyway).
    for (size_t i = 0; i < g.inputs().size(); ++i) nchw[i] = g.value(g.inputs()[i]).shape.size() == 4;
    passes::convert_to_nhwc(g, {.nchw_input = false});
  }
  if (!quantized) fuse_residual_add(g);
  for (size_t v = 0; v < g.values().size(); ++v) {
    ir::Value& val = g.value(static_cast<ir::ValueId>(v));
    // Quantized constants (int8 weights, int32 biases) stay integers; the rest become float32.
    if (val.is_constant() && val.constant.dtype() != DType::kFloat32 && !val.quant) {
      val.constant = val.constant.to(DType::kFloat32);
      val.dtype = DType::kFloat32;
    }
  }
  for (ir::ValueId in : g.inputs())
    if (!is_float(g.value(in).dtype) && !quantized_int(g.value(in)))
      throw Error("inputs must be float or quantized int8/uint8, is " + std::string(dtype_name(g.value(in).dtype)),
                  ErrorKind::kUnsupported)
          .tensor(g.value(in).name);
  impl->nchw_input = nchw;
  for (ir::ValueId o : g.outputs()) impl->outputs.push_back(info_of(g.value(o)));
  impl->graph = std::move(g);

  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  impl->threads = std::max(threads, 1);
  if (impl->threads > 1) impl->pool = pthreadpool_create(static_cast<size_t>(impl->threads));
  const char* prof = std::getenv("MODEX_PROFILE");
  impl->profile = prof && *prof && std::strcmp(prof, "0") != 0;
  // Kernels are created now so that unsupported ops fail at load, not at the first request.
  impl->idle.push_back(impl->make_executor());
  return std::shared_ptr<Model>(new Model(std::move(impl)));
}

std::shared_ptr<Model> Model::load(const std::filesystem::path& path, const ModelOptions& options) {
  if (!std::filesystem::exists(path)) throw Error("model file not found", ErrorKind::kIo).file(path.string());
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".onnx") return from_graph(onnx_io::import_onnx(path), options);
  if (ext == ".tflite") return from_graph(tflite_io::read_tflite(path).graph, options);
  Checkpoint ckpt = load_checkpoint(path);
  models::BuildOptions bo;
  bo.num_classes = ckpt.config.num_classes;
  models::BuiltModel built = [&] {
    try {
      return models::build_model(ckpt.weights, bo);
    } catch (Error& e) {
      e.file(path.string());
      throw;
    }
  }();
  ckpt.weights.clear();
  // The same metadata an export of this checkpoint embeds (class names, preprocessing, ...).
  nlohmann::ordered_json meta = models::checkpoint_metadata(built, ckpt.config, models::nominal_input_size(built, ckpt.config));
  for (auto it = meta.begin(); it != meta.end(); ++it)
    built.graph.metadata[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  return from_graph(std::move(built.graph), options);
}

const std::vector<TensorInfo>& Model::inputs() const { return impl_->inputs; }
const std::vector<TensorInfo>& Model::outputs() const { return impl_->outputs; }
const std::map<std::string, std::string>& Model::metadata() const { return impl_->graph.metadata; }
int Model::threads() const { return impl_->threads; }
const ir::Graph& Model::graph() const { return impl_->graph; }
std::vector<Tensor> Model::run(const std::vector<Tensor>& inputs) const { return impl_->run(inputs, false); }
std::vector<Tensor> Model::run_raw(const std::vector<Tensor>& inputs) const { return impl_->run(inputs, true); }
void Model::run_with(const std::vector<Tensor>& inputs, const std::function<void(std::span<const Tensor>)>& use) const {
  impl_->run(inputs, true, &use);
}

std::vector<std::string> Model::kernel_names() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->last_kernel_names;
}

}  // namespace modex
