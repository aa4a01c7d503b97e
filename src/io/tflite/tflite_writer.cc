#include "io/tflite/tflite_writer.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "core/half.h"
#include "core/tensor_ops.h"
#include "io/tflite/tflite_ops.h"
#include "io/tflite/tflite_padding.h"
#include "io/tflite/tflite_schema.h"

namespace modex::tflite_io {
namespace {

using ir::OpKind;
using ir::ValueId;
namespace fbs = flatbuffers;

constexpr float kFloat16Max = 65504.0f;
// FlatBuffers address with signed 32-bit offsets; weights beyond this need TFLite's external
// buffers, which modex does not write.
constexpr size_t kMaxFlatbufferBytes = (size_t{1} << 31) - (size_t{64} << 20);

Error unsupported(const ir::Node& n, const std::string& msg) {
  Error e(msg, ErrorKind::kUnsupported);
  e.node(n.name).op(std::string(ir::op_name(n.op)));
  return e;
}

// ---------------------------------------------------------------------------------------------
// Op versions: the version the TFLite runtime registers a kernel under, for what the op uses
// (TFLite's op_version rules, float32 activations only), and the runtime release that introduced
// each (op, version) pair, for the `min_runtime_version` entry.

struct OpSignature {
  std::vector<fb::TensorType> input_types;
  fb::TensorType output_type = fb::TensorType::FLOAT32;
  bool input_per_channel = false;  // the first input has per-channel quantization (DEQUANTIZE)
  bool bias_omitted = false;       // FULLY_CONNECTED without its third input
  double mul_ratio = 0;            // int8 MUL: s_in1 * s_in2 / s_out
  std::vector<size_t> input_ranks;
  bool inputs_broadcast = false;  // the first two inputs differ in shape
  bool dilated = false;           // DEPTHWISE_CONV_2D with a dilation != 1
  bool grouped = false;           // CONV_2D whose filter has fewer input channels than the input
  bool keep_num_dims = false;     // FULLY_CONNECTED
};

size_t max_rank(const OpSignature& s) {
  return s.input_ranks.empty() ? 0 : *std::max_element(s.input_ranks.begin(), s.input_ranks.end());
}

// Versions of ops on int8 (full-integer) operands, TFLite's op_version rules for them.
int int8_op_version(BuiltinOp op, const OpSignature& s) {
  switch (op) {
    case BuiltinOp::kConv2d:
      return s.grouped ? 6 : 3;
    case BuiltinOp::kDepthwiseConv2d:
      return 3;
    case BuiltinOp::kFullyConnected:
      return s.bias_omitted ? 6 : s.keep_num_dims ? 5 : 4;
    case BuiltinOp::kMul:
      return s.mul_ratio >= 1.0 ? 3 : 2;
    case BuiltinOp::kDequantize:
      return s.input_per_channel ? 5 : 2;
    case BuiltinOp::kPad:
    case BuiltinOp::kPadV2:
      return s.input_ranks.at(0) > 4 ? 4 : 2;
    case BuiltinOp::kTranspose:
      return s.input_ranks.at(0) > 5 ? 6 : s.input_ranks.at(0) > 4 ? 4 : 2;
    case BuiltinOp::kAdd:
    case BuiltinOp::kAveragePool2d:
    case BuiltinOp::kMaxPool2d:
    case BuiltinOp::kConcatenation:
    case BuiltinOp::kLogistic:
    case BuiltinOp::kSoftmax:
    case BuiltinOp::kMean:
    case BuiltinOp::kRelu:
    case BuiltinOp::kRelu6:
      return 2;
    default:  // RESHAPE, QUANTIZE, HARD_SWISH
      return 1;
  }
}

int op_version(BuiltinOp op, const OpSignature& s) {
  const bool wide_broadcast = s.inputs_broadcast && max_rank(s) > 4;
  if (!s.input_types.empty() && s.input_types[0] == fb::TensorType::INT8) return int8_op_version(op, s);
  switch (op) {
    case BuiltinOp::kConv2d:
      return s.grouped ? 6 : 1;
    case BuiltinOp::kDepthwiseConv2d:
      return s.dilated ? 2 : 1;
    case BuiltinOp::kFullyConnected:
      return s.keep_num_dims ? 5 : 1;
    case BuiltinOp::kDequantize:
      return s.input_types.at(0) == fb::TensorType::FLOAT16 ? 3 : 1;
    case BuiltinOp::kSub:
      return wide_broadcast ? 3 : 1;
    case BuiltinOp::kDiv:
      return wide_broadcast ? 2 : 1;
    case BuiltinOp::kMaximum:
    case BuiltinOp::kMinimum:
      return wide_broadcast ? 3 : 1;
    case BuiltinOp::kPad:
    case BuiltinOp::kPadV2:
      return s.input_ranks.at(0) > 4 ? 4 : 1;
    case BuiltinOp::kTranspose:
      return s.input_ranks.at(0) > 5 ? 6 : s.input_ranks.at(0) > 4 ? 4 : 1;
    default:
      return 1;
  }
}

struct RuntimeVersion {
  BuiltinOp op;
  int version;
  const char* runtime;
};

constexpr RuntimeVersion kMinRuntime[] = {
    {BuiltinOp::kAdd, 1, "1.5.0"},
    {BuiltinOp::kAveragePool2d, 1, "1.5.0"},
    {BuiltinOp::kBatchMatMul, 1, "2.3.0"},
    {BuiltinOp::kConcatenation, 1, "1.5.0"},
    {BuiltinOp::kConv2d, 1, "1.5.0"},
    {BuiltinOp::kConv2d, 3, "1.14.0"},
    {BuiltinOp::kConv2d, 6, "2.9.0"},
    {BuiltinOp::kDepthwiseConv2d, 1, "1.5.0"},
    {BuiltinOp::kDepthwiseConv2d, 2, "1.12.0"},
    {BuiltinOp::kDepthwiseConv2d, 3, "1.14.0"},
    {BuiltinOp::kDequantize, 1, "1.13.1"},
    {BuiltinOp::kDequantize, 2, "1.14.0"},
    {BuiltinOp::kDequantize, 3, "1.15.0"},
    {BuiltinOp::kDequantize, 5, "2.7.0"},
    {BuiltinOp::kDiv, 1, "1.6.0"},
    {BuiltinOp::kDiv, 2, "2.3.0"},
    {BuiltinOp::kFullyConnected, 1, "1.5.0"},
    {BuiltinOp::kFullyConnected, 4, "1.14.0"},
    {BuiltinOp::kFullyConnected, 5, "2.0.0"},
    {BuiltinOp::kHardSwish, 1, "1.15.0"},
    {BuiltinOp::kLeakyRelu, 1, "1.13.1"},
    {BuiltinOp::kLogistic, 1, "1.14.0"},
    {BuiltinOp::kMaxPool2d, 1, "1.5.0"},
    {BuiltinOp::kMaximum, 1, "1.14.0"},
    {BuiltinOp::kMaximum, 3, "2.3.0"},
    {BuiltinOp::kMean, 1, "1.6.0"},
    {BuiltinOp::kMinimum, 1, "1.14.0"},
    {BuiltinOp::kMinimum, 3, "2.3.0"},
    {BuiltinOp::kMul, 1, "1.5.0"},
    {BuiltinOp::kMul, 2, "1.14.0"},
    {BuiltinOp::kMul, 3, "1.15.0"},
    {BuiltinOp::kQuantize, 1, "1.14.0"},
    {BuiltinOp::kAdd, 2, "1.14.0"},
    {BuiltinOp::kAveragePool2d, 2, "1.14.0"},
    {BuiltinOp::kMaxPool2d, 2, "1.14.0"},
    {BuiltinOp::kLogistic, 2, "1.14.0"},
    {BuiltinOp::kSoftmax, 2, "1.14.0"},
    {BuiltinOp::kMean, 2, "1.14.0"},
    {BuiltinOp::kPad, 2, "1.14.0"},
    {BuiltinOp::kConcatenation, 2, "1.14.0"},
    {BuiltinOp::kPad, 1, "1.5.0"},
    {BuiltinOp::kPad, 4, "2.6.0"},
    {BuiltinOp::kPadV2, 1, "1.9.0"},
    {BuiltinOp::kPadV2, 4, "2.6.0"},
    {BuiltinOp::kPrelu, 1, "1.8.0"},
    {BuiltinOp::kRelu, 1, "1.5.0"},
    {BuiltinOp::kRelu6, 1, "1.5.0"},
    {BuiltinOp::kReluN1To1, 1, "1.5.0"},
    {BuiltinOp::kReshape, 1, "1.5.0"},
    {BuiltinOp::kSoftmax, 1, "1.5.0"},
    {BuiltinOp::kSub, 1, "1.6.0"},
    {BuiltinOp::kSub, 3, "2.3.0"},
    {BuiltinOp::kTanh, 1, "1.14.0"},
    {BuiltinOp::kTranspose, 1, "1.6.0"},
    {BuiltinOp::kTranspose, 4, "2.3.0"},
};

const char* min_runtime(BuiltinOp op, int version) {
  for (const RuntimeVersion& r : kMinRuntime)
    if (r.op == op && r.version == version) return r.runtime;
  return nullptr;
}

std::vector<int> version_parts(const std::string& v) {
  std::vector<int> parts;
  size_t start = 0;
  while (start <= v.size()) {
    size_t dot = v.find('.', start);
    if (dot == std::string::npos) dot = v.size();
    parts.push_back(std::atoi(v.substr(start, dot - start).c_str()));
    start = dot + 1;
  }
  return parts;
}

bool runtime_older(const std::string& a, const std::string& b) {
  if (a.empty()) return !b.empty();
  return version_parts(a) < version_parts(b);
}

// ---------------------------------------------------------------------------------------------
// Activations: ReLU and ReLU6 fuse into the ops that allow it; the others follow as their own op.

struct ActivationForm {
  ir::Activation activation;
  fb::ActivationFunctionType fused;  // NONE when TFLite has no fused form
};

constexpr ActivationForm kActivationForms[] = {
    {ir::Activation::kNone, fb::ActivationFunctionType::NONE},
    {ir::Activation::kRelu, fb::ActivationFunctionType::RELU},
    {ir::Activation::kRelu6, fb::ActivationFunctionType::RELU6},
    {ir::Activation::kHardSwish, fb::ActivationFunctionType::NONE},
    {ir::Activation::kSigmoid, fb::ActivationFunctionType::NONE},
    {ir::Activation::kSilu, fb::ActivationFunctionType::NONE},
};

bool fusable(ir::Activation a) {
  for (const ActivationForm& f : kActivationForms)
    if (f.activation == a)
      return a == ir::Activation::kNone || f.fused != fb::ActivationFunctionType::NONE;
  return false;
}

fb::ActivationFunctionType fused_code(ir::Activation a) {
  for (const ActivationForm& f : kActivationForms)
    if (f.activation == a) return f.fused;
  return fb::ActivationFunctionType::NONE;
}

// ---------------------------------------------------------------------------------------------

constexpr int32_t kOmitted = -1;  // an omitted optional operand

struct ValueShape {
  Dims dims;                  // at batch 1
  std::vector<bool> dynamic;  // dims that follow the batch
};

struct TensorRecord {
  std::string name;
  fb::TensorType type = fb::TensorType::FLOAT32;
  std::vector<int32_t> shape;
  std::vector<int32_t> signature;  // empty when every dim is static
  uint32_t buffer = 0;
  std::optional<ir::QuantParams> quant;  // axis = quantized_dimension
};

struct OperatorRecord {
  BuiltinOp op;
  std::vector<int32_t> inputs;
  std::vector<int32_t> outputs;
  fb::BuiltinOptions options_type = fb::BuiltinOptions::NONE;
  fbs::Offset<void> options;
};

struct OpFlags {
  bool dilated = false;
  bool grouped = false;
  bool keep_num_dims = false;
};

int32_t to_i32(int64_t v, const std::string& what) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    throw Error(what + " " + std::to_string(v) + " does not fit TFLite's 32-bit fields",
                ErrorKind::kUnsupported);
  return static_cast<int32_t>(v);
}

int64_t normalize_axis(int64_t axis, size_t rank) {
  return axis < 0 ? axis + static_cast<int64_t>(rank) : axis;
}

class Exporter;
using Emitter = void (*)(Exporter&, const ir::Node&);

class Exporter {
 public:
  Exporter(const ir::Graph& g, const TfliteWriteOptions& options)
      : g_(g), options_(options), fbb_(initial_size(g, options)) {
    tensor_of_.assign(g.values().size(), kOmitted);
    resolve_batch();
  }

