#include "runtime/kernels/reference_int8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/tensor_ops.h"
#include "runtime/kernels/native_math.h"
#include "runtime/kernels/reference_kernels.h"

namespace modex::runtime::q8 {

using ir::OpKind;

// --- TFLite's fixed-point helpers ---

Multiplier quantize_multiplier(double real) {
  Multiplier m;
  if (real == 0.0) return m;
  int shift = 0;
  const double q = std::frexp(real, &shift);
  int64_t q_fixed = static_cast<int64_t>(std::round(q * static_cast<double>(1LL << 31)));
  if (q_fixed == (1LL << 31)) {
    q_fixed /= 2;
    ++shift;
  }
  if (shift < -31) {
    shift = 0;
    q_fixed = 0;
  }
  m.value = static_cast<int32_t>(q_fixed);
  m.shift = shift;
  return m;
}

int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  const bool overflow = a == b && a == std::numeric_limits<int32_t>::min();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  const int32_t high = static_cast<int32_t>((ab + nudge) / (1LL << 31));
  return overflow ? std::numeric_limits<int32_t>::max() : high;
}

int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((1LL << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t multiply_by_quantized_multiplier(int32_t x, Multiplier m) {
  const int left = m.shift > 0 ? m.shift : 0;
  const int right = m.shift > 0 ? 0 : -m.shift;
  // TFLite shifts in int32 (x * (1 << left)); real models keep that in range. Extreme params
  // from a file saturate here instead of overflowing.
  int64_t shifted = x;
  if (left > 0) {
    shifted = left >= 32 ? (x > 0   ? INT64_MAX
                            : x < 0 ? INT64_MIN
                                    : 0)
                         : shifted * (int64_t{1} << left);
  }
  const int32_t clamped = static_cast<int32_t>(std::clamp<int64_t>(
      shifted, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(clamped, m.value),
                                std::min(right, 31));
}

namespace {

// gemmlowp's int16 variants, used by TFLite's int8 hard-swish.
int16_t srdhm16(int16_t a, int16_t b) {
  const bool overflow = a == b && a == std::numeric_limits<int16_t>::min();
  const int32_t ab = static_cast<int32_t>(a) * static_cast<int32_t>(b);
  const int16_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
  const int16_t high = static_cast<int16_t>((ab + nudge) / (1 << 15));
  return overflow ? std::numeric_limits<int16_t>::max() : high;
}

int16_t sdhm16(int16_t a, int16_t b) {  // no rounding nudge
  const bool overflow = a == b && a == std::numeric_limits<int16_t>::min();
  const int32_t ab = static_cast<int32_t>(a) * static_cast<int32_t>(b);
  const int16_t high = static_cast<int16_t>(ab / (1 << 15));
  return overflow ? std::numeric_limits<int16_t>::max() : high;
}

int16_t rdbp16(int16_t x, int exponent) {
  const int16_t mask = static_cast<int16_t>((1 << exponent) - 1);
  const int16_t remainder = static_cast<int16_t>(x & mask);
  const int16_t threshold = static_cast<int16_t>((mask >> 1) + (x < 0 ? 1 : 0));
  return static_cast<int16_t>((x >> exponent) + (remainder > threshold ? 1 : 0));
}

int16_t saturating_left_shift16(int16_t v, int amount) {
  int32_t r = static_cast<int32_t>(v) * (1 << amount);
  return static_cast<int16_t>(std::clamp<int32_t>(r, std::numeric_limits<int16_t>::min(),
                                                  std::numeric_limits<int16_t>::max()));
}

int16_t downscale_to_int16(int32_t m) {
  constexpr int32_t kRounding = 1 << 15;
  if (m >= std::numeric_limits<int32_t>::max() - kRounding)
    return std::numeric_limits<int16_t>::max();
  return static_cast<int16_t>((m + kRounding) >> 16);
}

std::pair<int32_t, int32_t> dtype_range(DType t) {
  return t == DType::kUInt8 ? std::pair<int32_t, int32_t>{0, 255}
                            : std::pair<int32_t, int32_t>{-128, 127};
}

// round(v) as an int32, saturating (scales from a file may be extreme; a float beyond int32 must
// not reach the conversion).
int32_t round_to_int(float v) {
  const float r = std::round(v);
  if (!(r > -2147483648.0f)) return std::numeric_limits<int32_t>::min();  // also NaN
  if (r >= 2147483648.0f) return std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(r);
}

int32_t quantize_scalar(float f, const Affine& q) {
  return static_cast<int32_t>(std::clamp<int64_t>(
      static_cast<int64_t>(q.zero_point) + round_to_int(f / q.scale),
      std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
}

Error node_error(const ir::Node& n, const std::string& message,
                 ErrorKind kind = ErrorKind::kInvalidInput) {
  Error e(message, kind);
  e.node(n.name).op(std::string(ir::op_name(n.op)));
  return e;
}

bool quantized_int(const ir::Value& v) {
  return (v.dtype == DType::kInt8 || v.dtype == DType::kUInt8) && v.quant.has_value();
}

Affine per_tensor(const ir::Node& n, const ir::Value& v) {
  if (!v.quant || v.quant->scale.empty())
    throw node_error(n, "value '" + v.name + "' (" + std::string(dtype_name(v.dtype)) +
                            ") has no quantization parameters");
  if (v.quant->per_channel())
    throw node_error(n, "value '" + v.name + "' must have per-tensor quantization, has " +
                            std::to_string(v.quant->scale.size()) + " scales");
  const float s = v.quant->scale[0];
  const int64_t zp = v.quant->zero_point.empty() ? 0 : v.quant->zero_point[0];
  auto [lo, hi] = dtype_range(v.dtype == DType::kInt32 ? DType::kInt8 : v.dtype);
  if (!(s > 0) || !std::isfinite(s))
    throw node_error(n, "value '" + v.name + "' has scale " + std::to_string(s) + ", expected > 0");
  if (v.dtype != DType::kInt32 && (zp < lo || zp > hi))
    throw node_error(n, "value '" + v.name + "' has zero point " + std::to_string(zp) +
                            ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return Affine{s, static_cast<int32_t>(zp)};
}

bool same_params(const Affine& a, const Affine& b) {
  return a.scale == b.scale && a.zero_point == b.zero_point;
}

int64_t normalized_axis(int64_t axis, size_t rank) {
  return axis < 0 ? axis + static_cast<int64_t>(rank) : axis;
}

template <typename T>
void run_typed(const Prepared& p, std::span<const Tensor> in, Tensor& y);
int32_t hard_swish_one(const Prepared& p, int32_t x);
int32_t rescale_one(const Prepared& p, int32_t x);

// Element-wise int8 ops depend on the input byte only: a 256-entry table of the scalar kernel,
// indexed by the input's bit pattern (the same integers, one load per element).
// TFLite's Logistic as a table: s = 1 / (1 + exp(-x)) of the dequantized input, quantized with
// `out` (round half away from zero).
void sigmoid_table(const Affine& in, const Affine& out, int32_t lo, int32_t hi, std::array<int8_t, 256>& table) {
  const float inverse_scale = 1.0f / out.scale;
  for (int32_t v = lo; v <= hi; ++v) {
    const float x = in.scale * static_cast<float>(v - in.zero_point);
    const float s = 1.0f / (1.0f + std::exp(-x));
    const int32_t q = static_cast<int32_t>(std::round(s * inverse_scale) + static_cast<float>(out.zero_point));
    table[static_cast<uint8_t>(v)] = static_cast<int8_t>(std::clamp(q, lo, hi));
  }
}

void fill_lut(Prepared& p, int32_t (*f)(const Prepared&, int32_t)) {
  auto [lo, hi] = dtype_range(p.in_dtype);
  for (int32_t v = lo; v <= hi; ++v) p.lut[static_cast<uint8_t>(v)] = static_cast<int8_t>(f(p, v));
}

}  // namespace

std::pair<int32_t, int32_t> activation_range(ir::Activation a, const Affine& out, DType dtype) {
  auto [lo, hi] = dtype_range(dtype);
  switch (a) {
    case ir::Activation::kRelu:
      return {std::max(lo, quantize_scalar(0.0f, out)), hi};
    case ir::Activation::kRelu6:
      return {std::max(lo, quantize_scalar(0.0f, out)), std::min(hi, quantize_scalar(6.0f, out))};
    default:
      return {lo, hi};
  }
}

bool is_quantized_node(const ir::Graph& g, const ir::Node& n) {
  if (n.op == OpKind::kQuantize || n.op == OpKind::kDequantize) return true;
  for (ir::ValueId v : n.inputs)
    if (v != ir::kNoValue && quantized_int(g.value(v))) return true;
  return false;
}

Prepared prepare(const ir::Graph& g, const ir::Node& n) {
  Prepared p;
  p.node = n;
  const ir::Value& yv = g.value(n.outputs[0]);
  p.out_dtype = yv.dtype;
  if (yv.dtype == DType::kInt8 || yv.dtype == DType::kUInt8) p.out = per_tensor(n, yv);
  std::vector<const ir::Value*> ins;
  for (ir::ValueId v : n.inputs) ins.push_back(v == ir::kNoValue ? nullptr : &g.value(v));
  if (ins.empty() || !ins[0]) throw node_error(n, "missing input 0");
  p.in_dtype = ins[0]->dtype;
  // Per-tensor params of the data inputs (Conv/Gemm weights are checked below, per channel).
  const bool weighted = n.op == OpKind::kConv || n.op == OpKind::kGemm;
  for (size_t k = 0; k < ins.size(); ++k)
    p.in.push_back(ins[k] && quantized_int(*ins[k]) && !(weighted && k > 0) ? per_tensor(n, *ins[k])
                                                                            : Affine{});
  auto [lo, hi] = dtype_range(p.out_dtype);
  p.act_min = lo;
  p.act_max = hi;
  auto need_int8_io = [&] {
    if (!quantized_int(*ins[0]) || (yv.dtype != DType::kInt8 && yv.dtype != DType::kUInt8) ||
        yv.dtype != ins[0]->dtype)
      throw node_error(n,
                       "expected quantized " + std::string(dtype_name(ins[0]->dtype)) +
                           " input and output of the same dtype, got " +
                           std::string(dtype_name(ins[0]->dtype)) + " -> " +
                           std::string(dtype_name(yv.dtype)),
                       ErrorKind::kUnsupported);
  };
  auto need_same_params = [&] {
    need_int8_io();
    if (!same_params(p.in[0], p.out))
      throw node_error(
          n,
          "int8 " + std::string(ir::op_name(n.op)) +
              " needs equal input and output params (input s=" + std::to_string(p.in[0].scale) +
              " zp=" + std::to_string(p.in[0].zero_point) + ", output s=" +
              std::to_string(p.out.scale) + " zp=" + std::to_string(p.out.zero_point) + ")",
          ErrorKind::kUnsupported);
  };
  auto need_fused = [&](ir::Activation a) {
    if (a != ir::Activation::kNone && a != ir::Activation::kRelu && a != ir::Activation::kRelu6)
      throw node_error(n,
                       "fused " + std::string(ir::activation_name(a)) +
                           " on a quantized op (only none, relu, relu6)",
                       ErrorKind::kUnsupported);
    std::tie(p.act_min, p.act_max) = activation_range(a, p.out, p.out_dtype);
  };
  switch (n.op) {
    case OpKind::kConv:
    case OpKind::kGemm: {
      need_int8_io();
      if (p.in_dtype != DType::kInt8)
        throw node_error(n, "quantized Conv/Gemm needs int8 activations", ErrorKind::kUnsupported);
      if (ins.size() < 2 || !ins[1] || !ins[1]->quant || ins[1]->dtype != DType::kInt8)
        throw node_error(n, "quantized Conv/Gemm needs int8 weights with quantization parameters");
      const ir::Value& w = *ins[1];
      const int64_t O = w.shape.at(0).value;
      const auto& ws = w.quant->scale;
      if (ws.size() != 1 && static_cast<int64_t>(ws.size()) != O)
        throw node_error(n, "weight '" + w.name + "' has " + std::to_string(ws.size()) +
                                " scales for " + std::to_string(O) + " output channels");
      for (size_t c = 0; c < ws.size(); ++c) {
        if (!(ws[c] > 0) || !std::isfinite(ws[c]))
          throw node_error(
              n, "weight '" + w.name + "' has a scale <= 0 at channel " + std::to_string(c));
        if (c < w.quant->zero_point.size() && w.quant->zero_point[c] != 0)
          throw node_error(n, "weight '" + w.name + "' must be symmetric (zero point 0), channel " +
                                  std::to_string(c) + " has " +
                                  std::to_string(w.quant->zero_point[c]));
      }
      if (ins.size() > 2 && ins[2]) {
        const ir::Value& b = *ins[2];
        if (b.dtype != DType::kInt32)
          throw node_error(
              n, "bias '" + b.name + "' must be int32, is " + std::string(dtype_name(b.dtype)));
        if (b.shape.size() != 1 || b.shape[0].value != O)
          throw node_error(n, "bias '" + b.name + "' must have shape [" + std::to_string(O) +
                                  "], has " + ir::shape_to_string(b.shape));
      }
      const double in_scale = p.in[0].scale, out_scale = p.out.scale;
      p.channel.resize(static_cast<size_t>(O));
      for (int64_t c = 0; c < O; ++c) {
        const float wsc = ws[ws.size() == 1 ? 0 : static_cast<size_t>(c)];
        // TFLite: per-channel conv scales in double; FULLY_CONNECTED multiplies the float scales.
        double real = n.op == OpKind::kGemm && ws.size() == 1
                          ? static_cast<double>(p.in[0].scale * wsc) / out_scale
                          : in_scale * static_cast<double>(wsc) / out_scale;
        p.channel[static_cast<size_t>(c)] = quantize_multiplier(real);
      }
      if (n.op == OpKind::kConv) {
        const auto& a = n.attr<ir::ConvAttrs>();
        if (a.layout != ir::Layout::kNHWC)
          throw node_error(n, "quantized Conv must be NHWC", ErrorKind::kUnsupported);
        need_fused(a.activation);
      } else {
        need_fused(n.attr<ir::GemmAttrs>().activation);
      }
      break;
    }
    case OpKind::kAdd:
    case OpKind::kMul: {
      if (ins.size() != 2 || !ins[1] || !quantized_int(*ins[0]) || !quantized_int(*ins[1]) ||
          ins[0]->dtype != ins[1]->dtype)
        throw node_error(n, "quantized Add/Mul needs two quantized inputs of one dtype",
                         ErrorKind::kUnsupported);
      need_int8_io();
      need_fused(n.attr<ir::BinaryAttrs>().activation);
      if (n.op == OpKind::kAdd) {
        p.left_shift = 20;
        const double twice_max = 2.0 * static_cast<double>(std::max(p.in[0].scale, p.in[1].scale));
        p.input1 = quantize_multiplier(static_cast<double>(p.in[0].scale) / twice_max);
        p.input2 = quantize_multiplier(static_cast<double>(p.in[1].scale) / twice_max);
        p.output = quantize_multiplier(twice_max / (static_cast<double>(1 << p.left_shift) *
                                                    static_cast<double>(p.out.scale)));
      } else {
        p.output = quantize_multiplier(static_cast<double>(p.in[0].scale) *
                                       static_cast<double>(p.in[1].scale) /
                                       static_cast<double>(p.out.scale));
      }
      break;
    }
    case OpKind::kMaxPool:
    case OpKind::kAveragePool: {
      need_same_params();
      const auto& a = n.attr<ir::PoolAttrs>();
      if (a.layout != ir::Layout::kNHWC)
        throw node_error(n, "quantized pools must be NHWC", ErrorKind::kUnsupported);
      break;
    }
    case OpKind::kGlobalAveragePool:
    case OpKind::kReduceMean: {
      need_int8_io();
      const size_t r = ins[0]->shape.size();
      p.reduced.assign(r, false);
      if (n.op == OpKind::kGlobalAveragePool) {
        // NHWC graphs only reach the engine after convert_to_nhwc, which rewrites this op.
        throw node_error(n, "quantized GlobalAveragePool (use ReduceMean over H, W)",
                         ErrorKind::kUnsupported);
      }
      const auto& a = n.attr<ir::ReduceAttrs>();
      if (a.axes.empty()) p.reduced.assign(r, true);
      for (int64_t ax : a.axes) p.reduced[static_cast<size_t>(normalized_axis(ax, r))] = true;
      p.output = quantize_multiplier(static_cast<double>(p.in[0].scale) /
                                     static_cast<double>(p.out.scale));
      break;
    }
    case OpKind::kHardSwish: {
      need_int8_io();
      const float hires_input_scale = (1.0f / 128.0f) * p.in[0].scale;
      const float reluish_scale = 3.0f / 32768.0f;
      const float output_multiplier = hires_input_scale / p.out.scale;
      const float reluish_multiplier = hires_input_scale / reluish_scale;
      Multiplier om = quantize_multiplier(output_multiplier),
                 rm = quantize_multiplier(reluish_multiplier);
      p.hs_output_mult = downscale_to_int16(om.value);
      p.hs_output_exp = om.shift;
      p.hs_reluish_mult = downscale_to_int16(rm.value);
      p.hs_reluish_exp = rm.shift;
      if (p.hs_output_exp > 0)
        throw node_error(n,
                         "int8 HardSwish needs output scale >= input scale / 128 (TFLite's limit)",
                         ErrorKind::kUnsupported);
      fill_lut(p, hard_swish_one);
      break;
    }
    case OpKind::kSigmoid:
    case OpKind::kSoftmax: {
      need_int8_io();
      const Affine fixed{1.0f / 256.0f, p.out_dtype == DType::kInt8 ? -128 : 0};
      if (!same_params(p.out, fixed))
        throw node_error(n,
                         "int8 " + std::string(ir::op_name(n.op)) +
                             " output must have scale 1/256 and zero point " +
                             std::to_string(fixed.zero_point) +
                             " (TFLite's fixed params), has s=" + std::to_string(p.out.scale) +
                             " zp=" + std::to_string(p.out.zero_point),
                         ErrorKind::kUnsupported);
      if (n.op == OpKind::kSigmoid) {
        sigmoid_table(p.in[0], p.out, lo, hi, p.lut);
      } else {
        p.axis = normalized_axis(n.attr<ir::AxisAttrs>().axis, ins[0]->shape.size());
        if (p.axis != static_cast<int64_t>(ins[0]->shape.size()) - 1)
          throw node_error(n, "quantized Softmax over a non-last axis", ErrorKind::kUnsupported);
        const float scale = -p.in[0].scale;  // beta 1
        for (int32_t v = 0; v <= 255; ++v)
          p.exp_table[static_cast<size_t>(255 - v)] = std::exp(scale * static_cast<float>(v));
      }
      break;
    }
    case OpKind::kSilu: {
      // Mul(x, Sigmoid(x)), fused by the engine: the Sigmoid's output has TFLite's fixed params
      // (its table is kept in `gate`), the Mul requantizes (x - zp) * (gate - zp_gate) with
      // multiplier s_in * s_gate / s_out. One table of the input byte, as the two ops give.
      need_int8_io();
      if (p.in_dtype != DType::kInt8) throw node_error(n, "quantized Silu needs int8 data", ErrorKind::kUnsupported);
      const Affine gate{1.0f / 256.0f, -128};
      sigmoid_table(p.in[0], gate, lo, hi, p.gate);
      p.output = quantize_multiplier(static_cast<double>(p.in[0].scale) * static_cast<double>(gate.scale) /
                                     static_cast<double>(p.out.scale));
      for (int32_t v = lo; v <= hi; ++v) {
        const int32_t prod = (v - p.in[0].zero_point) * (p.gate[static_cast<uint8_t>(v)] - gate.zero_point);
        const int32_t q = multiply_by_quantized_multiplier(prod, p.output) + p.out.zero_point;
        p.lut[static_cast<uint8_t>(v)] = static_cast<int8_t>(std::clamp(q, lo, hi));
      }
      break;
    }
    case OpKind::kRelu:
    case OpKind::kClip: {
      need_int8_io();
      p.output = quantize_multiplier(static_cast<double>(p.in[0].scale) /
                                     static_cast<double>(p.out.scale));
      float mn = 0.0f, mx = std::numeric_limits<float>::infinity();
      if (n.op == OpKind::kClip) mn = n.attr<ir::ClipAttrs>().min, mx = n.attr<ir::ClipAttrs>().max;
      if (std::isfinite(mn)) p.act_min = std::max(lo, quantize_scalar(mn, p.out));
      if (std::isfinite(mx)) p.act_max = std::min(hi, quantize_scalar(mx, p.out));
      fill_lut(p, rescale_one);
      break;
    }
    case OpKind::kPad:
      need_same_params();
      p.pad_value = std::clamp(quantize_scalar(n.attr<ir::PadAttrs>().value, p.out), lo, hi);
      break;
    case OpKind::kConcat:
      for (const ir::Value* v : ins)
        if (!v || !quantized_int(*v) || v->dtype != yv.dtype)
          throw node_error(
              n,
              "quantized Concat needs every input quantized " + std::string(dtype_name(yv.dtype)),
              ErrorKind::kUnsupported);
      p.axis = normalized_axis(n.attr<ir::AxisAttrs>().axis, yv.shape.size());
      break;
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kIdentity:
    case OpKind::kTranspose:
      need_same_params();
      break;
    case OpKind::kQuantize:
      if (yv.dtype != DType::kInt8 && yv.dtype != DType::kUInt8)
        throw node_error(n, "Quantize output must be int8 or uint8");
      if (quantized_int(*ins[0]))
        p.output = quantize_multiplier(static_cast<double>(p.in[0].scale) /
                                       static_cast<double>(p.out.scale));
      else if (ins[0]->dtype != DType::kFloat32)
        throw node_error(n, "Quantize input must be float32 or quantized int8/uint8, is " +
                                std::string(dtype_name(ins[0]->dtype)));
      break;
    case OpKind::kDequantize:
      if (!ins[0]->quant)
        throw node_error(n,
                         "Dequantize input '" + ins[0]->name + "' has no quantization parameters");
      if (ins[0]->dtype == DType::kInt32) p.in[0] = per_tensor(n, *ins[0]);
      if (yv.dtype != DType::kFloat32) throw node_error(n, "Dequantize output must be float32");
      break;
    default:
      throw node_error(n,
                       "no int8 kernel for " + std::string(ir::op_name(n.op)) +
                           " (TFLite has no int8 form the IR maps to)",
                       ErrorKind::kUnsupported);
  }
  return p;
}

void quantize(const Tensor& x, const Affine& q, Tensor& y) {
  auto [lo, hi] = dtype_range(y.dtype());
  const float* xd = x.data<float>();
  const int64_t n = x.numel();
  if (y.dtype() == DType::kInt8 && native::cpu_has_avx2_fma()) {  // the same values, 8 at a time
    native::quantize_int8(xd, static_cast<size_t>(n), q.scale, q.zero_point, lo, hi, y.data_mutable<int8_t>());
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v =
        std::clamp(round_to_int(xd[i] / q.scale), lo - q.zero_point, hi - q.zero_point) +
        q.zero_point;
    if (y.dtype() == DType::kUInt8)
      y.data_mutable<uint8_t>()[i] = static_cast<uint8_t>(v);
    else
      y.data_mutable<int8_t>()[i] = static_cast<int8_t>(v);
  }
}

void dequantize(const Tensor& x, const Affine& q, Tensor& y) {
  const double scale = q.scale;
  float* yd = y.data_mutable<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) {
    int32_t v = x.dtype() == DType::kUInt8   ? x.data<uint8_t>()[i]
                : x.dtype() == DType::kInt32 ? x.data<int32_t>()[i]
                                             : x.data<int8_t>()[i];
    yd[i] = static_cast<float>(scale * static_cast<double>(v - q.zero_point));
  }
}

namespace {

template <typename T>
void conv(const Prepared& p, const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const auto& a = p.node.attr<ir::ConvAttrs>();
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t O = w.dim(0), KH = a.kernel[0], KW = a.kernel[1];
  const int64_t OH = y.dim(1), OW = y.dim(2);
  const int64_t G = a.groups, CG = C / G, OG = O / G;
  const T* xd = x.data<T>();
  const int8_t* wd = w.data<int8_t>();
  const int32_t* bd = b ? b->data<int32_t>() : nullptr;
  T* yd = y.data_mutable<T>();
  const int32_t in_offset = -p.in[0].zero_point;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t o = 0; o < O; ++o) {
          const int64_t g = o / OG;
          int32_t acc = 0;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
              if (iw < 0 || iw >= W) continue;
              const T* xp = xd + ((n * H + ih) * W + iw) * C + g * CG;
              const int8_t* wp = wd + ((o * KH + kh) * KW + kw) * CG;
              for (int64_t ci = 0; ci < CG; ++ci)
                acc += (static_cast<int32_t>(xp[ci]) + in_offset) * static_cast<int32_t>(wp[ci]);
            }
          }
          if (bd) acc += bd[o];
          acc = multiply_by_quantized_multiplier(acc, p.channel[static_cast<size_t>(o)]) +
                p.out.zero_point;
          yd[((n * OH + oh) * OW + ow) * O + o] =
              static_cast<T>(std::clamp(acc, p.act_min, p.act_max));
        }
}

template <typename T>
void gemm(const Prepared& p, const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t N = x.dim(0), I = x.dim(1), O = w.dim(0);
  const T* xd = x.data<T>();
  const int8_t* wd = w.data<int8_t>();
  const int32_t* bd = b ? b->data<int32_t>() : nullptr;
  T* yd = y.data_mutable<T>();
  const int32_t in_offset = -p.in[0].zero_point;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < O; ++o) {
      int32_t acc = 0;
      for (int64_t k = 0; k < I; ++k)
        acc +=
            (static_cast<int32_t>(xd[i * I + k]) + in_offset) * static_cast<int32_t>(wd[o * I + k]);
      if (bd) acc += bd[o];
      acc = multiply_by_quantized_multiplier(acc, p.channel[static_cast<size_t>(o)]) +
            p.out.zero_point;
      yd[i * O + o] = static_cast<T>(std::clamp(acc, p.act_min, p.act_max));
    }
}

// Numpy broadcasting of two operands into y, calling f(a, b) per output element.
template <typename T, typename F>
void broadcast_binary(const Tensor& a, const Tensor& b, Tensor& y, F f) {
  const Dims& ys = y.shape();
  const size_t r = ys.size();
  auto padded_strides = [&](const Tensor& t) {
    Dims s(r, 0);
    Dims ts = row_major_strides(t.shape());
    const size_t off = r - static_cast<size_t>(t.rank());
    for (size_t d = 0; d < static_cast<size_t>(t.rank()); ++d)
      s[off + d] = t.shape()[d] == 1 ? 0 : ts[d];
    return s;
  };
  const Dims as = padded_strides(a), bs = padded_strides(b);
  const T* ad = a.data<T>();
  const T* bd = b.data<T>();
  T* yd = y.data_mutable<T>();
  Dims idx(r, 0);
  int64_t ia = 0, ib = 0;
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    yd[i] = f(ad[ia], bd[ib]);
    for (size_t d = r; d-- > 0;) {
      ia += as[d];
      ib += bs[d];
      if (++idx[d] < ys[d]) break;
      ia -= as[d] * idx[d];
      ib -= bs[d] * idx[d];
      idx[d] = 0;
    }
  }
}

template <typename T>
void pool(const Prepared& p, const Tensor& x, bool max, Tensor& y) {
  const auto& a = p.node.attr<ir::PoolAttrs>();
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), OH = y.dim(1),
                OW = y.dim(2);
  const T* xd = x.data<T>();
  T* yd = y.data_mutable<T>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          int32_t acc = max ? std::numeric_limits<int32_t>::min() : 0;
          int32_t count = 0;
          for (int64_t kh = 0; kh < a.kernel[0]; ++kh)
            for (int64_t kw = 0; kw < a.kernel[1]; ++kw) {
              const int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
              const int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                // A folded zero padding counts (its value is the zero point).
                if (!max && a.count_include_pad && ih < H + a.pads[2] && iw < W + a.pads[3]) {
                  acc += p.in[0].zero_point;
                  ++count;
                }
                continue;
              }
              const int32_t v = xd[((n * H + ih) * W + iw) * C + c];
              if (max)
                acc = std::max(acc, v);
              else
                acc += v;
              ++count;
            }
          if (!max) {
            if (count == 0) {
              acc = p.out.zero_point;
            } else {
              acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
            }
          }
          yd[((n * OH + oh) * OW + ow) * C + c] =
              static_cast<T>(std::clamp(acc, p.act_min, p.act_max));
        }
}

