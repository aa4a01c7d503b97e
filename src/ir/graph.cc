#include "ir/graph.h"

#include <algorithm>

namespace modex::ir {

Shape static_shape(const Dims& dims) {
  Shape s;
  s.reserve(dims.size());
  for (int64_t d : dims) s.push_back(Dim::fixed(d));
  return s;
}

std::optional<Dims> to_dims(const Shape& shape) {
  Dims d;
  d.reserve(shape.size());
  for (const Dim& x : shape) {
    if (!x.is_static()) return std::nullopt;
    d.push_back(x.value);
  }
  return d;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    if (shape[i].is_static())
      s += std::to_string(shape[i].value);
    else
      s += shape[i].symbol.empty() ? "?" : shape[i].symbol;
  }
  return s + "]";
}

std::string Graph::unique_name(const std::string& base) {
  std::string name = base.empty() ? "v" : base;
  if (!by_name_.count(name)) return name;
  for (int i = 1;; ++i) {
    std::string candidate = name + "_" + std::to_string(i);
    if (!by_name_.count(candidate)) return candidate;
  }
}

ValueId Graph::add_input(std::string name, DType dtype, Shape shape) {
  if (by_name_.count(name)) throw Error("duplicate value name").tensor(name);
  Value v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  values_.push_back(std::move(v));
  ValueId id = static_cast<ValueId>(values_.size() - 1);
  by_name_[name] = id;
  inputs_.push_back(id);
  return id;
}

ValueId Graph::add_constant(std::string name, Tensor value) {
  if (!value.defined()) throw Error("constant without data", ErrorKind::kInternal).tensor(name);
  Value v;
  v.name = unique_name(name);
  v.dtype = value.dtype();
  v.shape = static_shape(value.shape());
  v.constant = std::move(value);
  values_.push_back(std::move(v));
  ValueId id = static_cast<ValueId>(values_.size() - 1);
  by_name_[values_.back().name] = id;
  return id;
}

std::vector<ValueId> Graph::add_node(OpKind op, OpAttrs attrs, std::vector<ValueId> inputs,
                                     std::string name, int num_outputs) {
  Node n;
  n.op = op;
  n.attrs = std::move(attrs);
  n.inputs = std::move(inputs);
  n.name = name.empty() ? std::string(op_name(op)) : name;
  for (ValueId in : n.inputs)
    if (in != kNoValue && (in < 0 || static_cast<size_t>(in) >= values_.size()))
      throw Error("input id out of range", ErrorKind::kInternal).node(n.name).op(std::string(op_name(op)));
  NodeId id = static_cast<NodeId>(nodes_.size());
  for (int i = 0; i < num_outputs; ++i) {
    Value v;
    v.name = unique_name(num_outputs == 1 ? n.name : n.name + ":" + std::to_string(i));
    v.producer = id;
    values_.push_back(std::move(v));
    ValueId vid = static_cast<ValueId>(values_.size() - 1);
    by_name_[values_.back().name] = vid;
    n.outputs.push_back(vid);
  }
  nodes_.push_back(std::move(n));
  infer_node(id);
  return nodes_.back().outputs;
}

void Graph::add_output(ValueId v) { outputs_.push_back(v); }

void Graph::set_output_name(ValueId v, std::string name) {
  Value& val = value(v);
  if (val.name == name) return;
  auto it = by_name_.find(name);
  if (it != by_name_.end()) {
    // Give the holder of the name a fresh one.
    ValueId other = it->second;
    by_name_.erase(it);
    std::string fresh = unique_name(name + "_orig");
    values_[static_cast<size_t>(other)].name = fresh;
    by_name_[fresh] = other;
  }
  by_name_.erase(val.name);
  val.name = name;
  by_name_[name] = v;
}

std::optional<ValueId> Graph::find_value(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::vector<NodeId>> Graph::consumers() const {
  std::vector<std::vector<NodeId>> c(values_.size());
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].dead) continue;
    for (ValueId in : nodes_[i].inputs)
      if (in != kNoValue) {
        auto& list = c[static_cast<size_t>(in)];
        if (list.empty() || list.back() != static_cast<NodeId>(i)) list.push_back(static_cast<NodeId>(i));
      }
  }
  return c;
}

bool Graph::is_graph_output(ValueId v) const {
  return std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
}

void Graph::replace_all_uses(ValueId from, ValueId to) {
  for (Node& n : nodes_)
    for (ValueId& in : n.inputs)
      if (in == from) in = to;
  for (ValueId& out : outputs_)
    if (out == from) out = to;
}

void Graph::replace_value(ValueId from, ValueId to) {
  const bool was_output = is_graph_output(from);
  std::string name = value(from).name;
  replace_all_uses(from, to);
  if (was_output) set_output_name(to, std::move(name));
}

NodeId Graph::insert_node_unchecked(Node node) {
  NodeId id = static_cast<NodeId>(nodes_.size());
  for (ValueId out : node.outputs) value(out).producer = id;
  nodes_.push_back(std::move(node));
  return id;
}