  // Builds the whole model; the bytes are then in builder().
  void build();
  const fbs::FlatBufferBuilder& builder() const { return fbb_; }

  // --- for emitters ---
  const ir::Value& value(ValueId v) const { return g_.value(v); }
  ValueShape shape_of(ValueId v) const;

  // The tensor holding a value: graph inputs and node outputs once emitted; constants are
  // written on first use (float16 + DEQUANTIZE when weights are float16).
  int32_t tensor(ValueId v);
  // Creates the tensor a node's output is written into.
  int32_t output_tensor(ValueId v);
  // A node output that is another value under a new name (Identity).
  void alias(ValueId v, ValueId to) { tensor_of_[static_cast<size_t>(v)] = tensor(to); }
  // An intermediate float32 tensor of the writer's own lowering.
  int32_t scratch(const std::string& name, const ValueShape& shape);
  // An intermediate of the writer's own lowering with the type and quantization of tensor `like`.
  int32_t scratch_like(const std::string& name, const ValueShape& shape, int32_t like);
  // A weight derived from an IR constant (a transposed filter, a zero bias): float16 like every
  // weight when asked to; with dynamic int8 weights, quantized per channel along `channel_axis`.
  int32_t weight(const std::string& name, const Tensor& t, int channel_axis = 0);
  // A quantized integer constant (int8 filter, int32 bias) with its params.
  int32_t quantized_constant(const std::string& name, const Tensor& t, const ir::QuantParams& q);
  const TensorRecord& record(int32_t t) const { return tensors_.at(static_cast<size_t>(t)); }
  bool is_quantized(int32_t t) const { return record(t).quant.has_value(); }
  int32_t int32_constant(const std::string& name, const std::vector<int32_t>& values,
                         const Dims& dims);
  // A float32 scalar of the writer's lowering (shape [1]), never stored as float16.
  int32_t float_scalar(const std::string& name, float v);

  void op(BuiltinOp op, std::vector<int32_t> inputs, std::vector<int32_t> outputs,
          fb::BuiltinOptions options_type = fb::BuiltinOptions::NONE, fbs::Offset<void> options = 0,
          OpFlags flags = {});
  fbs::FlatBufferBuilder& fbb() { return fbb_; }

  // Where an op with fused activation `act` writes: the node's output, or a scratch tensor when
  // the activation follows as its own op (finish_activation then writes the node's output).
  int32_t activation_target(const ir::Node& n, ir::Activation act);
  void finish_activation(const ir::Node& n, ir::Activation act, int32_t pre);
  // act(in) -> out as standalone ops.
  void activation_ops(ir::Activation act, int32_t in, int32_t out, const std::string& base,
                      const ValueShape& shape);
  // PAD (zeros) or PADV2 (`value`) over the given [begin, end] pairs of every dim, into `out`
  // or a new scratch tensor called `name`.
  int32_t pad(int32_t in, const ValueShape& in_shape, const std::vector<int64_t>& begins,
              const std::vector<int64_t>& ends, float value, const std::string& name,
              int32_t out = kOmitted);

  // True when the value cannot be negative (it comes out of a ReLU, a sigmoid, ...), so zeros
  // can pad a max pool.
  bool known_non_negative(ValueId v) const;
  // The RESHAPE target for a value: its batch-1 dims with -1 on the dynamic one.
  std::vector<int32_t> reshape_target(const ir::Node& n, ValueId out) const;

 private:
  static size_t initial_size(const ir::Graph& g, const TfliteWriteOptions& options);
  void resolve_batch();
  int32_t add_tensor(TensorRecord t);
  uint32_t add_buffer(const uint8_t* data, size_t size);
  int32_t constant_tensor(const std::string& name, const Tensor& t, bool is_weight, int channel_axis = 0);
  int32_t dynamic_int8_weight(const std::string& name, const Tensor& data, int channel_axis);
  void emit_nodes();
  fbs::Offset<fb::SubGraph> finish_subgraph(
      fbs::Offset<fbs::Vector<fbs::Offset<fb::Operator>>> operators);
  fbs::Offset<fbs::Vector<fbs::Offset<fb::Metadata>>> finish_metadata();
  fbs::Offset<fbs::Vector<fbs::Offset<fb::SignatureDef>>> finish_signatures();
  fbs::Offset<fbs::Vector<fbs::Offset<fb::OperatorCode>>> finish_operator_codes(
      std::vector<uint32_t>& opcode_index);