template <typename T>
void mean(const Prepared& p, const Tensor& x, Tensor& y) {
  const Dims& xs = x.shape();
  const size_t r = xs.size();
  // Output strides over the input's dims (0 for reduced ones).
  Dims kept;
  for (size_t d = 0; d < r; ++d) kept.push_back(p.reduced[d] ? 1 : xs[d]);
  const Dims ks = row_major_strides(kept);
  Dims os(r);
  for (size_t d = 0; d < r; ++d) os[d] = p.reduced[d] ? 0 : ks[d];
  std::vector<int32_t> acc(static_cast<size_t>(y.numel()), 0);
  const T* xd = x.data<T>();
  Dims idx(r, 0);
  int64_t o = 0;
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) {
    acc[static_cast<size_t>(o)] += static_cast<int32_t>(xd[i]) - p.in[0].zero_point;
    for (size_t d = r; d-- > 0;) {
      o += os[d];
      if (++idx[d] < xs[d]) break;
      o -= os[d] * idx[d];
      idx[d] = 0;
    }
  }
  const int32_t count = static_cast<int32_t>(n / std::max<int64_t>(y.numel(), 1));
  T* yd = y.data_mutable<T>();
  for (size_t k = 0; k < acc.size(); ++k) {
    int32_t v = multiply_by_quantized_multiplier(acc[k], p.output);
    v = v > 0 ? (v + count / 2) / count : (v - count / 2) / count;
    yd[k] = static_cast<T>(std::clamp(v + p.out.zero_point, p.act_min, p.act_max));
  }
}

