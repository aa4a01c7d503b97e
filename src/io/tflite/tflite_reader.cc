#include "io/tflite/tflite_reader.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <unordered_map>

#include "core/file_util.h"
#include "core/tensor_ops.h"
#include "io/tflite/tflite_ops.h"
#include "io/tflite/tflite_padding.h"
#include "io/tflite/tflite_schema.h"

namespace modex::tflite_io {
namespace {

namespace fbs = flatbuffers;
using ir::OpKind;
using ir::ValueId;

constexpr int32_t kOmitted = -1;

Error invalid(const std::string& message) { return Error(message, ErrorKind::kInvalidInput); }

template <typename T>
size_t size_of(const fbs::Vector<T>* v) {
  return v ? v->size() : 0;
}

// Absent vectors read as empty.
template <typename T>
std::vector<T> elements(const fbs::Vector<T>* v) {
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>{};
}

std::string printable(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f) {
      s += static_cast<char>(p[i]);
    } else {
      static const char* kHex = "0123456789abcdef";
      s += "\\x";
      s += kHex[p[i] >> 4];
      s += kHex[p[i] & 15];
    }
  }
  return s;
}

// The zero point of a quantization parameter table, copied bytewise (the verifier aligns vectors
// to their 4-byte length only, so 8-byte elements may be unaligned).
std::vector<int64_t> zero_points(const fb::QuantizationParameters* q) {
  std::vector<int64_t> out;
  if (const auto* zp = q->zero_point()) {
    out.resize(zp->size());
    if (zp->size()) std::memcpy(out.data(), zp->Data(), zp->size() * sizeof(int64_t));
  }
  return out;
}

// The error for a non-float tensor where the graph needs float32.
Error not_float(const std::string& what, fb::TensorType t);

std::string type_name(fb::TensorType t) {
  auto d = dtype_for(t);
  return d ? std::string(dtype_name(*d)) : "tflite_type_" + std::to_string(static_cast<int>(t));
}

Error not_float(const std::string& what, fb::TensorType t) {
  Error e(what + " is " + type_name(t) +
              "; modex reads float32 and quantized int8/uint8 TFLite graphs",
          ErrorKind::kUnsupported);
  if (t == fb::TensorType::INT16) e.hint("int16 quantization is not supported");
  return e;
}

// ---------------------------------------------------------------------------------------------
// Validation: everything later code relies on, checked once.

struct CheckedModel {
  std::shared_ptr<Buffer> file;
  const fb::Model* model = nullptr;
  const fb::SubGraph* graph = nullptr;
  // Per operator code: the builtin code (-1 for custom ops), the name errors use, the version.
  std::vector<int32_t> opcode_builtin;
  std::vector<std::string> opcode_name;
  std::vector<int32_t> opcode_version;
  // Per tensor.
  std::vector<std::string> names;
  std::vector<Dims> shapes;
  std::vector<std::optional<DType>> dtypes;
  std::vector<const uint8_t*> data;  // nullptr when the tensor has no data
  std::vector<size_t> data_size;
  std::vector<int> consumers;  // operator inputs reading the tensor, +1 when it is a graph output
  std::vector<bool> graph_output;

  size_t tensor_count() const { return names.size(); }
  // The IR form of a tensor's quantization (checked by check_quantization), for int8/uint8/int32
  // tensors with scales; nullopt otherwise.
  std::optional<ir::QuantParams> quant(int32_t t) const {
    const fb::Tensor* ft = graph->tensors()->Get(static_cast<fbs::uoffset_t>(t));
    const fb::QuantizationParameters* q = ft->quantization();
    if (!q || size_of(q->scale()) == 0) return std::nullopt;
    if (ft->type() != fb::TensorType::INT8 && ft->type() != fb::TensorType::UINT8 &&
        ft->type() != fb::TensorType::INT32)
      return std::nullopt;
    ir::QuantParams p;
    p.scale.assign(q->scale()->begin(), q->scale()->end());
    p.zero_point = zero_points(q);
    p.axis = p.scale.size() > 1 ? q->quantized_dimension() : 0;
    return p;
  }
  bool constant(int32_t t) const { return data[static_cast<size_t>(t)] != nullptr; }
  const fb::Operator* op(size_t i) const {
    return graph->operators()->Get(static_cast<fbs::uoffset_t>(i));
  }
  size_t op_count() const { return size_of(graph->operators()); }
  const std::string& op_name(size_t i) const { return opcode_name[op(i)->opcode_index()]; }
};

Error op_error(const CheckedModel& m, size_t i, const std::string& message,
               ErrorKind kind = ErrorKind::kInvalidInput) {
  Error e(message, kind);
  e.node("operator " + std::to_string(i)).op(m.op_name(i));
  return e;
}

// Quantization parameters, when a tensor has scales: one zero point per scale, scales positive
// and finite, zero points inside the storage type (0 for int16/int32), and per-channel tables
// along an existing dimension of matching size.
template <typename Fail>
void check_quantization(const fb::Tensor* t, const Dims& dims, Fail fail) {
  const fb::QuantizationParameters* q = t->quantization();
  if (!q || size_of(q->scale()) == 0) return;
  const size_t n = q->scale()->size();
  std::vector<int64_t> zp = zero_points(q);
  if (zp.size() != n)
    throw fail("quantization has " + std::to_string(n) + " scales but " + std::to_string(zp.size()) +
               " zero points");
  int64_t lo = 0, hi = 0;
  switch (t->type()) {
    case fb::TensorType::INT8: lo = -128, hi = 127; break;
    case fb::TensorType::UINT8: lo = 0, hi = 255; break;
    case fb::TensorType::INT16:
    case fb::TensorType::INT32:
    case fb::TensorType::INT64: break;
    case fb::TensorType::FLOAT32:
    case fb::TensorType::FLOAT16: return;  // calibration ranges on float tensors: ignored
    default:
      throw fail("quantization parameters on a " + type_name(t->type()) + " tensor");
  }
  for (size_t k = 0; k < n; ++k) {
    const float s = q->scale()->Get(static_cast<fbs::uoffset_t>(k));
    if (!(s > 0.0f) || !std::isfinite(s))
      throw fail("quantization scale " + std::to_string(s) + " at index " + std::to_string(k) +
                 " must be positive and finite");
    if (zp[k] < lo || zp[k] > hi)
      throw fail("zero point " + std::to_string(zp[k]) + " at index " + std::to_string(k) +
                 " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "] for " +
                 type_name(t->type()));
  }
  if (n > 1) {
    const int32_t axis = q->quantized_dimension();
    if (axis < 0 || static_cast<size_t>(axis) >= dims.size())
      throw fail("quantized_dimension " + std::to_string(axis) + " out of range for rank " +
                 std::to_string(dims.size()));
    if (dims[static_cast<size_t>(axis)] != static_cast<int64_t>(n))
      throw fail("per-channel quantization has " + std::to_string(n) + " scales for dim " +
                 std::to_string(axis) + " of size " +
                 std::to_string(dims[static_cast<size_t>(axis)]));
  }
}