  const ir::Graph& g_;
  const TfliteWriteOptions& options_;
  fbs::FlatBufferBuilder fbb_;
  // Shapes at batch 1 and batch 2; dims that differ follow the batch.
  std::optional<ir::Graph> at_batch1_, at_batch2_;
  std::vector<int32_t> tensor_of_;  // ValueId -> tensor index
  std::vector<TensorRecord> tensors_;
  std::vector<fbs::Offset<fb::Buffer>> buffers_;
  // Buffers written so far by a hash of their bytes, with the offset of their data vector.
  std::unordered_multimap<size_t, std::pair<uint32_t, fbs::Offset<fbs::Vector<uint8_t>>>> buffer_by_hash_;
  std::map<std::pair<std::vector<int32_t>, Dims>, int32_t> int32_constants_;  // see int32_constant
  std::vector<OperatorRecord> operators_;
  std::vector<int> versions_;  // per operator
};

size_t Exporter::initial_size(const ir::Graph& g, const TfliteWriteOptions& options) {
  // Reserve the weights up front so the builder does not grow by doubling (peak memory).
  size_t bytes = 0;
  for (const ir::Value& v : g.values())
    if (v.is_constant()) bytes += v.constant.nbytes();
  if (options.weights == WeightFormat::kFloat16) bytes /= 2;
  if (bytes > kMaxFlatbufferBytes)
    throw Error(
        "the weights take " + std::to_string(bytes >> 20) +
            " MB; TFLite flatbuffers hold at most 2 GB and modex does not write external buffers",
        ErrorKind::kUnsupported);
  return bytes + (size_t{1} << 20);
}

void Exporter::resolve_batch() {
  std::map<std::string, int64_t> batch1, batch2;
  for (ValueId in : g_.inputs()) {
    const ir::Value& v = g_.value(in);
    for (size_t i = 0; i < v.shape.size(); ++i) {
      if (v.shape[i].is_static()) continue;
      if (i != 0)
        throw Error("dim " + std::to_string(i) +
                        " of input is dynamic; TFLite export needs static sizes except the batch",
                    ErrorKind::kUnsupported)
            .tensor(v.name)
            .hint("export with a fixed input size");
      batch1[v.shape[i].symbol] = 1;
      batch2[v.shape[i].symbol] = 2;
    }
  }
  at_batch1_.emplace(g_);
  at_batch1_->infer_shapes(batch1);
  if (!batch2.empty()) {
    at_batch2_.emplace(g_);
    at_batch2_->infer_shapes(batch2);
  }
}

ValueShape Exporter::shape_of(ValueId v) const {
  const ir::Value& val = at_batch1_->value(v);
  auto dims = ir::to_dims(val.shape);
  if (!dims)
    throw Error("shape " + ir::shape_to_string(val.shape) + " is not static at batch 1",
                ErrorKind::kUnsupported)
        .tensor(val.name);
  ValueShape s{*dims, std::vector<bool>(dims->size(), false)};
  if (at_batch2_) {
    auto dims2 = ir::to_dims(at_batch2_->value(v).shape);
    for (size_t i = 0; i < s.dims.size(); ++i) s.dynamic[i] = !dims2 || (*dims2)[i] != s.dims[i];
  }
  return s;
}

int32_t Exporter::add_tensor(TensorRecord t) {
  tensors_.push_back(std::move(t));
  return static_cast<int32_t>(tensors_.size() - 1);
}

uint32_t Exporter::add_buffer(const uint8_t* data, size_t size) {
  // Constants with the same bytes share one buffer (TFLite tensors may): the paddings of every
  // PAD alike, the axes of every MEAN, a model's all-zero biases.
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const size_t hash = std::hash<std::string_view>{}(bytes);
  for (auto [it, end] = buffer_by_hash_.equal_range(hash); it != end; ++it) {
    const auto* written = fbs::GetTemporaryPointer(fbb_, it->second.second);
    if (written->size() == size && std::memcmp(written->data(), data, size) == 0) return it->second.first;
  }
  // Weight data starts 16-byte aligned in the file (the builder pads the whole buffer to its
  // largest alignment, so alignment from the end is alignment from the start).
  fbb_.ForceVectorAlignment(size, sizeof(uint8_t), 16);
  auto vec = fbb_.CreateVector(data, size);
  buffers_.push_back(fb::CreateBuffer(fbb_, vec));
  const auto index = static_cast<uint32_t>(buffers_.size() - 1);
  buffer_by_hash_.emplace(hash, std::pair{index, vec});
  return index;
}

std::vector<int32_t> shape_i32(const Dims& dims, const std::string& name) {
  std::vector<int32_t> s;
  for (int64_t d : dims) s.push_back(to_i32(d, "tensor '" + name + "': dim"));
  return s;
}

int32_t Exporter::dynamic_int8_weight(const std::string& name, const Tensor& data, int channel_axis) {
  // Symmetric per-channel int8 along channel_axis, then DEQUANTIZE to float32.
  const Dims& dims = data.shape();
  const int64_t channels = dims.at(static_cast<size_t>(channel_axis));
  int64_t inner = 1;
  for (size_t i = static_cast<size_t>(channel_axis) + 1; i < dims.size(); ++i) inner *= dims[i];
  const int64_t outer = data.numel() / (channels * inner);
  auto src = data.values<float>();
  std::vector<float> amax(static_cast<size_t>(channels), 0.0f);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        float v = std::abs(src[static_cast<size_t>((o * channels + c) * inner + i)]);
        if (std::isfinite(v)) amax[static_cast<size_t>(c)] = std::max(amax[static_cast<size_t>(c)], v);
      }
  ir::QuantParams q;
  q.axis = channel_axis;
  for (float a : amax) q.scale.push_back(a > 0.0f ? a / 127.0f : 1.0f);
  q.zero_point.assign(q.scale.size(), 0);
  std::vector<int8_t> values(static_cast<size_t>(data.numel()));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        const size_t k = static_cast<size_t>((o * channels + c) * inner + i);
        const double r = std::round(static_cast<double>(src[k]) / q.scale[static_cast<size_t>(c)]);
        values[k] = static_cast<int8_t>(std::isnan(r) ? 0.0 : std::clamp(r, -127.0, 127.0));
      }
  TensorRecord rec{name, fb::TensorType::INT8, shape_i32(dims, name), {}, 0, q};
  rec.buffer = add_buffer(reinterpret_cast<const uint8_t*>(values.data()), values.size());
  int32_t stored = add_tensor(std::move(rec));
  int32_t dequantized = add_tensor({name + "/dequantized", fb::TensorType::FLOAT32, shape_i32(dims, name), {}, 0, {}});
  op(BuiltinOp::kDequantize, {stored}, {dequantized});
  return dequantized;
}

int32_t Exporter::quantized_constant(const std::string& name, const Tensor& t, const ir::QuantParams& q) {
  auto type = tensor_type_for(t.dtype());
  if (!type || is_float(t.dtype()))
    throw Error("quantized constant of dtype " + std::string(dtype_name(t.dtype())) + " has no TFLite type", ErrorKind::kUnsupported)
        .tensor(name);
  TensorRecord rec{name, *type, shape_i32(t.shape(), name), {}, 0, q};
  rec.buffer = add_buffer(t.raw(), t.nbytes());
  return add_tensor(std::move(rec));
}

int32_t Exporter::constant_tensor(const std::string& name, const Tensor& t, bool is_weight, int channel_axis) {
  // Activations are float32, so float operands are too, whatever precision the IR kept them in.
  Tensor data = is_float(t.dtype()) ? t.to(DType::kFloat32) : t;
  if (is_weight && options_.weights == WeightFormat::kInt8Dynamic && data.dtype() == DType::kFloat32 &&
      data.rank() >= 2 && data.numel() >= kDynamicMinElements)
    return dynamic_int8_weight(name, data, channel_axis);
  if (is_weight && options_.weights == WeightFormat::kFloat16 && data.dtype() == DType::kFloat32) {
    std::vector<uint16_t> half(static_cast<size_t>(data.numel()));
    auto src = data.values<float>();
    for (size_t i = 0; i < half.size(); ++i)
      half[i] = f32_to_f16(std::clamp(src[i], -kFloat16Max, kFloat16Max));
    TensorRecord fp16{name, fb::TensorType::FLOAT16, shape_i32(data.shape(), name), {}, 0, {}};
    fp16.buffer = add_buffer(reinterpret_cast<const uint8_t*>(half.data()), half.size() * 2);
    int32_t stored = add_tensor(std::move(fp16));
    int32_t dequantized = add_tensor(
        {name + "/dequantized", fb::TensorType::FLOAT32, shape_i32(data.shape(), name), {}, 0, {}});
    op(BuiltinOp::kDequantize, {stored}, {dequantized});
    return dequantized;
  }
  auto type = tensor_type_for(data.dtype());
  if (!type)
    throw Error(
        "constant of dtype " + std::string(dtype_name(data.dtype())) + " has no TFLite type",
        ErrorKind::kUnsupported)
        .tensor(name);
  TensorRecord rec{name, *type, shape_i32(data.shape(), name), {}, 0, {}};
  rec.buffer = add_buffer(data.raw(), data.nbytes());
  return add_tensor(std::move(rec));
}

int32_t Exporter::tensor(ValueId v) {
  int32_t& t = tensor_of_[static_cast<size_t>(v)];
  if (t != kOmitted) return t;
  const ir::Value& val = g_.value(v);
  if (!val.is_constant())
    throw Error("value used before it is produced", ErrorKind::kInternal).tensor(val.name);
  t = val.quant ? quantized_constant(val.name, val.constant, *val.quant)
                : constant_tensor(val.name, val.constant, /*is_weight=*/true);
  return t;
}

