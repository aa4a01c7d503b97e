// Builders: one function per ONNX op form, lowering a node to IR nodes (or to a tensor evaluated
// at import time, for shape arithmetic). A builder reads every attribute its table row lists and
// rejects values it cannot represent exactly.
#include "io/onnx/reader_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "io/onnx/reader_tensor.h"

namespace modex::onnx_io::reader {
namespace {

using ir::OpKind;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Shared helpers

// Shape arithmetic runs in the importer when every data input is known now and at least one was
// computed here (from Shape() and friends), or all are integers (index math on constants). Float
// ops on constants stay IR nodes for fold_constants.
bool evaluate_here(NodeContext& c, const std::vector<size_t>& inputs) {
  bool any_evaluated = false, all_int = true;
  for (size_t i : inputs) {
    if (!c.has_input(i)) continue;
    if (!c.is_known(i)) return false;
    any_evaluated = any_evaluated || c.is_evaluated(i);
    all_int = all_int && !is_float(c.input_dtype(i));
  }
  return any_evaluated || all_int;
}

std::vector<size_t> all_inputs(NodeContext& c) {
  std::vector<size_t> v(c.input_count());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

// A graph's Value may move when values are added: builders copy what they need first.
ir::Shape shape_of(NodeContext& c, ir::ValueId v) { return c.graph().value(v).shape; }

int64_t checked_mul(const NodeContext& c, int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) c.invalid("size arithmetic overflows");
  return r;
}

// A float scalar constant of the given float dtype.
Tensor float_scalar(double v, DType dtype) {
  Tensor t = Tensor::zeros(DType::kFloat64, {});
  t.data_mutable<double>()[0] = v;
  return cast_tensor(t, dtype);
}

// Explicit [begins..., ends...] pads for a 2-D Conv/pool, resolving auto_pad from the input size.
std::vector<int64_t> resolve_pads(NodeContext& c, const ir::Shape& x,
                                  const std::vector<int64_t>& kernel,
                                  const std::vector<int64_t>& strides,
                                  const std::vector<int64_t>& dilations) {
  const size_t k = kernel.size();
  if (k != 2 || strides.size() != k || dilations.size() != k)
    c.invalid("kernel_shape, strides and dilations must have one entry per spatial dim (2)");
  for (size_t i = 0; i < k; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1)
      c.invalid("kernel_shape, strides and dilations must be >= 1");
    if (kernel[i] > kMaxDim || strides[i] > kMaxDim || dilations[i] > kMaxDim)
      c.invalid("kernel_shape, strides and dilations must be < 2^31");
  }
  const std::string auto_pad = c.attr_string("auto_pad", "NOTSET");
  if (auto_pad == "NOTSET") {
    std::vector<int64_t> pads = c.attr_ints("pads", std::vector<int64_t>(2 * k, 0));
    if (pads.size() != 2 * k) c.invalid("pads must have " + std::to_string(2 * k) + " entries");
    for (int64_t p : pads) {
      if (p < 0) c.fail("negative pads are not supported");
      if (p > kMaxDim) c.invalid("pads must be < 2^31");
    }
    return pads;
  }
  if (c.has_attr("pads")) c.invalid("pads cannot be given together with auto_pad=" + auto_pad);
  if (auto_pad == "VALID") return std::vector<int64_t>(2 * k, 0);
  if (auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    c.invalid("auto_pad=" + auto_pad + " is not a valid value");
  std::vector<int64_t> pads(2 * k);
  for (size_t i = 0; i < k; ++i) {
    // The spec's rule: pad so the output has ceil(in / stride) elements.
    int64_t effective = checked_mul(c, kernel[i] - 1, dilations[i]) + 1;
    int64_t total;
    const ir::Dim& in = x[2 + i];
    if (strides[i] == 1) {
      total = effective - 1;  // independent of the input size
    } else if (in.is_static()) {
      int64_t out = (in.value + strides[i] - 1) / strides[i];
      total = std::max<int64_t>(0, checked_mul(c, out - 1, strides[i]) + effective - in.value);
    } else {
      throw c
          .error("auto_pad=" + auto_pad + " with stride " + std::to_string(strides[i]) +
                 " needs a static input size, but spatial dim " + std::to_string(i) + " of input " +
                 ir::shape_to_string(x) + " is dynamic")
          .hint("give the input a static height and width (the importer's input_shapes option)");
    }
    int64_t begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    pads[i] = begin;
    pads[i + k] = total - begin;
  }
  return pads;
}

void require_rank(NodeContext& c, const ir::Shape& s, size_t rank, const std::string& what) {
  if (s.size() != rank)
    c.fail(what + " (rank " + std::to_string(rank) + " input); the input has shape " +
           ir::shape_to_string(s));
}

// ---------------------------------------------------------------------------------------------
// Neural-network ops

void build_conv(NodeContext& c) {
  c.expect_inputs(2, 3);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0), w = c.tensor(1);
  ir::Shape xs = shape_of(c, x), ws = shape_of(c, w);
  require_rank(c, xs, 4, "only 2-D convolutions are supported");
  if (ws.size() != 4) c.invalid("weight must have rank 4, has shape " + ir::shape_to_string(ws));
  std::optional<Dims> wd = ir::to_dims(ws);
  if (!wd) c.fail("the weight's shape must be static, is " + ir::shape_to_string(ws));
  ir::ConvAttrs a;
  a.kernel = c.attr_ints("kernel_shape", {(*wd)[2], (*wd)[3]});
  a.strides = c.attr_ints("strides", {1, 1});
  a.dilations = c.attr_ints("dilations", {1, 1});
  a.groups = c.attr_int("group", 1);
  if (a.groups < 1 || a.groups > kMaxDim) c.invalid("group must be in [1, 2^31)");
  a.pads = resolve_pads(c, xs, a.kernel, a.strides, a.dilations);
  std::vector<ir::ValueId> inputs{x, w};
  if (c.has_input(2)) inputs.push_back(c.tensor(2));
  c.emit_output(OpKind::kConv, a, inputs);
}

void build_pool(NodeContext& c, OpKind op) {
  const bool max = op == OpKind::kMaxPool;
  c.expect_inputs(1, 1);
  c.expect_outputs(1, max ? 2 : 1);
  if (max && c.has_output(1)) c.fail("the Indices output of MaxPool is not supported");
  ir::ValueId x = c.tensor(0);
  ir::Shape xs = shape_of(c, x);
  require_rank(c, xs, 4, "only 2-D pooling is supported");
  std::optional<std::vector<int64_t>> kernel = c.attr_ints("kernel_shape");
  if (!kernel) c.invalid("attribute 'kernel_shape' is required");
  ir::PoolAttrs a;
  a.kernel = *kernel;
  a.strides = c.attr_ints("strides", std::vector<int64_t>(kernel->size(), 1));
  a.dilations = max ? c.attr_ints("dilations", std::vector<int64_t>(kernel->size(), 1))
                    : std::vector<int64_t>(kernel->size(), 1);
  a.ceil_mode = c.attr_flag("ceil_mode", false);
  if (max) {
    // Only changes how the Indices output is numbered, and that output is refused above.
    c.attr_flag("storage_order", false);
  } else {
    a.count_include_pad = c.attr_flag("count_include_pad", false);
  }
  a.pads = resolve_pads(c, xs, a.kernel, a.strides, a.dilations);
  c.emit_output(op, a, {x});
}

void build_max_pool(NodeContext& c) { build_pool(c, OpKind::kMaxPool); }
void build_average_pool(NodeContext& c) { build_pool(c, OpKind::kAveragePool); }

void build_batchnorm(NodeContext& c) {
  c.expect_inputs(5, 5);
  c.expect_outputs(1, 5);
  if (c.attr_flag("training_mode", false))
    c.fail("training_mode=1 is not supported; export the model in eval mode");
  for (size_t i = 1; i < c.output_count(); ++i)
    if (c.has_output(i))
      c.fail(
          "the running mean/variance outputs (training mode) are not supported; export the model "
          "in eval mode");
  c.attr_float("momentum", 0.9f);  // only updates running statistics in training
  ir::BatchNormAttrs a;
  a.epsilon = c.attr_float("epsilon", 1e-5f);
  std::vector<ir::ValueId> inputs;
  for (size_t i = 0; i < 5; ++i) inputs.push_back(c.tensor(i));
  c.emit_output(OpKind::kBatchNorm, a, inputs);
}

template <OpKind kOp>
void build_unary(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  c.emit_output(kOp, ir::default_attrs(kOp), {c.tensor(0)});
}

void build_clip(NodeContext& c) {
  c.expect_inputs(1, 3);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0);
  double lo = c.has_input(1) ? c.static_scalar(1, "min") : -kInf;
  double hi = c.has_input(2) ? c.static_scalar(2, "max") : kInf;
  if (std::isnan(lo) || std::isnan(hi)) c.invalid("Clip bounds must not be NaN");
  if (lo == 0.0 && hi == kInf) return c.emit_output(OpKind::kRelu, ir::NoAttrs{}, {x});
  if (lo == -kInf && hi == kInf) return c.emit_output(OpKind::kIdentity, ir::NoAttrs{}, {x});
  // Bounds outside float range clip nothing a float32 tensor can hold.
  auto to_float = [](double v) {
    return std::fabs(v) > std::numeric_limits<float>::max()
               ? static_cast<float>(v > 0 ? kInf : -kInf)
               : static_cast<float>(v);
  };
  ir::ClipAttrs a;
  a.min = to_float(lo);
  a.max = to_float(hi);
  c.emit_output(OpKind::kClip, a, {x});
}

