// The builder layer on its own: torchvision's channel rounding, the strict-check bookkeeping
// (early exit, optional buffers, unexpected keys), node naming and the report's format.
#include "models/net_builder.h"

#include <gtest/gtest.h>

#include "models/architectures.h"

namespace modex::models {
namespace {

StateDict dict_of(std::initializer_list<std::pair<std::string, Dims>> entries) {
  StateDict d;
  for (const auto& [name, shape] : entries) d.insert(name, Tensor::zeros(DType::kFloat32, shape));
  return d;
}

TEST(MakeDivisible, MatchesTorchvision) {
  // Expected values printed by torchvision.models._utils._make_divisible.
  EXPECT_EQ(make_divisible(32 * 1.1, 8), 32);
  EXPECT_EQ(make_divisible(16 * 1.2, 8), 24);
  EXPECT_EQ(make_divisible(40 * 1.4, 8), 56);
  EXPECT_EQ(make_divisible(24 * 1.8, 8), 40);
  EXPECT_EQ(make_divisible(1280.0, 8), 1280);
  EXPECT_EQ(make_divisible(12.0, 8), 16);
  EXPECT_EQ(make_divisible(3.0, 8), 8);  // never below the divisor
  EXPECT_EQ(make_divisible(88 / 4, 8), 24);
  EXPECT_EQ(make_divisible(100.0, 16), 96);
  EXPECT_EQ(make_divisible(35.0, 8, 24), 32);
}

TEST(NetBuilder, CheckModeRecordsEveryProblem) {
  StateDict w = dict_of({{"conv.weight", {8, 3, 3, 3}}, {"bn.weight", {8}}, {"stray", {1}}});
  NetBuilder b(w, nullptr);
  NetValue x = b.image();
  x = b.conv(x, "conv", {.out_channels = 8, .kernel = 1});
  x = b.batch_norm(x, "bn", 1e-5f);
  LoadReport r = b.finish();
  EXPECT_FALSE(b.gave_up());
  ASSERT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(r.mismatched[0].key, "conv.weight");
  EXPECT_EQ(r.mismatched[0].checkpoint, (Dims{8, 3, 3, 3}));
  EXPECT_EQ(r.mismatched[0].expected, (Dims{8, 3, 1, 1}));
  EXPECT_EQ(r.missing, (std::vector<std::string>{"bn.bias", "bn.running_mean", "bn.running_var"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"stray"}));
  EXPECT_EQ(r.matched, 1u);
  EXPECT_EQ(r.problem_count(), 5u);
}

TEST(NetBuilder, CheckModeCanStopAtTheFirstProblem) {
  StateDict w = dict_of({{"conv.weight", {8, 3, 3, 3}}});
  NetBuilder b(w, nullptr, 0);
  NetValue x = b.image();
  x = b.conv(x, "conv", {.out_channels = 8, .kernel = 1});
  x = b.batch_norm(x, "bn", 1e-5f);
  LoadReport r = b.finish();
  EXPECT_TRUE(b.gave_up());
  EXPECT_EQ(r.problem_count(), 1u);
  EXPECT_FALSE(r.ok());
}

TEST(NetBuilder, PrefixAndOptionalBuffers) {
  StateDict w = dict_of({{"m.bn.weight", {3}},
                         {"m.bn.bias", {3}},
                         {"m.bn.running_mean", {3}},
                         {"m.bn.running_var", {3}}});
  w.insert("m.bn.num_batches_tracked", Tensor::zeros(DType::kInt64, {}));
  NetBuilder b(w, nullptr);
  b.set_key_prefix("m.");
  b.batch_norm(b.image(), "bn", 1e-3f);
  EXPECT_TRUE(b.finish().ok());
}

TEST(NetBuilder, BuildModeNamesNodesAfterModules) {
  StateDict w =
      dict_of({{"p.conv.weight", {4, 3, 3, 3}}, {"p.fc.weight", {2, 4}}, {"p.fc.bias", {2}}});
  ir::Graph g;
  NetBuilder b(w, &g);
  b.set_key_prefix("p.");
  NetValue x = b.image();
  x = b.conv(x, "conv", {.out_channels = 4, .kernel = 3, .stride = 2});
  x = b.activation(x, Act::kRelu, "relu");
  x = b.activation(x, Act::kRelu, "relu");  // a module called twice
  x = b.activation(x, Act::kNone, "identity");
  x = b.global_pool_flatten(x, "avgpool");
  x = b.linear(x, "fc", 2);
  EXPECT_TRUE(b.finish().ok());
  std::vector<std::string> names;
  for (const ir::Node& n : g.nodes()) names.push_back(n.name);
  EXPECT_EQ(names, (std::vector<std::string>{"p.conv", "p.relu", "p.relu_1", "p.avgpool",
                                             "p.flatten", "p.fc"}));
  const auto& conv = g.nodes()[0].attr<ir::ConvAttrs>();
  EXPECT_EQ(conv.pads, (std::vector<int64_t>{1, 1, 1, 1}));  // (k - 1) / 2
  EXPECT_EQ(conv.strides, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(g.value(x.id).shape, (ir::Shape{ir::Dim::named("batch"), ir::Dim::fixed(2)}));
}

TEST(LoadReport, DescribeListsProblems) {
  LoadReport r;
  r.missing = {"a.weight", "b.weight", "c.weight"};
  r.unexpected = {"x"};
  r.mismatched = {{"fc.weight", {10, 512}, {7, 512}}};
  EXPECT_EQ(r.describe(2, ""),
            "missing keys: 3\n"
            "  a.weight\n"
            "  b.weight\n"
            "  ... and 1 more\n"
            "unexpected keys: 1\n"
            "  x\n"
            "shape mismatches: 1\n"
            "  fc.weight: checkpoint [10,512] vs expected [7,512]");
}

}  // namespace
}  // namespace modex::models