// TFLite's int8 hard-swish of one value (reference_ops::HardSwish).
int32_t hard_swish_one(const Prepared& p, int32_t x) {
  const int16_t input_value = static_cast<int16_t>(x - p.in[0].zero_point);
  const int16_t hires = static_cast<int16_t>(input_value * (1 << 7));
  const int16_t preshift_output = srdhm16(hires, p.hs_output_mult);
  int16_t reluish = hires;
  if (p.hs_reluish_exp > 0) reluish = saturating_left_shift16(reluish, p.hs_reluish_exp - 1);
  reluish = srdhm16(reluish, p.hs_reluish_mult);
  if (p.hs_reluish_exp > 0) reluish = saturating_left_shift16(reluish, 1);
  if (p.hs_reluish_exp < 0) reluish = rdbp16(reluish, -p.hs_reluish_exp);
  reluish = static_cast<int16_t>((static_cast<int32_t>(reluish) + (1 << 15)) >> 1);
  const int16_t preshift = sdhm16(reluish, preshift_output);
  int32_t out = rdbp16(preshift, -p.hs_output_exp);
  out += p.out.zero_point;
  return std::clamp(out, p.act_min, p.act_max);
}

// ReLU / clip: rescale to the output params, clamp to the activation range (TFLite's ReluX).
int32_t rescale_one(const Prepared& p, int32_t x) {
  const int32_t v =
      p.out.zero_point + multiply_by_quantized_multiplier(x - p.in[0].zero_point, p.output);
  return std::clamp(v, p.act_min, p.act_max);
}