void build_leaky_relu(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::LeakyReluAttrs a;
  a.alpha = c.attr_float("alpha", 0.01f);
  c.emit_output(OpKind::kLeakyRelu, a, {c.tensor(0)});
}

void build_hard_sigmoid(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::HardSigmoidAttrs a;
  a.alpha = c.attr_float("alpha", 0.2f);
  a.beta = c.attr_float("beta", 0.5f);
  c.emit_output(OpKind::kHardSigmoid, a, {c.tensor(0)});
}

void build_prelu(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  c.emit_output(OpKind::kPRelu, ir::NoAttrs{}, {c.tensor(0), c.tensor(1)});
}

template <OpKind kOp, SymBinaryOp kSym>
void build_binary(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  if (evaluate_here(c, {0, 1})) return c.set_output(0, sym_binary(kSym, c.known(0), c.known(1)));
  c.emit_output(kOp, ir::BinaryAttrs{}, {c.tensor(0), c.tensor(1)});
}

Tensor transpose_2d(const Tensor& t) {
  const int64_t rows = t.dim(0), cols = t.dim(1);
  const size_t es = dtype_size(t.dtype());
  Tensor out = Tensor::zeros(t.dtype(), {cols, rows});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k)
      std::copy_n(t.raw() + static_cast<size_t>(r * cols + k) * es, es,
                  out.raw_mutable() + static_cast<size_t>(k * rows + r) * es);
  return out;
}

// factor * t, broadcast to `shape` (t's shape must broadcast to it), in t's float dtype.
Tensor scaled(const Tensor& t, double factor, const Dims& shape) {
  Tensor wide = Tensor::zeros(DType::kFloat64, shape);
  const int64_t n = wide.numel();
  for (int64_t k = 0; k < n; ++k)
    wide.data_mutable<double>()[k] = factor * float_element(t, t.numel() == n ? k : k % t.numel());
  return cast_tensor(wide, t.dtype());
}

