// The import driver: parse, model-level checks, graph structure (producers, dangling edges,
// cycles), graph inputs/outputs and the per-node walk through the op table (reader_ops.cc).
#include "io/onnx/onnx_reader.h"

#include <fcntl.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "io/onnx/reader_node.h"
#include "io/onnx/reader_ops.h"
#include "io/onnx/reader_tensor.h"

namespace modex::onnx_io {
namespace {

namespace fs = std::filesystem;
using reader::ImportState;
using reader::NodeContext;

Error invalid(const std::string& message) { return Error(message, ErrorKind::kInvalidInput); }
Error unsupported(const std::string& message) { return Error(message, ErrorKind::kUnsupported); }

bool is_default_domain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

int default_opset(const onnx::ModelProto& model) {
  std::optional<int64_t> opset;
  for (const auto& entry : model.opset_import()) {
    if (!is_default_domain(entry.domain())) continue;
    if (opset && *opset != entry.version())
      throw invalid("the model imports the default ONNX domain twice, at different opsets");
    opset = entry.version();
  }
  if (!opset)
    throw invalid(
        "the model does not import the default ONNX domain (no opset_import entry for it)");
  if (*opset < kMinImportOpset || *opset > kMaxImportOpset)
    throw unsupported("opset " + std::to_string(*opset) +
                      " is not supported; modex imports opsets " + std::to_string(kMinImportOpset) +
                      "-" + std::to_string(kMaxImportOpset))
        .hint("convert the model first, e.g. onnx.version_converter.convert_version(model, 13)");
  return static_cast<int>(*opset);
}

// Names every node uniquely: its own name when it has one, else "<op_type>_<index>"; repeats get
// "_1", "_2", ... (never a name another node of the file carries).
std::vector<std::string> unique_node_names(const onnx::GraphProto& g) {
  std::unordered_set<std::string> carried;
  for (const auto& n : g.node())
    if (!n.name().empty()) carried.insert(n.name());
  std::unordered_set<std::string> used;
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(g.node_size()));
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    std::string name = n.name();
    if (name.empty() || used.count(name)) {
      std::string base = name.empty() ? n.op_type() + "_" + std::to_string(i) : name;
      name = base;
      for (int k = 1; used.count(name) || (name != n.name() && carried.count(name)); ++k)
        name = base + "_" + std::to_string(k);
    }
    used.insert(name);
    names.push_back(name);
  }
  return names;
}

struct GraphStructure {
  std::vector<int> order;  // node indices, topologically sorted (file order where possible)
  std::vector<bool> live;  // node contributes to a graph output
  std::unordered_set<std::string> consumed;
};

// Producers, dangling edges, duplicate definitions, cycles and liveness.
GraphStructure analyse(const onnx::GraphProto& g,
                       const std::unordered_set<std::string>& defined_outside,
                       const std::vector<std::string>& node_names) {
  const int n = g.node_size();
  std::unordered_map<std::string, int> producer;
  for (int i = 0; i < n; ++i) {
    for (const std::string& out : g.node(i).output()) {
      if (out.empty()) continue;
      if (defined_outside.count(out))
        throw invalid("value '" + out +
                      "' is both a graph input or initializer and an output of this node")
            .node(node_names[static_cast<size_t>(i)])
            .op(g.node(i).op_type());
      auto [it, inserted] = producer.emplace(out, i);
      if (!inserted)
        throw invalid("value '" + out + "' is produced twice, also by node '" +
                      node_names[static_cast<size_t>(it->second)] + "'")
            .node(node_names[static_cast<size_t>(i)])
            .op(g.node(i).op_type());
    }
  }
  std::vector<std::vector<int>> consumers(static_cast<size_t>(n));
  std::vector<int> pending(static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    for (const std::string& in : g.node(i).input()) {
      if (in.empty() || defined_outside.count(in)) continue;
      auto it = producer.find(in);
      if (it == producer.end())
        throw invalid("input '" + in +
                      "' is not produced by any node and is not a graph input or initializer")
            .node(node_names[static_cast<size_t>(i)])
            .op(g.node(i).op_type());
      consumers[static_cast<size_t>(it->second)].push_back(i);
      ++pending[static_cast<size_t>(i)];
    }
  }
  // Kahn's algorithm, taking the lowest-index ready node first so sorted files keep their order.
  GraphStructure s;
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
  for (int i = 0; i < n; ++i)
    if (pending[static_cast<size_t>(i)] == 0) ready.push(i);
  while (!ready.empty()) {
    int i = ready.top();
    ready.pop();
    s.order.push_back(i);
    for (int c : consumers[static_cast<size_t>(i)])
      if (--pending[static_cast<size_t>(c)] == 0) ready.push(c);
  }
  if (static_cast<int>(s.order.size()) != n) {
    for (int i = 0; i < n; ++i)
      if (pending[static_cast<size_t>(i)] > 0)
        throw invalid("the graph has a cycle through this node")
            .node(node_names[static_cast<size_t>(i)])
            .op(g.node(i).op_type());
  }

  if (g.output_size() == 0) throw invalid("the graph has no outputs");
  s.live.assign(static_cast<size_t>(n), false);
  std::vector<int> stack;
  for (const auto& out : g.output()) {
    if (out.name().empty()) throw invalid("a graph output has no name");
    s.consumed.insert(out.name());
    if (defined_outside.count(out.name())) continue;
    auto it = producer.find(out.name());
    if (it == producer.end())
      throw invalid("graph output '" + out.name() + "' is not produced by any node");
    stack.push_back(it->second);
  }
  while (!stack.empty()) {
    int i = stack.back();
    stack.pop_back();
    if (s.live[static_cast<size_t>(i)]) continue;
    s.live[static_cast<size_t>(i)] = true;
    for (const std::string& in : g.node(i).input()) {
      if (in.empty()) continue;
      s.consumed.insert(in);
      auto it = producer.find(in);
      if (it != producer.end()) stack.push_back(it->second);
    }
  }
  return s;
}

