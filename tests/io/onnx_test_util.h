// Builds ONNX ModelProtos in C++ for the importer's tests and fuzz seeds: inputs with dim_value /
// dim_param / unknown dims, initializers, nodes with typed attributes.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "io/onnx/onnx_reader.h"

namespace modex::test {

using TP = onnx::TensorProto;

// Dims as text: "3" is a dim_value, "batch" a dim_param, "" an unknown dim.
using DimSpec = std::vector<std::string>;

template <typename T>
std::string raw_bytes(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

class OnnxModel {
 public:
  explicit OnnxModel(int opset = 13) {
    model.set_ir_version(opset <= 14 ? 7 : 8);
    model.set_producer_name("modex-test");
    auto* op = model.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    model.mutable_graph()->set_name("test");
  }

  onnx::GraphProto& graph() { return *model.mutable_graph(); }

  static void set_dims(onnx::TypeProto_Tensor* tt, const DimSpec& dims) {
    auto* shape = tt->mutable_shape();
    for (const std::string& d : dims) {
      auto* dim = shape->add_dim();
      if (d.empty()) continue;
      if (d.find_first_not_of("0123456789") == std::string::npos)
        dim->set_dim_value(std::stoll(d));
      else
        dim->set_dim_param(d);
    }
  }

  OnnxModel& input(const std::string& name, const DimSpec& dims, int elem_type = TP::FLOAT) {
    auto* vi = graph().add_input();
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem_type);
    set_dims(tt, dims);
    return *this;
  }
  // An input with no shape at all (rank unknown).
  OnnxModel& input_without_shape(const std::string& name) {
    auto* vi = graph().add_input();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(TP::FLOAT);
    return *this;
  }
  OnnxModel& output(const std::string& name, int elem_type = TP::FLOAT) {
    auto* vi = graph().add_output();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(elem_type);
    return *this;
  }
  OnnxModel& output(const std::string& name, const DimSpec& dims, int elem_type = TP::FLOAT) {
    output(name, elem_type);
    set_dims(
        graph().mutable_output(graph().output_size() - 1)->mutable_type()->mutable_tensor_type(),
        dims);
    return *this;
  }

  static TP tensor(const std::string& name, const std::vector<int64_t>& dims, int data_type,
                   const std::string& raw) {
    TP t;
    t.set_name(name);
    t.set_data_type(data_type);
    for (int64_t d : dims) t.add_dims(d);
    t.set_raw_data(raw);
    return t;
  }
  static TP floats(const std::string& name, const std::vector<int64_t>& dims,
                   const std::vector<float>& v) {
    return tensor(name, dims, TP::FLOAT, raw_bytes(v));
  }
  static TP int64s(const std::string& name, const std::vector<int64_t>& dims,
                   const std::vector<int64_t>& v) {
    return tensor(name, dims, TP::INT64, raw_bytes(v));
  }
  // A float tensor 0, 1, 2, ... scaled, so tests can check where values went.
  static std::vector<float> iota(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) * scale;
    return v;
  }

  OnnxModel& initializer(const TP& t) {
    *graph().add_initializer() = t;
    return *this;
  }
  OnnxModel& init_floats(const std::string& name, const std::vector<int64_t>& dims,
                         const std::vector<float>& v) {
    return initializer(floats(name, dims, v));
  }
  OnnxModel& init_int64s(const std::string& name, const std::vector<int64_t>& dims,
                         const std::vector<int64_t>& v) {
    return initializer(int64s(name, dims, v));
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "") {
    auto* n = graph().add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return *n;
  }

  std::string bytes() const {
    std::string s;
    model.SerializeToString(&s);
    return s;
  }

  ir::Graph import(const onnx_io::OnnxImportOptions& options = {}) const {
    std::string b = bytes();
    return onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(),
                                            "test.onnx", options);
  }

  onnx::ModelProto model;
};

inline onnx::AttributeProto& add_attr(onnx::NodeProto& n, const std::string& name,
                                      onnx::AttributeProto::AttributeType type) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(type);
  return *a;
}
inline void attr_int(onnx::NodeProto& n, const std::string& name, int64_t v) {
  add_attr(n, name, onnx::AttributeProto::INT).set_i(v);
}
inline void attr_float(onnx::NodeProto& n, const std::string& name, float v) {
  add_attr(n, name, onnx::AttributeProto::FLOAT).set_f(v);
}
inline void attr_string(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  add_attr(n, name, onnx::AttributeProto::STRING).set_s(v);
}
inline void attr_ints(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  auto& a = add_attr(n, name, onnx::AttributeProto::INTS);
  for (int64_t x : v) a.add_ints(x);
}
inline void attr_floats(onnx::NodeProto& n, const std::string& name, const std::vector<float>& v) {
  auto& a = add_attr(n, name, onnx::AttributeProto::FLOATS);
  for (float x : v) a.add_floats(x);
}
inline void attr_tensor(onnx::NodeProto& n, const std::string& name, const TP& t) {
  *add_attr(n, name, onnx::AttributeProto::TENSOR).mutable_t() = t;
}

}  // namespace modex::test
