// Every architecture against torchvision's own state dict layout and structure (make_key_specs.py):
// detection, strict key consumption, op counts, per-module conv attributes and BatchNorm eps, the
// wiring between parametric modules, and shapes at concrete input sizes.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "ir/graph.h"
#include "key_specs.h"
#include "models/zoo.h"

namespace modex::models {
namespace {

using test_support::KeySpec;
using test_support::load_key_spec;
using test_support::zero_state_dict;

bool is_parametric(ir::OpKind op) {
  return op == ir::OpKind::kConv || op == ir::OpKind::kBatchNorm || op == ir::OpKind::kGemm;
}

// Nearest Conv/BatchNorm/Gemm nodes (or "image") feeding node `id`, skipping constants: the same
// relation make_key_specs.py computes on torch.fx's graph.
const std::set<std::string>& sources_of(const ir::Graph& g, ir::NodeId id,
                                        std::map<ir::NodeId, std::set<std::string>>& memo) {
  if (auto it = memo.find(id); it != memo.end()) return it->second;
  std::set<std::string> found;
  for (ir::ValueId in : g.node(id).inputs) {
    if (in == ir::kNoValue || g.value(in).is_constant()) continue;
    ir::NodeId p = g.value(in).producer;
    if (p < 0) {
      found.insert(g.value(in).name);
    } else if (is_parametric(g.node(p).op)) {
      found.insert(g.node(p).name);
    } else {
      const auto& upstream = sources_of(g, p, memo);
      found.insert(upstream.begin(), upstream.end());
    }
  }
  return memo[id] = std::move(found);
}

// make_key_specs.py's dag_hash: FNV-1a 64 of "op|name|input hashes" (name only for parametric
// nodes, inputs sorted for Add/Mul, constants left out).
std::string fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return fmt::format("{:016x}", h);
}

std::string dag_hash(const std::string& op, const std::string& name,
                     std::vector<std::string> inputs) {
  if (op == "Add" || op == "Mul") std::sort(inputs.begin(), inputs.end());
  std::string joined;
  for (const std::string& h : inputs) joined += (joined.empty() ? "" : ",") + h;
  return fnv1a64(op + "|" + name + "|" + joined);
}

// The hash of every value, in node order (which is topological).
std::vector<std::string> dag_hashes(const ir::Graph& g) {
  std::vector<std::string> value_hash(g.values().size());
  for (ir::ValueId in : g.inputs())
    value_hash[static_cast<size_t>(in)] = dag_hash("Input", g.value(in).name, {});
  for (const ir::Node& n : g.nodes()) {
    std::vector<std::string> inputs;
    for (ir::ValueId in : n.inputs)
      if (in != ir::kNoValue && !g.value(in).is_constant())
        inputs.push_back(value_hash[static_cast<size_t>(in)]);
    value_hash[static_cast<size_t>(n.outputs[0])] = dag_hash(
        std::string(ir::op_name(n.op)), is_parametric(n.op) ? n.name : "", std::move(inputs));
  }
  return value_hash;
}

ir::Shape output_shape_at(const ir::Graph& graph, int64_t batch, int64_t height, int64_t width) {
  ir::Graph copy = graph;
  copy.infer_shapes({{"batch", batch}, {"height", height}, {"width", width}});
  return copy.value(copy.outputs().at(0)).shape;
}

struct ArchCase {
  std::string arch;
  int64_t num_classes;
};

void PrintTo(const ArchCase& c, std::ostream* os) {
  *os << c.arch << " with " << c.num_classes << " classes";
}

class ArchitectureTest : public ::testing::TestWithParam<ArchCase> {};

TEST_P(ArchitectureTest, MatchesTorchvision) {
  const auto& [arch, num_classes] = GetParam();
  KeySpec spec = load_key_spec(arch, num_classes);
  StateDict weights = zero_state_dict(spec.keys);

  Detection d = detect_architecture(weights);
  EXPECT_EQ(d.architecture, arch);
  EXPECT_EQ(d.num_classes, num_classes);
  EXPECT_FALSE(d.wrapper);

  BuiltModel m = build_model(weights);
  EXPECT_EQ(m.architecture, arch);
  EXPECT_EQ(m.num_classes, num_classes);
  EXPECT_EQ(m.default_input_size, spec.data["default_input_size"].get<int64_t>());
  EXPECT_EQ(default_input_size(arch), m.default_input_size);
  EXPECT_FALSE(m.wrapper);
  const ir::Graph& g = m.graph;
  ASSERT_NO_THROW(ir::verify(g));

  // Interface: image [batch, 3, height, width] -> logits [batch, num_classes].
  ASSERT_EQ(g.inputs().size(), 1u);
  const ir::Value& image = g.value(g.inputs()[0]);
  EXPECT_EQ(image.name, "image");
  EXPECT_EQ(image.dtype, DType::kFloat32);
  EXPECT_EQ(image.shape, (ir::Shape{ir::Dim::named("batch"), ir::Dim::fixed(3),
                                    ir::Dim::named("height"), ir::Dim::named("width")}));
  ASSERT_EQ(g.outputs().size(), 1u);
  const ir::Value& logits = g.value(g.outputs()[0]);
  EXPECT_EQ(logits.name, "logits");
  EXPECT_EQ(logits.dtype, DType::kFloat32);
  EXPECT_EQ(logits.shape, (ir::Shape{ir::Dim::named("batch"), ir::Dim::fixed(num_classes)}));

  // Strict: every parameter is a constant under its key, sharing the state dict's float32 buffer;
  // only num_batches_tracked is left out.
  std::map<std::string, const ir::Value*> constants;
  for (const ir::Value& v : g.values())
    if (v.is_constant()) constants[v.name] = &v;
  size_t parameters = 0;
  for (const auto& [key, tensor] : weights.entries()) {
    if (key.ends_with(".num_batches_tracked")) {
      EXPECT_FALSE(constants.count(key)) << key;
      continue;
    }
    ++parameters;
    auto it = constants.find(key);
    ASSERT_NE(it, constants.end()) << "not consumed: " << key;
    EXPECT_EQ(it->second->constant.shape(), tensor.shape()) << key;
    EXPECT_EQ(it->second->constant.raw(), tensor.raw()) << key << " was copied";
  }
  EXPECT_EQ(constants.size(), parameters);

  // Op counts equal torch.fx's (each activation call, add and mul included).
  std::map<std::string, int> counts;
  for (const ir::Node& n : g.nodes()) ++counts[std::string(ir::op_name(n.op))];
  std::map<std::string, int> expected = spec.data["op_counts"].get<std::map<std::string, int>>();
  EXPECT_EQ(counts, expected);

  // Per-module attributes and wiring.
  const auto& convs = spec.data["convs"];
  const auto& eps = spec.data["batch_norm_eps"];
  const auto& sources = spec.data["sources"];
  std::map<ir::NodeId, std::set<std::string>> memo;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const ir::Node& n = g.nodes()[i];
    if (n.op == ir::OpKind::kConv) {
      ASSERT_TRUE(convs.contains(n.name)) << n.name;
      const auto& c = convs[n.name];
      const auto& a = n.attr<ir::ConvAttrs>();
      auto pad = c["padding"].get<std::vector<int64_t>>();
      EXPECT_EQ(a.kernel, c["kernel"].get<std::vector<int64_t>>()) << n.name;
      EXPECT_EQ(a.strides, c["stride"].get<std::vector<int64_t>>()) << n.name;
      EXPECT_EQ(a.pads, (std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]})) << n.name;
      EXPECT_EQ(a.dilations, c["dilation"].get<std::vector<int64_t>>()) << n.name;
      EXPECT_EQ(a.groups, c["groups"].get<int64_t>()) << n.name;
      EXPECT_EQ(n.inputs.size() == 3, c["bias"].get<bool>()) << n.name;
    }
    if (n.op == ir::OpKind::kBatchNorm) {
      ASSERT_TRUE(eps.contains(n.name)) << n.name;
      EXPECT_FLOAT_EQ(n.attr<ir::BatchNormAttrs>().epsilon, eps[n.name].get<float>()) << n.name;
    }
    if (n.op == ir::OpKind::kHardSigmoid) {
      EXPECT_FLOAT_EQ(n.attr<ir::HardSigmoidAttrs>().alpha, 1.0f / 6.0f);
      EXPECT_FLOAT_EQ(n.attr<ir::HardSigmoidAttrs>().beta, 0.5f);
    }
    if (n.op == ir::OpKind::kClip) {
      EXPECT_EQ(n.attr<ir::ClipAttrs>().min, 0.0f);
      EXPECT_EQ(n.attr<ir::ClipAttrs>().max, 6.0f);
    }
    if (is_parametric(n.op)) {
      ASSERT_TRUE(sources.contains(n.name)) << n.name;
      auto want = sources[n.name].get<std::set<std::string>>();
      EXPECT_EQ(sources_of(g, static_cast<ir::NodeId>(i), memo), want) << "inputs of " << n.name;
    }
  }

  // The same computation as torchvision's, op for op: every parametric module's upstream DAG
  // hashes equal (the first differing module names where the structure diverges) and so does the
  // logits'.
  const auto& dag = spec.data["dag_hashes"];
  std::vector<std::string> hashes = dag_hashes(g);
  for (const ir::Node& n : g.nodes())
    if (is_parametric(n.op)) {
      ASSERT_EQ(hashes[static_cast<size_t>(n.outputs[0])], dag[n.name].get<std::string>())
          << "the computation up to " << n.name << " differs from torchvision's";
    }
  EXPECT_EQ(hashes[static_cast<size_t>(g.outputs()[0])], dag["logits"].get<std::string>());

  // Any input size, like torchvision's (adaptive pooling): concrete shapes at 224 and 160x192.
  EXPECT_EQ(output_shape_at(g, 1, 224, 224),
            (ir::Shape{ir::Dim::fixed(1), ir::Dim::fixed(num_classes)}));
  EXPECT_EQ(output_shape_at(g, 3, 160, 192),
            (ir::Shape{ir::Dim::fixed(3), ir::Dim::fixed(num_classes)}));
  int64_t native = m.default_input_size;
  EXPECT_EQ(output_shape_at(g, 2, native, native),
            (ir::Shape{ir::Dim::fixed(2), ir::Dim::fixed(num_classes)}));

  // --arch and --num-classes that agree change nothing.
  BuiltModel again = build_model(weights, {.arch = arch, .num_classes = num_classes});
  EXPECT_EQ(again.architecture, arch);
  EXPECT_EQ(again.graph.nodes().size(), g.nodes().size());
}

