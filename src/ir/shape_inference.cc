// Shape functions: one per op, validating everything a kernel or writer later relies on.
#include <algorithm>
#include <string>

#include "ir/graph.h"

namespace modex::ir {
namespace {

Error node_error(const Node& n, const std::string& msg) {
  Error e(msg);
  e.node(n.name).op(std::string(op_name(n.op)));
  return e;
}

const Value& input(const Graph& g, const Node& n, size_t i) {
  if (i >= n.inputs.size() || n.inputs[i] == kNoValue)
    throw node_error(n, "missing input " + std::to_string(i));
  return g.value(n.inputs[i]);
}

bool has_input(const Node& n, size_t i) { return i < n.inputs.size() && n.inputs[i] != kNoValue; }

void expect_inputs(const Node& n, size_t lo, size_t hi) {
  if (n.inputs.size() < lo || n.inputs.size() > hi)
    throw node_error(n, "expected " + (lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi)) +
                            " inputs, got " + std::to_string(n.inputs.size()));
}

void expect_rank(const Node& n, const Value& v, size_t rank) {
  if (v.shape.size() != rank)
    throw node_error(n, "input '" + v.name + "' must have rank " + std::to_string(rank) + ", has shape " +
                            shape_to_string(v.shape));
}

bool is_quantized_int(const Value& v) {
  return (v.dtype == DType::kInt8 || v.dtype == DType::kUInt8) && v.quant.has_value();
}

// Data inputs are float, or quantized int8/uint8 (the op then computes in the integer domain).
void expect_float(const Node& n, const Value& v) {
  if (!is_float(v.dtype) && !is_quantized_int(v))
    throw node_error(n, "input '" + v.name + "' must be a float or quantized int8/uint8 tensor, is " +
                            std::string(dtype_name(v.dtype)) + (v.quant ? "" : " without quantization parameters"));
}

// A quantized Conv/Gemm takes int8 weights with per-tensor or per-channel (axis 0) params and an
// int32 bias; a float one takes float weights and bias.
void expect_weights_match(const Node& n, const Value& x, const Value& w, const Value* b) {
  if (is_quantized_int(x)) {
    if (w.dtype != DType::kInt8 || !w.quant)
      throw node_error(n, "quantized input needs quantized int8 weights, '" + w.name + "' is " + std::string(dtype_name(w.dtype)));
    if (w.quant->per_channel() && w.quant->axis != 0)
      throw node_error(n, "per-channel weight params must be along axis 0");
    if (b && b->dtype != DType::kInt32)
      throw node_error(n, "quantized op needs an int32 bias, '" + b->name + "' is " + std::string(dtype_name(b->dtype)));
  } else if (w.dtype != x.dtype && !(is_float(w.dtype) && is_float(x.dtype))) {
    throw node_error(n, "weight '" + w.name + "' is " + std::string(dtype_name(w.dtype)) + ", input is " +
                            std::string(dtype_name(x.dtype)));
  }
}

// Equal when both static and equal; dynamic dims are assumed to agree.
bool dims_compatible(const Dim& a, const Dim& b) {
  return !a.is_static() || !b.is_static() || a.value == b.value;
}

int64_t normalize_axis(const Node& n, int64_t axis, size_t rank, bool allow_end = false) {
  // Negative axes count from the end of the rank; allow_end also admits axis == rank (Flatten).
  int64_t r = static_cast<int64_t>(rank);
  int64_t hi = r + (allow_end ? 1 : 0);
  if (axis < -r || axis >= hi)
    throw node_error(n, "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + r : axis;
}

void check_spatial_attrs(const Node& n, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                         const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations) {
  size_t k = kernel.size();
  if (k == 0) throw node_error(n, "kernel shape is empty");
  if (strides.size() != k || dilations.size() != k || pads.size() != 2 * k)
    throw node_error(n, "kernel/strides/dilations/pads sizes disagree");
  for (size_t i = 0; i < k; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1)
      throw node_error(n, "kernel, strides and dilations must be >= 1");
  }
  for (int64_t p : pads)
    if (p < 0) throw node_error(n, "pads must be >= 0");
}

Dim spatial_out(const Node& n, const Dim& in, int64_t k, int64_t s, int64_t pb, int64_t pe, int64_t d,
                bool ceil_mode) {
  if (!in.is_static()) return Dim::unknown();
  int64_t eff = d * (k - 1) + 1;
  int64_t span = in.value + pb + pe - eff;
  if (span < 0)
    throw node_error(n, "kernel (effective size " + std::to_string(eff) + ") larger than padded input " +
                            std::to_string(in.value + pb + pe));
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // The last window must start inside the input or its leading padding.
  if (ceil_mode && (out - 1) * s >= in.value + pb) --out;
  return Dim::fixed(out);
}

Shape broadcast(const Node& n, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const Dim one = Dim::fixed(1);
    const Dim& x = i < r - a.size() ? one : a[i - (r - a.size())];
    const Dim& y = i < r - b.size() ? one : b[i - (r - b.size())];
    if (x.is_static() && y.is_static()) {
      if (x.value != y.value && x.value != 1 && y.value != 1)
        throw node_error(n, "shapes " + shape_to_string(a) + " and " + shape_to_string(b) + " do not broadcast");
      out[i] = Dim::fixed(x.value == 1 ? y.value : x.value);
    } else if (x.is_static()) {
      out[i] = x.value == 1 ? y : x;
    } else if (y.is_static()) {
      out[i] = y.value == 1 ? x : y;
    } else {
      out[i] = x == y ? x : Dim::unknown();
    }
  }
  return out;
}

