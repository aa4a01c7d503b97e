// Helpers for the TFLite tests: bytes <-> buffers, the flatbuffer under test, op counts, and a
// structural comparison of IR graphs (constants bit-exact).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "io/tflite/tflite_ops.h"
#include "io/tflite/tflite_reader.h"
#include "io/tflite/tflite_schema.h"
#include "io/tflite/tflite_writer.h"
#include "ir/graph.h"

namespace modex::test {

inline std::shared_ptr<Buffer> to_buffer(const std::string& bytes) {
  auto b = Buffer::allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(b->data(), bytes.data(), bytes.size());
  return b;
}

// The model inside bytes written by the writer (which verifies what it writes).
inline const tflite_io::fb::Model* model_of(const std::string& bytes) {
  return tflite_io::fb::GetModel(bytes.data());
}

inline std::string builtin_name(const tflite_io::fb::Model* m, const tflite_io::fb::Operator* op) {
  return tflite_io::builtin_op_name(m->operator_codes()->Get(op->opcode_index())->builtin_code());
}

inline std::map<std::string, int> op_counts(const tflite_io::TfliteSummary& s) {
  std::map<std::string, int> counts;
  for (const auto& op : s.ops) ++counts[op.op];
  return counts;
}

inline tflite_io::TfliteWriteOptions fp16_options() {
  tflite_io::TfliteWriteOptions o;
  o.weights = tflite_io::WeightFormat::kFloat16;
  return o;
}

// Attributes with axes made non-negative, so that "-1" and "3" compare equal.
inline ir::OpAttrs normalized_attrs(const ir::Graph& g, const ir::Node& n) {
  ir::OpAttrs attrs = n.attrs;
  const int64_t rank = static_cast<int64_t>(g.value(n.inputs[0]).shape.size());
  auto fix = [rank](int64_t& axis) {
    if (axis < 0) axis += rank;
  };
  if (auto* a = std::get_if<ir::AxisAttrs>(&attrs)) fix(a->axis);
  if (auto* r = std::get_if<ir::ReduceAttrs>(&attrs)) {
    for (int64_t& ax : r->axes) fix(ax);
    std::sort(r->axes.begin(), r->axes.end());
  }
  return attrs;
}

inline bool same_constant(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Same live nodes in the same order with equal ops, attributes and output shapes; inputs agree
// (graph inputs and node outputs by position, constants by dtype, shape and bytes); same graph
// outputs with the same names. Value and node names are not compared.
inline ::testing::AssertionResult same_graph(const ir::Graph& a, const ir::Graph& b) {
  auto live = [](const ir::Graph& g) {
    std::vector<const ir::Node*> nodes;
    for (const ir::Node& n : g.nodes())
      if (!n.dead) nodes.push_back(&n);
    return nodes;
  };
  auto na = live(a), nb = live(b);
  if (na.size() != nb.size())
    return ::testing::AssertionFailure() << na.size() << " nodes vs " << nb.size() << "\n"
                                         << ir::dump(a) << "\nvs\n"
                                         << ir::dump(b);
  // Position of each non-constant value: "in<k>" or "<node>:<output>".
  auto positions = [](const ir::Graph& g, const std::vector<const ir::Node*>& nodes) {
    std::unordered_map<ir::ValueId, std::string> pos;
    for (size_t k = 0; k < g.inputs().size(); ++k) pos[g.inputs()[k]] = "in" + std::to_string(k);
    for (size_t k = 0; k < nodes.size(); ++k)
      for (size_t o = 0; o < nodes[k]->outputs.size(); ++o)
        pos[nodes[k]->outputs[o]] = std::to_string(k) + ":" + std::to_string(o);
    return pos;
  };
  auto pa = positions(a, na), pb = positions(b, nb);
  if (a.inputs().size() != b.inputs().size())
    return ::testing::AssertionFailure() << "input counts differ";
  for (size_t k = 0; k < a.inputs().size(); ++k) {
    const ir::Value& x = a.value(a.inputs()[k]);
    const ir::Value& y = b.value(b.inputs()[k]);
    if (x.name != y.name || ir::shape_to_string(x.shape) != ir::shape_to_string(y.shape) ||
        x.dtype != y.dtype)
      return ::testing::AssertionFailure()
             << "graph input " << k << ": " << x.name << ir::shape_to_string(x.shape) << " vs "
             << y.name << ir::shape_to_string(y.shape);
  }
  for (size_t k = 0; k < na.size(); ++k) {
    const ir::Node& x = *na[k];
    const ir::Node& y = *nb[k];
    auto where = [&]() {
      return "node " + std::to_string(k) + " (" + x.name + " / " + y.name + "): ";
    };
    if (x.op != y.op)
      return ::testing::AssertionFailure()
             << where() << ir::op_name(x.op) << " vs " << ir::op_name(y.op);
    if (!(normalized_attrs(a, x) == normalized_attrs(b, y)))
      return ::testing::AssertionFailure() << where() << "attributes differ\n"
                                           << ir::dump(a) << "\nvs\n"
                                           << ir::dump(b);
    if (x.inputs.size() != y.inputs.size())
      return ::testing::AssertionFailure() << where() << "input counts differ";
    for (size_t i = 0; i < x.inputs.size(); ++i) {
      ir::ValueId u = x.inputs[i], v = y.inputs[i];
      if ((u == ir::kNoValue) != (v == ir::kNoValue))
        return ::testing::AssertionFailure() << where() << "input " << i << " omitted in one";
      if (u == ir::kNoValue) continue;
      const ir::Value& vu = a.value(u);
      const ir::Value& vv = b.value(v);
      if (vu.is_constant() != vv.is_constant())
        return ::testing::AssertionFailure()
               << where() << "input " << i << " constant in one graph only";
      if (vu.is_constant() ? !same_constant(vu.constant, vv.constant) : pa[u] != pb[v])
        return ::testing::AssertionFailure()
               << where() << "input " << i << " differs (" << vu.name << " / " << vv.name << ")";
    }
    if (ir::shape_to_string(a.value(x.outputs[0]).shape) !=
        ir::shape_to_string(b.value(y.outputs[0]).shape))
      return ::testing::AssertionFailure()
             << where() << "output shapes " << ir::shape_to_string(a.value(x.outputs[0]).shape)
             << " vs " << ir::shape_to_string(b.value(y.outputs[0]).shape);
  }
  if (a.outputs().size() != b.outputs().size())
    return ::testing::AssertionFailure() << "output counts differ";
  for (size_t k = 0; k < a.outputs().size(); ++k) {
    if (pa[a.outputs()[k]] != pb[b.outputs()[k]])
      return ::testing::AssertionFailure() << "graph output " << k << " differs";
    if (a.value(a.outputs()[k]).name != b.value(b.outputs()[k]).name)
      return ::testing::AssertionFailure() << "graph output names " << a.value(a.outputs()[k]).name
                                           << " vs " << b.value(b.outputs()[k]).name;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace modex::test