// C shapes that are one value per output column (or one value overall): [], [1], [N], [1,1], [1,N].
bool is_per_column(const Dims& s, int64_t n) {
  if (s.size() > 2) return false;
  if (s.size() == 2 && s[0] != 1) return false;
  return s.empty() || s.back() == 1 || s.back() == n;
}

// True when input i is a static-shaped float value made by a Dequantize of a constant.
bool dequantized_weight(NodeContext& c, size_t i, DType dtype) {
  if (!c.has_input(i) || c.is_evaluated(i) || c.constant(i)) return false;
  const ir::Graph& g = c.graph();
  const ir::Value& v = g.value(c.tensor(i));
  if (v.dtype != dtype || v.producer < 0 || !ir::to_dims(v.shape)) return false;
  const ir::Node& p = g.node(v.producer);
  return p.op == OpKind::kDequantize && g.value(p.inputs[0]).is_constant();
}

// Gemm -> the IR's Gemm (y = x·Wᵀ + b, W constant [O, I]) where B is constant; MatMul otherwise.
void build_gemm(NodeContext& c) {
  c.expect_inputs(2, 3);
  c.expect_outputs(1, 1);
  const double alpha = c.attr_float("alpha", 1.0f);
  const double beta = c.attr_float("beta", 1.0f);
  const bool trans_a = c.attr_flag("transA", false);
  const bool trans_b = c.attr_flag("transB", false);
  ir::ValueId a = c.tensor(0);
  const DType dtype = c.graph().value(a).dtype;
  if (shape_of(c, a).size() != 2)
    c.invalid("A must be a matrix, has shape " + ir::shape_to_string(shape_of(c, a)));
  if (!is_float(dtype))
    c.fail("Gemm on " + std::string(dtype_name(dtype)) + " tensors is not supported");
  if (trans_a)
    a = c.emit_helper(OpKind::kTranspose, ir::TransposeAttrs{{1, 0}}, {a}, "transpose_a");
  const bool use_c = c.has_input(2) && beta != 0.0;

  std::optional<Tensor> b_const = c.constant(1);
  ir::ValueId y = ir::kNoValue;
  if (b_const && b_const->rank() == 2 && b_const->dtype() == dtype) {
    ir::ValueId w;
    if (trans_b && alpha == 1.0) {
      w = c.tensor(1);  // already [O, I]: share the initializer
    } else {
      Tensor wt = trans_b ? *b_const : transpose_2d(*b_const);
      w = c.add_constant(alpha == 1.0 ? wt : scaled(wt, alpha, wt.shape()), "weight");
    }
    const int64_t n = c.graph().value(w).constant.dim(0);
    std::vector<ir::ValueId> inputs{a, w};
    std::optional<Tensor> c_const = use_c ? c.constant(2) : std::nullopt;
    bool add_c = use_c;
    if (c_const && c_const->dtype() == dtype && is_per_column(c_const->shape(), n)) {
      bool as_is = beta == 1.0 && c_const->shape() == Dims{n};
      inputs.push_back(as_is ? c.tensor(2) : c.add_constant(scaled(*c_const, beta, {n}), "bias"));
      add_c = false;
    }
    if (!add_c) return c.emit_output(OpKind::kGemm, ir::GemmAttrs{}, inputs);
    y = c.emit_helper(OpKind::kGemm, ir::GemmAttrs{}, inputs, "gemm");
  } else if (trans_b && alpha == 1.0 && dequantized_weight(c, 1, dtype) && shape_of(c, c.tensor(1)).size() == 2) {
    // A QDQ model's B is DequantizeLinear(int8 initializer): constant once folded, so still the
    // IR's Gemm (and its C, dequantized the same way, the bias).
    ir::ValueId w = c.tensor(1);
    const ir::Dim n = shape_of(c, w)[0];
    std::vector<ir::ValueId> inputs{a, w};
    bool add_c = use_c;
    if (use_c && beta == 1.0 && dequantized_weight(c, 2, dtype)) {
      const ir::Shape cs = shape_of(c, c.tensor(2));
      if (cs.size() == 1 && cs[0] == n) {
        inputs.push_back(c.tensor(2));
        add_c = false;
      }
    }
    if (!add_c) return c.emit_output(OpKind::kGemm, ir::GemmAttrs{}, inputs);
    y = c.emit_helper(OpKind::kGemm, ir::GemmAttrs{}, inputs, "gemm");
  } else {
    ir::ValueId b = c.tensor(1);
    if (shape_of(c, b).size() != 2)
      c.invalid("B must be a matrix, has shape " + ir::shape_to_string(shape_of(c, b)));
    if (trans_b)
      b = c.emit_helper(OpKind::kTranspose, ir::TransposeAttrs{{1, 0}}, {b}, "transpose_b");
    if (alpha == 1.0) {
      if (!use_c) return c.emit_output(OpKind::kMatMul, ir::NoAttrs{}, {a, b});
      y = c.emit_helper(OpKind::kMatMul, ir::NoAttrs{}, {a, b}, "matmul");
    } else {
      ir::ValueId ab = c.emit_helper(OpKind::kMatMul, ir::NoAttrs{}, {a, b}, "matmul");
      ir::ValueId s = c.add_constant(float_scalar(alpha, dtype), "alpha");
      if (!use_c) return c.emit_output(OpKind::kMul, ir::BinaryAttrs{}, {ab, s});
      y = c.emit_helper(OpKind::kMul, ir::BinaryAttrs{}, {ab, s}, "alpha_mul");
    }
  }
  // y + beta * C for a C that is not a per-column bias.
  ir::ValueId cv = c.tensor(2);
  if (beta != 1.0) {
    if (std::optional<Tensor> cc = c.constant(2))
      cv = c.add_constant(scaled(*cc, beta, cc->shape()), "beta_c");
    else
      cv = c.emit_helper(OpKind::kMul, ir::BinaryAttrs{},
                         {cv, c.add_constant(float_scalar(beta, dtype), "beta")}, "beta_mul");
  }
  c.emit_output(OpKind::kAdd, ir::BinaryAttrs{}, {y, cv});
}