Dim product(const Shape& s, size_t from, size_t to) {
  if (to - from == 1) return s[from];
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) {
    if (!s[i].is_static()) return Dim::unknown();
    p *= s[i].value;
  }
  return Dim::fixed(p);
}

std::vector<OutputInfo> infer_conv(const Graph& g, const Node& n) {
  expect_inputs(n, 2, 4);
  const auto& a = n.attr<ConvAttrs>();
  const Value& x = input(g, n, 0);
  const Value& w = input(g, n, 1);
  expect_float(n, x);
  size_t k = a.kernel.size();
  check_spatial_attrs(n, a.kernel, a.strides, a.pads, a.dilations);
  expect_rank(n, x, k + 2);
  expect_rank(n, w, k + 2);
  auto wd = to_dims(w.shape);
  if (!wd) throw node_error(n, "weight shape must be static");
  if (a.groups < 1) throw node_error(n, "groups must be >= 1");
  const bool nhwc = a.layout == Layout::kNHWC;
  // Positions of channels and the first spatial dim, in activations and in the weight.
  const size_t x_c = nhwc ? k + 1 : 1, x_s = nhwc ? 1 : 2;
  const size_t w_i = nhwc ? k + 1 : 1, w_s = nhwc ? 1 : 2;
  int64_t out_c = (*wd)[0];
  if (out_c % a.groups != 0)
    throw node_error(n, "output channels " + std::to_string(out_c) + " not divisible by groups " + std::to_string(a.groups));
  for (size_t i = 0; i < k; ++i)
    if ((*wd)[w_s + i] != a.kernel[i])
      throw node_error(n, "kernel attribute disagrees with weight shape " + shape_to_string(w.shape));
  if (x.shape[x_c].is_static() && x.shape[x_c].value != (*wd)[w_i] * a.groups)
    throw node_error(n, "input has " + std::to_string(x.shape[x_c].value) + " channels but weight " +
                            shape_to_string(w.shape) + " with groups=" + std::to_string(a.groups) + " expects " +
                            std::to_string((*wd)[w_i] * a.groups));
  expect_weights_match(n, x, w, has_input(n, 2) ? &input(g, n, 2) : nullptr);
  if (has_input(n, 2)) {
    const Value& b = input(g, n, 2);
    if (b.shape.size() != 1 || !dims_compatible(b.shape[0], Dim::fixed(out_c)))
      throw node_error(n, "bias shape " + shape_to_string(b.shape) + " does not match " + std::to_string(out_c) + " output channels");
  }
  Shape out{x.shape[0]};
  if (!nhwc) out.push_back(Dim::fixed(out_c));
  for (size_t i = 0; i < k; ++i)
    out.push_back(spatial_out(n, x.shape[x_s + i], a.kernel[i], a.strides[i], a.pads[i], a.pads[i + k], a.dilations[i], false));
  if (nhwc) out.push_back(Dim::fixed(out_c));
  if (has_input(n, 3)) {
    const Value& r = input(g, n, 3);
    bool ok = r.shape.size() == out.size() && r.dtype == x.dtype;
    for (size_t i = 0; ok && i < out.size(); ++i) ok = dims_compatible(r.shape[i], out[i]);
    if (!ok)
      throw node_error(n, "residual input " + shape_to_string(r.shape) + " does not match the output " + shape_to_string(out));
  }
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_pool(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const auto& a = n.attr<PoolAttrs>();
  const Value& x = input(g, n, 0);
  expect_float(n, x);
  size_t k = a.kernel.size();
  check_spatial_attrs(n, a.kernel, a.strides, a.pads, a.dilations);
  expect_rank(n, x, k + 2);
  for (size_t i = 0; i < k; ++i)
    if (a.pads[i] >= a.kernel[i] || a.pads[i + k] >= a.kernel[i])
      throw node_error(n, "padding must be smaller than the kernel");
  const bool nhwc = a.layout == Layout::kNHWC;
  const size_t x_s = nhwc ? 1 : 2;
  Shape out{x.shape[0]};
  if (!nhwc) out.push_back(x.shape[1]);
  for (size_t i = 0; i < k; ++i)
    out.push_back(spatial_out(n, x.shape[x_s + i], a.kernel[i], a.strides[i], a.pads[i], a.pads[i + k], a.dilations[i], a.ceil_mode));
  if (nhwc) out.push_back(x.shape[k + 1]);
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_batchnorm(const Graph& g, const Node& n) {
  expect_inputs(n, 5, 5);
  const Value& x = input(g, n, 0);
  expect_float(n, x);
  if (x.shape.size() < 2) throw node_error(n, "input must have rank >= 2");
  for (size_t i = 1; i < 5; ++i) {
    const Value& p = input(g, n, i);
    if (p.shape.size() != 1 || !dims_compatible(p.shape[0], x.shape[1]))
      throw node_error(n, "parameter '" + p.name + "' has shape " + shape_to_string(p.shape) + ", expected [" +
                              (x.shape[1].is_static() ? std::to_string(x.shape[1].value) : "C") + "]");
  }
  return {{x.dtype, x.shape}};
}

std::vector<OutputInfo> infer_gemm(const Graph& g, const Node& n) {
  expect_inputs(n, 2, 3);
  const Value& x = input(g, n, 0);
  const Value& w = input(g, n, 1);
  expect_float(n, x);
  expect_rank(n, x, 2);
  expect_rank(n, w, 2);
  if (!dims_compatible(x.shape[1], w.shape[1]))
    throw node_error(n, "input " + shape_to_string(x.shape) + " has " + std::to_string(x.shape[1].value) +
                            " features but weight " + shape_to_string(w.shape) + " expects " +
                            std::to_string(w.shape[1].value));
  expect_weights_match(n, x, w, has_input(n, 2) ? &input(g, n, 2) : nullptr);
  if (has_input(n, 2)) {
    const Value& b = input(g, n, 2);
    if (b.shape.size() != 1 || !dims_compatible(b.shape[0], w.shape[0]))
      throw node_error(n, "bias shape " + shape_to_string(b.shape) + " does not match weight " + shape_to_string(w.shape));
  }
  return {{x.dtype, Shape{x.shape[0], w.shape[0]}}};
}

std::vector<OutputInfo> infer_matmul(const Graph& g, const Node& n) {
  expect_inputs(n, 2, 2);
  Shape a = input(g, n, 0).shape;
  Shape b = input(g, n, 1).shape;
  DType dt = input(g, n, 0).dtype;
  if (a.empty() || b.empty()) throw node_error(n, "MatMul inputs must have rank >= 1");
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), Dim::fixed(1));
  if (b1) b.push_back(Dim::fixed(1));
  if (!dims_compatible(a.back(), b[b.size() - 2]))
    throw node_error(n, "inner dimensions disagree: " + shape_to_string(a) + " x " + shape_to_string(b));
  Shape batch = broadcast(n, Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!a1) batch.push_back(a[a.size() - 2]);
  if (!b1) batch.push_back(b.back());
  return {{dt, batch}};
}