int32_t Exporter::output_tensor(ValueId v) {
  const ir::Value& val = g_.value(v);
  if (tensor_of_[static_cast<size_t>(v)] != kOmitted)
    throw Error("value written twice", ErrorKind::kInternal).tensor(val.name);
  const bool quantized = (val.dtype == DType::kInt8 || val.dtype == DType::kUInt8) && val.quant;
  if (val.dtype != DType::kFloat32 && !quantized)
    throw Error("TFLite export writes float32 and quantized int8/uint8 activations; this tensor is " +
                    std::string(dtype_name(val.dtype)) + (val.quant ? "" : " without quantization parameters"),
                ErrorKind::kUnsupported)
        .tensor(val.name);
  if (quantized && val.quant->per_channel())
    throw Error("activations must have per-tensor quantization", ErrorKind::kUnsupported).tensor(val.name);
  int32_t t = scratch(val.name, shape_of(v));
  if (quantized) {
    tensors_[static_cast<size_t>(t)].type = val.dtype == DType::kInt8 ? fb::TensorType::INT8 : fb::TensorType::UINT8;
    tensors_[static_cast<size_t>(t)].quant = val.quant;
  }
  tensor_of_[static_cast<size_t>(v)] = t;
  return t;
}

int32_t Exporter::scratch_like(const std::string& name, const ValueShape& shape, int32_t like) {
  int32_t t = scratch(name, shape);
  tensors_[static_cast<size_t>(t)].type = record(like).type;
  tensors_[static_cast<size_t>(t)].quant = record(like).quant;
  return t;
}

int32_t Exporter::scratch(const std::string& name, const ValueShape& shape) {
  TensorRecord rec{name, fb::TensorType::FLOAT32, shape_i32(shape.dims, name), {}, 0, {}};
  if (std::find(shape.dynamic.begin(), shape.dynamic.end(), true) != shape.dynamic.end()) {
    rec.signature = rec.shape;
    for (size_t i = 0; i < shape.dynamic.size(); ++i)
      if (shape.dynamic[i]) rec.signature[i] = -1;
  }
  return add_tensor(std::move(rec));
}

int32_t Exporter::weight(const std::string& name, const Tensor& t, int channel_axis) {
  return constant_tensor(name, t, true, channel_axis);
}

int32_t Exporter::int32_constant(const std::string& name, const std::vector<int32_t>& values,
                                 const Dims& dims) {
  // Operator parameters (paddings, axes, shapes, permutations) with the same values and shape are
  // one tensor that every op using them reads; it keeps the name of the first.
  auto [it, fresh] = int32_constants_.try_emplace({values, dims}, 0);
  if (!fresh) return it->second;
  TensorRecord rec{name, fb::TensorType::INT32, shape_i32(dims, name), {}, 0, {}};
  rec.buffer =
      add_buffer(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(int32_t));
  it->second = add_tensor(std::move(rec));
  return it->second;
}

int32_t Exporter::float_scalar(const std::string& name, float v) {
  return constant_tensor(name, Tensor::from_floats({1}, std::span<const float>(&v, 1)),
                         /*is_weight=*/false);
}

void Exporter::op(BuiltinOp op, std::vector<int32_t> inputs, std::vector<int32_t> outputs,
                  fb::BuiltinOptions options_type, fbs::Offset<void> options, OpFlags flags) {
  OpSignature sig;
  sig.dilated = flags.dilated;
  sig.grouped = flags.grouped;
  sig.keep_num_dims = flags.keep_num_dims;
  for (int32_t i : inputs) {
    if (i == kOmitted) continue;
    sig.input_types.push_back(tensors_[static_cast<size_t>(i)].type);
    sig.input_ranks.push_back(tensors_[static_cast<size_t>(i)].shape.size());
  }
  if (inputs.size() >= 2 && inputs[0] != kOmitted && inputs[1] != kOmitted)
    sig.inputs_broadcast = tensors_[static_cast<size_t>(inputs[0])].shape !=
                           tensors_[static_cast<size_t>(inputs[1])].shape;
  if (!outputs.empty()) sig.output_type = record(outputs[0]).type;
  if (!inputs.empty() && inputs[0] != kOmitted && record(inputs[0]).quant)
    sig.input_per_channel = record(inputs[0]).quant->scale.size() > 1;
  sig.bias_omitted = op == BuiltinOp::kFullyConnected && (inputs.size() < 3 || inputs[2] == kOmitted);
  if (op == BuiltinOp::kMul && inputs.size() == 2 && record(inputs[0]).quant && record(inputs[1]).quant &&
      !outputs.empty() && record(outputs[0]).quant)
    sig.mul_ratio = static_cast<double>(record(inputs[0]).quant->scale[0]) * record(inputs[1]).quant->scale[0] /
                    record(outputs[0]).quant->scale[0];
  versions_.push_back(op_version(op, sig));
  operators_.push_back({op, std::move(inputs), std::move(outputs), options_type, options});
}

int32_t Exporter::activation_target(const ir::Node& n, ir::Activation act) {
  if (fusable(act)) return output_tensor(n.outputs[0]);
  if (g_.value(n.outputs[0]).quant)
    throw unsupported(n, "an int8 op can only fuse ReLU or ReLU6")
        .hint("quant::prepare_for_int8 splits other activations off before quantization");
  return scratch(g_.value(n.outputs[0]).name + "/pre_activation", shape_of(n.outputs[0]));
}

void Exporter::finish_activation(const ir::Node& n, ir::Activation act, int32_t pre) {
  if (fusable(act)) return;
  activation_ops(act, pre, output_tensor(n.outputs[0]), g_.value(n.outputs[0]).name,
                 shape_of(n.outputs[0]));
}

void Exporter::activation_ops(ir::Activation act, int32_t in, int32_t out, const std::string& base,
                              const ValueShape& shape) {
  switch (act) {
    case ir::Activation::kNone:
      throw Error("no activation to write", ErrorKind::kInternal).tensor(base);
    case ir::Activation::kRelu:
      op(BuiltinOp::kRelu, {in}, {out});
      return;
    case ir::Activation::kRelu6:
      op(BuiltinOp::kRelu6, {in}, {out});
      return;
    case ir::Activation::kHardSwish:
      op(BuiltinOp::kHardSwish, {in}, {out}, fb::BuiltinOptions::HardSwishOptions,
         fb::CreateHardSwishOptions(fbb_).Union());
      return;
    case ir::Activation::kSigmoid:
      op(BuiltinOp::kLogistic, {in}, {out});
      return;
    case ir::Activation::kSilu: {
      // x * sigmoid(x), as TFLite's converter writes swish.
      int32_t s = scratch(base + "/sigmoid", shape);
      op(BuiltinOp::kLogistic, {in}, {s});
      op(BuiltinOp::kMul, {in, s}, {out}, fb::BuiltinOptions::MulOptions,
         fb::CreateMulOptions(fbb_).Union());
      return;
    }
  }
}

int32_t Exporter::pad(int32_t in, const ValueShape& in_shape, const std::vector<int64_t>& begins,
                      const std::vector<int64_t>& ends, float value, const std::string& name,
                      int32_t out_t) {
  const size_t r = in_shape.dims.size();
  std::vector<int32_t> paddings;
  ValueShape out = in_shape;
  for (size_t i = 0; i < r; ++i) {
    paddings.push_back(to_i32(begins[i], "padding"));
    paddings.push_back(to_i32(ends[i], "padding"));
    out.dims[i] += begins[i] + ends[i];
  }
  int32_t padding_t = int32_constant(name + "/paddings", paddings, {static_cast<int64_t>(r), 2});
  if (out_t == kOmitted) out_t = scratch_like(name, out, in);
  if (const auto& q = record(in).quant) {
    // Quantized: PAD fills with the zero point (real 0); any other value is a PADV2 operand in
    // the input's own params, saturated to its type (-FLT_MAX becomes the lowest level).
    if (value == 0.0f) {
      op(BuiltinOp::kPad, {in, padding_t}, {out_t}, fb::BuiltinOptions::PadOptions, fb::CreatePadOptions(fbb_).Union());
      return out_t;
    }
    const bool is_u8 = record(in).type == fb::TensorType::UINT8;
    const double level = std::clamp(std::round(static_cast<double>(value) / q->scale[0]) + static_cast<double>(q->zero_point[0]),
                                    is_u8 ? 0.0 : -128.0, is_u8 ? 255.0 : 127.0);
    Tensor v = Tensor::empty(is_u8 ? DType::kUInt8 : DType::kInt8, {1});
    if (is_u8)
      v.data_mutable<uint8_t>()[0] = static_cast<uint8_t>(level);
    else
      v.data_mutable<int8_t>()[0] = static_cast<int8_t>(level);
    int32_t value_t = quantized_constant(name + "/value", v, ir::QuantParams{{q->scale[0]}, {q->zero_point[0]}, 0});
    op(BuiltinOp::kPadV2, {in, padding_t, value_t}, {out_t}, fb::BuiltinOptions::PadV2Options,
       fb::CreatePadV2Options(fbb_).Union());
    return out_t;
  }
  if (value == 0.0f) {
    op(BuiltinOp::kPad, {in, padding_t}, {out_t}, fb::BuiltinOptions::PadOptions,
       fb::CreatePadOptions(fbb_).Union());
  } else {
    int32_t value_t = float_scalar(name + "/value", value);
    op(BuiltinOp::kPadV2, {in, padding_t, value_t}, {out_t}, fb::BuiltinOptions::PadV2Options,
       fb::CreatePadV2Options(fbb_).Union());
  }
  return out_t;
}