template <typename T>
void lookup(const Prepared& p, const Tensor& x, Tensor& y) {
  const T* xd = x.data<T>();
  T* yd = y.data_mutable<T>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) yd[i] = static_cast<T>(p.lut[static_cast<uint8_t>(xd[i])]);
}

template <typename T>
void softmax(const Prepared& p, const Tensor& x, Tensor& y) {
  const int64_t last = x.dim(-1), rows = x.numel() / std::max<int64_t>(last, 1);
  const T* xd = x.data<T>();
  T* yd = y.data_mutable<T>();
  for (int64_t r = 0; r < rows; ++r, xd += last, yd += last) {
    int32_t mx = std::numeric_limits<T>::min();
    for (int64_t j = 0; j < last; ++j) mx = std::max(mx, static_cast<int32_t>(xd[j]));
    const float* table = p.exp_table.data() + (255 - mx);
    float sum = 0.0f;
    for (int64_t j = 0; j < last; ++j) sum += table[xd[j]];
    const float inv = 1.0f / (sum * p.out.scale);
    for (int64_t j = 0; j < last; ++j) {
      const float scaled = table[xd[j]] * inv;
      const int32_t q = std::clamp(round_to_int(scaled), -512, 512) + p.out.zero_point;
      yd[j] = static_cast<T>(std::clamp(q, p.act_min, p.act_max));
    }
  }
}