std::vector<OutputInfo> infer_unary(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  if (n.op != OpKind::kIdentity) expect_float(n, x);
  if (n.op == OpKind::kClip) {
    const auto& a = n.attr<ClipAttrs>();
    if (a.min > a.max) throw node_error(n, "min > max");
  }
  return {{x.dtype, x.shape}};
}

std::vector<OutputInfo> infer_binary(const Graph& g, const Node& n) {
  expect_inputs(n, 2, 2);
  const Value& a = input(g, n, 0);
  const Value& b = input(g, n, 1);
  if (a.dtype != b.dtype)
    throw node_error(n, "input dtypes differ: " + std::string(dtype_name(a.dtype)) + " and " + std::string(dtype_name(b.dtype)));
  return {{a.dtype, broadcast(n, a.shape, b.shape)}};
}

std::vector<OutputInfo> infer_prelu(const Graph& g, const Node& n) {
  expect_inputs(n, 2, 2);
  const Value& x = input(g, n, 0);
  expect_float(n, x);
  Shape out = broadcast(n, x.shape, input(g, n, 1).shape);
  if (out.size() != x.shape.size()) throw node_error(n, "slope has a higher rank than the input");
  return {{x.dtype, x.shape}};
}

std::vector<OutputInfo> infer_global_pool(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  expect_float(n, x);
  if (x.shape.size() < 3) throw node_error(n, "input must have rank >= 3, has " + shape_to_string(x.shape));
  Shape out{x.shape[0], x.shape[1]};
  for (size_t i = 2; i < x.shape.size(); ++i) out.push_back(Dim::fixed(1));
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_reduce(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  const auto& a = n.attr<ReduceAttrs>();
  std::vector<bool> reduced(x.shape.size(), a.axes.empty());
  for (int64_t ax : a.axes) {
    int64_t k = normalize_axis(n, ax, x.shape.size());
    if (reduced[static_cast<size_t>(k)]) throw node_error(n, "axis repeated");
    reduced[static_cast<size_t>(k)] = true;
  }
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    if (!reduced[i])
      out.push_back(x.shape[i]);
    else if (a.keepdims)
      out.push_back(Dim::fixed(1));
  }
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_flatten(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  int64_t axis = normalize_axis(n, n.attr<FlattenAttrs>().axis, x.shape.size(), true);
  size_t ax = static_cast<size_t>(axis);
  Dim first = ax == 0 ? Dim::fixed(1) : product(x.shape, 0, ax);
  Dim second = ax == x.shape.size() ? Dim::fixed(1) : product(x.shape, ax, x.shape.size());
  return {{x.dtype, Shape{first, second}}};
}

std::vector<OutputInfo> infer_reshape(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  const auto& target = n.attr<ReshapeAttrs>().shape;
  Shape out;
  int infer_at = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t t = target[i];
    if (t == 0) {
      if (i >= x.shape.size()) throw node_error(n, "0 in target shape copies a dimension the input lacks");
      out.push_back(x.shape[i]);
    } else if (t == -1) {
      if (infer_at >= 0) throw node_error(n, "more than one -1 in target shape");
      infer_at = static_cast<int>(i);
      out.push_back(Dim::unknown());
    } else if (t < 0) {
      throw node_error(n, "invalid target dimension " + std::to_string(t));
    } else {
      out.push_back(Dim::fixed(t));
    }
  }
  auto in_dims = to_dims(x.shape);
  int64_t known = 1;
  bool out_static = true;
  for (size_t i = 0; i < out.size(); ++i)
    if (static_cast<int>(i) != infer_at) {
      if (out[i].is_static())
        known *= out[i].value;
      else
        out_static = false;
    }
  if (in_dims && out_static) {
    int64_t total = checked_numel(*in_dims);
    if (infer_at >= 0) {
      if (known == 0 || total % known != 0)
        throw node_error(n, "cannot reshape " + shape_to_string(x.shape) + " with target " + dims_to_string(target));
      out[static_cast<size_t>(infer_at)] = Dim::fixed(total / known);
    } else if (known != total) {
      throw node_error(n, "cannot reshape " + shape_to_string(x.shape) + " (" + std::to_string(total) +
                              " elements) to " + dims_to_string(target));
    }
  }
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_squeeze(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  const auto& axes = n.attr<AxesAttrs>().axes;
  std::vector<bool> drop(x.shape.size(), false);
  if (axes.empty()) {
    for (size_t i = 0; i < x.shape.size(); ++i) drop[i] = x.shape[i].is_static() && x.shape[i].value == 1;
  }
  for (int64_t ax : axes) {
    size_t k = static_cast<size_t>(normalize_axis(n, ax, x.shape.size()));
    if (x.shape[k].is_static() && x.shape[k].value != 1)
      throw node_error(n, "cannot squeeze axis " + std::to_string(ax) + " of size " + std::to_string(x.shape[k].value));
    drop[k] = true;
  }
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i)
    if (!drop[i]) out.push_back(x.shape[i]);
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_unsqueeze(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  const auto& axes = n.attr<AxesAttrs>().axes;
  size_t r = x.shape.size() + axes.size();
  std::vector<bool> added(r, false);
  for (int64_t ax : axes) {
    size_t k = static_cast<size_t>(normalize_axis(n, ax, r));
    if (added[k]) throw node_error(n, "axis repeated");
    added[k] = true;
  }
  Shape out;
  size_t j = 0;
  for (size_t i = 0; i < r; ++i) out.push_back(added[i] ? Dim::fixed(1) : x.shape[j++]);
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_transpose(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  auto perm = n.attr<TransposeAttrs>().perm;
  if (perm.empty())
    for (size_t i = x.shape.size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  if (perm.size() != x.shape.size()) throw node_error(n, "perm size does not match input rank");
  std::vector<bool> seen(perm.size(), false);
  Shape out;
  for (int64_t p : perm) {
    if (p < 0 || p >= static_cast<int64_t>(perm.size()) || seen[static_cast<size_t>(p)])
      throw node_error(n, "perm is not a permutation");
    seen[static_cast<size_t>(p)] = true;
    out.push_back(x.shape[static_cast<size_t>(p)]);
  }
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_concat(const Graph& g, const Node& n) {
  if (n.inputs.empty()) throw node_error(n, "needs at least one input");
  const Value& x0 = input(g, n, 0);
  size_t axis = static_cast<size_t>(normalize_axis(n, n.attr<AxisAttrs>().axis, x0.shape.size()));
  Shape out = x0.shape;
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    const Value& xi = input(g, n, i);
    if (xi.shape.size() != out.size() || xi.dtype != x0.dtype)
      throw node_error(n, "inputs must share rank and dtype");
    for (size_t d = 0; d < out.size(); ++d) {
      if (d == axis) {
        out[d] = out[d].is_static() && xi.shape[d].is_static() ? Dim::fixed(out[d].value + xi.shape[d].value) : Dim::unknown();
      } else if (!dims_compatible(out[d], xi.shape[d])) {
        throw node_error(n, "input shapes " + shape_to_string(x0.shape) + " and " + shape_to_string(xi.shape) +
                                " differ outside the concat axis");
      }
    }
  }
  return {{x0.dtype, out}};
}

std::vector<OutputInfo> infer_softmax(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  expect_float(n, x);
  normalize_axis(n, n.attr<AxisAttrs>().axis, x.shape.size());
  return {{x.dtype, x.shape}};
}

std::vector<OutputInfo> infer_pad(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  const auto& pads = n.attr<PadAttrs>().pads;
  size_t r = x.shape.size();
  if (pads.size() != 2 * r) throw node_error(n, "pads must have 2*rank entries");
  Shape out;
  for (size_t i = 0; i < r; ++i) {
    if (pads[i] < 0 || pads[i + r] < 0) throw node_error(n, "negative pads are not supported");
    out.push_back(x.shape[i].is_static() ? Dim::fixed(x.shape[i].value + pads[i] + pads[i + r]) : Dim::unknown());
  }
  return {{x.dtype, out}};
}

std::vector<OutputInfo> infer_quantize(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  DType to = n.attr<QuantizeAttrs>().dtype;
  if (to != DType::kInt8 && to != DType::kUInt8)
    throw node_error(n, "can only quantize to int8 or uint8, not " + std::string(dtype_name(to)));
  expect_float(n, x);
  return {{to, x.shape}};
}

std::vector<OutputInfo> infer_dequantize(const Graph& g, const Node& n) {
  expect_inputs(n, 1, 1);
  const Value& x = input(g, n, 0);
  if (!x.quant || (x.dtype != DType::kInt8 && x.dtype != DType::kUInt8 && x.dtype != DType::kInt32))
    throw node_error(n, "input '" + x.name + "' must be a quantized int8/uint8/int32 tensor");
  return {{DType::kFloat32, x.shape}};
}

}  // namespace

std::vector<OutputInfo> infer_node_outputs(const Graph& g, const Node& n) {
  if (!attrs_match(n.op, n.attrs)) throw node_error(n, "attributes of the wrong type for this op");
  switch (n.op) {
    case OpKind::kConv: return infer_conv(g, n);
    case OpKind::kBatchNorm: return infer_batchnorm(g, n);
    case OpKind::kGemm: return infer_gemm(g, n);
    case OpKind::kMatMul: return infer_matmul(g, n);
    case OpKind::kRelu:
    case OpKind::kClip:
    case OpKind::kLeakyRelu:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
    case OpKind::kHardSwish:
    case OpKind::kSilu:
    case OpKind::kTanh:
    case OpKind::kIdentity: return infer_unary(g, n);
    case OpKind::kPRelu: return infer_prelu(g, n);
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: return infer_binary(g, n);
    case OpKind::kMaxPool:
    case OpKind::kAveragePool: return infer_pool(g, n);
    case OpKind::kGlobalAveragePool: return infer_global_pool(g, n);
    case OpKind::kReduceMean: return infer_reduce(g, n);
    case OpKind::kFlatten: return infer_flatten(g, n);
    case OpKind::kReshape: return infer_reshape(g, n);
    case OpKind::kSqueeze: return infer_squeeze(g, n);
    case OpKind::kUnsqueeze: return infer_unsqueeze(g, n);
    case OpKind::kTranspose: return infer_transpose(g, n);
    case OpKind::kConcat: return infer_concat(g, n);
    case OpKind::kSoftmax: return infer_softmax(g, n);
    case OpKind::kPad: return infer_pad(g, n);
    case OpKind::kQuantize: return infer_quantize(g, n);
    case OpKind::kDequantize: return infer_dequantize(g, n);
  }
  throw node_error(n, "no shape function");
}

}  // namespace modex::ir
