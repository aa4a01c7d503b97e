#include "io/onnx/reader_node.h"

#include <cmath>

#include "io/onnx/reader_tensor.h"

namespace modex::onnx_io::reader {
namespace {

using AP = onnx::AttributeProto;

const char* attr_type_name(int type) {
  switch (type) {
    case AP::FLOAT:
      return "float";
    case AP::INT:
      return "int";
    case AP::STRING:
      return "string";
    case AP::TENSOR:
      return "tensor";
    case AP::GRAPH:
      return "graph";
    case AP::FLOATS:
      return "floats";
    case AP::INTS:
      return "ints";
    case AP::STRINGS:
      return "strings";
    case AP::TENSORS:
      return "tensors";
    case AP::GRAPHS:
      return "graphs";
    case AP::SPARSE_TENSOR:
      return "sparse tensor";
    case AP::SPARSE_TENSORS:
      return "sparse tensors";
    case AP::TYPE_PROTO:
      return "type";
    case AP::TYPE_PROTOS:
      return "types";
    default:
      return "undefined";
  }
}

}  // namespace

Imported& ImportState::lookup(const std::string& name) {
  auto it = values.find(name);
  if (it != values.end()) return it->second;
  auto init = initializers.find(name);
  if (init == initializers.end())
    throw Error("value '" + name + "' is used before it is defined", ErrorKind::kInternal);
  Tensor t = tensor_from_proto(*init->second, external_data_dir);
  // The proto's copy of the bytes is no longer needed: keep one copy of the weights in memory.
  std::string().swap(*init->second->mutable_raw_data());
  initializers.erase(init);
  Imported& im = values[name];
  im.id = add_named_constant(name, std::move(t));
  return im;
}

ir::ValueId ImportState::add_named_constant(const std::string& name, Tensor value) {
  ir::ValueId id = graph.add_constant(name, std::move(value));
  graph.set_output_name(id, name);
  return id;
}

Error NodeContext::error(const std::string& message, ErrorKind kind) const {
  Error e(message + " (opset " + std::to_string(state_.opset) + ")", kind);
  e.node(name_).op(node_.op_type());
  return e;
}

size_t NodeContext::input_count() const {
  size_t n = static_cast<size_t>(node_.input_size());
  while (n > 0 && node_.input(static_cast<int>(n - 1)).empty()) --n;
  return n;
}

size_t NodeContext::output_count() const {
  size_t n = static_cast<size_t>(node_.output_size());
  while (n > 0 && node_.output(static_cast<int>(n - 1)).empty()) --n;
  return n;
}

void NodeContext::expect_inputs(size_t lo, size_t hi) const {
  size_t n = input_count();
  if (n < lo || n > hi)
    invalid("expected " +
            (lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi)) +
            " inputs, got " + std::to_string(n));
  for (size_t i = 0; i < lo; ++i)
    if (!has_input(i)) invalid("required input " + std::to_string(i) + " is missing");
}

void NodeContext::expect_outputs(size_t lo, size_t hi) const {
  size_t n = output_count();
  if (n < lo || n > hi)
    invalid("expected " +
            (lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi)) +
            " outputs, got " + std::to_string(n));
  for (size_t i = 0; i < lo; ++i)
    if (!has_output(i)) invalid("required output " + std::to_string(i) + " has no name");
}

std::string NodeContext::describe_input(size_t i) const {
  return "input " + std::to_string(i) + " '" + input_name(i) + "'";
}

ir::ValueId NodeContext::tensor(size_t i) {
  if (!has_input(i)) invalid("required input " + std::to_string(i) + " is missing");
  Imported& im = state_.lookup(input_name(i));
  if (im.id != ir::kNoValue) return im.id;
  if (!im.sym->is_static())
    fail(describe_input(i) + " is a shape computation that depends on " +
         im.sym->describe_dynamic() +
         "; modex evaluates such values at import time and can use them only where a static value "
         "or a Reshape "
         "target is expected, not as a tensor computed at run time");
  im.id = state_.add_named_constant(input_name(i), sym_to_tensor(*im.sym));
  return im.id;
}

bool NodeContext::is_known(size_t i) {
  if (!has_input(i)) return false;
  Imported& im = state_.lookup(input_name(i));
  if (im.sym) return true;
  const ir::Value& v = graph().value(im.id);
  return v.is_constant() && v.constant.numel() <= kMaxSymbolicElements;
}

bool NodeContext::is_evaluated(size_t i) {
  if (!has_input(i)) return false;
  Imported& im = state_.lookup(input_name(i));
  return im.sym && im.id == ir::kNoValue;
}

const SymTensor& NodeContext::known(size_t i) {
  if (!is_known(i)) {
    if (!has_input(i)) invalid("required input " + std::to_string(i) + " is missing");
    fail(describe_input(i) +
         " must be a constant or a shape computation that modex can evaluate when importing; "
         "it is a tensor computed at run time");
  }
  Imported& im = state_.lookup(input_name(i));
  if (!im.sym) {
    try {
      im.sym = sym_from_tensor(graph().value(im.id).constant);
    } catch (Error& e) {
      throw error(e.message(), e.kind());
    }
  }
  return *im.sym;
}

std::optional<Tensor> NodeContext::constant(size_t i) {
  if (!has_input(i)) return std::nullopt;
  Imported& im = state_.lookup(input_name(i));
  if (im.id != ir::kNoValue) {
    const ir::Value& v = graph().value(im.id);
    if (v.is_constant()) return v.constant;
    return std::nullopt;
  }
  if (!im.sym->is_static()) return std::nullopt;
  return sym_to_tensor(*im.sym);
}