// ---------------------------------------------------------------------------------------------
// Quantization (QDQ models): QuantizeLinear -> Quantize, DequantizeLinear -> Dequantize, with the
// scale and zero point (constant inputs in ONNX) stored on the quantized value.

// The scale / zero-point inputs 1 and 2 of a QuantizeLinear/DequantizeLinear as IR params for a
// value of `shape`; `zp_dtype` receives the zero point's type (uint8 when it is omitted).
ir::QuantParams read_quant_params(NodeContext& c, const ir::Shape& shape, DType& zp_dtype) {
  std::optional<Tensor> scale = c.constant(1);
  if (!scale) c.fail("the scale (" + c.describe_input(1) + ") must be a constant");
  if (scale->dtype() != DType::kFloat32) c.invalid("the scale must be float32, is " + std::string(dtype_name(scale->dtype())));
  if (scale->rank() > 1 || scale->numel() < 1) c.invalid("the scale must be a scalar or 1-D, has " + std::to_string(scale->rank()) + " dims");
  std::optional<Tensor> zp;
  if (c.has_input(2)) {
    zp = c.constant(2);
    if (!zp) c.fail("the zero point (" + c.describe_input(2) + ") must be a constant");
    if (zp->shape() != scale->shape()) c.invalid("the zero point's shape differs from the scale's");
    zp_dtype = zp->dtype();
    if (zp_dtype != DType::kInt8 && zp_dtype != DType::kUInt8 && zp_dtype != DType::kInt32)
      c.fail("zero points of type " + std::string(dtype_name(zp_dtype)) + " are not supported (int8, uint8, int32)");
  } else {
    zp_dtype = DType::kUInt8;
  }
  ir::QuantParams p;
  for (int64_t i = 0; i < scale->numel(); ++i) {
    float s = scale->data<float>()[i];
    if (!(s > 0.0f) || !std::isfinite(s)) c.invalid("scales must be positive and finite, scale[" + std::to_string(i) + "] is " + std::to_string(s));
    p.scale.push_back(s);
    p.zero_point.push_back(zp ? int_element(*zp, i) : 0);
  }
  if (scale->rank() == 1) {
    if (c.opset() < 13) c.invalid("a 1-D scale (per-axis quantization) needs opset >= 13");
    int64_t rank = static_cast<int64_t>(shape.size());
    int64_t axis = c.attr_int("axis", 1);
    if (axis < -rank || axis >= rank) c.invalid("axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
    if (axis < 0) axis += rank;
    const ir::Dim& d = shape[static_cast<size_t>(axis)];
    if (!d.is_static() || d.value != scale->numel())
      c.invalid("a per-axis scale of " + std::to_string(scale->numel()) + " values needs dim " + std::to_string(axis) +
                " of " + ir::shape_to_string(shape) + " to be that size");
    p.axis = static_cast<int32_t>(axis);
    if (scale->numel() == 1) {
      p.axis = 0;  // a one-element 1-D scale is per tensor
    }
  } else if (c.opset() >= 13) {
    c.attr_int("axis", 1);  // ignored for a scalar scale
  }
  return p;
}

void build_quantize_linear(NodeContext& c) {
  c.expect_inputs(2, 3);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0);
  ir::Shape xs = shape_of(c, x);
  if (c.graph().value(x).dtype != DType::kFloat32)
    c.fail("only float32 inputs are supported, the input is " + std::string(dtype_name(c.graph().value(x).dtype)));
  DType to = DType::kUInt8;
  ir::QuantParams p = read_quant_params(c, xs, to);
  if (to != DType::kInt8 && to != DType::kUInt8)
    c.fail("only int8 and uint8 outputs are supported, the zero point is " + std::string(dtype_name(to)));
  ir::ValueId q = c.graph().add_node1(OpKind::kQuantize, ir::QuantizeAttrs{to}, {x}, c.name());
  c.graph().value(q).quant = p;
  c.set_output(0, q);
}

void build_dequantize_linear(NodeContext& c) {
  c.expect_inputs(2, 3);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0);
  const DType xt = c.graph().value(x).dtype;
  if (xt != DType::kInt8 && xt != DType::kUInt8 && xt != DType::kInt32)
    c.fail("only int8, uint8 and int32 inputs are supported, the input is " + std::string(dtype_name(xt)));
  DType zt = xt;
  ir::QuantParams p = read_quant_params(c, shape_of(c, x), zt);
  if (c.has_input(2) && zt != xt) c.invalid("the zero point is " + std::string(dtype_name(zt)) + ", the input " + std::string(dtype_name(xt)));
  if (xt == DType::kInt32)
    for (int64_t z : p.zero_point)
      if (z != 0) c.invalid("an int32 input needs zero point 0");
  const ir::Value& v = c.graph().value(x);
  if (!v.quant) {
    c.graph().value(x).quant = p;
  } else if (*v.quant != p) {
    // The IR keeps one set of params per integer value: a constant read with other params gets a
    // copy; a computed value (a QuantizeLinear's output) must be read with the params it was made with.
    if (!v.is_constant())
      c.fail("the scale/zero point differ from those '" + v.name + "' was quantized with; modex needs them to agree");
    Tensor copy = v.constant;
    x = c.add_constant(std::move(copy), "x");
    c.graph().value(x).quant = p;
  }
  c.set_output(0, c.graph().add_node1(OpKind::kDequantize, ir::NoAttrs{}, {x}, c.name()));
}

void build_matmul(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  c.emit_output(OpKind::kMatMul, ir::NoAttrs{}, {c.tensor(0), c.tensor(1)});
}

