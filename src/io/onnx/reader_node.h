// The importer's state and the view one op builder gets of its ONNX node: typed attribute
// access, inputs as IR values or as tensors evaluated at import time, outputs, and errors that
// name the node, op and opset.
#pragma once

#include <onnx/onnx_pb.h>

#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "io/onnx/reader_symbolic.h"
#include "ir/graph.h"

namespace modex::onnx_io::reader {

// What an ONNX value name stands for: an IR value, a tensor the importer evaluated (shape
// arithmetic), or both (a constant whose evaluated form was needed, or an evaluated tensor that
// an IR op needed as a constant).
struct Imported {
  ir::ValueId id = ir::kNoValue;
  std::optional<SymTensor> sym;
};

struct ImportState {
  ir::Graph graph;
  int opset = 0;
  std::filesystem::path external_data_dir;
  std::unordered_map<std::string, Imported> values;
  // Initializers not yet turned into IR constants (done on first use, so unused ones cost nothing).
  std::unordered_map<std::string, onnx::TensorProto*> initializers;
  // Names read by the nodes being imported or listed as graph outputs.
  std::unordered_set<std::string> consumed;

  // The value for an ONNX name that a node or graph output reads (the driver has checked that it
  // exists: an input, an initializer, or an output of an earlier node).
  Imported& lookup(const std::string& name);
  // An IR constant named `name` (the name is taken from any helper value that holds it).
  ir::ValueId add_named_constant(const std::string& name, Tensor value);
};

class NodeContext {
 public:
  NodeContext(ImportState& state, const onnx::NodeProto& node, std::string unique_name)
      : state_(state), node_(node), name_(std::move(unique_name)) {}

  const std::string& name() const { return name_; }
  const std::string& op_type() const { return node_.op_type(); }
  int opset() const { return state_.opset; }
  ir::Graph& graph() { return state_.graph; }

  // --- errors: "node 'X' (Op): <message> (opset N)" ---
  Error error(const std::string& message, ErrorKind kind = ErrorKind::kUnsupported) const;
  [[noreturn]] void fail(const std::string& message,
                         ErrorKind kind = ErrorKind::kUnsupported) const {
    throw error(message, kind);
  }
  [[noreturn]] void invalid(const std::string& message) const {
    throw error(message, ErrorKind::kInvalidInput);
  }

  // --- inputs (trailing empty names are omitted optional inputs) ---
  size_t input_count() const;
  bool has_input(size_t i) const {
    return i < input_count() && !node_.input(static_cast<int>(i)).empty();
  }
  const std::string& input_name(size_t i) const { return node_.input(static_cast<int>(i)); }
  void expect_inputs(size_t lo, size_t hi) const;
  // Input i as an IR value; an evaluated tensor becomes a constant (if static: otherwise the
  // error says which dynamic dim it depends on).
  ir::ValueId tensor(size_t i);
  const ir::Value& value(size_t i) { return graph().value(tensor(i)); }
  // True when input i is known at import time: evaluated here, or a constant small enough to
  // evaluate. Cheap (converts nothing).
  bool is_known(size_t i);
  // True when input i was computed by the importer (from Shape() and friends).
  bool is_evaluated(size_t i);
  // Input i as an evaluated tensor (is_known(i) must hold).
  const SymTensor& known(size_t i);
  // The constant value of input i, if it is one (of any size).
  std::optional<Tensor> constant(size_t i);
  // Input i's dtype and shape without materialising anything.
  DType input_dtype(size_t i);
  // Integer values of an input that must be known at import time (axes, pads, shapes).
  std::vector<int64_t> static_ints(size_t i, const std::string& what);
  // A one-element input that must be a constant, as a double.
  double static_scalar(size_t i, const std::string& what);

  // --- attributes (the driver has rejected names the op's rule does not list) ---
  const onnx::AttributeProto* attr(const std::string& name) const;
  bool has_attr(const std::string& name) const { return attr(name) != nullptr; }
  int64_t attr_int(const std::string& name, int64_t fallback) const;
  float attr_float(const std::string& name, float fallback) const;
  std::string attr_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& name, std::vector<int64_t> fallback) const;
  std::optional<std::vector<int64_t>> attr_ints(const std::string& name) const;
  std::vector<float> attr_floats(const std::string& name) const;
  const onnx::TensorProto* attr_tensor(const std::string& name) const;
  Tensor attr_tensor_value(const std::string& name) const;
  // A 0/1 attribute (ceil_mode, transA, ...): anything else is an invalid model.
  bool attr_flag(const std::string& name, bool fallback) const;

  // --- outputs ---
  size_t output_count() const;
  bool has_output(size_t i) const {
    return i < output_count() && !node_.output(static_cast<int>(i)).empty();
  }
  // True when a node being imported reads output i, or it is a graph output.
  bool output_used(size_t i) const;
  void expect_outputs(size_t lo, size_t hi) const;
  // Binds output i to an IR value, which takes the ONNX name.
  void set_output(size_t i, ir::ValueId v);
  void set_output(size_t i, SymTensor s);

  // --- building ---
  // An IR node named after this node, its output bound to output 0.
  void emit_output(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs);
  // A helper node "<name>/<suffix>" (extra steps of this node's lowering); returns its output.
  ir::ValueId emit_helper(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs,
                          const std::string& suffix);
  ir::ValueId add_constant(Tensor value, const std::string& suffix);
  // "<op_type> ... " value descriptions for messages.
  std::string describe_input(size_t i) const;

 private:
  ImportState& state_;
  const onnx::NodeProto& node_;
  std::string name_;
};

}  // namespace modex::onnx_io::reader