// The tensor type of a graph input or output, or an error naming it.
const onnx::TypeProto_Tensor& tensor_type(const onnx::ValueInfoProto& vi, const char* what) {
  if (!vi.has_type() || !vi.type().has_tensor_type())
    throw unsupported(std::string(what) + " '" + vi.name() +
                      "' is not a tensor (sequences, maps and optionals are not supported)");
  return vi.type().tensor_type();
}

DType value_dtype(const onnx::ValueInfoProto& vi, const char* what) {
  const auto& tt = tensor_type(vi, what);
  std::optional<DType> dt = reader::dtype_from_onnx(tt.elem_type());
  if (!dt)
    throw unsupported(std::string(what) + " '" + vi.name() + "' has element type " +
                      reader::onnx_dtype_name(tt.elem_type()) + ", which is not supported");
  return *dt;
}

// Gives every anonymous dynamic dim of the graph inputs a private symbol while importing, so
// shape inference carries "the same dim" through the graph (Reshape targets built from
// Shape(x) can then be matched); finish() turns them back into anonymous dims.
class AnonymousDims {
 public:
  AnonymousDims(const onnx::GraphProto& g, const OnnxImportOptions& options) {
    for (const auto& in : g.input())
      if (in.type().has_tensor_type())
        for (const auto& d : in.type().tensor_type().shape().dim())
          if (d.has_dim_param()) declared_.insert(d.dim_param());
    for (const auto& [name, shape] : options.input_shapes)
      for (const ir::Dim& d : shape) declared_.insert(d.symbol);
  }
  ir::Dim make() {
    for (;;) {
      std::string s(1, '?');  // (appended, not "?" + ...: g++ 12 warns falsely about that)
      s += std::to_string(next_++);
      if (declared_.count(s)) continue;
      made_.insert(s);
      return ir::Dim::named(s);
    }
  }
  void finish(ir::Graph& g) const {
    if (made_.empty()) return;
    for (size_t i = 0; i < g.values().size(); ++i)
      for (ir::Dim& d : g.value(static_cast<ir::ValueId>(i)).shape)
        if (!d.is_static() && made_.count(d.symbol)) d = ir::Dim::unknown();
  }

 private:
  std::unordered_set<std::string> declared_;
  std::unordered_set<std::string> made_;
  int next_ = 0;
};

// Static dims of a value must multiply to a sane element count (see reader::kMaxElements).
void check_size(const ir::Shape& shape, const std::string& what) {
  int64_t n = 1;
  for (const ir::Dim& d : shape) {
    if (!d.is_static()) continue;
    if (d.value < 0 || d.value > reader::kMaxDim)
      throw invalid(what + " has a dim outside [0, 2^31)");
    if (__builtin_mul_overflow(n, d.value, &n) || n > reader::kMaxElements)
      throw invalid(what + " has too many elements: shape " + ir::shape_to_string(shape));
  }
}

