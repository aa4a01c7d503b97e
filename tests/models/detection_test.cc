// Detection rules: strict matching and its report, --arch / --num-classes, wrappers ("backbone +
// head", whole model under a prefix), dtype conversion and buffer sharing, and detection cost.
#include <gtest/gtest.h>

#include <chrono>

#include "ir/graph.h"
#include "key_specs.h"
#include "models/zoo.h"

namespace modex::models {
namespace {

using test_support::KeyShape;
using test_support::load_key_spec;
using test_support::with_prefix;
using test_support::without_module;
using test_support::zero_state_dict;

// The key specs exist for 1000 and 7 classes; 7 unless a test says otherwise.
std::vector<KeyShape> keys_of(const std::string& arch) { return load_key_spec(arch, 7).keys; }

// Tests that want another class count rewrite the classifier rows.
std::vector<KeyShape> resnet18_keys(int64_t num_classes = 7) {
  std::vector<KeyShape> keys = load_key_spec("resnet18", 7).keys;
  for (KeyShape& k : keys)
    if (k.name.starts_with("fc.")) k.shape[0] = num_classes;
  return keys;
}

Error build_error(const StateDict& w, const BuildOptions& options = {}) {
  try {
    build_model(w, options);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "build_model succeeded";
  return Error("no error");
}

void expect_output(const BuiltModel& m, int64_t num_classes) {
  ASSERT_NO_THROW(ir::verify(m.graph));
  const ir::Value& out = m.graph.value(m.graph.outputs().at(0));
  EXPECT_EQ(out.name, "logits");
  EXPECT_EQ(out.shape, (ir::Shape{ir::Dim::named("batch"), ir::Dim::fixed(num_classes)}));
  ir::Graph copy = m.graph;
  copy.infer_shapes({{"batch", 2}, {"height", 224}, {"width", 200}});
  EXPECT_EQ(copy.value(copy.outputs()[0]).shape,
            (ir::Shape{ir::Dim::fixed(2), ir::Dim::fixed(num_classes)}));
}

int count_ops(const ir::Graph& g, ir::OpKind op) {
  int n = 0;
  for (const ir::Node& node : g.nodes()) n += node.op == op;
  return n;
}

// --- strict matching and the report ---

TEST(Detection, MissingKeyIsReported) {
  auto keys = resnet18_keys();
  std::erase_if(keys, [](const KeyShape& k) { return k.name == "layer2.0.bn1.running_var"; });
  Error e = build_error(zero_state_dict(keys));
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  std::string msg = e.what();
  EXPECT_NE(msg.find("closest is resnet18 (1 problem)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing keys: 1\n    layer2.0.bn1.running_var"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys: 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--arch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mobilenet_v3_large"), std::string::npos)
      << "hint lists the architectures: " << msg;
}

TEST(Detection, UnexpectedKeyIsReported) {
  auto keys = resnet18_keys();
  keys.push_back({"extra.weight", {4, 4}});
  Error e = build_error(zero_state_dict(keys));
  std::string msg = e.what();
  EXPECT_NE(msg.find("closest is resnet18 (1 problem)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys: 1\n    extra.weight"), std::string::npos) << msg;
}

TEST(Detection, ShapeMismatchNamesKeyAndBothShapes) {
  auto keys = resnet18_keys();
  for (KeyShape& k : keys)
    if (k.name == "layer3.1.conv2.weight") k.shape = {256, 256, 1, 1};
  Error e = build_error(zero_state_dict(keys));
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  std::string msg = e.what();
  EXPECT_NE(msg.find("closest is resnet18"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape mismatches: 1\n    layer3.1.conv2.weight: checkpoint [256,256,1,1] vs "
                     "expected [256,256,3,3]"),
            std::string::npos)
      << msg;
}

TEST(Detection, ManyProblemsAreListedUpToALimit) {
  auto keys = load_key_spec("resnet50", 7).keys;
  std::erase_if(keys, [](const KeyShape& k) { return k.name.starts_with("layer4."); });
  std::string msg = build_error(zero_state_dict(keys)).what();
  EXPECT_NE(msg.find("closest is resnet50"), std::string::npos) << msg;
  EXPECT_NE(msg.find("... and "), std::string::npos) << msg;
}

TEST(Detection, UnknownCustomCnnNamesTheClosestArchitecture) {
  std::vector<KeyShape> keys = {
      {"conv1.weight", {16, 3, 3, 3}},
      {"conv1.bias", {16}},
      {"bn1.weight", {16}},
      {"bn1.bias", {16}},
      {"bn1.running_mean", {16}},
      {"bn1.running_var", {16}},
      {"bn1.num_batches_tracked", {}, DType::kInt64},
      {"conv2.weight", {32, 16, 3, 3}},
      {"conv2.bias", {32}},
      {"fc.weight", {10, 32}},
      {"fc.bias", {10}},
  };
  Error e = build_error(zero_state_dict(keys));
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  std::string msg = e.what();
  EXPECT_NE(msg.find("matches no supported architecture; closest is resnet18"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("conv1.weight: checkpoint [16,3,3,3] vs expected [64,3,7,7]"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("unexpected keys: 3"), std::string::npos) << msg;  // conv1.bias, conv2.*
}

TEST(Detection, EmptyStateDictIsRejected) {
  Error e = build_error(StateDict{});
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  EXPECT_NE(std::string(e.what()).find("closest is"), std::string::npos);
}

TEST(Detection, NumBatchesTrackedIsOptional) {
  auto keys = resnet18_keys();
  std::erase_if(keys, [](const KeyShape& k) { return k.name.ends_with("num_batches_tracked"); });
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "resnet18");
}

TEST(Detection, NonFloatParameterIsRejected) {
  auto keys = resnet18_keys();
  for (KeyShape& k : keys)
    if (k.name == "bn1.weight") k.dtype = DType::kInt64;
  std::string msg = build_error(zero_state_dict(keys)).what();
  EXPECT_NE(msg.find("non-float parameters: 1\n    bn1.weight (int64)"), std::string::npos) << msg;
}

// --- --arch and --num-classes ---

TEST(Detection, ArchOptionMismatchingTheDict) {
  Error e = build_error(zero_state_dict(resnet18_keys()), {.arch = "resnet34"});
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  std::string msg = e.what();
  EXPECT_NE(msg.find("does not match --arch resnet34"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing keys: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer1.2.conv1.weight"), std::string::npos)
      << msg;  // resnet34 has 3 blocks in layer1
  EXPECT_NE(msg.find("the state dict is resnet18; omit --arch"), std::string::npos) << msg;
}

TEST(Detection, ArchOptionAcrossFamilies) {
  Error e = build_error(zero_state_dict(resnet18_keys()), {.arch = "mobilenet_v2"});
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(std::string(e.what()).find("does not match --arch mobilenet_v2"), std::string::npos)
      << e.what();
}

TEST(Detection, UnknownArchName) {
  Error e = build_error(zero_state_dict(resnet18_keys()), {.arch = "vgg16"});
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  std::string msg = e.what();
  EXPECT_NE(msg.find("unknown architecture 'vgg16'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resnet18"), std::string::npos) << msg;
}

TEST(Detection, ArchNamesAreNormalized) {
  StateDict w = zero_state_dict(resnet18_keys());
  EXPECT_EQ(build_model(w, {.arch = "ResNet18"}).architecture, "resnet18");
  StateDict e = zero_state_dict(keys_of("efficientnet_b0"));
  EXPECT_EQ(build_model(e, {.arch = "EfficientNet-B0"}).architecture, "efficientnet_b0");
}

TEST(Detection, NumClassesDisagreeing) {
  Error e = build_error(zero_state_dict(resnet18_keys(7)), {.num_classes = 5});
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  std::string msg = e.what();
  EXPECT_NE(msg.find("--num-classes 5 disagrees"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fc.weight: checkpoint [7,512] vs expected [5,512]"), std::string::npos)
      << msg;
}

TEST(Detection, NumClassesDisagreeingWithArch) {
  Error e = build_error(zero_state_dict(keys_of("mobilenet_v3_small")),
                        {.arch = "mobilenet_v3_small", .num_classes = 3});
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(
      std::string(e.what()).find("classifier.3.weight: checkpoint [7,1024] vs expected [3,1024]"),
      std::string::npos)
      << e.what();
}

TEST(Detection, NumClassesMustBePositive) {
  EXPECT_EQ(build_error(zero_state_dict(resnet18_keys()), {.num_classes = 0}).kind(),
            ErrorKind::kInvalidInput);
}

TEST(Detection, NumClassesFromTheClassifier) {
  BuiltModel m = build_model(zero_state_dict(resnet18_keys(3)), {.num_classes = 3});
  EXPECT_EQ(m.num_classes, 3);
  expect_output(m, 3);
}

// --- wrappers ---

TEST(Wrapper, BackboneWithoutClassifierPlusHead) {
  auto keys = with_prefix(without_module(resnet18_keys(), "fc"), "backbone.");
  keys.push_back({"head.weight", {5, 512}});
  keys.push_back({"head.bias", {5}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "resnet18");
  EXPECT_EQ(m.num_classes, 5);
  ASSERT_TRUE(m.wrapper);
  EXPECT_EQ(m.wrapper->backbone_prefix, "backbone.");
  EXPECT_EQ(m.wrapper->head, "head");
  expect_output(m, 5);
  EXPECT_EQ(count_ops(m.graph, ir::OpKind::kGemm), 1);
  EXPECT_TRUE(m.graph.find_value("backbone.layer1.0.conv1"));  // node names echo the module paths
  EXPECT_TRUE(m.graph.find_value("backbone.layer4.1.conv2.weight"));
  EXPECT_TRUE(m.graph.find_value("head.weight"));
}

TEST(Wrapper, BackboneKeepingItsClassifierPlusHead) {
  auto keys = with_prefix(load_key_spec("resnet18", 1000).keys, "model.backbone.");
  keys.push_back({"fc.weight", {4, 1000}});
  keys.push_back({"fc.bias", {4}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.num_classes, 4);
  ASSERT_TRUE(m.wrapper);
  EXPECT_EQ(m.wrapper->backbone_prefix, "model.backbone.");
  EXPECT_EQ(m.wrapper->head, "fc");
  EXPECT_EQ(count_ops(m.graph, ir::OpKind::kGemm), 2);
  expect_output(m, 4);
}

TEST(Wrapper, EfficientNetBackboneWithSequentialHead) {
  auto keys = with_prefix(without_module(keys_of("efficientnet_b0"), "classifier"), "backbone.");
  keys.push_back({"classifier.1.weight", {6, 1280}});
  keys.push_back({"classifier.1.bias", {6}});
  Detection d = detect_architecture(zero_state_dict(keys));
  EXPECT_EQ(d.architecture, "efficientnet_b0");
  EXPECT_EQ(d.num_classes, 6);
  ASSERT_TRUE(d.wrapper);
  EXPECT_EQ(d.wrapper->backbone_prefix, "backbone.");
  EXPECT_EQ(d.wrapper->head, "classifier.1");
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.default_input_size, 224);
  expect_output(m, 6);
}

TEST(Wrapper, WholeModelUnderAPrefix) {
  auto keys = with_prefix(load_key_spec("resnet50", 7).keys, "model.");
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "resnet50");
  EXPECT_EQ(m.num_classes, 7);
  ASSERT_TRUE(m.wrapper);
  EXPECT_EQ(m.wrapper->backbone_prefix, "model.");
  EXPECT_EQ(m.wrapper->head, "");
  expect_output(m, 7);
}

TEST(Wrapper, AnyPrefix) {
  for (const std::string prefix : {"encoder.", "base.", "net.backbone.", "module.model."}) {
    auto keys = with_prefix(without_module(keys_of("mobilenet_v2"), "classifier"), prefix);
    keys.push_back({"head.weight", {3, 1280}});
    keys.push_back({"head.bias", {3}});
    Detection d = detect_architecture(zero_state_dict(keys));
    EXPECT_EQ(d.architecture, "mobilenet_v2") << prefix;
    ASSERT_TRUE(d.wrapper) << prefix;
    EXPECT_EQ(d.wrapper->backbone_prefix, prefix);
  }
}

TEST(Wrapper, MobileNetV3KeepingItsHiddenLayer) {
  // model.classifier[3] = nn.Identity(): classifier.0 (960 -> 1280) + Hardswish stay.
  auto keys =
      with_prefix(without_module(keys_of("mobilenet_v3_large"), "classifier.3"), "backbone.");
  keys.push_back({"fc.weight", {9, 1280}});
  keys.push_back({"fc.bias", {9}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "mobilenet_v3_large");
  EXPECT_EQ(m.wrapper->head, "fc");
  EXPECT_EQ(count_ops(m.graph, ir::OpKind::kGemm), 2);
  expect_output(m, 9);
}

TEST(Wrapper, MobileNetV3WithoutClassifier) {
  auto keys = with_prefix(without_module(keys_of("mobilenet_v3_small"), "classifier"), "backbone.");
  keys.push_back({"head.weight", {2, 576}});
  keys.push_back({"head.bias", {2}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "mobilenet_v3_small");
  EXPECT_EQ(count_ops(m.graph, ir::OpKind::kGemm), 1);
  expect_output(m, 2);
}

TEST(Wrapper, FeaturesAtTopLevelWithOwnHead) {
  // class Net(nn.Module): features = mobilenet_v2().features; classifier = nn.Linear(1280, 4)
  auto keys = without_module(keys_of("mobilenet_v2"), "classifier");
  keys.push_back({"classifier.weight", {4, 1280}});
  keys.push_back({"classifier.bias", {4}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.architecture, "mobilenet_v2");
  ASSERT_TRUE(m.wrapper);
  EXPECT_EQ(m.wrapper->backbone_prefix, "");
  EXPECT_EQ(m.wrapper->head, "classifier");
  expect_output(m, 4);
}

TEST(Wrapper, HeadWithoutBias) {
  auto keys = with_prefix(without_module(resnet18_keys(), "fc"), "backbone.");
  keys.push_back({"head.weight", {5, 512}});
  BuiltModel m = build_model(zero_state_dict(keys));
  EXPECT_EQ(m.wrapper->head, "head");
  for (const ir::Node& n : m.graph.nodes())
    if (n.op == ir::OpKind::kGemm) {
      EXPECT_EQ(n.inputs.size(), 2u);
    }
  expect_output(m, 5);
}

TEST(Wrapper, HeadOfTheWrongWidth) {
  auto keys = with_prefix(without_module(resnet18_keys(), "fc"), "backbone.");
  keys.push_back({"head.weight", {5, 2048}});
  keys.push_back({"head.bias", {5}});
  Error e = build_error(zero_state_dict(keys));
  std::string msg = e.what();
  EXPECT_NE(msg.find("closest is resnet18 under 'backbone.' with head 'head' (1 problem)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("head.weight: checkpoint [5,2048] vs expected [5,512]"), std::string::npos)
      << msg;
}

TEST(Wrapper, ExtraModulesOutsideTheBackboneAreUnexpected) {
  auto keys = with_prefix(without_module(resnet18_keys(), "fc"), "backbone.");
  keys.push_back({"head.0.weight", {256, 512}});
  keys.push_back({"head.0.bias", {256}});
  keys.push_back({"head.2.weight", {5, 256}});
  keys.push_back({"head.2.bias", {5}});
  Error e = build_error(zero_state_dict(keys));
  EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  std::string msg = e.what();
  EXPECT_NE(msg.find("closest is resnet18 under 'backbone.'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys: 2"), std::string::npos)
      << msg;  // an MLP head is not a Linear head
}

// --- weights ---

TEST(Weights, Float32IsSharedAndOtherFloatsAreConverted) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64}) {
    std::vector<KeyShape> keys = resnet18_keys();
    StateDict w;
    for (const KeyShape& k : keys) {
      if (k.name == "fc.bias") {
        Tensor t = Tensor::from_floats(
                       {7}, std::vector<float>{0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -4.0f, 8.0f})
                       .to(dtype);
        w.insert(k.name, t);
      } else {
        w.insert(k.name, Tensor::zeros(is_float(k.dtype) ? dtype : k.dtype, k.shape));
      }
    }
    BuiltModel m = build_model(w);
    const ir::Value& bias = m.graph.value(*m.graph.find_value("fc.bias"));
    ASSERT_EQ(bias.constant.dtype(), DType::kFloat32) << dtype_name(dtype);
    EXPECT_EQ(bias.constant.to_float_vector(),
              (std::vector<float>{0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -4.0f, 8.0f}));
    for (const ir::Value& v : m.graph.values())
      if (v.is_constant()) {
        EXPECT_EQ(v.dtype, DType::kFloat32) << v.name;
      }
    bool shared = bias.constant.raw() == w.find("fc.bias")->raw();
    EXPECT_EQ(shared, dtype == DType::kFloat32) << dtype_name(dtype);
  }
}

// --- cost ---

TEST(DetectionCost, Resnet152IsCheap) {
  StateDict w = zero_state_dict(load_key_spec("resnet152", 1000).keys);
  using Clock = std::chrono::steady_clock;
  double best_detect = 1e9, best_build = 1e9;
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    Detection d = detect_architecture(w);
    auto t1 = Clock::now();
    BuiltModel m = build_model(w);
    auto t2 = Clock::now();
    EXPECT_EQ(d.architecture, "resnet152");
    best_detect = std::min(best_detect, std::chrono::duration<double, std::milli>(t1 - t0).count());
    best_build = std::min(best_build, std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  std::printf("resnet152 (%zu keys): detection %.2f ms, detection + graph %.2f ms\n", w.size(),
              best_detect, best_build);
#ifdef NDEBUG
  EXPECT_LT(best_detect, 50.0);
#endif
}

TEST(DetectionCost, FailureReportIsBounded) {
  // The slow path (every candidate checked fully) stays interactive even for the largest models.
  auto keys = load_key_spec("efficientnet_b7", 1000).keys;
  keys.pop_back();
  StateDict w = zero_state_dict(keys);
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = build_error(w).what();
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("closest is efficientnet_b7 (1 problem)"), std::string::npos) << msg;
  std::printf("efficientnet_b7 mismatch report: %.2f ms\n", ms);
#ifdef NDEBUG
  EXPECT_LT(ms, 500.0);
#endif
}

}  // namespace
}  // namespace modex::models