void check_tensors(CheckedModel& m) {
  const auto* tensors = m.graph->tensors();
  const auto* buffers = m.model->buffers();
  const size_t nb = size_of(buffers);
  const size_t file_size = m.file->size();
  if (nb > 0) {
    const auto* sentinel = buffers->Get(0);
    if (size_of(sentinel->data()) != 0 || sentinel->offset() > 1)
      throw invalid("buffer 0 must be the empty sentinel");
  }
  for (size_t i = 0; i < size_of(tensors); ++i) {
    const fb::Tensor* t = tensors->Get(static_cast<fbs::uoffset_t>(i));
    std::string name = t->name() ? t->name()->str() : "tensor_" + std::to_string(i);
    auto fail = [&](const std::string& msg) { return invalid(msg).tensor(name); };
    Dims dims;
    for (int32_t d : elements(t->shape())) {
      if (d < 0) throw fail("negative dim in shape");
      dims.push_back(d);
    }
    int64_t numel;
    try {
      numel = checked_numel(dims);
    } catch (Error& e) {
      throw e.tensor(name);
    }
    if (const auto* sig = t->shape_signature()) {
      if (sig->size() != dims.size()) throw fail("shape_signature and shape differ in rank");
      for (size_t k = 0; k < dims.size(); ++k)
        if (sig->Get(static_cast<fbs::uoffset_t>(k)) != -1 &&
            sig->Get(static_cast<fbs::uoffset_t>(k)) != dims[k])
          throw fail("shape_signature disagrees with shape at dim " + std::to_string(k));
    }
    std::optional<DType> dtype = dtype_for(t->type());
    const uint8_t* data = nullptr;
    size_t size = 0;
    const uint32_t b = t->buffer();
    if (b != 0) {
      if (b >= nb)
        throw fail("buffer index " + std::to_string(b) + " out of range (" + std::to_string(nb) +
                   " buffers)");
      const fb::Buffer* buf = buffers->Get(b);
      if (buf->offset() > 1) {
        // Data outside the flatbuffer (models over 2 GB): bytes [offset, offset + size) of the
        // file.
        if (buf->offset() > file_size || buf->size() > file_size - buf->offset())
          throw fail("buffer " + std::to_string(b) + " points outside the file");
        data = m.file->data() + buf->offset();
        size = static_cast<size_t>(buf->size());
      } else if (size_of(buf->data()) > 0) {
        data = buf->data()->data();
        size = buf->data()->size();
      }
    }
    if (data && dtype) {
      const size_t item = dtype_size(*dtype);
      if (static_cast<uint64_t>(numel) > size / item + 1 ||
          static_cast<size_t>(numel) * item != size)
        throw fail("buffer " + std::to_string(b) + " holds " + std::to_string(size) +
                   " bytes, but shape " + dims_to_string(dims) + " of " +
                   std::string(dtype_name(*dtype)) + " needs " +
                   std::to_string(static_cast<uint64_t>(numel) * item));
    }
    check_quantization(t, dims, fail);
    m.names.push_back(std::move(name));
    m.shapes.push_back(std::move(dims));
    m.dtypes.push_back(dtype);
    m.data.push_back(data);
    m.data_size.push_back(size);
  }
}

void check_operators(CheckedModel& m) {
  const size_t nt = m.tensor_count();
  for (size_t i = 0; i < size_of(m.model->operator_codes()); ++i) {
    const fb::OperatorCode* c = m.model->operator_codes()->Get(static_cast<fbs::uoffset_t>(i));
    // Files from before builtin_code existed have only the deprecated byte; newer ones put
    // codes over 127 in builtin_code and 127 in the byte.
    int32_t code = std::max<int32_t>(c->deprecated_builtin_code(), c->builtin_code());
    bool custom = code == static_cast<int32_t>(BuiltinOp::kCustom);
    m.opcode_builtin.push_back(custom ? -1 : code);
    m.opcode_name.push_back(
        custom ? "CUSTOM:" + (c->custom_code() ? c->custom_code()->str() : std::string())
               : builtin_op_name(code));
    m.opcode_version.push_back(c->version());
  }
  // Tensors that hold a value before any operator runs: constants, variables (recurrent state,
  // written by the runtime before the first invocation) and graph inputs.
  std::vector<bool> defined(nt, false);
  for (size_t t = 0; t < nt; ++t)
    defined[t] = m.data[t] != nullptr ||
                 m.graph->tensors()->Get(static_cast<fbs::uoffset_t>(t))->is_variable();
  auto in_range = [&](int32_t t) { return t >= 0 && static_cast<size_t>(t) < nt; };
  for (int32_t t : elements(m.graph->inputs())) {
    if (!in_range(t))
      throw invalid("graph input tensor index " + std::to_string(t) + " out of range");
    defined[static_cast<size_t>(t)] = true;
  }
  m.consumers.assign(nt, 0);
  for (size_t i = 0; i < m.op_count(); ++i) {
    const fb::Operator* op = m.op(i);
    if (op->opcode_index() >= m.opcode_name.size()) {
      Error e = invalid("opcode index " + std::to_string(op->opcode_index()) + " out of range (" +
                        std::to_string(m.opcode_name.size()) + " operator codes)");
      throw e.node("operator " + std::to_string(i));
    }
    if (op->inputs())
      for (int32_t t : *op->inputs()) {
        if (t == kOmitted) continue;
        if (!in_range(t))
          throw op_error(m, i, "input tensor index " + std::to_string(t) + " out of range");
        if (!defined[static_cast<size_t>(t)])
          throw op_error(m, i,
                         "reads tensor '" + m.names[static_cast<size_t>(t)] +
                             "' before any operator writes it");
        ++m.consumers[static_cast<size_t>(t)];
      }
    if (size_of(op->outputs()) == 0) throw op_error(m, i, "has no outputs");
    for (int32_t t : *op->outputs()) {
      if (!in_range(t))
        throw op_error(m, i, "output tensor index " + std::to_string(t) + " out of range");
      if (defined[static_cast<size_t>(t)])
        throw op_error(
            m, i,
            "writes tensor '" + m.names[static_cast<size_t>(t)] +
                "', which already holds a constant, a graph input or another operator's result");
      defined[static_cast<size_t>(t)] = true;
    }
  }
  m.graph_output.assign(nt, false);
  for (int32_t t : elements(m.graph->outputs())) {
    if (!in_range(t) || !defined[static_cast<size_t>(t)])
      throw invalid("graph output tensor index " + std::to_string(t) +
                    " is out of range or never written");
    m.graph_output[static_cast<size_t>(t)] = true;
    ++m.consumers[static_cast<size_t>(t)];
  }
}

void check_signatures_and_metadata(const CheckedModel& m) {
  const size_t nt = m.tensor_count();
  for (size_t s = 0; s < size_of(m.model->signature_defs()); ++s) {
    const fb::SignatureDef* def = m.model->signature_defs()->Get(static_cast<fbs::uoffset_t>(s));
    if (def->subgraph_index() >= size_of(m.model->subgraphs()))
      throw invalid("signature " + std::to_string(s) + " names subgraph " +
                    std::to_string(def->subgraph_index()) + ", which does not exist");
    for (const auto* maps : {def->inputs(), def->outputs()})
      if (maps)
        for (const fb::TensorMap* tm : *maps)
          if (def->subgraph_index() == 0 && tm->tensor_index() >= nt)
            throw invalid("signature " + std::to_string(s) + " maps to tensor index " +
                          std::to_string(tm->tensor_index()) + ", out of range");
  }
  if (const auto* entries = m.model->metadata())
    for (const fb::Metadata* md : *entries)
      if (md->buffer() >= size_of(m.model->buffers()))
        throw invalid("metadata entry '" + (md->name() ? md->name()->str() : std::string()) +
                      "' names buffer " + std::to_string(md->buffer()) + ", out of range");
}

CheckedModel check(std::shared_ptr<Buffer> file) {
  CheckedModel m;
  m.file = std::move(file);
  const uint8_t* bytes = m.file->data();
  const size_t size = m.file->size();
  if (size < 8) throw invalid("too small to be a TFLite file (" + std::to_string(size) + " bytes)");
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    throw Error("TFLite files over 2 GB (external buffers) are not supported",
                ErrorKind::kUnsupported);
  if (!fb::ModelBufferHasIdentifier(bytes))
    throw invalid("not a TFLite file: file identifier '" + printable(bytes + 4, 4) +
                  "', expected '" + kFileIdentifier + "'");
  fbs::Verifier verifier(bytes, size, fbs::Verifier::Options{});
  if (!fb::VerifyModelBuffer(verifier))
    throw invalid(
        "corrupt TFLite file: the flatbuffer does not verify (truncated, or offsets out of "
        "bounds)");
  m.model = fb::GetModel(bytes);
  if (m.model->version() != kSchemaVersion)
    throw Error("TFLite schema version " + std::to_string(m.model->version()) +
                    "; modex reads version " + std::to_string(kSchemaVersion),
                ErrorKind::kUnsupported);
  if (size_of(m.model->subgraphs()) == 0) throw invalid("the model has no subgraph");
  m.graph = m.model->subgraphs()->Get(0);
  check_tensors(m);
  check_operators(m);
  check_signatures_and_metadata(m);
  return m;
}