// Softmax before opset 13 flattens the input to 2-D at `axis` and normalises each row. That is
// the per-axis softmax of the IR only when at most one of the flattened dims can differ from 1.
void build_softmax_v1(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0);
  ir::Shape xs = shape_of(c, x);
  const int64_t r = static_cast<int64_t>(xs.size());
  const int64_t given = c.attr_int("axis", 1);
  if (given < -r || given >= r)
    c.invalid("axis " + std::to_string(given) + " is out of range for shape " +
              ir::shape_to_string(xs));
  const int64_t axis = given < 0 ? given + r : given;
  std::vector<int64_t> wide;
  for (int64_t d = axis; d < r; ++d)
    if (!(xs[static_cast<size_t>(d)].is_static() && xs[static_cast<size_t>(d)].value == 1))
      wide.push_back(d);
  if (wide.size() > 1)
    c.fail(
        "Softmax with axis=" + std::to_string(given) + " on shape " + ir::shape_to_string(xs) +
        " normalises over dims " + std::to_string(axis) + ".." + std::to_string(r - 1) +
        " together (the coerce-to-2-D semantics before opset 13), which is not a per-axis softmax; "
        "modex supports it only when the axis is the last dim (or the dims after it are 1)");
  const int64_t per_axis = wide.empty() ? axis : wide[0];
  ir::AxisAttrs a;
  a.axis = per_axis == axis ? given : per_axis;
  c.emit_output(OpKind::kSoftmax, a, {x});
}

void build_softmax_v13(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::AxisAttrs a;
  a.axis = c.attr_int("axis", -1);
  c.emit_output(OpKind::kSoftmax, a, {c.tensor(0)});
}

void build_reduce_mean(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::ReduceAttrs a;
  a.axes = c.attr_ints("axes", {});
  a.keepdims = c.attr_flag("keepdims", true);
  c.emit_output(OpKind::kReduceMean, a, {c.tensor(0)});
}

void build_global_average_pool(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  c.emit_output(OpKind::kGlobalAveragePool, ir::NoAttrs{}, {c.tensor(0)});
}

void build_pad(NodeContext& c) {
  c.expect_inputs(2, 3);
  c.expect_outputs(1, 1);
  const std::string mode = c.attr_string("mode", "constant");
  if (mode != "constant")
    c.fail("mode=" + mode + " is not supported; modex pads with a constant only");
  ir::ValueId x = c.tensor(0);
  const size_t rank = shape_of(c, x).size();
  ir::PadAttrs a;
  a.pads = c.static_ints(1, "pads");
  if (a.pads.size() != 2 * rank)
    c.invalid("pads has " + std::to_string(a.pads.size()) + " entries; a rank-" +
              std::to_string(rank) + " input needs " + std::to_string(2 * rank));
  for (int64_t p : a.pads) {
    if (p < 0) c.fail("negative pads (cropping) are not supported");
    if (p > kMaxDim) c.invalid("pads must be < 2^31");
  }
  if (c.has_input(2)) {
    double v = c.static_scalar(2, "constant_value");
    if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max())
      c.fail("constant_value does not fit float32");
    a.value = static_cast<float>(v);
  }
  c.emit_output(OpKind::kPad, a, {x});
}

// ---------------------------------------------------------------------------------------------
// Shape and structure ops (evaluated here when their data is known at import time)

void build_flatten(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  ir::ValueId x = c.tensor(0);
  const int64_t rank = static_cast<int64_t>(shape_of(c, x).size());
  ir::FlattenAttrs a;
  a.axis = c.attr_int("axis", 1);
  if (a.axis < -rank || a.axis > rank)
    c.invalid("axis " + std::to_string(a.axis) + " is out of range for rank " +
              std::to_string(rank));
  // ONNX's negative axis counts from the rank (-1 on rank 4 is 3). Written out as non-negative
  // because the IR's shape function offsets negative Flatten axes by rank + 1.
  if (a.axis < 0) a.axis += rank;
  c.emit_output(OpKind::kFlatten, a, {x});
}

// Whether a run-time element of a Reshape target is the input's own dim i (then it becomes 0).
bool is_own_dim(const SymElem& e, ir::ValueId x, size_t i, const ir::Dim& d) {
  if (e.origin == x && e.origin_axis == static_cast<int64_t>(i)) return true;
  return !e.symbol.empty() && !d.is_static() && d.symbol == e.symbol;
}

// The IR target (static dims, 0 = copy, -1 = infer) for a target tensor that may hold run-time
// dims: a dim equal to the input's own dim at that position becomes 0, and one other run-time
// value can become -1. When every dynamic input dim is copied, the -1 is computed.
std::vector<int64_t> resolve_reshape_target(NodeContext& c, ir::ValueId x, const ir::Shape& xs,
                                            const SymTensor& target, bool allowzero) {
  if (target.shape.size() != 1)
    c.invalid("the target shape must be a 1-D tensor, has shape " + dims_to_string(target.shape));
  if (is_float(target.dtype)) c.invalid("the target shape must be an integer tensor");
  std::vector<int64_t> out;
  int infer_at = -1;
  auto infer_here = [&](size_t i, const std::string& what) {
    if (infer_at >= 0)
      c.fail("cannot resolve the Reshape target at import time: elements " +
             std::to_string(infer_at) + " and " + std::to_string(i) +
             " are both unknown until run time (" + what + ")");
    infer_at = static_cast<int>(i);
    out.push_back(-1);
  };
  for (size_t i = 0; i < target.elems.size(); ++i) {
    const SymElem& e = target.elems[i];
    if (e.dynamic) {
      if (i < xs.size() && is_own_dim(e, x, i, xs[i]))
        out.push_back(0);
      else
        infer_here(i, target.describe_dynamic());
    } else if (e.i == 0) {
      if (allowzero)
        c.fail(
            "allowzero=1 with a 0 in the target makes a zero-sized tensor, which modex does not "
            "support");
      out.push_back(0);
    } else if (e.i == -1) {
      infer_here(i, "a -1 in the target");
    } else if (e.i < -1) {
      c.invalid("invalid target dim " + std::to_string(e.i));
    } else {
      out.push_back(e.i);
    }
  }
  int64_t product = 1;
  for (int64_t d : out)
    if (d > 0 && (__builtin_mul_overflow(product, d, &product) || product > kMaxElements))
      c.invalid("the Reshape target " + dims_to_string(out) + " is too large");
  if (infer_at >= 0) {
    int64_t rest = 1, known = 1;
    bool computable = true;
    for (size_t j = 0; j < xs.size(); ++j) {
      if (j < out.size() && out[j] == 0) continue;  // copied: on both sides of the equation
      if (!xs[j].is_static())
        computable = false;
      else if (__builtin_mul_overflow(rest, xs[j].value, &rest))
        computable = false;
    }
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i] > 0 && __builtin_mul_overflow(known, out[i], &known)) computable = false;
    if (computable && known > 0 && rest % known == 0)
      out[static_cast<size_t>(infer_at)] = rest / known;
  }
  return out;
}