std::vector<int64_t> NodeContext::static_ints(size_t i, const std::string& what) {
  if (!has_input(i)) invalid(what + " (input " + std::to_string(i) + ") is missing");
  if (!is_known(i))
    fail(what + " (" + describe_input(i) +
         ") must be a constant or computable at import time; it is computed at run time");
  const SymTensor& s = known(i);
  if (is_float(s.dtype)) invalid(what + " (" + describe_input(i) + ") must be an integer tensor");
  try {
    return sym_static_ints(s, what);
  } catch (Error& e) {
    throw error(e.message(), e.kind());
  }
}

DType NodeContext::input_dtype(size_t i) {
  Imported& im = state_.lookup(input_name(i));
  return im.id != ir::kNoValue ? graph().value(im.id).dtype : im.sym->dtype;
}

static double static_scalar_of(const NodeContext& c, const Tensor& t, const std::string& what) {
  if (t.numel() != 1)
    c.invalid(what + " must have one element, has shape " + dims_to_string(t.shape()));
  return float_element(t, 0);
}

double NodeContext::static_scalar(size_t i, const std::string& what) {
  std::optional<Tensor> t = constant(i);
  if (!t)
    fail(what + " (" + describe_input(i) + ") must be a constant; it is computed at run time");
  return static_scalar_of(*this, *t, what);
}

const onnx::AttributeProto* NodeContext::attr(const std::string& name) const {
  for (const auto& a : node_.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

namespace {
void expect_type(const NodeContext& c, const onnx::AttributeProto& a, int type) {
  if (a.type() != type)
    c.invalid("attribute '" + a.name() + "' must be of type " + attr_type_name(type) + ", is " +
              attr_type_name(a.type()));
}
}  // namespace

int64_t NodeContext::attr_int(const std::string& name, int64_t fallback) const {
  const auto* a = attr(name);
  if (!a) return fallback;
  expect_type(*this, *a, AP::INT);
  return a->i();
}

float NodeContext::attr_float(const std::string& name, float fallback) const {
  const auto* a = attr(name);
  if (!a) return fallback;
  expect_type(*this, *a, AP::FLOAT);
  return a->f();
}

std::string NodeContext::attr_string(const std::string& name, const std::string& fallback) const {
  const auto* a = attr(name);
  if (!a) return fallback;
  expect_type(*this, *a, AP::STRING);
  return a->s();
}

std::vector<int64_t> NodeContext::attr_ints(const std::string& name,
                                            std::vector<int64_t> fallback) const {
  auto v = attr_ints(name);
  return v ? *v : std::move(fallback);
}

std::optional<std::vector<int64_t>> NodeContext::attr_ints(const std::string& name) const {
  const auto* a = attr(name);
  if (!a) return std::nullopt;
  expect_type(*this, *a, AP::INTS);
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

std::vector<float> NodeContext::attr_floats(const std::string& name) const {
  const auto* a = attr(name);
  if (!a) return {};
  expect_type(*this, *a, AP::FLOATS);
  return std::vector<float>(a->floats().begin(), a->floats().end());
}

const onnx::TensorProto* NodeContext::attr_tensor(const std::string& name) const {
  const auto* a = attr(name);
  if (!a) return nullptr;
  expect_type(*this, *a, AP::TENSOR);
  return &a->t();
}

Tensor NodeContext::attr_tensor_value(const std::string& name) const {
  const onnx::TensorProto* t = attr_tensor(name);
  if (!t) invalid("attribute '" + name + "' is missing");
  try {
    return tensor_from_proto(*t, state_.external_data_dir);
  } catch (Error& e) {
    e.tensor("attribute " + name);
    throw;
  }
}

bool NodeContext::attr_flag(const std::string& name, bool fallback) const {
  int64_t v = attr_int(name, fallback ? 1 : 0);
  if (v != 0 && v != 1) invalid("attribute '" + name + "' must be 0 or 1, is " + std::to_string(v));
  return v == 1;
}

bool NodeContext::output_used(size_t i) const {
  return has_output(i) && state_.consumed.count(node_.output(static_cast<int>(i))) > 0;
}

void NodeContext::set_output(size_t i, ir::ValueId v) {
  if (!has_output(i)) return;
  const std::string& name = node_.output(static_cast<int>(i));
  graph().set_output_name(v, name);
  state_.values[name] = Imported{v, std::nullopt};
}

void NodeContext::set_output(size_t i, SymTensor s) {
  if (!has_output(i)) return;
  state_.values[node_.output(static_cast<int>(i))] = Imported{ir::kNoValue, std::move(s)};
}

void NodeContext::emit_output(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs) {
  set_output(0, graph().add_node1(op, std::move(attrs), std::move(inputs), name_));
}

ir::ValueId NodeContext::emit_helper(ir::OpKind op, ir::OpAttrs attrs,
                                     std::vector<ir::ValueId> inputs, const std::string& suffix) {
  return graph().add_node1(op, std::move(attrs), std::move(inputs), name_ + "/" + suffix);
}

ir::ValueId NodeContext::add_constant(Tensor value, const std::string& suffix) {
  return graph().add_constant(name_ + "/" + suffix, std::move(value));
}

}  // namespace modex::onnx_io::reader