TfliteSummary summarise(const CheckedModel& m) {
  TfliteSummary s;
  s.version = m.model->version();
  s.description = m.model->description() ? m.model->description()->str() : "";
  s.subgraph_count = size_of(m.model->subgraphs());
  const auto* tensors = m.graph->tensors();
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    const fb::Tensor* t = tensors->Get(static_cast<fbs::uoffset_t>(i));
    TfliteTensorInfo info;
    info.name = m.names[i];
    info.type = type_name(t->type());
    for (int64_t d : m.shapes[i]) info.shape.push_back(static_cast<int32_t>(d));
    if (t->shape_signature())
      info.shape_signature.assign(t->shape_signature()->begin(), t->shape_signature()->end());
    info.constant = m.data[i] != nullptr;
    if (const fb::QuantizationParameters* q = t->quantization()) {
      if (q->scale()) info.scale.assign(q->scale()->begin(), q->scale()->end());
      info.zero_point = zero_points(q);
      info.quantized_dimension = q->quantized_dimension();
    }
    s.tensors.push_back(std::move(info));
  }
  for (size_t i = 0; i < m.op_count(); ++i) {
    const fb::Operator* op = m.op(i);
    TfliteOpInfo info;
    info.op = m.op_name(i);
    info.version = m.opcode_version[op->opcode_index()];
    if (op->inputs()) info.inputs.assign(op->inputs()->begin(), op->inputs()->end());
    info.outputs.assign(op->outputs()->begin(), op->outputs()->end());
    s.ops.push_back(std::move(info));
  }
  if (m.graph->inputs()) s.inputs.assign(m.graph->inputs()->begin(), m.graph->inputs()->end());
  if (m.graph->outputs()) s.outputs.assign(m.graph->outputs()->begin(), m.graph->outputs()->end());
  if (const auto* defs = m.model->signature_defs())
    for (const fb::SignatureDef* def : *defs) {
      if (def->subgraph_index() != 0) continue;
      TfliteSignature sig;
      sig.key = def->signature_key() ? def->signature_key()->str() : "";
      auto copy = [](const fbs::Vector<fbs::Offset<fb::TensorMap>>* maps, auto& out) {
        if (maps)
          for (const fb::TensorMap* tm : *maps)
            out.push_back(
                {tm->name() ? tm->name()->str() : "", static_cast<int32_t>(tm->tensor_index())});
      };
      copy(def->inputs(), sig.inputs);
      copy(def->outputs(), sig.outputs);
      s.signatures.push_back(std::move(sig));
    }
  if (const auto* entries = m.model->metadata())
    for (const fb::Metadata* md : *entries) {
      const fb::Buffer* buf = m.model->buffers()->Get(md->buffer());
      std::string bytes;
      if (buf->data())
        bytes.assign(reinterpret_cast<const char*>(buf->data()->data()), buf->data()->size());
      std::string name = md->name() ? md->name()->str() : "";
      if (name == kMinRuntimeVersionName) s.min_runtime_version = bytes.substr(0, bytes.find('\0'));
      if (name == kModexMetadataName) s.modex_metadata = bytes;
      s.metadata[name] = std::move(bytes);
    }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Conversion to the IR.

ir::Activation ir_activation(fb::ActivationFunctionType a) {
  switch (a) {
    case fb::ActivationFunctionType::RELU:
      return ir::Activation::kRelu;
    case fb::ActivationFunctionType::RELU6:
      return ir::Activation::kRelu6;
    default:
      return ir::Activation::kNone;
  }
}

// A PAD or PADV2 the importer may fold into the VALID window op it feeds.
struct PendingPad {
  ir::NodeId node;
  ValueId input;
  std::vector<int64_t> begins, ends;
  float value;
};

class Importer;
using ImportFn = void (*)(Importer&, const fb::Operator*);

class Importer {
 public:
  explicit Importer(const CheckedModel& m) : m_(m) {
    value_of_.assign(m.tensor_count(), ir::kNoValue);
  }

  ir::Graph run(const TfliteSummary& summary);

  // --- for the per-op importers ---
  const CheckedModel& model() const { return m_; }
  ir::Graph& graph() { return g_; }

  int32_t input(const fb::Operator* op, size_t k) const {
    if (!op->inputs() || k >= op->inputs()->size() ||
        op->inputs()->Get(static_cast<fbs::uoffset_t>(k)) == kOmitted)
      throw fail("missing input " + std::to_string(k));
    return op->inputs()->Get(static_cast<fbs::uoffset_t>(k));
  }
  bool has_input(const fb::Operator* op, size_t k) const {
    return op->inputs() && k < op->inputs()->size() &&
           op->inputs()->Get(static_cast<fbs::uoffset_t>(k)) != kOmitted;
  }
  size_t input_count(const fb::Operator* op) const { return size_of(op->inputs()); }
  int32_t output(const fb::Operator* op) const {
    if (op->outputs()->size() != 1)
      throw fail("expected one output, has " + std::to_string(op->outputs()->size()));
    return op->outputs()->Get(0);
  }
  const Dims& shape(int32_t t) const { return m_.shapes[static_cast<size_t>(t)]; }

  // The IR value of a tensor (constants are created on first use).
  ValueId value(int32_t t);
  // True for tensors with data in the file and for folded ones (a DEQUANTIZE of float16 weights).
  bool is_constant(int32_t t) const;
  // A constant tensor's data as an IR tensor (float16 becomes float32).
  Tensor constant(int32_t t) const;
  std::vector<int64_t> int_constant(int32_t t, const char* what) const;
  float scalar_constant(int32_t t, const char* what) const;
  // True for int8/uint8 tensors with quantization parameters.
  bool quantized(int32_t t) const;

  // Adds the node computing `t` (named after it) and checks its shape against the file's.
  ValueId produce(int32_t t, OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs);
  // An intermediate node of the import's own (not a file tensor).
  ValueId add(OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs, const std::string& name);
  // Adds `op` computing tensor `t`, followed by the fused activation `act` as its own node when
  // it is not NONE (callers fold ReLU / ReLU6 into IR ops that have an activation field first).
  void with_activation(int32_t t, fb::ActivationFunctionType act, OpKind op, ir::OpAttrs attrs,
                       std::vector<ValueId> inputs);

  void remember_pad(int32_t t, PendingPad p) { pads_[t] = std::move(p); }
  // The PAD feeding tensor `t` when it can be folded (only reader of its output), else nullptr.
  const PendingPad* foldable_pad(int32_t t) const;
  void drop_node(ir::NodeId n) { g_.node(n).dead = true; }
  // The node producing tensor `t` if this importer made it and nothing else reads `t`.
  const ir::Node* sole_producer(int32_t t, OpKind op) const;
  ir::NodeId node_of(int32_t t) const { return producer_.at(t); }
  void bind(int32_t t, ValueId v) { value_of_[static_cast<size_t>(t)] = v; }

  Error fail(const std::string& message, ErrorKind kind = ErrorKind::kUnsupported) const {
    return op_error(m_, op_index_, message, kind);
  }

 private:
  void check_activation_types(const fb::Operator* op) const;

  const CheckedModel& m_;
  ir::Graph g_;
  std::vector<ValueId> value_of_;
  std::unordered_map<int32_t, PendingPad> pads_;
  std::unordered_map<int32_t, ir::NodeId> producer_;
  size_t op_index_ = 0;
};

ValueId Importer::value(int32_t t) {
  ValueId& v = value_of_[static_cast<size_t>(t)];
  if (v != ir::kNoValue) return v;
  if (!m_.constant(t))
    throw fail("tensor '" + m_.names[static_cast<size_t>(t)] + "' has no value",
               ErrorKind::kInternal);
  v = g_.add_constant(m_.names[static_cast<size_t>(t)], constant(t));
  g_.value(v).quant = m_.quant(t);
  return v;
}