template <typename T>
void pad(const Prepared& p, const Tensor& x, Tensor& y) {
  const auto& a = p.node.attr<ir::PadAttrs>();
  const size_t r = static_cast<size_t>(x.rank());
  std::fill_n(y.data_mutable<T>(), y.numel(), static_cast<T>(p.pad_value));
  const Dims xst = row_major_strides(x.shape()), yst = row_major_strides(y.shape());
  const T* xd = x.data<T>();
  T* yd = y.data_mutable<T>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t o = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      o += (rem / xst[d] + a.pads[d]) * yst[d];
      rem %= xst[d];
    }
    yd[o] = xd[i];
  }
}

template <typename T>
void concat(const Prepared& p, std::span<const Tensor> xs, Tensor& y) {
  const Dims& ys = y.shape();
  int64_t outer = 1;
  for (int64_t d = 0; d < p.axis; ++d) outer *= ys[static_cast<size_t>(d)];
  T* dst = y.data_mutable<T>();
  auto [lo, hi] = dtype_range(p.out_dtype);
  const float inverse_out = 1.0f / p.out.scale;
  for (int64_t o = 0; o < outer; ++o)
    for (size_t k = 0; k < xs.size(); ++k) {
      const int64_t chunk = xs[k].numel() / std::max<int64_t>(outer, 1);
      const T* src = xs[k].data<T>() + o * chunk;
      if (same_params(p.in[k], p.out)) {
        std::memcpy(dst, src, static_cast<size_t>(chunk) * sizeof(T));
      } else {  // TFLite's ConcatenationWithScaling
        const float scale = p.in[k].scale * inverse_out;
        const float bias = -static_cast<float>(p.in[k].zero_point) * scale;
        for (int64_t j = 0; j < chunk; ++j)
          dst[j] = static_cast<T>(std::clamp(
              std::clamp(round_to_int(static_cast<float>(src[j]) * scale + bias), -512, 512) +
                  p.out.zero_point,
              lo, hi));
      }
      dst += chunk;
    }
}