void build_reshape(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  const bool allowzero = c.attr_flag("allowzero", false);
  if (!c.is_known(1))
    c.fail("the target shape (input 1) must be a constant or computable at import time");
  const SymTensor target = c.known(1);
  if (evaluate_here(c, {0}))
    return c.set_output(
        0, sym_reshape(c.known(0), sym_static_ints(target, "the Reshape target"), allowzero));
  ir::ValueId x = c.tensor(0);
  ir::ReshapeAttrs a;
  a.shape = resolve_reshape_target(c, x, shape_of(c, x), target, allowzero);
  c.emit_output(OpKind::kReshape, a, {x});
}

void build_squeeze(NodeContext& c, std::vector<int64_t> axes) {
  if (evaluate_here(c, {0})) return c.set_output(0, sym_squeeze(c.known(0), axes));
  ir::ValueId x = c.tensor(0);
  ir::Shape xs = shape_of(c, x);
  if (axes.empty()) {
    // Which dims are 1 must be known now: a dynamic dim might be 1 at run time.
    for (size_t d = 0; d < xs.size(); ++d) {
      if (!xs[d].is_static())
        c.fail("Squeeze without axes on shape " + ir::shape_to_string(xs) + " is ambiguous: dim " +
               std::to_string(d) + " is dynamic");
      if (xs[d].value == 1) axes.push_back(static_cast<int64_t>(d));
    }
  }
  c.emit_output(OpKind::kSqueeze, ir::AxesAttrs{axes}, {x});
}

void build_squeeze_v1(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  build_squeeze(c, c.attr_ints("axes", {}));
}

void build_squeeze_v13(NodeContext& c) {
  c.expect_inputs(1, 2);
  c.expect_outputs(1, 1);
  build_squeeze(c, c.has_input(1) ? c.static_ints(1, "axes") : std::vector<int64_t>{});
}

void build_unsqueeze(NodeContext& c, const std::vector<int64_t>& axes) {
  if (axes.empty()) c.invalid("axes must not be empty");
  if (evaluate_here(c, {0})) return c.set_output(0, sym_unsqueeze(c.known(0), axes));
  c.emit_output(OpKind::kUnsqueeze, ir::AxesAttrs{axes}, {c.tensor(0)});
}

void build_unsqueeze_v1(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  std::optional<std::vector<int64_t>> axes = c.attr_ints("axes");
  if (!axes) c.invalid("attribute 'axes' is required");
  build_unsqueeze(c, *axes);
}

void build_unsqueeze_v13(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  build_unsqueeze(c, c.static_ints(1, "axes"));
}

void build_transpose(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  std::vector<int64_t> perm = c.attr_ints("perm", {});
  if (evaluate_here(c, {0})) return c.set_output(0, sym_transpose(c.known(0), perm));
  c.emit_output(OpKind::kTranspose, ir::TransposeAttrs{perm}, {c.tensor(0)});
}

void build_concat(NodeContext& c) {
  c.expect_inputs(1, std::numeric_limits<size_t>::max());
  c.expect_outputs(1, 1);
  if (!c.has_attr("axis")) c.invalid("attribute 'axis' is required");
  const int64_t axis = c.attr_int("axis", 0);
  std::vector<size_t> inputs = all_inputs(c);
  for (size_t i : inputs)
    if (!c.has_input(i)) c.invalid("input " + std::to_string(i) + " has no name");
  if (evaluate_here(c, inputs)) {
    std::vector<const SymTensor*> parts;
    for (size_t i : inputs) parts.push_back(&c.known(i));
    return c.set_output(0, sym_concat(parts, axis));
  }
  std::vector<ir::ValueId> values;
  for (size_t i : inputs) values.push_back(c.tensor(i));
  // The output's dim along the axis is the sum of the inputs': keep it a sane size.
  int64_t total = 0;
  for (ir::ValueId v : values) {
    const ir::Shape& s = c.graph().value(v).shape;
    if (axis < -static_cast<int64_t>(s.size()) || axis >= static_cast<int64_t>(s.size()))
      continue;  // the IR reports it
    const ir::Dim& d =
        s[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(s.size()) : axis)];
    if (d.is_static() && (total += d.value) > kMaxElements)
      c.invalid("the concatenated tensor is too large");
  }
  c.emit_output(OpKind::kConcat, ir::AxisAttrs{axis}, values);
}

// Output 0 = input 0 (Identity, inference-mode Dropout).
void forward_input(NodeContext& c) {
  if (c.is_evaluated(0)) return c.set_output(0, c.known(0));
  c.emit_output(OpKind::kIdentity, ir::NoAttrs{}, {c.tensor(0)});
}