void add_graph_inputs(ImportState& st, const onnx::GraphProto& g, const OnnxImportOptions& options,
                      AnonymousDims& anon) {
  std::unordered_set<std::string> seen;
  for (const auto& in : g.input()) {
    if (in.name().empty()) throw invalid("a graph input has no name");
    if (!seen.insert(in.name()).second)
      throw invalid("graph input '" + in.name() + "' is declared twice");
    auto override_it = options.input_shapes.find(in.name());
    // Old exporters list initializers as inputs too; they are weights, not model inputs.
    if (st.initializers.count(in.name())) {
      if (override_it != options.input_shapes.end())
        throw invalid("input shape given for '" + in.name() +
                      "', which is an initializer, not a model input");
      continue;
    }
    DType dtype = value_dtype(in, "graph input");
    const auto& tt = tensor_type(in, "graph input");
    std::optional<ir::Shape> declared;
    if (tt.has_shape()) {
      ir::Shape s;
      for (const auto& d : tt.shape().dim()) {
        if (d.has_dim_value()) {
          if (d.dim_value() < 0)
            throw invalid("graph input '" + in.name() + "' has a negative dim");
          if (d.dim_value() > reader::kMaxDim)
            throw invalid("graph input '" + in.name() + "' has a dim above 2^31 - 1");
          s.push_back(ir::Dim::fixed(d.dim_value()));
        } else if (d.has_dim_param() && !d.dim_param().empty()) {
          s.push_back(ir::Dim::named(d.dim_param()));
        } else {
          s.push_back(anon.make());
        }
      }
      declared = std::move(s);
    }
    ir::Shape shape;
    if (override_it != options.input_shapes.end()) {
      if (declared && declared->size() != override_it->second.size())
        throw invalid("input shape given for '" + in.name() + "' has rank " +
                      std::to_string(override_it->second.size()) + " but the model declares " +
                      ir::shape_to_string(*declared));
      shape = override_it->second;
    } else if (declared) {
      shape = std::move(*declared);
    } else {
      throw unsupported("graph input '" + in.name() + "' has no shape (its rank is unknown)")
          .hint("give its shape with the importer's input_shapes option");
    }
    check_size(shape, "graph input '" + in.name() + "'");
    st.values[in.name()].id = st.graph.add_input(in.name(), dtype, std::move(shape));
  }
  for (const auto& [name, shape] : options.input_shapes)
    if (!seen.count(name))
      throw invalid("input shape given for '" + name + "', which is not a graph input");
}

void import_node(ImportState& st, const onnx::NodeProto& node, const std::string& name) {
  NodeContext c(st, node, name);
  if (!is_default_domain(node.domain()))
    c.fail("ops of domain '" + node.domain() +
           "' are not supported; modex imports the default ONNX domain only");
  std::vector<const reader::OpRule*> forms = reader::rules_for(node.op_type());
  if (forms.empty()) c.fail("op " + node.op_type() + " is not supported");
  const reader::OpRule* rule = nullptr;
  for (const reader::OpRule* r : forms)
    if (r->since <= st.opset && st.opset <= r->until) rule = r;
  if (!rule)
    c.fail(node.op_type() + " is defined from opset " + std::to_string(forms.front()->since) +
           " on");
  std::unordered_set<std::string> seen;
  for (const auto& a : node.attribute()) {
    if (!seen.insert(a.name()).second) c.invalid("attribute '" + a.name() + "' is given twice");
    if (!a.ref_attr_name().empty())
      c.fail("attribute references (function bodies) are not supported");
    if (std::find(rule->attributes.begin(), rule->attributes.end(), a.name()) ==
        rule->attributes.end())
      c.fail("attribute '" + a.name() + "' is not supported");
  }
  try {
    rule->build(c);
    for (const std::string& out : node.output()) {
      auto it = st.values.find(out);
      if (!out.empty() && it != st.values.end() && it->second.id != ir::kNoValue)
        check_size(st.graph.value(it->second.id).shape, "output '" + out + "'");
    }
  } catch (Error& e) {
    // Errors from the evaluator and the tensor reader carry no node yet: give them this one.
    if (!e.location().node.empty()) throw;
    Error located = c.error(e.message(), e.kind());
    if (!e.location().tensor.empty()) located.tensor(e.location().tensor);
    if (!e.hint_text().empty()) located.hint(e.hint_text());
    throw located;
  }
}

void add_graph_outputs(ImportState& st, const onnx::GraphProto& g, bool shapes_overridden) {
  for (const auto& out : g.output()) {
    reader::Imported& im = st.lookup(out.name());
    if (im.id == ir::kNoValue) {
      if (!im.sym->is_static())
        throw unsupported("graph output '" + out.name() +
                          "' is a shape computation that depends on " + im.sym->describe_dynamic() +
                          "; modex cannot output run-time shapes");
      im.id = st.add_named_constant(out.name(), reader::sym_to_tensor(*im.sym));
    }
    const ir::Value& v = st.graph.value(im.id);
    // Where the file declares the output's type, the imported graph must agree with it.
    if (out.has_type() && out.type().has_tensor_type()) {
      const auto& tt = out.type().tensor_type();
      if (tt.elem_type() != 0) {
        DType declared = value_dtype(out, "graph output");
        if (declared != v.dtype)
          throw invalid("graph output '" + out.name() + "' is declared " +
                        std::string(dtype_name(declared)) + " but computes " +
                        std::string(dtype_name(v.dtype)));
      }
      if (tt.has_shape()) {
        const auto& dims = tt.shape().dim();
        if (static_cast<size_t>(dims.size()) != v.shape.size())
          throw invalid("graph output '" + out.name() + "' is declared with rank " +
                        std::to_string(dims.size()) + " but computes shape " +
                        ir::shape_to_string(v.shape));
        for (int i = 0; i < dims.size() && !shapes_overridden; ++i)
          if (dims[i].has_dim_value() && v.shape[static_cast<size_t>(i)].is_static() &&
              dims[i].dim_value() != v.shape[static_cast<size_t>(i)].value)
            throw invalid("graph output '" + out.name() + "' is declared with dim " +
                          std::to_string(i) + " = " + std::to_string(dims[i].dim_value()) +
                          " but computes shape " + ir::shape_to_string(v.shape));
      }
    }
    st.graph.add_output(im.id);
  }
}