bool activation_non_negative(ir::Activation a) {
  return a == ir::Activation::kRelu || a == ir::Activation::kRelu6 || a == ir::Activation::kSigmoid;
}

bool Exporter::known_non_negative(ValueId v) const {
  const ir::Value& val = g_.value(v);
  if (val.producer < 0) return false;
  const ir::Node& n = g_.node(val.producer);
  switch (n.op) {
    case OpKind::kRelu:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
      return true;
    case OpKind::kClip:
      return n.attr<ir::ClipAttrs>().min >= 0.0f;
    case OpKind::kConv:
      return activation_non_negative(n.attr<ir::ConvAttrs>().activation);
    case OpKind::kGemm:
      return activation_non_negative(n.attr<ir::GemmAttrs>().activation);
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
      return activation_non_negative(n.attr<ir::BinaryAttrs>().activation);
    case OpKind::kMaxPool:
    case OpKind::kAveragePool:
    case OpKind::kReshape:
    case OpKind::kFlatten:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kTranspose:
    case OpKind::kIdentity:
      return known_non_negative(n.inputs[0]);
    case OpKind::kConcat:
      return std::all_of(n.inputs.begin(), n.inputs.end(),
                         [&](ValueId in) { return known_non_negative(in); });
    default:
      return false;
  }
}

std::vector<int32_t> Exporter::reshape_target(const ir::Node& n, ValueId out) const {
  ValueShape s = shape_of(out);
  std::vector<int32_t> target;
  int dynamic = 0;
  for (size_t i = 0; i < s.dims.size(); ++i) {
    if (s.dynamic[i]) ++dynamic;
    target.push_back(s.dynamic[i] ? -1 : to_i32(s.dims[i], "reshape dim"));
  }
  if (dynamic > 1)
    throw unsupported(
        n, "more than one output dim follows the batch; a TFLite RESHAPE can infer only one");
  return target;
}

// ---------------------------------------------------------------------------------------------
// Emitters, one per IR op.

void require_nhwc(const ir::Node& n, ir::Layout layout, size_t spatial) {
  if (layout != ir::Layout::kNHWC)
    throw unsupported(n, "TFLite needs NHWC; the graph is NCHW")
        .hint("run passes::convert_to_nhwc before writing TFLite");
  if (spatial != 2) throw unsupported(n, "only 2-D windows are supported");
}

std::vector<SpatialWindow> windows(const ValueShape& in, const ValueShape& out,
                                   const std::vector<int64_t>& kernel,
                                   const std::vector<int64_t>& strides,
                                   const std::vector<int64_t>& dilations,
                                   const std::vector<int64_t>& pads) {
  std::vector<SpatialWindow> w;
  for (size_t i = 0; i < 2; ++i)
    w.push_back({in.dims[1 + i], out.dims[1 + i], kernel[i], strides[i], dilations[i], pads[i],
                 pads[i + 2]});
  return w;
}

// The spatial PAD a plan needs, or the input unchanged.
int32_t apply_plan(Exporter& e, const ir::Node& n, const PaddingPlan& plan, float value) {
  ValueId x = n.inputs[0];
  int32_t in = e.tensor(x);
  if (!plan.needs_pad_op()) return in;
  std::vector<int64_t> begins{0, plan.pad_begin[0], plan.pad_begin[1], 0};
  std::vector<int64_t> ends{0, plan.pad_end[0], plan.pad_end[1], 0};
  return e.pad(in, e.shape_of(x), begins, ends, value, e.value(n.outputs[0]).name + "/pad");
}

void emit_conv(Exporter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::ConvAttrs>();
  require_nhwc(n, a.layout, a.kernel.size());
  const ir::Value& w = e.value(n.inputs[1]);
  if (!w.is_constant()) throw unsupported(n, "TFLite convolutions need constant filters");
  if (n.inputs.size() > 3) throw unsupported(n, "a convolution with a residual input is runtime-only; TFLite has none");
  ValueShape xs = e.shape_of(n.inputs[0]);
  ValueShape ys = e.shape_of(n.outputs[0]);
  const int64_t in_channels = xs.dims[3];
  const int64_t out_channels = w.constant.dim(0);
  const int64_t filter_channels = w.constant.dim(3);

  auto plan =
      plan_padding(windows(xs, ys, a.kernel, a.strides, a.dilations, a.pads), PadSemantics::kZeros);
  int32_t x = apply_plan(e, n, *plan, 0.0f);
  const std::string& name = e.value(n.outputs[0]).name;
  const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue;
  if (w.quant && !has_bias) throw unsupported(n, "an int8 convolution needs its int32 bias");
  int32_t bias = has_bias ? e.tensor(n.inputs[2])
                          // TFLite's convolution kernels require a bias; the converter writes zeros too.
                          : e.weight(name + "/bias", Tensor::zeros(DType::kFloat32, {out_channels}));
  const bool depthwise = a.groups > 1 && a.groups == in_channels && filter_channels == 1;
  int32_t out = e.activation_target(n, a.activation);
  auto act = fused_code(a.activation);
  auto padding = plan->mode == WindowPadding::kSame ? fb::Padding::SAME : fb::Padding::VALID;
  const bool dilated = a.dilations[0] != 1 || a.dilations[1] != 1;
  if (depthwise) {
    // [O, kH, kW, 1] -> [1, kH, kW, O]; output channel o reads input channel o / multiplier in
    // both layouts.
    // Per-channel params follow the output channel, now the last dim (quantized_dimension 3).
    int32_t filter =
        w.quant ? e.quantized_constant(w.name + "/depthwise", transposed(w.constant, {3, 1, 2, 0}),
                                       ir::QuantParams{w.quant->scale, w.quant->zero_point, w.quant->per_channel() ? 3 : 0})
                : e.weight(w.name + "/depthwise", transposed(w.constant, {3, 1, 2, 0}), 3);
    auto options = fb::CreateDepthwiseConv2DOptions(
        e.fbb(), padding, to_i32(a.strides[1], "stride"), to_i32(a.strides[0], "stride"),
        to_i32(out_channels / in_channels, "depth multiplier"), act,
        to_i32(a.dilations[1], "dilation"), to_i32(a.dilations[0], "dilation"));
    e.op(BuiltinOp::kDepthwiseConv2d, {x, filter, bias}, {out},
         fb::BuiltinOptions::DepthwiseConv2DOptions, options.Union(), {.dilated = dilated});
  } else {
    auto options = fb::CreateConv2DOptions(
        e.fbb(), padding, to_i32(a.strides[1], "stride"), to_i32(a.strides[0], "stride"), act,
        to_i32(a.dilations[1], "dilation"), to_i32(a.dilations[0], "dilation"));
    e.op(BuiltinOp::kConv2d, {x, e.tensor(n.inputs[1]), bias}, {out},
         fb::BuiltinOptions::Conv2DOptions, options.Union(), {.grouped = a.groups > 1});
  }
  e.finish_activation(n, a.activation, out);
}

void emit_pool(Exporter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::PoolAttrs>();
  require_nhwc(n, a.layout, a.kernel.size());
  if (a.dilations[0] != 1 || a.dilations[1] != 1)
    throw unsupported(n, "TFLite pools have no dilation");
  const bool max = n.op == OpKind::kMaxPool;
  PadSemantics semantics = max                   ? PadSemantics::kMaxIgnored
                           : a.count_include_pad ? PadSemantics::kAverageCounted
                                                 : PadSemantics::kAverageExcluded;
  auto plan = plan_padding(windows(e.shape_of(n.inputs[0]), e.shape_of(n.outputs[0]), a.kernel,
                                   a.strides, a.dilations, a.pads),
                           semantics);
  if (!plan)
    throw unsupported(
        n,
        "TFLite cannot express this average pool's padding (pads excluded from the average that "
        "SAME does not reproduce, or a ceil_mode overhang)");
  // A padded max pool must not let the padding win: pad with the lowest float, or with zeros when
  // the input cannot be negative (PAD is cheaper and accelerated everywhere).
  float value = 0.0f;
  if (max && !e.known_non_negative(n.inputs[0])) value = -FLT_MAX;
  int32_t x = apply_plan(e, n, *plan, value);
  auto options = fb::CreatePool2DOptions(
      e.fbb(), plan->mode == WindowPadding::kSame ? fb::Padding::SAME : fb::Padding::VALID,
      to_i32(a.strides[1], "stride"), to_i32(a.strides[0], "stride"), to_i32(a.kernel[1], "kernel"),
      to_i32(a.kernel[0], "kernel"));
  e.op(max ? BuiltinOp::kMaxPool2d : BuiltinOp::kAveragePool2d, {x},
       {e.output_tensor(n.outputs[0])}, fb::BuiltinOptions::Pool2DOptions, options.Union());
}