template <typename T>
void run_typed(const Prepared& p, std::span<const Tensor> in, Tensor& y) {
  auto opt = [&](size_t i) -> const Tensor* {
    return i < in.size() && in[i].defined() ? &in[i] : nullptr;
  };
  const ir::Node& n = p.node;
  switch (n.op) {
    case OpKind::kConv:
      conv<T>(p, in[0], in[1], opt(2), y);
      return;
    case OpKind::kGemm:
      gemm<T>(p, in[0], in[1], opt(2), y);
      return;
    case OpKind::kAdd: {
      const int32_t o1 = -p.in[0].zero_point, o2 = -p.in[1].zero_point;
      broadcast_binary<T>(in[0], in[1], y, [&](T a, T b) {
        const int32_t sa = (static_cast<int32_t>(a) + o1) * (1 << p.left_shift);
        const int32_t sb = (static_cast<int32_t>(b) + o2) * (1 << p.left_shift);
        const int32_t sum = multiply_by_quantized_multiplier(sa, p.input1) +
                            multiply_by_quantized_multiplier(sb, p.input2);
        const int32_t v = multiply_by_quantized_multiplier(sum, p.output) + p.out.zero_point;
        return static_cast<T>(std::clamp(v, p.act_min, p.act_max));
      });
      return;
    }
    case OpKind::kMul: {
      const int32_t o1 = -p.in[0].zero_point, o2 = -p.in[1].zero_point;
      broadcast_binary<T>(in[0], in[1], y, [&](T a, T b) {
        const int32_t prod = (static_cast<int32_t>(a) + o1) * (static_cast<int32_t>(b) + o2);
        const int32_t v = multiply_by_quantized_multiplier(prod, p.output) + p.out.zero_point;
        return static_cast<T>(std::clamp(v, p.act_min, p.act_max));
      });
      return;
    }
    case OpKind::kMaxPool:
      pool<T>(p, in[0], true, y);
      return;
    case OpKind::kAveragePool:
      pool<T>(p, in[0], false, y);
      return;
    case OpKind::kReduceMean:
      mean<T>(p, in[0], y);
      return;
    case OpKind::kHardSwish:
    case OpKind::kSigmoid:
    case OpKind::kSilu:
    case OpKind::kRelu:
    case OpKind::kClip:
      lookup<T>(p, in[0], y);
      return;
    case OpKind::kSoftmax:
      softmax<T>(p, in[0], y);
      return;
    case OpKind::kPad:
      pad<T>(p, in[0], y);
      return;
    case OpKind::kConcat:
      concat<T>(p, in, y);
      return;
    case OpKind::kTranspose:
      ref::transpose(in[0], n.attr<ir::TransposeAttrs>().perm, y);
      return;
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kIdentity:
      ref::copy(in[0], y);
      return;
    default:
      break;
  }
  throw node_error(n, "no int8 kernel", ErrorKind::kInternal);
}

}  // namespace