bool Importer::is_constant(int32_t t) const {
  ValueId v = value_of_[static_cast<size_t>(t)];
  return m_.constant(t) || (v != ir::kNoValue && g_.value(v).is_constant());
}

Tensor Importer::constant(int32_t t) const {
  const size_t i = static_cast<size_t>(t);
  if (ValueId v = value_of_[i]; v != ir::kNoValue && g_.value(v).is_constant())
    return g_.value(v).constant;
  if (!m_.constant(t)) throw fail("tensor '" + m_.names[i] + "' must be a constant");
  auto dtype = m_.dtypes[i];
  if (!dtype) throw fail("tensor '" + m_.names[i] + "' has a type modex does not handle");
  const size_t offset = static_cast<size_t>(m_.data[i] - m_.file->data());
  Tensor view;
  if (m_.data[i] >= m_.file->data() && offset + m_.data_size[i] <= m_.file->size() &&
      offset % dtype_size(*dtype) == 0) {
    view = Tensor::view(m_.file, offset, *dtype, m_.shapes[i]);
  } else {  // unaligned data: copy
    view = Tensor::zeros(*dtype, m_.shapes[i]);
    if (m_.data_size[i]) std::memcpy(view.raw_mutable(), m_.data[i], m_.data_size[i]);
  }
  return *dtype == DType::kFloat16 ? view.to(DType::kFloat32) : view;
}

std::vector<int64_t> Importer::int_constant(int32_t t, const char* what) const {
  Tensor c = constant(t);
  if (c.dtype() != DType::kInt32 && c.dtype() != DType::kInt64)
    throw fail(std::string(what) + " must be int32 or int64, is " +
               std::string(dtype_name(c.dtype())));
  return c.to_int64_vector();
}

float scalar_of(const Tensor& c) { return c.to_float_vector().at(0); }

float Importer::scalar_constant(int32_t t, const char* what) const {
  Tensor c = constant(t);
  if (c.numel() != 1 || !is_float(c.dtype())) throw fail(std::string(what) + " must be one float");
  return scalar_of(c);
}

ValueId Importer::add(OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs,
                      const std::string& name) {
  std::optional<ir::QuantParams> q = inputs.empty() ? std::nullopt : g_.value(inputs[0]).quant;
  ValueId v = g_.add_node1(op, std::move(attrs), std::move(inputs), name);
  // An import-made reshape of a quantized tensor keeps its params.
  if (op == OpKind::kReshape && q) g_.value(v).quant = q;
  return v;
}

bool Importer::quantized(int32_t t) const {
  return t != kOmitted && m_.quant(t).has_value() &&
         (m_.dtypes[static_cast<size_t>(t)] == DType::kInt8 ||
          m_.dtypes[static_cast<size_t>(t)] == DType::kUInt8);
}

ValueId Importer::produce(int32_t t, OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs) {
  const std::string& name = m_.names[static_cast<size_t>(t)];
  ValueId v = add(op, std::move(attrs), std::move(inputs), name);
  // The IR's shape inference recomputes what the file states; a disagreement means the file
  // (or this import) is wrong.
  const ir::Shape& got = g_.value(v).shape;
  const Dims& want = shape(t);
  bool ok = got.size() == want.size();
  for (size_t k = 0; ok && k < got.size(); ++k) ok = !got[k].is_static() || got[k].value == want[k];
  if (!ok)
    throw fail("tensor '" + name + "' has shape " + dims_to_string(want) +
                   " in the file, but the op computes " + ir::shape_to_string(got),
               ErrorKind::kInvalidInput);
  g_.value(v).quant = m_.quant(t);
  if ((g_.value(v).dtype == DType::kInt8 || g_.value(v).dtype == DType::kUInt8) && !g_.value(v).quant)
    throw fail("tensor '" + name + "' is " + std::string(dtype_name(g_.value(v).dtype)) +
                   " without quantization parameters",
               ErrorKind::kInvalidInput);
  value_of_[static_cast<size_t>(t)] = v;
  producer_[t] = g_.value(v).producer;
  return v;
}

void Importer::with_activation(int32_t t, fb::ActivationFunctionType act, OpKind op,
                               ir::OpAttrs attrs, std::vector<ValueId> inputs) {
  struct Separate {
    fb::ActivationFunctionType act;
    OpKind op;
    ir::OpAttrs attrs;
  };
  static const Separate kSeparate[] = {
      {fb::ActivationFunctionType::RELU, OpKind::kRelu, ir::NoAttrs{}},
      {fb::ActivationFunctionType::RELU6, OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}},
      {fb::ActivationFunctionType::RELU_N1_TO_1, OpKind::kClip, ir::ClipAttrs{-1.0f, 1.0f}},
      {fb::ActivationFunctionType::TANH, OpKind::kTanh, ir::NoAttrs{}},
  };
  if (act == fb::ActivationFunctionType::NONE) {
    produce(t, op, std::move(attrs), std::move(inputs));
    return;
  }
  if (quantized(t))
    throw fail("fused activation " + std::to_string(static_cast<int>(act)) +
               " on a quantized op (only NONE, RELU and RELU6 have an int8 IR form)");
  for (const Separate& s : kSeparate)
    if (s.act == act) {
      ValueId pre = add(op, std::move(attrs), std::move(inputs),
                        m_.names[static_cast<size_t>(t)] + "/pre_activation");
      produce(t, s.op, s.attrs, {pre});
      return;
    }
  throw fail("unknown fused activation " + std::to_string(static_cast<int>(act)),
             ErrorKind::kInvalidInput);
}

const PendingPad* Importer::foldable_pad(int32_t t) const {
  auto it = pads_.find(t);
  if (it == pads_.end() || m_.consumers[static_cast<size_t>(t)] != 1) return nullptr;
  return &it->second;
}

const ir::Node* Importer::sole_producer(int32_t t, OpKind op) const {
  auto it = producer_.find(t);
  if (it == producer_.end() || m_.consumers[static_cast<size_t>(t)] != 1) return nullptr;
  const ir::Node& n = g_.node(it->second);
  return n.op == op && !n.dead ? &n : nullptr;
}

void Importer::check_activation_types(const fb::Operator* op) const {
  const auto* tensors = m_.graph->tensors();
  auto check = [&](int32_t t) {
    if (t == kOmitted || m_.constant(t)) return;
    fb::TensorType type = tensors->Get(static_cast<fbs::uoffset_t>(t))->type();
    if (type == fb::TensorType::FLOAT32) return;
    if ((type == fb::TensorType::INT8 || type == fb::TensorType::UINT8) && quantized(t)) return;
    if (type == fb::TensorType::INT8 || type == fb::TensorType::UINT8)
      throw Error("tensor '" + m_.names[static_cast<size_t>(t)] + "' is " + type_name(type) +
                      " without quantization parameters",
                  ErrorKind::kInvalidInput)
          .node("operator " + std::to_string(op_index_))
          .op(m_.op_name(op_index_));
    Error e = not_float("tensor '" + m_.names[static_cast<size_t>(t)] + "'", type);
    throw e.node("operator " + std::to_string(op_index_)).op(m_.op_name(op_index_));
  };
  if (op->inputs())
    for (int32_t t : *op->inputs()) check(t);
  for (int32_t t : *op->outputs()) check(t);
}

// --- per-op importers ---

std::vector<int64_t> same_or_valid_pads(Importer& im, fb::Padding padding, int32_t x, int64_t kh,
                                        int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                                        int64_t dw) {
  for (int64_t v : {kh, kw, sh, sw, dh, dw})
    if (v < 1)
      throw im.fail("filter sizes, strides and dilations must be >= 1", ErrorKind::kInvalidInput);
  if (padding == fb::Padding::VALID) return {0, 0, 0, 0};
  if (padding != fb::Padding::SAME) throw im.fail("unknown padding", ErrorKind::kInvalidInput);
  const Dims& s = im.shape(x);
  auto [top, bottom] = same_padding(s[1], kh, sh, dh);
  auto [left, right] = same_padding(s[2], kw, sw, dw);
  return {top, left, bottom, right};
}