void build_identity(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  forward_input(c);
}

// Inference-mode Dropout is the identity; its mask output would be all ones, and modex refuses a
// model that reads it rather than materialise it.
void build_dropout(NodeContext& c) {
  c.expect_outputs(1, 2);
  if (c.output_used(1))
    c.fail("the mask output of Dropout is used; modex supports inference-mode Dropout without it");
  forward_input(c);
}

void build_dropout_v10(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.attr_float("ratio", 0.5f);  // only used in training
  build_dropout(c);
}

void build_dropout_v12(NodeContext& c) {
  c.expect_inputs(1, 3);
  c.attr_int("seed", 0);  // only used in training
  if (c.has_input(2) && c.static_scalar(2, "training_mode") != 0.0)
    c.fail("training_mode=true is not supported; export the model in eval mode");
  build_dropout(c);
}

void build_constant(NodeContext& c) {
  c.expect_inputs(0, 0);
  c.expect_outputs(1, 1);
  static const char* const kForms[] = {"value",        "sparse_value", "value_float",
                                       "value_floats", "value_int",    "value_ints",
                                       "value_string", "value_strings"};
  int forms = 0;
  for (const char* f : kForms) forms += c.has_attr(f) ? 1 : 0;
  if (forms != 1)
    c.invalid("a Constant needs exactly one value attribute, has " + std::to_string(forms));
  Tensor t;
  if (c.has_attr("value")) {
    t = c.attr_tensor_value("value");
  } else if (c.has_attr("value_float")) {
    t = Tensor::scalar_float(c.attr_float("value_float", 0.0f));
  } else if (c.has_attr("value_floats")) {
    std::vector<float> v = c.attr_floats("value_floats");
    t = Tensor::from_floats({static_cast<int64_t>(v.size())}, v);
  } else if (c.has_attr("value_int")) {
    int64_t v = c.attr_int("value_int", 0);
    t = Tensor::from_int64s({}, std::span<const int64_t>(&v, 1));
  } else if (c.has_attr("value_ints")) {
    std::vector<int64_t> v = c.attr_ints("value_ints", {});
    t = Tensor::from_int64s({static_cast<int64_t>(v.size())}, v);
  } else if (c.has_attr("sparse_value")) {
    c.fail("sparse constants are not supported");
  } else {
    c.fail("string constants are not supported");
  }
  c.set_output(0, c.add_constant(std::move(t), "value"));
}

void build_shape(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  const int64_t start = c.attr_int("start", 0);
  const int64_t end = c.attr_int("end", std::numeric_limits<int64_t>::max());
  if (c.is_evaluated(0)) return c.set_output(0, sym_shape_of(c.known(0), start, end));
  ir::ValueId x = c.tensor(0);
  c.set_output(0, sym_shape_of(c.graph().value(x), x, start, end));
}

void build_size(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  if (c.is_evaluated(0)) {
    ir::Value v;
    v.shape = ir::static_shape(c.known(0).shape);
    return c.set_output(0, sym_size_of(v));
  }
  c.set_output(0, sym_size_of(c.graph().value(c.tensor(0))));
}

void build_gather(NodeContext& c) {
  c.expect_inputs(2, 2);
  c.expect_outputs(1, 1);
  const int64_t axis = c.attr_int("axis", 0);
  if (!c.is_known(0))
    c.fail(
        "Gather is supported only on shape computations and small constants (modex's IR has no "
        "Gather); " +
        c.describe_input(0) + " is computed at run time or too large");
  if (!c.is_known(1)) c.fail("the Gather indices must be constant");
  c.set_output(0, sym_gather(c.known(0), c.known(1), axis));
}

void build_slice(NodeContext& c) {
  c.expect_inputs(3, 5);
  c.expect_outputs(1, 1);
  if (!c.is_known(0))
    c.fail(
        "Slice is supported only on shape computations and small constants (modex's IR has no "
        "Slice); " +
        c.describe_input(0) + " is computed at run time or too large");
  std::vector<int64_t> starts = c.static_ints(1, "starts");
  std::vector<int64_t> ends = c.static_ints(2, "ends");
  std::vector<int64_t> axes = c.has_input(3) ? c.static_ints(3, "axes") : std::vector<int64_t>{};
  std::vector<int64_t> steps = c.has_input(4) ? c.static_ints(4, "steps") : std::vector<int64_t>{};
  c.set_output(0, sym_slice(c.known(0), starts, ends, axes, steps));
}

void build_cast(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  if (!c.has_attr("to")) c.invalid("attribute 'to' is required");
  const int64_t code = c.attr_int("to", 0);
  std::optional<DType> to = code >= INT32_MIN && code <= INT32_MAX
                                ? dtype_from_onnx(static_cast<int32_t>(code))
                                : std::nullopt;
  if (!to)
    c.fail("Cast to " +
           onnx_dtype_name(static_cast<int32_t>(std::clamp<int64_t>(code, INT32_MIN, INT32_MAX))) +
           " is not supported");
  if (c.is_known(0)) return c.set_output(0, sym_cast(c.known(0), *to));
  if (std::optional<Tensor> t = c.constant(0))
    return c.set_output(0, c.add_constant(cast_tensor(*t, *to), "value"));
  ir::ValueId x = c.tensor(0);
  DType from = c.graph().value(x).dtype;
  if (from != *to)
    c.fail("Cast of a tensor computed at run time from " + std::string(dtype_name(from)) + " to " +
           std::string(dtype_name(*to)) + " is not supported (modex's IR has no Cast)");
  c.emit_output(OpKind::kIdentity, ir::NoAttrs{}, {x});
}