void run(const Prepared& p, std::span<const Tensor> in, Tensor& y) {
  if (p.node.op == OpKind::kQuantize) {
    if (in[0].dtype() == DType::kFloat32) {
      quantize(in[0], p.out, y);
      return;
    }
    // Requantize int8 <-> uint8 (or a change of params).
    auto [lo, hi] = dtype_range(p.out_dtype);
    const int64_t n = in[0].numel();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t x =
          in[0].dtype() == DType::kUInt8 ? in[0].data<uint8_t>()[i] : in[0].data<int8_t>()[i];
      const int32_t v = std::clamp(
          p.out.zero_point + multiply_by_quantized_multiplier(x - p.in[0].zero_point, p.output), lo,
          hi);
      if (p.out_dtype == DType::kUInt8)
        y.data_mutable<uint8_t>()[i] = static_cast<uint8_t>(v);
      else
        y.data_mutable<int8_t>()[i] = static_cast<int8_t>(v);
    }
    return;
  }
  if (p.node.op == OpKind::kDequantize) {
    dequantize(in[0], p.in[0], y);
    return;
  }
  if (p.in_dtype == DType::kUInt8)
    run_typed<uint8_t>(p, in, y);
  else
    run_typed<int8_t>(p, in, y);
}

}  // namespace modex::runtime::q8