// The input of a VALID window op and its pads: a foldable spatial PAD with `value` contributes
// its padding.
struct WindowInput {
  ValueId x;
  std::vector<int64_t> pads;  // [top, left, bottom, right]
  bool folded = false;
};

WindowInput window_input(Importer& im, int32_t x, fb::Padding padding, std::vector<int64_t> pads,
                         bool (*accepts)(float value), const std::vector<int64_t>& kernel_limit) {
  if (padding == fb::Padding::VALID)
    if (const PendingPad* p = im.foldable_pad(x)) {
      bool spatial = p->begins.size() == 4 && p->begins[0] == 0 && p->ends[0] == 0 &&
                     p->begins[3] == 0 && p->ends[3] == 0;
      bool fits =
          kernel_limit.empty() || (p->begins[1] < kernel_limit[0] && p->ends[1] < kernel_limit[0] &&
                                   p->begins[2] < kernel_limit[1] && p->ends[2] < kernel_limit[1]);
      if (spatial && fits && accepts(p->value)) {
        im.drop_node(p->node);
        return {p->input, {p->begins[1], p->begins[2], p->ends[1], p->ends[2]}, true};
      }
    }
  return {im.value(x), std::move(pads)};
}

bool zero_value(float v) { return v == 0.0f; }

// (q - zero_point) * scale, per tensor or per channel along the params' axis.
Tensor dequantized(const Tensor& q, const ir::QuantParams& p) {
  Tensor out = Tensor::empty(DType::kFloat32, q.shape());
  std::vector<int64_t> v = q.to_int64_vector();
  int64_t inner = 1, channels = static_cast<int64_t>(p.scale.size());
  if (channels > 1)
    for (int64_t d = p.axis + 1; d < q.rank(); ++d) inner *= q.dim(d);
  float* o = out.data_mutable<float>();
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t c = channels > 1 ? static_cast<size_t>((static_cast<int64_t>(i) / inner) % channels) : 0;
    o[i] = static_cast<float>(static_cast<double>(p.scale[c]) *
                              static_cast<double>(v[i] - (c < p.zero_point.size() ? p.zero_point[c] : 0)));
  }
  return out;
}
bool lowest_value(float v) { return v <= -FLT_MAX; }

// A quantized CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: int8 weights with params (symmetric,
// per-tensor or per-channel along the output channels), an int32 bias with zero point 0.
void check_quantized_weights(Importer& im, const fb::Operator* op, int32_t x, int32_t w) {
  if (!im.quantized(x)) return;
  const CheckedModel& m = im.model();
  const std::string& wname = m.names[static_cast<size_t>(w)];
  std::optional<ir::QuantParams> wq = m.quant(w);
  if (m.dtypes[static_cast<size_t>(w)] != DType::kInt8 || !wq)
    throw im.fail("quantized input '" + m.names[static_cast<size_t>(x)] +
                      "' needs int8 weights with quantization parameters; '" + wname + "' is " +
                      (m.dtypes[static_cast<size_t>(w)]
                           ? std::string(dtype_name(*m.dtypes[static_cast<size_t>(w)]))
                           : std::string("of an unknown type")) +
                      (wq ? "" : " without parameters"),
                  ErrorKind::kInvalidInput);
  for (int64_t zp : wq->zero_point)
    if (zp != 0)
      throw im.fail("weights '" + wname + "' must be symmetric (zero point 0), has " +
                        std::to_string(zp),
                    ErrorKind::kInvalidInput);
  if (im.has_input(op, 2)) {
    int32_t b = im.input(op, 2);
    const std::string& bname = m.names[static_cast<size_t>(b)];
    if (m.dtypes[static_cast<size_t>(b)] != DType::kInt32)
      throw im.fail("bias '" + bname + "' of a quantized op must be int32, is " +
                        (m.dtypes[static_cast<size_t>(b)]
                             ? std::string(dtype_name(*m.dtypes[static_cast<size_t>(b)]))
                             : std::string("of an unknown type")),
                    ErrorKind::kInvalidInput);
    std::optional<ir::QuantParams> bq = m.quant(b);
    if (bq)
      for (int64_t zp : bq->zero_point)
        if (zp != 0)
          throw im.fail("bias '" + bname + "' must have zero point 0, has " + std::to_string(zp),
                        ErrorKind::kInvalidInput);
  }
}

void import_conv(Importer& im, const fb::Operator* op) {
  const bool depthwise = im.model().opcode_builtin[op->opcode_index()] ==
                         static_cast<int32_t>(BuiltinOp::kDepthwiseConv2d);
  int32_t x = im.input(op, 0), w = im.input(op, 1);
  if (im.shape(x).size() != 4 || im.shape(w).size() != 4)
    throw im.fail("input and filter must be 4-D");
  Tensor filter = im.constant(w);
  fb::Padding padding;
  int64_t sh, sw, dh, dw;
  fb::ActivationFunctionType act;
  ir::ConvAttrs a;
  a.layout = ir::Layout::kNHWC;
  const int64_t in_channels = im.shape(x)[3];
  if (depthwise) {
    const auto* o = op->builtin_options_as_DepthwiseConv2DOptions();
    if (!o) throw im.fail("missing DepthwiseConv2DOptions", ErrorKind::kInvalidInput);
    padding = o->padding(), sh = o->stride_h(), sw = o->stride_w(), dh = o->dilation_h_factor(),
    dw = o->dilation_w_factor();
    act = o->fused_activation_function();
    if (filter.dim(0) != 1 || in_channels == 0 || filter.dim(3) % in_channels != 0)
      throw im.fail("depthwise filter " + dims_to_string(filter.shape()) + " does not fit " +
                        std::to_string(in_channels) + " input channels",
                    ErrorKind::kInvalidInput);
    filter = transposed(filter, {3, 1, 2, 0});  // [1, kH, kW, O] -> [O, kH, kW, 1]
    a.groups = in_channels;
  } else {
    const auto* o = op->builtin_options_as_Conv2DOptions();
    if (!o) throw im.fail("missing Conv2DOptions", ErrorKind::kInvalidInput);
    padding = o->padding(), sh = o->stride_h(), sw = o->stride_w(), dh = o->dilation_h_factor(),
    dw = o->dilation_w_factor();
    act = o->fused_activation_function();
    if (filter.dim(3) == 0 || in_channels % filter.dim(3) != 0)
      throw im.fail("filter " + dims_to_string(filter.shape()) + " does not divide " +
                        std::to_string(in_channels) + " input channels",
                    ErrorKind::kInvalidInput);
    a.groups = in_channels / filter.dim(3);
  }
  a.kernel = {filter.dim(1), filter.dim(2)};
  a.strides = {sh, sw};
  a.dilations = {dh, dw};
  WindowInput in = window_input(
      im, x, padding, same_or_valid_pads(im, padding, x, a.kernel[0], a.kernel[1], sh, sw, dh, dw),
      zero_value, {});
  a.pads = in.pads;
  check_quantized_weights(im, op, x, w);
  const std::string& name = im.model().names[static_cast<size_t>(w)];
  ValueId weight = depthwise ? im.graph().add_constant(name, filter) : im.value(w);
  if (depthwise) {
    // Per-channel params along the file's dim 3 ([1, kH, kW, O]) are along the IR's dim 0.
    std::optional<ir::QuantParams> q = im.model().quant(w);
    if (q && q->per_channel() && q->axis != 3)
      throw im.fail("depthwise filter '" + name + "' is quantized along dim " +
                        std::to_string(q->axis) + ", expected 3 (output channels)",
                    ErrorKind::kInvalidInput);
    if (q) q->axis = 0;
    im.graph().value(weight).quant = q;
  }
  std::vector<ValueId> inputs{in.x, weight};
  if (im.has_input(op, 2)) inputs.push_back(im.value(im.input(op, 2)));
  ir::Activation ir_act = ir_activation(act);
  a.activation = ir_act;
  im.with_activation(im.output(op),
                     ir_act == ir::Activation::kNone ? act : fb::ActivationFunctionType::NONE,
                     OpKind::kConv, a, inputs);
}