std::vector<ArchCase> all_cases() {
  std::vector<ArchCase> cases;
  for (const std::string& arch : architecture_names())
    for (int64_t num_classes : {1000, 7}) cases.push_back({arch, num_classes});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Zoo, ArchitectureTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<ArchCase>& info) {
                           return info.param.arch + "_" + std::to_string(info.param.num_classes);
                         });

// Counts quoted from the literature, as an anchor independent of the generated specs.
TEST(ArchitectureCounts, KnownNumbers) {
  auto count = [](const std::string& arch, ir::OpKind op) {
    BuiltModel m = build_model(zero_state_dict(load_key_spec(arch, 1000).keys));
    int n = 0;
    for (const ir::Node& node : m.graph.nodes()) n += node.op == op;
    return n;
  };
  EXPECT_EQ(count("resnet50", ir::OpKind::kConv), 53);
  EXPECT_EQ(count("resnet50", ir::OpKind::kBatchNorm), 53);
  EXPECT_EQ(count("resnet18", ir::OpKind::kConv), 20);
  EXPECT_EQ(count("resnet18", ir::OpKind::kAdd), 8);
  EXPECT_EQ(count("efficientnet_b0", ir::OpKind::kMul), 16);  // one SE per MBConv block
  EXPECT_EQ(count("mobilenet_v2", ir::OpKind::kConv), 52);
  EXPECT_EQ(count("mobilenet_v3_large", ir::OpKind::kHardSigmoid), 8);
}

TEST(ArchitectureNames, CoverTheGeneratedSpecs) {
  std::vector<std::string> names = architecture_names();
  std::set<std::string> unique(names.begin(), names.end());
  EXPECT_EQ(unique.size(), names.size());
  for (const char* required :
       {"resnet18",         "resnet34",        "resnet50",           "resnet101",
        "resnet152",        "resnext50_32x4d", "resnext101_32x8d",   "wide_resnet50_2",
        "wide_resnet101_2", "efficientnet_b0", "efficientnet_b1",    "efficientnet_b2",
        "efficientnet_b3",  "efficientnet_b4", "efficientnet_b5",    "efficientnet_b6",
        "efficientnet_b7",  "mobilenet_v2",    "mobilenet_v3_small", "mobilenet_v3_large"})
    EXPECT_TRUE(unique.count(required)) << required;
  EXPECT_EQ(default_input_size("efficientnet_b7"), 600);
  EXPECT_EQ(default_input_size("EfficientNet-B3"), 300);
  EXPECT_THROW(default_input_size("vgg16"), Error);
}

}  // namespace
}  // namespace modex::models