void emit_gemm(Exporter& e, const ir::Node& n) {
  ir::Activation act = n.attr<ir::GemmAttrs>().activation;
  int32_t x = e.tensor(n.inputs[0]);
  int32_t w = e.tensor(n.inputs[1]);
  int32_t b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? e.tensor(n.inputs[2]) : kOmitted;
  int32_t out = e.activation_target(n, act);
  auto options = fb::CreateFullyConnectedOptions(e.fbb(), fused_code(act));
  e.op(BuiltinOp::kFullyConnected, {x, w, b}, {out}, fb::BuiltinOptions::FullyConnectedOptions,
       options.Union());
  e.finish_activation(n, act, out);
}

void emit_matmul(Exporter& e, const ir::Node& n) {
  const ir::Value& a = e.value(n.inputs[0]);
  const ir::Value& b = e.value(n.inputs[1]);
  if (a.shape.size() < 2 || b.shape.size() < 2)
    throw unsupported(n, "MatMul with a 1-D operand is not supported");
  int32_t out = e.output_tensor(n.outputs[0]);
  if (b.is_constant() && b.shape.size() == 2) {
    // x [.., K] * W [K, M] is a FULLY_CONNECTED with weights W^T [M, K]; keep_num_dims keeps the
    // leading dims of a rank > 2 input.
    int32_t w = e.weight(b.name + "/transposed", transposed(b.constant, {1, 0}));
    bool keep = a.shape.size() != 2;
    auto options =
        fb::CreateFullyConnectedOptions(e.fbb(), fb::ActivationFunctionType::NONE,
                                        fb::FullyConnectedOptionsWeightsFormat::DEFAULT, keep);
    e.op(BuiltinOp::kFullyConnected, {e.tensor(n.inputs[0]), w, kOmitted}, {out},
         fb::BuiltinOptions::FullyConnectedOptions, options.Union(), {.keep_num_dims = keep});
    return;
  }
  e.op(BuiltinOp::kBatchMatMul, {e.tensor(n.inputs[0]), e.tensor(n.inputs[1])}, {out},
       fb::BuiltinOptions::BatchMatMulOptions, fb::CreateBatchMatMulOptions(e.fbb()).Union());
}

void emit_binary(Exporter& e, const ir::Node& n) {
  ir::Activation act = n.attr<ir::BinaryAttrs>().activation;
  int32_t a = e.tensor(n.inputs[0]);
  int32_t b = e.tensor(n.inputs[1]);
  int32_t out = e.activation_target(n, act);
  auto fused = fused_code(act);
  auto& fbb = e.fbb();
  switch (n.op) {
    case OpKind::kAdd:
      e.op(BuiltinOp::kAdd, {a, b}, {out}, fb::BuiltinOptions::AddOptions,
           fb::CreateAddOptions(fbb, fused).Union());
      break;
    case OpKind::kSub:
      e.op(BuiltinOp::kSub, {a, b}, {out}, fb::BuiltinOptions::SubOptions,
           fb::CreateSubOptions(fbb, fused).Union());
      break;
    case OpKind::kMul:
      e.op(BuiltinOp::kMul, {a, b}, {out}, fb::BuiltinOptions::MulOptions,
           fb::CreateMulOptions(fbb, fused).Union());
      break;
    default:
      e.op(BuiltinOp::kDiv, {a, b}, {out}, fb::BuiltinOptions::DivOptions,
           fb::CreateDivOptions(fbb, fused).Union());
      break;
  }
  e.finish_activation(n, act, out);
}

// Relu, Sigmoid, HardSwish, Silu: the activation forms above.
void emit_activation(Exporter& e, const ir::Node& n) {
  static constexpr std::pair<OpKind, ir::Activation> kForms[] = {
      {OpKind::kRelu, ir::Activation::kRelu},
      {OpKind::kSigmoid, ir::Activation::kSigmoid},
      {OpKind::kHardSwish, ir::Activation::kHardSwish},
      {OpKind::kSilu, ir::Activation::kSilu},
  };
  for (const auto& [op, act] : kForms)
    if (op == n.op)
      return e.activation_ops(act, e.tensor(n.inputs[0]), e.output_tensor(n.outputs[0]),
                              e.value(n.outputs[0]).name, e.shape_of(n.outputs[0]));
}

void emit_tanh(Exporter& e, const ir::Node& n) {
  e.op(BuiltinOp::kTanh, {e.tensor(n.inputs[0])}, {e.output_tensor(n.outputs[0])});
}

void emit_clip(Exporter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::ClipAttrs>();
  // The bounded forms TFLite has as ops; anything else is MINIMUM then MAXIMUM with constants.
  struct Form {
    float min, max;
    BuiltinOp op;
  };
  static constexpr Form kForms[] = {
      {0.0f, 6.0f, BuiltinOp::kRelu6},
      {-1.0f, 1.0f, BuiltinOp::kReluN1To1},
      {0.0f, std::numeric_limits<float>::infinity(), BuiltinOp::kRelu},
  };
  int32_t in = e.tensor(n.inputs[0]);
  for (const Form& f : kForms)
    if (a.min == f.min && a.max == f.max) return e.op(f.op, {in}, {e.output_tensor(n.outputs[0])});
  const bool has_max = std::isfinite(a.max), has_min = std::isfinite(a.min);
  if (!has_max && !has_min) return e.alias(n.outputs[0], n.inputs[0]);
  const std::string& name = e.value(n.outputs[0]).name;
  auto& fbb = e.fbb();
  if (has_max) {
    int32_t out = has_min ? e.scratch(name + "/min", e.shape_of(n.outputs[0]))
                          : e.output_tensor(n.outputs[0]);
    e.op(BuiltinOp::kMinimum, {in, e.float_scalar(name + "/max_value", a.max)}, {out},
         fb::BuiltinOptions::MaximumMinimumOptions, fb::CreateMaximumMinimumOptions(fbb).Union());
    in = out;
  }
  if (has_min)
    e.op(BuiltinOp::kMaximum, {in, e.float_scalar(name + "/min_value", a.min)},
         {e.output_tensor(n.outputs[0])}, fb::BuiltinOptions::MaximumMinimumOptions,
         fb::CreateMaximumMinimumOptions(fbb).Union());
}

void emit_hard_sigmoid(Exporter& e, const ir::Node& n) {
  // max(0, min(1, alpha x + beta)). PyTorch's (alpha 1/6, beta 1/2) is relu6(x + 3) / 6: an ADD
  // with fused RELU6 and a MUL; other parameters take MUL, ADD (fused RELU), MINIMUM.
  const auto& a = n.attr<ir::HardSigmoidAttrs>();
  const std::string& name = e.value(n.outputs[0]).name;
  ValueShape shape = e.shape_of(n.outputs[0]);
  int32_t in = e.tensor(n.inputs[0]);
  auto& fbb = e.fbb();
  if (std::abs(a.alpha - 1.0f / 6.0f) < 1e-7f && a.beta == 0.5f) {
    int32_t shifted = e.scratch(name + "/relu6", shape);
    e.op(BuiltinOp::kAdd, {in, e.float_scalar(name + "/three", 3.0f)}, {shifted},
         fb::BuiltinOptions::AddOptions,
         fb::CreateAddOptions(fbb, fb::ActivationFunctionType::RELU6).Union());
    e.op(BuiltinOp::kMul, {shifted, e.float_scalar(name + "/one_sixth", 1.0f / 6.0f)},
         {e.output_tensor(n.outputs[0])}, fb::BuiltinOptions::MulOptions,
         fb::CreateMulOptions(fbb).Union());
    return;
  }
  int32_t scaled = e.scratch(name + "/scaled", shape);
  e.op(BuiltinOp::kMul, {in, e.float_scalar(name + "/alpha", a.alpha)}, {scaled},
       fb::BuiltinOptions::MulOptions, fb::CreateMulOptions(fbb).Union());
  int32_t shifted = e.scratch(name + "/shifted", shape);
  e.op(BuiltinOp::kAdd, {scaled, e.float_scalar(name + "/beta", a.beta)}, {shifted},
       fb::BuiltinOptions::AddOptions,
       fb::CreateAddOptions(fbb, fb::ActivationFunctionType::RELU).Union());
  e.op(BuiltinOp::kMinimum, {shifted, e.float_scalar(name + "/one", 1.0f)},
       {e.output_tensor(n.outputs[0])}, fb::BuiltinOptions::MaximumMinimumOptions,
       fb::CreateMaximumMinimumOptions(fbb).Union());
}

void emit_leaky_relu(Exporter& e, const ir::Node& n) {
  auto options = fb::CreateLeakyReluOptions(e.fbb(), n.attr<ir::LeakyReluAttrs>().alpha);
  e.op(BuiltinOp::kLeakyRelu, {e.tensor(n.inputs[0])}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::LeakyReluOptions, options.Union());
}