void import_pool(Importer& im, const fb::Operator* op) {
  const bool max =
      im.model().opcode_builtin[op->opcode_index()] == static_cast<int32_t>(BuiltinOp::kMaxPool2d);
  const auto* o = op->builtin_options_as_Pool2DOptions();
  if (!o) throw im.fail("missing Pool2DOptions", ErrorKind::kInvalidInput);
  int32_t x = im.input(op, 0);
  if (im.shape(x).size() != 4) throw im.fail("input must be 4-D");
  ir::PoolAttrs a;
  a.layout = ir::Layout::kNHWC;
  a.kernel = {o->filter_height(), o->filter_width()};
  a.strides = {o->stride_h(), o->stride_w()};
  WindowInput in = window_input(im, x, o->padding(),
                                same_or_valid_pads(im, o->padding(), x, a.kernel[0], a.kernel[1],
                                                   a.strides[0], a.strides[1], 1, 1),
                                max ? lowest_value : zero_value, a.kernel);
  a.pads = in.pads;
  // SAME pools skip padded positions; a folded zero PAD before an average pool is counted.
  a.count_include_pad = !max && in.folded;
  im.with_activation(im.output(op), o->fused_activation_function(),
                     max ? OpKind::kMaxPool : OpKind::kAveragePool, a, {in.x});
}

void import_fully_connected(Importer& im, const fb::Operator* op) {
  const auto* o = op->builtin_options_as_FullyConnectedOptions();
  fb::ActivationFunctionType act =
      o ? o->fused_activation_function() : fb::ActivationFunctionType::NONE;
  if (o && o->weights_format() != fb::FullyConnectedOptionsWeightsFormat::DEFAULT)
    throw im.fail("shuffled FULLY_CONNECTED weights are not supported");
  int32_t x = im.input(op, 0), w = im.input(op, 1);
  if (im.shape(w).size() != 2) throw im.fail("weights must be 2-D");
  check_quantized_weights(im, op, x, w);
  const int64_t features = im.shape(w)[1];
  std::optional<ValueId> bias;
  if (im.has_input(op, 2)) bias = im.value(im.input(op, 2));
  const std::string& name = im.model().names[static_cast<size_t>(im.output(op))];
  ValueId in = im.value(x);
  const size_t rank = im.shape(x).size();
  if (o && o->keep_num_dims() && rank > 2) {
    if (im.quantized(x)) throw im.fail("quantized FULLY_CONNECTED with keep_num_dims");
    // [.., I] x W^T keeping the leading dims: MatMul with the transposed weight, then the bias.
    const std::string& wname = im.model().names[static_cast<size_t>(w)];
    ValueId weight = im.graph().add_constant(wname, transposed(im.constant(w), {1, 0}));
    if (!bias) {
      im.with_activation(im.output(op), act, OpKind::kMatMul, ir::NoAttrs{}, {in, weight});
      return;
    }
    ValueId mm = im.add(OpKind::kMatMul, ir::NoAttrs{}, {in, weight}, name + "/matmul");
    ir::Activation ir_act = ir_activation(act);
    im.with_activation(im.output(op),
                       ir_act == ir::Activation::kNone ? act : fb::ActivationFunctionType::NONE,
                       OpKind::kAdd, ir::BinaryAttrs{ir_act}, {mm, *bias});
    return;
  }
  if (rank != 2)
    in = im.add(OpKind::kReshape, ir::ReshapeAttrs{{-1, features}}, {in}, name + "/flatten");
  std::vector<ValueId> inputs{in, im.value(w)};
  if (bias) inputs.push_back(*bias);
  ir::Activation ir_act = ir_activation(act);
  im.with_activation(im.output(op),
                     ir_act == ir::Activation::kNone ? act : fb::ActivationFunctionType::NONE,
                     OpKind::kGemm, ir::GemmAttrs{ir_act}, inputs);
}

// SiLU is written as LOGISTIC + MUL(x, sigmoid(x)); fold it back when the sigmoid feeds only this
// MUL.
bool import_silu(Importer& im, const fb::Operator* op) {
  int32_t a = im.input(op, 0), b = im.input(op, 1);
  // Quantized LOGISTIC and MUL each round with their own params: kept as two ops.
  if (im.quantized(a) || im.quantized(b)) return false;
  for (auto [x, s] : {std::pair{a, b}, std::pair{b, a}}) {
    const ir::Node* sig = im.sole_producer(s, OpKind::kSigmoid);
    if (!sig || sig->inputs[0] != im.value(x)) continue;
    im.drop_node(im.node_of(s));
    im.produce(im.output(op), OpKind::kSilu, ir::NoAttrs{}, {im.value(x)});
    return true;
  }
  return false;
}

void import_binary(Importer& im, const fb::Operator* op) {
  struct Form {
    BuiltinOp op;
    OpKind kind;
  };
  static const Form kForms[] = {{BuiltinOp::kAdd, OpKind::kAdd},
                                {BuiltinOp::kSub, OpKind::kSub},
                                {BuiltinOp::kMul, OpKind::kMul},
                                {BuiltinOp::kDiv, OpKind::kDiv}};
  const int32_t code = im.model().opcode_builtin[op->opcode_index()];
  fb::ActivationFunctionType act = fb::ActivationFunctionType::NONE;
  if (const auto* o = op->builtin_options_as_AddOptions()) act = o->fused_activation_function();
  if (const auto* o = op->builtin_options_as_SubOptions()) act = o->fused_activation_function();
  if (const auto* o = op->builtin_options_as_MulOptions()) act = o->fused_activation_function();
  if (const auto* o = op->builtin_options_as_DivOptions()) act = o->fused_activation_function();
  if (code == static_cast<int32_t>(BuiltinOp::kMul) && act == fb::ActivationFunctionType::NONE &&
      import_silu(im, op))
    return;
  for (const Form& f : kForms)
    if (static_cast<int32_t>(f.op) == code) {
      ir::Activation ir_act = ir_activation(act);
      im.with_activation(
          im.output(op), ir_act == ir::Activation::kNone ? act : fb::ActivationFunctionType::NONE,
          f.kind, ir::BinaryAttrs{ir_act}, {im.value(im.input(op, 0)), im.value(im.input(op, 1))});
      return;
    }
}

void import_unary(Importer& im, const fb::Operator* op) {
  struct Form {
    BuiltinOp op;
    OpKind kind;
    ir::OpAttrs attrs;
  };
  static const Form kForms[] = {
      {BuiltinOp::kRelu, OpKind::kRelu, ir::NoAttrs{}},
      {BuiltinOp::kRelu6, OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}},
      {BuiltinOp::kReluN1To1, OpKind::kClip, ir::ClipAttrs{-1.0f, 1.0f}},
      {BuiltinOp::kLogistic, OpKind::kSigmoid, ir::NoAttrs{}},
      {BuiltinOp::kTanh, OpKind::kTanh, ir::NoAttrs{}},
      {BuiltinOp::kHardSwish, OpKind::kHardSwish, ir::NoAttrs{}},
  };
  const int32_t code = im.model().opcode_builtin[op->opcode_index()];
  for (const Form& f : kForms)
    if (static_cast<int32_t>(f.op) == code) {
      im.produce(im.output(op), f.kind, f.attrs, {im.value(im.input(op, 0))});
      return;
    }
}

void import_leaky_relu(Importer& im, const fb::Operator* op) {
  const auto* o = op->builtin_options_as_LeakyReluOptions();
  im.produce(im.output(op), OpKind::kLeakyRelu, ir::LeakyReluAttrs{o ? o->alpha() : 0.0f},
             {im.value(im.input(op, 0))});
}

void import_prelu(Importer& im, const fb::Operator* op) {
  im.produce(im.output(op), OpKind::kPRelu, ir::NoAttrs{},
             {im.value(im.input(op, 0)), im.value(im.input(op, 1))});
}