void build_constant_of_shape(NodeContext& c) {
  c.expect_inputs(1, 1);
  c.expect_outputs(1, 1);
  Dims shape = c.static_ints(0, "the output shape");
  Tensor value = c.has_attr("value") ? c.attr_tensor_value("value") : Tensor::scalar_float(0.0f);
  if (value.numel() != 1) c.invalid("attribute 'value' must have one element");
  int64_t numel = checked_numel(shape);
  if (numel <= kMaxSymbolicElements)
    return c.set_output(0, sym_constant_of_shape(shape, sym_from_tensor(value)));
  // Larger fills become an IR constant; far beyond any classifier's needs is a hostile file.
  constexpr int64_t kMaxBytes = int64_t{1} << 26;
  if (numel > kMaxBytes / static_cast<int64_t>(dtype_size(value.dtype())))
    c.fail("ConstantOfShape of shape " + dims_to_string(shape) + " is too large to materialise");
  Tensor out = Tensor::zeros(value.dtype(), shape);
  const size_t es = dtype_size(value.dtype());
  for (int64_t k = 0; k < numel; ++k)
    std::copy_n(value.raw(), es, out.raw_mutable() + static_cast<size_t>(k) * es);
  c.set_output(0, c.add_constant(std::move(out), "value"));
}

// ---------------------------------------------------------------------------------------------
// The table

const std::vector<OpRule>& rules() {
  // One row per form reads as a table; kept unwrapped.
  // clang-format off
  static const std::vector<OpRule> table = {
      {"Conv", 11, 17, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}, build_conv},
      {"BatchNormalization", 11, 13, {"epsilon", "momentum"}, build_batchnorm},
      {"BatchNormalization", 14, 17, {"epsilon", "momentum", "training_mode"}, build_batchnorm},
      {"Relu", 11, 17, {}, build_unary<OpKind::kRelu>},
      {"Sigmoid", 11, 17, {}, build_unary<OpKind::kSigmoid>},
      {"Tanh", 11, 17, {}, build_unary<OpKind::kTanh>},
      {"HardSwish", 14, 17, {}, build_unary<OpKind::kHardSwish>},
      {"Clip", 11, 17, {}, build_clip},
      {"LeakyRelu", 11, 17, {"alpha"}, build_leaky_relu},
      {"PRelu", 11, 17, {}, build_prelu},
      {"HardSigmoid", 11, 17, {"alpha", "beta"}, build_hard_sigmoid},
      {"Add", 11, 17, {}, build_binary<OpKind::kAdd, SymBinaryOp::kAdd>},
      {"Sub", 11, 17, {}, build_binary<OpKind::kSub, SymBinaryOp::kSub>},
      {"Mul", 11, 17, {}, build_binary<OpKind::kMul, SymBinaryOp::kMul>},
      {"Div", 11, 17, {}, build_binary<OpKind::kDiv, SymBinaryOp::kDiv>},
      {"GlobalAveragePool", 11, 17, {}, build_global_average_pool},
      {"AveragePool", 11, 17, {"auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"}, build_average_pool},
      {"MaxPool", 11, 17, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"}, build_max_pool},
      {"Flatten", 11, 17, {"axis"}, build_flatten},
      {"Reshape", 11, 13, {}, build_reshape},
      {"Reshape", 14, 17, {"allowzero"}, build_reshape},
      {"Squeeze", 11, 12, {"axes"}, build_squeeze_v1},
      {"Squeeze", 13, 17, {}, build_squeeze_v13},
      {"Unsqueeze", 11, 12, {"axes"}, build_unsqueeze_v1},
      {"Unsqueeze", 13, 17, {}, build_unsqueeze_v13},
      {"Transpose", 11, 17, {"perm"}, build_transpose},
      {"Concat", 11, 17, {"axis"}, build_concat},
      {"Pad", 11, 17, {"mode"}, build_pad},
      {"Gemm", 11, 17, {"alpha", "beta", "transA", "transB"}, build_gemm},
      {"MatMul", 11, 17, {}, build_matmul},
      {"QuantizeLinear", 11, 12, {}, build_quantize_linear},
      {"QuantizeLinear", 13, 17, {"axis"}, build_quantize_linear},
      {"DequantizeLinear", 11, 12, {}, build_dequantize_linear},
      {"DequantizeLinear", 13, 17, {"axis"}, build_dequantize_linear},
      {"Softmax", 11, 12, {"axis"}, build_softmax_v1},
      {"Softmax", 13, 17, {"axis"}, build_softmax_v13},
      {"ReduceMean", 11, 17, {"axes", "keepdims"}, build_reduce_mean},
      {"Constant", 11, 11, {"value", "sparse_value"}, build_constant},
      {"Constant", 12, 17, {"value", "sparse_value", "value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings"}, build_constant},
      {"Identity", 11, 17, {}, build_identity},
      {"Dropout", 11, 11, {"ratio"}, build_dropout_v10},
      {"Dropout", 12, 17, {"seed"}, build_dropout_v12},
      // Shape arithmetic, evaluated at import time.
      {"Shape", 11, 14, {}, build_shape},
      {"Shape", 15, 17, {"start", "end"}, build_shape},
      {"Size", 11, 17, {}, build_size},
      {"Gather", 11, 17, {"axis"}, build_gather},
      {"Slice", 11, 17, {}, build_slice},
      {"Cast", 11, 17, {"to"}, build_cast},
      {"ConstantOfShape", 11, 17, {"value"}, build_constant_of_shape},
  };
  // clang-format on
  return table;
}

}  // namespace

std::vector<const OpRule*> rules_for(std::string_view op_type) {
  static const auto by_op = [] {
    std::unordered_map<std::string_view, std::vector<const OpRule*>> m;
    for (const OpRule& r : rules()) m[r.op_type].push_back(&r);
    return m;
  }();
  auto it = by_op.find(op_type);
  return it == by_op.end() ? std::vector<const OpRule*>{} : it->second;
}

}  // namespace modex::onnx_io::reader