void emit_prelu(Exporter& e, const ir::Node& n) {
  e.op(BuiltinOp::kPrelu, {e.tensor(n.inputs[0]), e.tensor(n.inputs[1])},
       {e.output_tensor(n.outputs[0])});
}

void emit_identity(Exporter& e, const ir::Node& n) { e.alias(n.outputs[0], n.inputs[0]); }

void emit_quantize(Exporter& e, const ir::Node& n) {
  e.op(BuiltinOp::kQuantize, {e.tensor(n.inputs[0])}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::QuantizeOptions, fb::CreateQuantizeOptions(e.fbb()).Union());
}

void emit_dequantize(Exporter& e, const ir::Node& n) {
  e.op(BuiltinOp::kDequantize, {e.tensor(n.inputs[0])}, {e.output_tensor(n.outputs[0])});
}

// Reshape, Flatten, Squeeze, Unsqueeze: a RESHAPE to the output's shape.
void emit_reshape(Exporter& e, const ir::Node& n) {
  std::vector<int32_t> target = e.reshape_target(n, n.outputs[0]);
  const std::string& name = e.value(n.outputs[0]).name;
  int32_t shape = e.int32_constant(name + "/shape", target, {static_cast<int64_t>(target.size())});
  auto options = fb::CreateReshapeOptions(e.fbb(), e.fbb().CreateVector(target));
  e.op(BuiltinOp::kReshape, {e.tensor(n.inputs[0]), shape}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::ReshapeOptions, options.Union());
}

void emit_transpose(Exporter& e, const ir::Node& n) {
  size_t rank = e.value(n.inputs[0]).shape.size();
  std::vector<int32_t> perm;
  for (int64_t p : n.attr<ir::TransposeAttrs>().perm) perm.push_back(static_cast<int32_t>(p));
  if (perm.empty())
    for (size_t i = rank; i-- > 0;) perm.push_back(static_cast<int32_t>(i));
  int32_t perm_t = e.int32_constant(e.value(n.outputs[0]).name + "/perm", perm,
                                    {static_cast<int64_t>(perm.size())});
  e.op(BuiltinOp::kTranspose, {e.tensor(n.inputs[0]), perm_t}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::TransposeOptions, fb::CreateTransposeOptions(e.fbb()).Union());
}

void emit_concat(Exporter& e, const ir::Node& n) {
  std::vector<int32_t> inputs;
  for (ValueId in : n.inputs) inputs.push_back(e.tensor(in));
  size_t rank = e.value(n.inputs[0]).shape.size();
  auto options = fb::CreateConcatenationOptions(
      e.fbb(), static_cast<int32_t>(normalize_axis(n.attr<ir::AxisAttrs>().axis, rank)));
  e.op(BuiltinOp::kConcatenation, std::move(inputs), {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::ConcatenationOptions, options.Union());
}

void emit_softmax(Exporter& e, const ir::Node& n) {
  size_t rank = e.value(n.inputs[0]).shape.size();
  if (normalize_axis(n.attr<ir::AxisAttrs>().axis, rank) != static_cast<int64_t>(rank) - 1)
    throw unsupported(n, "TFLite's SOFTMAX works on the last axis only");
  e.op(BuiltinOp::kSoftmax, {e.tensor(n.inputs[0])}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::SoftmaxOptions, fb::CreateSoftmaxOptions(e.fbb(), 1.0f).Union());
}

void emit_reduce_mean(Exporter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::ReduceAttrs>();
  size_t rank = e.value(n.inputs[0]).shape.size();
  std::vector<int32_t> axes;
  for (int64_t ax : a.axes) axes.push_back(static_cast<int32_t>(normalize_axis(ax, rank)));
  if (axes.empty())
    for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int32_t>(i));
  std::sort(axes.begin(), axes.end());
  int32_t axes_t = e.int32_constant(e.value(n.outputs[0]).name + "/axes", axes,
                                    {static_cast<int64_t>(axes.size())});
  e.op(BuiltinOp::kMean, {e.tensor(n.inputs[0]), axes_t}, {e.output_tensor(n.outputs[0])},
       fb::BuiltinOptions::ReducerOptions, fb::CreateReducerOptions(e.fbb(), a.keepdims).Union());
}

void emit_pad(Exporter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::PadAttrs>();
  size_t r = e.value(n.inputs[0]).shape.size();
  std::vector<int64_t> begins(a.pads.begin(), a.pads.begin() + static_cast<ptrdiff_t>(r));
  std::vector<int64_t> ends(a.pads.begin() + static_cast<ptrdiff_t>(r), a.pads.end());
  e.pad(e.tensor(n.inputs[0]), e.shape_of(n.inputs[0]), begins, ends, a.value,
        e.value(n.outputs[0]).name, e.output_tensor(n.outputs[0]));
}

struct EmitterEntry {
  OpKind op;
  Emitter emit;
};

constexpr EmitterEntry kEmitters[] = {
    {OpKind::kConv, emit_conv},
    {OpKind::kMaxPool, emit_pool},
    {OpKind::kAveragePool, emit_pool},
    {OpKind::kGemm, emit_gemm},
    {OpKind::kMatMul, emit_matmul},
    {OpKind::kAdd, emit_binary},
    {OpKind::kSub, emit_binary},
    {OpKind::kMul, emit_binary},
    {OpKind::kDiv, emit_binary},
    {OpKind::kRelu, emit_activation},
    {OpKind::kSigmoid, emit_activation},
    {OpKind::kHardSwish, emit_activation},
    {OpKind::kSilu, emit_activation},
    {OpKind::kTanh, emit_tanh},
    {OpKind::kClip, emit_clip},
    {OpKind::kHardSigmoid, emit_hard_sigmoid},
    {OpKind::kLeakyRelu, emit_leaky_relu},
    {OpKind::kPRelu, emit_prelu},
    {OpKind::kIdentity, emit_identity},
    {OpKind::kReshape, emit_reshape},
    {OpKind::kFlatten, emit_reshape},
    {OpKind::kSqueeze, emit_reshape},
    {OpKind::kUnsqueeze, emit_reshape},
    {OpKind::kTranspose, emit_transpose},
    {OpKind::kConcat, emit_concat},
    {OpKind::kSoftmax, emit_softmax},
    {OpKind::kReduceMean, emit_reduce_mean},
    {OpKind::kPad, emit_pad},
    {OpKind::kQuantize, emit_quantize},
    {OpKind::kDequantize, emit_dequantize},
};

// Ops with no TFLite form, and what to do instead.
constexpr std::pair<OpKind, const char*> kHints[] = {
    {OpKind::kBatchNorm, "fold BatchNorm into the preceding convolution first (passes::optimize)"},
    {OpKind::kGlobalAveragePool,
     "passes::convert_to_nhwc rewrites global pooling as ReduceMean over H and W"},
};

void emit_node(Exporter& e, const ir::Node& n) {
  for (const EmitterEntry& entry : kEmitters)
    if (entry.op == n.op) return entry.emit(e, n);
  Error err = unsupported(n, "no TFLite form for this op");
  for (const auto& [op, hint] : kHints)
    if (op == n.op) err.hint(hint);
  throw err;
}

// ---------------------------------------------------------------------------------------------

void Exporter::emit_nodes() {
  for (ValueId in : g_.inputs()) {
    const ir::Value& v = g_.value(in);
    if (v.dtype != DType::kFloat32 && !((v.dtype == DType::kInt8 || v.dtype == DType::kUInt8) && v.quant))
      throw Error("TFLite export needs float32 inputs (or quantized int8/uint8 ones)", ErrorKind::kUnsupported).tensor(v.name);
    output_tensor(in);
  }
  for (const ir::Node& n : g_.nodes()) {
    if (n.dead) continue;
    if (n.outputs.size() != 1)
      throw unsupported(n, "multi-output ops have no TFLite form in modex");
    try {
      emit_node(*this, n);
    } catch (Error& err) {
      err.node(n.name).op(std::string(ir::op_name(n.op)));
      throw;
    }
  }
  for (ValueId out : g_.outputs())
    if (tensor_of_[static_cast<size_t>(out)] == kOmitted)
      throw Error("graph output is not computed by any node", ErrorKind::kUnsupported)
          .tensor(g_.value(out).name);
}

fbs::Offset<fbs::Vector<fbs::Offset<fb::OperatorCode>>> Exporter::finish_operator_codes(
    std::vector<uint32_t>& opcode_index) {
  // One entry per builtin, at the highest version any of its uses needs.
  std::vector<std::pair<BuiltinOp, int>> codes;
  for (size_t i = 0; i < operators_.size(); ++i) {
    auto it = std::find_if(codes.begin(), codes.end(),
                           [&](const auto& c) { return c.first == operators_[i].op; });
    if (it == codes.end()) {
      codes.push_back({operators_[i].op, versions_[i]});
      it = codes.end() - 1;
    }
    it->second = std::max(it->second, versions_[i]);
    opcode_index.push_back(static_cast<uint32_t>(it - codes.begin()));
  }
  std::vector<fbs::Offset<fb::OperatorCode>> offsets;
  for (const auto& [op, version] : codes) {
    int32_t code = static_cast<int32_t>(op);
    offsets.push_back(
        fb::CreateOperatorCode(fbb_, static_cast<int8_t>(std::min(code, 127)), 0, version, code));
  }
  return fbb_.CreateVector(offsets);
}