// MINIMUM / MAXIMUM against a scalar constant: a Clip, merged with a directly preceding one.
void import_min_max(Importer& im, const fb::Operator* op) {
  const bool is_min =
      im.model().opcode_builtin[op->opcode_index()] == static_cast<int32_t>(BuiltinOp::kMinimum);
  int32_t a = im.input(op, 0), b = im.input(op, 1);
  int32_t x = a, bound = b;
  if (!im.is_constant(b) && im.is_constant(a)) std::swap(x, bound);
  if (!im.is_constant(bound) || im.constant(bound).numel() != 1)
    throw im.fail("only a MINIMUM/MAXIMUM against a scalar constant (a clip) has an IR form");
  if (im.quantized(x)) throw im.fail("quantized MINIMUM/MAXIMUM has no int8 IR form");
  const float c = im.scalar_constant(bound, "the bound");
  ir::ClipAttrs clip{-std::numeric_limits<float>::infinity(),
                     std::numeric_limits<float>::infinity()};
  (is_min ? clip.max : clip.min) = c;
  ValueId in = im.value(x);
  if (const ir::Node* prev = im.quantized(x) ? nullptr : im.sole_producer(x, OpKind::kClip)) {
    const auto& p = prev->attr<ir::ClipAttrs>();
    ir::ClipAttrs merged{std::max(p.min, clip.min), std::min(p.max, clip.max)};
    if (merged.min <= merged.max) {
      in = prev->inputs[0];
      clip = merged;
      im.drop_node(im.node_of(x));
    }
  }
  im.produce(im.output(op), OpKind::kClip, clip, {in});
}

void import_reshape(Importer& im, const fb::Operator* op) {
  std::vector<int64_t> target;
  if (im.has_input(op, 1)) {
    target = im.int_constant(im.input(op, 1), "the RESHAPE shape");
  } else if (const auto* o = op->builtin_options_as_ReshapeOptions(); o && o->new_shape()) {
    target.assign(o->new_shape()->begin(), o->new_shape()->end());
  } else {
    throw im.fail("RESHAPE without a target shape", ErrorKind::kInvalidInput);
  }
  // TFLite has no 0-means-copy; a 0 would be an empty tensor. Dims are int32 in the format.
  Dims known;
  for (int64_t d : target) {
    if (d < -1 || d == 0 || d > std::numeric_limits<int32_t>::max())
      throw im.fail("RESHAPE target " + dims_to_string(target) + " is not supported");
    if (d > 0) known.push_back(d);
  }
  checked_numel(known);
  im.produce(im.output(op), OpKind::kReshape, ir::ReshapeAttrs{target},
             {im.value(im.input(op, 0))});
}

void import_squeeze(Importer& im, const fb::Operator* op) {
  std::vector<int64_t> axes;
  if (const auto* o = op->builtin_options_as_SqueezeOptions(); o && o->squeeze_dims())
    axes.assign(o->squeeze_dims()->begin(), o->squeeze_dims()->end());
  im.produce(im.output(op), OpKind::kSqueeze, ir::AxesAttrs{axes}, {im.value(im.input(op, 0))});
}

void import_mean(Importer& im, const fb::Operator* op) {
  const auto* o = op->builtin_options_as_ReducerOptions();
  std::vector<int64_t> axes = im.int_constant(im.input(op, 1), "MEAN axes");
  im.produce(im.output(op), OpKind::kReduceMean, ir::ReduceAttrs{axes, o && o->keep_dims()},
             {im.value(im.input(op, 0))});
}

void import_softmax(Importer& im, const fb::Operator* op) {
  const auto* o = op->builtin_options_as_SoftmaxOptions();
  if (o && o->beta() != 1.0f)
    throw im.fail("SOFTMAX with beta " + std::to_string(o->beta()) + " has no IR form");
  int32_t x = im.input(op, 0);
  im.produce(im.output(op), OpKind::kSoftmax,
             ir::AxisAttrs{static_cast<int64_t>(im.shape(x).size()) - 1}, {im.value(x)});
}

void import_concat(Importer& im, const fb::Operator* op) {
  const auto* o = op->builtin_options_as_ConcatenationOptions();
  std::vector<ValueId> inputs;
  for (size_t k = 0; k < im.input_count(op); ++k) inputs.push_back(im.value(im.input(op, k)));
  if (inputs.empty()) throw im.fail("CONCATENATION without inputs", ErrorKind::kInvalidInput);
  im.with_activation(im.output(op),
                     o ? o->fused_activation_function() : fb::ActivationFunctionType::NONE,
                     OpKind::kConcat, ir::AxisAttrs{o ? o->axis() : 0}, inputs);
}

// PADV2's constant: a float, or a quantized scalar (its real value).
float pad_value(Importer& im, int32_t t) {
  Tensor c = im.constant(t);
  std::optional<ir::QuantParams> q = im.model().quant(t);
  if (q && c.numel() == 1 && (c.dtype() == DType::kInt8 || c.dtype() == DType::kUInt8))
    return static_cast<float>((c.to_int64_vector()[0] - q->zero_point.at(0)) * static_cast<double>(q->scale.at(0)));
  return im.scalar_constant(t, "the pad value");
}

void import_pad(Importer& im, const fb::Operator* op) {
  const bool v2 =
      im.model().opcode_builtin[op->opcode_index()] == static_cast<int32_t>(BuiltinOp::kPadV2);
  int32_t x = im.input(op, 0);
  const size_t rank = im.shape(x).size();
  std::vector<int64_t> paddings = im.int_constant(im.input(op, 1), "the paddings");
  if (paddings.size() != 2 * rank)
    throw im.fail("paddings must be [rank, 2]", ErrorKind::kInvalidInput);
  for (int64_t p : paddings)
    if (p < 0 || p > std::numeric_limits<int32_t>::max())
      throw im.fail("padding " + std::to_string(p) + " out of range", ErrorKind::kInvalidInput);
  PendingPad p{
      -1,
      im.value(x),
      {},
      {},
      v2 && im.has_input(op, 2) ? pad_value(im, im.input(op, 2)) : 0.0f};
  for (size_t k = 0; k < rank; ++k) {
    p.begins.push_back(paddings[2 * k]);
    p.ends.push_back(paddings[2 * k + 1]);
  }
  std::vector<int64_t> pads = p.begins;
  pads.insert(pads.end(), p.ends.begin(), p.ends.end());
  int32_t out = im.output(op);
  ValueId v = im.produce(out, OpKind::kPad, ir::PadAttrs{pads, p.value}, {p.input});
  p.node = im.graph().value(v).producer;
  im.remember_pad(out, std::move(p));
}

void import_transpose(Importer& im, const fb::Operator* op) {
  im.produce(im.output(op), OpKind::kTranspose,
             ir::TransposeAttrs{im.int_constant(im.input(op, 1), "the permutation")},
             {im.value(im.input(op, 0))});
}

void import_batch_matmul(Importer& im, const fb::Operator* op) {
  if (const auto* o = op->builtin_options_as_BatchMatMulOptions(); o && (o->adj_x() || o->adj_y()))
    throw im.fail("BATCH_MATMUL with adjoint inputs is not supported");
  im.produce(im.output(op), OpKind::kMatMul, ir::NoAttrs{},
             {im.value(im.input(op, 0)), im.value(im.input(op, 1))});
}

