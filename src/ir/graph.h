// The typed graph IR. Values carry dtype and shape (dims may be symbolic: a named dynamic dim
// such as "batch", or an anonymous dynamic one); nodes carry an op kind with typed attributes.
// Every node is shape-checked when it is added, so later stages can trust shapes and types.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "ir/ops.h"

namespace modex::ir {

struct Dim {
  int64_t value = -1;  // >= 0: static size
  std::string symbol;  // for dynamic dims: a name ("batch"), or "" when unknown

  static Dim fixed(int64_t v) { return Dim{v, {}}; }
  static Dim named(std::string s) { return Dim{-1, std::move(s)}; }
  static Dim unknown() { return Dim{}; }
  bool is_static() const { return value >= 0; }
  bool operator==(const Dim&) const = default;
};

using Shape = std::vector<Dim>;

Shape static_shape(const Dims& dims);
// The static dims, or nullopt when any dim is dynamic.
std::optional<Dims> to_dims(const Shape& shape);
std::string shape_to_string(const Shape& shape);

// Affine quantization of an integer tensor: real = (q - zero_point) * scale. One scale and zero
// point per tensor, or one per slice along `axis` (per-channel weights: axis 0 of a Conv filter
// [O, kH, kW, I] or a Gemm weight [O, I]). Int8 activations carry per-tensor params; int32 biases
// carry scale = input_scale * weight_scale[c] and zero point 0.
struct QuantParams {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  int32_t axis = 0;
  bool per_channel() const { return scale.size() > 1; }
  bool operator==(const QuantParams&) const = default;
};

using ValueId = int32_t;
using NodeId = int32_t;
inline constexpr ValueId kNoValue = -1;

struct Value {
  std::string name;
  DType dtype = DType::kFloat32;
  Shape shape;
  Tensor constant;             // defined() for initializers / folded constants
  NodeId producer = -1;        // -1 for graph inputs and constants
  // Set on quantized integer values (int8/uint8 activations and weights, int32 biases). An op
  // whose data inputs are quantized computes in the integer domain (TFLite semantics) and its
  // output carries its own params; Quantize/Dequantize convert between domains.
  std::optional<QuantParams> quant;
  bool is_constant() const { return constant.defined(); }
};

struct Node {
  OpKind op;
  OpAttrs attrs;
  std::vector<ValueId> inputs;  // kNoValue marks an omitted optional input
  std::vector<ValueId> outputs;
  std::string name;
  bool dead = false;  // removed by a pass; dropped by Graph::compact()

  template <typename T>
  T& attr() {
    return std::get<T>(attrs);
  }
  template <typename T>
  const T& attr() const {
    return std::get<T>(attrs);
  }
};

class Graph {
 public:
  // --- building (each call validates; errors name the node and op) ---
  ValueId add_input(std::string name, DType dtype, Shape shape);
  ValueId add_constant(std::string name, Tensor value);
  // Adds a node and infers its outputs' dtypes and shapes. Output names are derived from the
  // node name ("<name>" for one output, "<name>:<i>" for more) unless given.
  std::vector<ValueId> add_node(OpKind op, OpAttrs attrs, std::vector<ValueId> inputs,
                                std::string name, int num_outputs = 1);
  ValueId add_node1(OpKind op, OpAttrs attrs, std::vector<ValueId> inputs, std::string name) {
    return add_node(op, std::move(attrs), std::move(inputs), std::move(name), 1)[0];
  }
  void add_output(ValueId v);
  void set_output_name(ValueId v, std::string name);

  // --- access ---
  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  Value& value(ValueId id) { return values_.at(static_cast<size_t>(id)); }
  const Value& value(ValueId id) const { return values_.at(static_cast<size_t>(id)); }
  Node& node(NodeId id) { return nodes_.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return nodes_.at(static_cast<size_t>(id)); }
  const std::vector<ValueId>& inputs() const { return inputs_; }
  const std::vector<ValueId>& outputs() const { return outputs_; }
  std::optional<ValueId> find_value(const std::string& name) const;

  // Live nodes consuming each value (index = ValueId).
  std::vector<std::vector<NodeId>> consumers() const;
  bool is_graph_output(ValueId v) const;

  // --- editing (for passes) ---
  // Points every use of `from` (node inputs and graph outputs) at `to`.
  void replace_all_uses(ValueId from, ValueId to);
  // replace_all_uses, and where `from` was a graph output, `to` takes over its name (a pass that
  // removes the node producing `from` keeps the graph's output names).
  void replace_value(ValueId from, ValueId to);
  // Creates a node without shape inference; call infer_shapes() afterwards.
  NodeId insert_node_unchecked(Node node);
  // Drops dead nodes and values nothing uses (except graph inputs), renumbering ids and keeping
  // a topological node order.
  void compact();

  // --- shapes ---
  // Re-runs shape inference over the whole graph. With `bindings`, named input dims are replaced
  // by the given sizes first (e.g. {"batch": 1, "height": 224}) — used to validate a dynamic
  // graph at a concrete size.
  void infer_shapes(const std::map<std::string, int64_t>& bindings = {});

  // Free-form model metadata (architecture, class names, preprocessing, ...).
  std::map<std::string, std::string> metadata;

 private:
  std::string unique_name(const std::string& base);
  void infer_node(NodeId id);

  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> inputs_;
  std::vector<ValueId> outputs_;
  std::unordered_map<std::string, ValueId> by_name_;
};

struct OutputInfo {
  DType dtype;
  Shape shape;
};

// The op's shape function: validates inputs (counts, ranks, dtypes, channel agreement, attrs)
// and returns the outputs. Throws Error with node name and op on any violation.
std::vector<OutputInfo> infer_node_outputs(const Graph& g, const Node& n);

// Structural checks: ids in range, topological order, single producers, no live node reading a
// dead node's output, outputs defined, attrs of the right type, shapes consistent with a fresh
// inference. Throws Error describing the first problem.
void verify(const Graph& g);

// A readable listing used by `modex inspect`.
std::string dump(const Graph& g, bool with_constants = false);

}  // namespace modex::ir