fbs::Offset<fb::SubGraph> Exporter::finish_subgraph(
    fbs::Offset<fbs::Vector<fbs::Offset<fb::Operator>>> operators) {
  std::vector<fbs::Offset<fb::Tensor>> tensors;
  // Identical shapes, zero-point vectors and whole quantization tables are written once and shared
  // (FlatBuffers lets tables point at the same vector or table): a graph repeats a few shapes
  // hundreds of times, every weight and bias has all-zero per-channel zero points, activations
  // share a few zero points (-128 after every ReLU), and every sigmoid output has the same fixed
  // params. Without sharing this costs ~1% of a thin int8 model.
  std::map<std::vector<int32_t>, fbs::Offset<fbs::Vector<int32_t>>> shapes;
  auto shape_vector = [&](const std::vector<int32_t>& v) {
    auto [it, fresh] = shapes.try_emplace(v);
    if (fresh) it->second = fbb_.CreateVector(v);
    return it->second;
  };
  std::map<std::vector<int64_t>, fbs::Offset<fbs::Vector<int64_t>>> zero_vectors;
  using QuantKey = std::tuple<std::vector<uint32_t>, std::vector<int64_t>, int64_t>;
  std::map<QuantKey, fbs::Offset<fb::QuantizationParameters>> quant_tables;
  for (const TensorRecord& t : tensors_) {
    auto shape = shape_vector(t.shape);
    auto name = fbb_.CreateString(t.name);
    auto signature = t.signature.empty() ? 0 : shape_vector(t.signature);
    fbs::Offset<fb::QuantizationParameters> quant = 0;
    if (t.quant) {
      const auto& zp = t.quant->zero_point;
      std::vector<uint32_t> scale_bits(t.quant->scale.size());  // bitwise: -0.0 and NaN stay apart
      std::memcpy(scale_bits.data(), t.quant->scale.data(), scale_bits.size() * sizeof(float));
      auto [it, fresh] = quant_tables.try_emplace(QuantKey{std::move(scale_bits), zp, t.quant->axis});
      if (fresh) {
        auto scale = fbb_.CreateVector(t.quant->scale);
        auto [zit, zfresh] = zero_vectors.try_emplace(zp);
        if (zfresh) zit->second = fbb_.CreateVector(zp);
        const auto zero_point = zit->second;
        fb::QuantizationParametersBuilder qb(fbb_);
        qb.add_scale(scale);
        qb.add_zero_point(zero_point);
        qb.add_quantized_dimension(t.quant->axis);
        it->second = qb.Finish();
      }
      quant = it->second;
    }
    fb::TensorBuilder tb(fbb_);
    tb.add_shape(shape);
    tb.add_type(t.type);
    tb.add_buffer(t.buffer);
    tb.add_name(name);
    if (!t.signature.empty()) tb.add_shape_signature(signature);
    if (t.quant) tb.add_quantization(quant);
    tb.add_has_rank(true);
    tensors.push_back(tb.Finish());
  }
  std::vector<int32_t> inputs, outputs;
  for (ValueId v : g_.inputs()) inputs.push_back(tensor_of_[static_cast<size_t>(v)]);
  for (ValueId v : g_.outputs()) outputs.push_back(tensor_of_[static_cast<size_t>(v)]);
  return fb::CreateSubGraph(fbb_, fbb_.CreateVector(tensors), fbb_.CreateVector(inputs),
                            fbb_.CreateVector(outputs), operators,
                            fbb_.CreateString(kSubgraphName));
}

fbs::Offset<fbs::Vector<fbs::Offset<fb::SignatureDef>>> Exporter::finish_signatures() {
  auto maps = [&](const std::vector<ValueId>& values, const std::string& single_key) {
    std::vector<fbs::Offset<fb::TensorMap>> m;
    for (ValueId v : values) {
      std::string key = values.size() == 1 ? single_key : g_.value(v).name;
      m.push_back(fb::CreateTensorMapDirect(
          fbb_, key.c_str(), static_cast<uint32_t>(tensor_of_[static_cast<size_t>(v)])));
    }
    return m;
  };
  auto inputs = maps(g_.inputs(), options_.input_key);
  auto outputs = maps(g_.outputs(), options_.output_key);
  std::vector<fbs::Offset<fb::SignatureDef>> defs{
      fb::CreateSignatureDefDirect(fbb_, &inputs, &outputs, kSignatureKey, 0)};
  return fbb_.CreateVector(defs);
}

fbs::Offset<fbs::Vector<fbs::Offset<fb::Metadata>>> Exporter::finish_metadata() {
  std::string runtime;
  for (size_t i = 0; i < operators_.size(); ++i) {
    const char* r = min_runtime(operators_[i].op, versions_[i]);
    if (r && runtime_older(runtime, r)) runtime = r;
  }
  std::string runtime_bytes(kMinRuntimeVersionBytes, '\0');
  std::memcpy(runtime_bytes.data(), runtime.data(),
              std::min(runtime.size(), kMinRuntimeVersionBytes - 1));
  uint32_t runtime_buffer =
      add_buffer(reinterpret_cast<const uint8_t*>(runtime_bytes.data()), runtime_bytes.size());
  uint32_t json_buffer = add_buffer(reinterpret_cast<const uint8_t*>(options_.metadata_json.data()),
                                    options_.metadata_json.size());
  std::vector<fbs::Offset<fb::Metadata>> entries{
      fb::CreateMetadataDirect(fbb_, kMinRuntimeVersionName, runtime_buffer),
      fb::CreateMetadataDirect(fbb_, kModexMetadataName, json_buffer),
  };
  return fbb_.CreateVector(entries);
}

void Exporter::build() {
  // Buffer 0: the empty sentinel that tensors without data point at.
  buffers_.push_back(fb::CreateBuffer(fbb_));
  emit_nodes();
  auto metadata = finish_metadata();
  std::vector<uint32_t> opcode_index;
  auto codes = finish_operator_codes(opcode_index);
  std::vector<fbs::Offset<fb::Operator>> ops;
  for (size_t i = 0; i < operators_.size(); ++i) {
    const OperatorRecord& r = operators_[i];
    ops.push_back(fb::CreateOperatorDirect(fbb_, opcode_index[i], &r.inputs, &r.outputs,
                                           r.options_type, r.options));
  }
  auto subgraph = finish_subgraph(fbb_.CreateVector(ops));
  auto signatures = finish_signatures();
  auto buffers = fbb_.CreateVector(buffers_);
  std::string description =
      options_.description.empty() ? std::string("modex ") + MODEX_VERSION : options_.description;
  auto model =
      fb::CreateModel(fbb_, kSchemaVersion, codes, fbb_.CreateVector(std::vector{subgraph}),
                      fbb_.CreateString(description), buffers, 0, metadata, signatures);
  fb::FinishModelBuffer(fbb_, model);
}

}  // namespace

namespace {

// Builds and checks the model; its bytes are then in the exporter's builder.
void build_checked(Exporter& e, const TfliteWriteOptions& options) {
  nlohmann::json meta =
      nlohmann::json::parse(options.metadata_json, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object())
    throw Error("TFLite metadata must be a JSON object", ErrorKind::kInvalidInput);
  e.build();
  // Our own output must pass the checks every reader applies.
  const auto& fbb = e.builder();
  fbs::Verifier verifier(fbb.GetBufferPointer(), fbb.GetSize());
  if (!fb::VerifyModelBuffer(verifier))
    throw Error("the TFLite flatbuffer modex built does not verify", ErrorKind::kInternal);
}

}  // namespace

std::string to_tflite_bytes(const ir::Graph& g, const TfliteWriteOptions& options) {
  Exporter e(g, options);
  build_checked(e, options);
  const auto& fbb = e.builder();
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

size_t write_tflite_to(const ir::Graph& g, AtomicFile& file, const TfliteWriteOptions& options) {
  Exporter e(g, options);
  build_checked(e, options);
  const auto& fbb = e.builder();
  file.write(fbb.GetBufferPointer(), fbb.GetSize());
  return fbb.GetSize();
}

size_t write_tflite(const ir::Graph& g, const std::filesystem::path& path,
                    const TfliteWriteOptions& options) {
  AtomicFile f(path);
  size_t size;
  try {
    size = write_tflite_to(g, f, options);
  } catch (Error& e) {
    e.file(path.string());
    throw;
  }
  f.commit();
  return size;
}

}  // namespace modex::tflite_io