// Float16 weights: DEQUANTIZE of a FLOAT16 constant is the float32 constant; so is a DEQUANTIZE
// of an int8 constant (weights-only quantization). A DEQUANTIZE of an int8/uint8 activation is a
// Dequantize node.
void import_dequantize(Importer& im, const fb::Operator* op) {
  int32_t in = im.input(op, 0);
  const auto* t = im.model().graph->tensors()->Get(static_cast<fbs::uoffset_t>(in));
  const int32_t out = im.output(op);
  const auto* ot = im.model().graph->tensors()->Get(static_cast<fbs::uoffset_t>(out));
  if (ot->type() != fb::TensorType::FLOAT32)
    throw im.fail("DEQUANTIZE output is " + type_name(ot->type()) + ", expected float32",
                  ErrorKind::kInvalidInput);
  const bool integer = t->type() == fb::TensorType::INT8 || t->type() == fb::TensorType::UINT8;
  if (integer && !im.quantized(in))
    throw im.fail("DEQUANTIZE input '" + im.model().names[static_cast<size_t>(in)] +
                      "' has no quantization parameters",
                  ErrorKind::kInvalidInput);
  if (integer && !im.model().constant(in)) {
    im.produce(out, OpKind::kDequantize, ir::NoAttrs{}, {im.value(in)});
    return;
  }
  if (!im.model().constant(in) || (t->type() != fb::TensorType::FLOAT16 && !integer))
    throw im.fail("DEQUANTIZE of " + type_name(t->type()) +
                  (im.model().constant(in) ? " constants" : " activations") + " is not supported");
  Tensor weights = im.constant(in);
  if (integer) weights = dequantized(weights, *im.model().quant(in));
  if (weights.shape() != im.shape(im.output(op)))
    throw im.fail("DEQUANTIZE output shape " + dims_to_string(im.shape(im.output(op))) +
                      " differs from its input's " + dims_to_string(weights.shape()),
                  ErrorKind::kInvalidInput);
  im.bind(im.output(op),
          im.graph().add_constant(im.model().names[static_cast<size_t>(in)], weights));
}

// QUANTIZE: float32 -> int8/uint8, or a requantization between them.
void import_quantize(Importer& im, const fb::Operator* op) {
  const int32_t in = im.input(op, 0), out = im.output(op);
  const auto* t = im.model().graph->tensors()->Get(static_cast<fbs::uoffset_t>(in));
  if (t->type() != fb::TensorType::FLOAT32 && !im.quantized(in))
    throw im.fail("QUANTIZE input is " + type_name(t->type()) +
                      ", expected float32 or quantized int8/uint8",
                  ErrorKind::kInvalidInput);
  if (!im.quantized(out))
    throw im.fail("QUANTIZE output '" + im.model().names[static_cast<size_t>(out)] +
                      "' must be int8/uint8 with quantization parameters",
                  ErrorKind::kInvalidInput);
  if (im.model().quant(out)->per_channel())
    throw im.fail("per-channel QUANTIZE of an activation is not supported");
  im.produce(out, OpKind::kQuantize,
             ir::QuantizeAttrs{*im.model().dtypes[static_cast<size_t>(out)]}, {im.value(in)});
}

struct ImporterEntry {
  BuiltinOp op;
  ImportFn import;
};

constexpr ImporterEntry kImporters[] = {
    {BuiltinOp::kConv2d, import_conv},
    {BuiltinOp::kDepthwiseConv2d, import_conv},
    {BuiltinOp::kMaxPool2d, import_pool},
    {BuiltinOp::kAveragePool2d, import_pool},
    {BuiltinOp::kFullyConnected, import_fully_connected},
    {BuiltinOp::kAdd, import_binary},
    {BuiltinOp::kSub, import_binary},
    {BuiltinOp::kMul, import_binary},
    {BuiltinOp::kDiv, import_binary},
    {BuiltinOp::kRelu, import_unary},
    {BuiltinOp::kRelu6, import_unary},
    {BuiltinOp::kReluN1To1, import_unary},
    {BuiltinOp::kLogistic, import_unary},
    {BuiltinOp::kTanh, import_unary},
    {BuiltinOp::kHardSwish, import_unary},
    {BuiltinOp::kLeakyRelu, import_leaky_relu},
    {BuiltinOp::kPrelu, import_prelu},
    {BuiltinOp::kMinimum, import_min_max},
    {BuiltinOp::kMaximum, import_min_max},
    {BuiltinOp::kReshape, import_reshape},
    {BuiltinOp::kSqueeze, import_squeeze},
    {BuiltinOp::kMean, import_mean},
    {BuiltinOp::kSoftmax, import_softmax},
    {BuiltinOp::kConcatenation, import_concat},
    {BuiltinOp::kPad, import_pad},
    {BuiltinOp::kPadV2, import_pad},
    {BuiltinOp::kTranspose, import_transpose},
    {BuiltinOp::kBatchMatMul, import_batch_matmul},
    {BuiltinOp::kDequantize, import_dequantize},
    {BuiltinOp::kQuantize, import_quantize},
};

ir::Graph Importer::run(const TfliteSummary& summary) {
  // Signature names (image, logits) name the graph's inputs and outputs when there are any.
  auto signature_name = [&](int32_t t, bool input) -> std::string {
    for (const TfliteSignature& sig : summary.signatures)
      for (const auto& [name, index] : input ? sig.inputs : sig.outputs)
        if (index == t && !name.empty()) return name;
    return m_.names[static_cast<size_t>(t)];
  };
  const auto* tensors = m_.graph->tensors();
  for (int32_t t : summary.inputs) {
    if (value_of_[static_cast<size_t>(t)] != ir::kNoValue || m_.constant(t)) continue;
    const fb::Tensor* ft = tensors->Get(static_cast<fbs::uoffset_t>(t));
    const bool q = quantized(t);
    if (ft->type() != fb::TensorType::FLOAT32 && !q)
      throw not_float("graph input", ft->type()).tensor(m_.names[static_cast<size_t>(t)]);
    ir::Shape dims = ir::static_shape(shape(t));
    if (const auto* sig = ft->shape_signature())
      for (size_t k = 0; k < dims.size(); ++k)
        if (sig->Get(static_cast<fbs::uoffset_t>(k)) == -1)
          dims[k] = k == 0 ? ir::Dim::named("batch") : ir::Dim::unknown();
    std::string name = signature_name(t, true);
    if (g_.find_value(name)) name = m_.names[static_cast<size_t>(t)] + ":" + std::to_string(t);
    ValueId in = g_.add_input(name, q ? *m_.dtypes[static_cast<size_t>(t)] : DType::kFloat32, dims);
    if (q) g_.value(in).quant = m_.quant(t);
    value_of_[static_cast<size_t>(t)] = in;
  }
  for (op_index_ = 0; op_index_ < m_.op_count(); ++op_index_) {
    const fb::Operator* op = m_.op(op_index_);
    const int32_t code = m_.opcode_builtin[op->opcode_index()];
    const ImporterEntry* entry = nullptr;
    for (const ImporterEntry& e : kImporters)
      if (static_cast<int32_t>(e.op) == code) entry = &e;
    if (!entry) throw fail("modex has no IR form for this op");
    if (code != static_cast<int32_t>(BuiltinOp::kDequantize) &&
        code != static_cast<int32_t>(BuiltinOp::kQuantize))
      check_activation_types(op);
    try {
      entry->import(*this, op);
    } catch (Error& e) {
      e.node("operator " + std::to_string(op_index_)).op(m_.op_name(op_index_));
      throw;
    }
  }
  for (int32_t t : summary.outputs) {
    ValueId v = value(t);
    g_.add_output(v);
    std::string name = signature_name(t, false);
    if (name != g_.value(v).name) g_.set_output_name(v, name);
  }
  g_.compact();
  ir::verify(g_);
  return std::move(g_);
}

void set_metadata(ir::Graph& g, const std::string& json_text) {
  if (json_text.empty()) return;
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw invalid("the modex_metadata entry is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    g.metadata[it.key()] =
        it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
}

}  // namespace

TfliteSummary inspect_tflite(const std::shared_ptr<Buffer>& file) { return summarise(check(file)); }

TfliteModel parse_tflite(std::shared_ptr<Buffer> file) {
  CheckedModel m = check(std::move(file));
  TfliteModel out;
  out.summary = summarise(m);
  out.graph = Importer(m).run(out.summary);
  set_metadata(out.graph, out.summary.modex_metadata);
  return out;
}

TfliteModel read_tflite(const std::filesystem::path& path) {
  try {
    return parse_tflite(read_file_buffer(path));
  } catch (Error& e) {
    e.file(path.string());
    throw;
  }
}

}  // namespace modex::tflite_io