ir::Graph import_model(onnx::ModelProto& model, const OnnxImportOptions& options,
                       const fs::path& external_dir) {
  if (!model.has_ir_version() || model.ir_version() < 3)
    throw invalid(
        "not an ONNX model (no IR version >= 3; the data may be another file type, or truncated)");
  if (!model.has_graph()) throw invalid("the model has no graph");
  ImportState st;
  st.opset = default_opset(model);
  st.external_data_dir = external_dir;
  onnx::GraphProto& g = *model.mutable_graph();
  if (g.sparse_initializer_size() > 0) throw unsupported("sparse initializers are not supported");

  std::unordered_set<std::string> defined_outside;
  for (auto& t : *g.mutable_initializer()) {
    if (t.name().empty()) throw invalid("an initializer has no name");
    if (!st.initializers.emplace(t.name(), &t).second)
      throw invalid("initializer '" + t.name() + "' is defined twice");
    defined_outside.insert(t.name());
  }
  AnonymousDims anon(g, options);
  add_graph_inputs(st, g, options, anon);
  for (const auto& in : g.input()) defined_outside.insert(in.name());

  std::vector<std::string> names = unique_node_names(g);
  GraphStructure s = analyse(g, defined_outside, names);
  st.consumed = std::move(s.consumed);
  for (int i : s.order)
    if (s.live[static_cast<size_t>(i)]) import_node(st, g.node(i), names[static_cast<size_t>(i)]);
  add_graph_outputs(st, g, !options.input_shapes.empty());

  anon.finish(st.graph);
  for (const auto& p : model.metadata_props()) st.graph.metadata[p.key()] = p.value();
  st.graph.metadata["source_format"] = "onnx";
  st.graph.metadata["source_opset"] = std::to_string(st.opset);
  std::string producer = model.producer_name();
  if (!model.producer_version().empty())
    producer += (producer.empty() ? "" : " ") + model.producer_version();
  st.graph.metadata["source_producer"] = producer;
  st.graph.compact();
  ir::verify(st.graph);
  return std::move(st.graph);
}

constexpr size_t kMaxProtobufBytes = static_cast<size_t>(INT_MAX);

Error too_large(size_t size) {
  return unsupported("the file is " + std::to_string(size) +
                     " bytes; an ONNX protobuf cannot exceed 2 GB")
      .hint("models this large keep their weights in external data files");
}

Error corrupt() { return invalid("not a valid ONNX model: the protobuf is truncated or corrupt"); }

}  // namespace

ir::Graph import_onnx_from_memory(const uint8_t* data, size_t size, const std::string& name,
                                  const OnnxImportOptions& options) {
  try {
    if (size > kMaxProtobufBytes) throw too_large(size);
    onnx::ModelProto model;
    if (!model.ParseFromArray(data, static_cast<int>(size))) throw corrupt();
    return import_model(model, options, options.external_data_dir);
  } catch (Error& e) {
    e.file(name);
    throw;
  }
}

ir::Graph import_onnx(const fs::path& path, const OnnxImportOptions& options) {
  try {
    std::error_code ec;
    uintmax_t size = fs::file_size(path, ec);
    if (ec) throw Error("cannot read " + path.string() + ": " + ec.message(), ErrorKind::kIo);
    if (size > kMaxProtobufBytes) throw too_large(static_cast<size_t>(size));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("cannot open " + path.string(), ErrorKind::kIo);
    onnx::ModelProto model;
    bool ok = model.ParseFromFileDescriptor(fd);
    ::close(fd);
    if (!ok) throw corrupt();
    fs::path dir =
        options.external_data_dir.empty() ? path.parent_path() : options.external_data_dir;
    if (dir.empty()) dir = ".";
    return import_model(model, options, dir);
  } catch (Error& e) {
    e.file(path.string());
    throw;
  }
}

}  // namespace modex::onnx_io