void Graph::compact() {
  // Mark live values backwards from the outputs.
  std::vector<bool> live_value(values_.size(), false);
  std::vector<bool> live_node(nodes_.size(), false);
  for (ValueId o : outputs_) live_value[static_cast<size_t>(o)] = true;
  for (ValueId i : inputs_) live_value[static_cast<size_t>(i)] = true;
  for (size_t k = nodes_.size(); k-- > 0;) {
    const Node& n = nodes_[k];
    if (n.dead) continue;
    bool needed = false;
    for (ValueId o : n.outputs) needed = needed || live_value[static_cast<size_t>(o)];
    if (!needed) continue;
    live_node[k] = true;
    for (ValueId in : n.inputs)
      if (in != kNoValue) live_value[static_cast<size_t>(in)] = true;
  }
  // Outputs of a live node stay, even when unused, so multi-output nodes keep their arity.
  for (size_t k = 0; k < nodes_.size(); ++k)
    if (live_node[k])
      for (ValueId o : nodes_[k].outputs) live_value[static_cast<size_t>(o)] = true;

  // Topological order of live nodes (passes may have appended nodes that feed earlier ones).
  std::vector<NodeId> order;
  std::vector<int> state(nodes_.size(), 0);  // 0 new, 1 visiting, 2 done
  std::vector<std::pair<NodeId, size_t>> stack;
  for (size_t root = 0; root < nodes_.size(); ++root) {
    if (!live_node[root] || state[root]) continue;
    stack.push_back({static_cast<NodeId>(root), 0});
    state[root] = 1;
    while (!stack.empty()) {
      auto& [nid, next] = stack.back();
      const Node& n = nodes_[static_cast<size_t>(nid)];
      if (next < n.inputs.size()) {
        ValueId in = n.inputs[next++];
        if (in == kNoValue) continue;
        NodeId p = values_[static_cast<size_t>(in)].producer;
        if (p < 0) continue;
        if (state[static_cast<size_t>(p)] == 1)
          throw Error("graph has a cycle through node '" + nodes_[static_cast<size_t>(p)].name + "'",
                      ErrorKind::kInvalidInput);
        if (state[static_cast<size_t>(p)] == 0) {
          state[static_cast<size_t>(p)] = 1;
          stack.push_back({p, 0});
        }
      } else {
        state[static_cast<size_t>(nid)] = 2;
        order.push_back(nid);
        stack.pop_back();
      }
    }
  }

  std::vector<ValueId> vmap(values_.size(), kNoValue);
  std::vector<Value> new_values;
  for (size_t i = 0; i < values_.size(); ++i) {
    if (!live_value[i]) continue;
    vmap[i] = static_cast<ValueId>(new_values.size());
    new_values.push_back(std::move(values_[i]));
  }
  std::vector<Node> new_nodes;
  new_nodes.reserve(order.size());
  for (NodeId nid : order) {
    Node n = std::move(nodes_[static_cast<size_t>(nid)]);
    for (ValueId& in : n.inputs)
      if (in != kNoValue) in = vmap[static_cast<size_t>(in)];
    for (ValueId& o : n.outputs) o = vmap[static_cast<size_t>(o)];
    NodeId new_id = static_cast<NodeId>(new_nodes.size());
    for (ValueId o : n.outputs) new_values[static_cast<size_t>(o)].producer = new_id;
    new_nodes.push_back(std::move(n));
  }
  for (Value& v : new_values)
    if (v.producer >= 0 && v.is_constant()) v.producer = -1;
  for (ValueId& i : inputs_) i = vmap[static_cast<size_t>(i)];
  for (ValueId& o : outputs_) o = vmap[static_cast<size_t>(o)];
  values_ = std::move(new_values);
  nodes_ = std::move(new_nodes);
  // Values with no producer that are neither inputs nor constants can only be stale outputs.
  by_name_.clear();
  for (size_t i = 0; i < values_.size(); ++i) by_name_[values_[i].name] = static_cast<ValueId>(i);
}

void Graph::infer_node(NodeId id) {
  Node& n = nodes_[static_cast<size_t>(id)];
  std::vector<OutputInfo> outs = infer_node_outputs(*this, n);
  if (outs.size() != n.outputs.size())
    throw Error("shape function returned " + std::to_string(outs.size()) + " outputs, node has " +
                    std::to_string(n.outputs.size()),
                ErrorKind::kInternal)
        .node(n.name)
        .op(std::string(op_name(n.op)));
  for (size_t i = 0; i < outs.size(); ++i) {
    Value& v = value(n.outputs[i]);
    v.dtype = outs[i].dtype;
    v.shape = std::move(outs[i].shape);
  }
}

void Graph::infer_shapes(const std::map<std::string, int64_t>& bindings) {
  for (ValueId in : inputs_)
    for (Dim& d : value(in).shape)
      if (!d.is_static()) {
        auto it = bindings.find(d.symbol);
        if (it != bindings.end()) d = Dim::fixed(it->second);
      }
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (!nodes_[i].dead) infer_node(static_cast<NodeId>(i));
}

}  // namespace modex::ir
