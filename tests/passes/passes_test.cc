#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "passes/passes.h"

namespace modex::passes {
namespace {
using namespace modex::ir;

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

// Direct NCHW convolution (stride 1, no padding, groups 1) for checking folded weights.
std::vector<float> conv_ref(const Tensor& x, const Tensor& w, const std::vector<float>& bias) {
  int64_t C = x.dim(1), H = x.dim(2), W = x.dim(3), O = w.dim(0), K = w.dim(2);
  int64_t OH = H - K + 1, OW = W - K + 1;
  std::vector<float> out(static_cast<size_t>(O * OH * OW));
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < OH; ++i)
      for (int64_t j = 0; j < OW; ++j) {
        double acc = bias.empty() ? 0.0 : bias[static_cast<size_t>(o)];
        for (int64_t c = 0; c < C; ++c)
          for (int64_t u = 0; u < K; ++u)
            for (int64_t v = 0; v < K; ++v)
              acc += static_cast<double>(x.data<float>()[(c * H + i + u) * W + j + v]) *
                     w.data<float>()[((o * C + c) * K + u) * K + v];
        out[static_cast<size_t>((o * OH + i) * OW + j)] = static_cast<float>(acc);
      }
  return out;
}

struct ConvBnNet {
  Graph g;
  Tensor w, gamma, beta, mean, var;
  float eps = 1e-3f;
};

ConvBnNet conv_bn_net(std::mt19937& rng, bool second_consumer = false) {
  ConvBnNet n;
  n.w = random_tensor({4, 3, 3, 3}, rng);
  n.gamma = random_tensor({4}, rng, 0.5f, 1.5f);
  n.beta = random_tensor({4}, rng);
  n.mean = random_tensor({4}, rng);
  n.var = random_tensor({4}, rng, 0.1f, 2.0f);
  Graph& g = n.g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 3, 6, 6}));
  ConvAttrs ca;
  ca.kernel = {3, 3};
  ValueId c = g.add_node1(OpKind::kConv, ca, {x, g.add_constant("conv.weight", n.w.clone())}, "conv");
  ValueId b = g.add_node1(OpKind::kBatchNorm, BatchNormAttrs{n.eps},
                          {c, g.add_constant("bn.weight", n.gamma), g.add_constant("bn.bias", n.beta),
                           g.add_constant("bn.running_mean", n.mean), g.add_constant("bn.running_var", n.var)},
                          "bn");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {b}, "relu");
  g.add_output(r);
  if (second_consumer) g.add_output(c);
  return n;
}

TEST(FoldBatchNorm, FoldedConvComputesConvThenBatchNorm) {
  std::mt19937 rng(7);
  ConvBnNet n = conv_bn_net(rng);
  Tensor x = random_tensor({1, 3, 6, 6}, rng);
  // Reference: conv, then BN in float64.
  std::vector<float> y = conv_ref(x, n.w, {});
  for (size_t i = 0; i < y.size(); ++i) {
    size_t c = i / 16;
    double v = (y[i] - n.mean.data<float>()[c]) / std::sqrt(static_cast<double>(n.var.data<float>()[c]) + n.eps);
    y[i] = static_cast<float>(v * n.gamma.data<float>()[c] + n.beta.data<float>()[c]);
  }
  ASSERT_TRUE(fold_batchnorm(n.g));
  verify(n.g);
  ASSERT_EQ(n.g.nodes().size(), 2u);
  const Node& conv = n.g.nodes()[0];
  ASSERT_EQ(conv.op, OpKind::kConv);
  ASSERT_EQ(conv.inputs.size(), 3u);
  std::vector<float> folded =
      conv_ref(x, n.g.value(conv.inputs[1]).constant, n.g.value(conv.inputs[2]).constant.to_float_vector());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(folded[i], y[i], 1e-5f * (1 + std::abs(y[i]))) << i;
  EXPECT_EQ(n.g.nodes()[1].op, OpKind::kRelu);
}

TEST(FoldBatchNorm, LeavesConvWithAnotherConsumerAlone) {
  std::mt19937 rng(1);
  ConvBnNet n = conv_bn_net(rng, /*second_consumer=*/true);
  EXPECT_FALSE(fold_batchnorm(n.g));
  EXPECT_EQ(n.g.nodes().size(), 3u);
}

TEST(FoldBatchNorm, DoesNotTouchSharedWeightStorage) {
  std::mt19937 rng(2);
  ConvBnNet n = conv_bn_net(rng);
  // The graph's weight shares its buffer with a tensor held elsewhere (e.g. the state dict).
  Tensor outside = n.g.value(*n.g.find_value("conv.weight")).constant;
  std::vector<float> before = outside.to_float_vector();
  ASSERT_TRUE(fold_batchnorm(n.g));
  EXPECT_EQ(outside.to_float_vector(), before);
}

TEST(FuseActivation, ConvReluBecomesFusedConv) {
  std::mt19937 rng(3);
  ConvBnNet n = conv_bn_net(rng);
  fold_batchnorm(n.g);
  std::string out_name = n.g.value(n.g.outputs()[0]).name;
  ASSERT_TRUE(fuse_activation(n.g));
  verify(n.g);
  ASSERT_EQ(n.g.nodes().size(), 1u);
  EXPECT_EQ(n.g.nodes()[0].attr<ConvAttrs>().activation, Activation::kRelu);
  EXPECT_EQ(n.g.value(n.g.outputs()[0]).name, out_name);  // graph output keeps its name
}

TEST(FuseActivation, Relu6AndHardSwishIntoAddAndGemm) {
  Graph g;
  ValueId a = g.add_input("a", DType::kFloat32, static_shape({2, 8}));
  ValueId b = g.add_input("b", DType::kFloat32, static_shape({2, 8}));
  ValueId s = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {a, b}, "add");
  ValueId r6 = g.add_node1(OpKind::kClip, ClipAttrs{0.0f, 6.0f}, {s}, "relu6");
  ValueId fc = g.add_node1(OpKind::kGemm, GemmAttrs{}, {r6, g.add_constant("w", Tensor::zeros(DType::kFloat32, {3, 8}))}, "fc");
  ValueId hs = g.add_node1(OpKind::kHardSwish, NoAttrs{}, {fc}, "hs");
  ValueId clip = g.add_node1(OpKind::kClip, ClipAttrs{-1.0f, 1.0f}, {hs}, "clip");  // not an activation kind
  g.add_output(clip);
  ASSERT_TRUE(fuse_activation(g));
  verify(g);
  ASSERT_EQ(g.nodes().size(), 3u);
  EXPECT_EQ(g.nodes()[0].attr<BinaryAttrs>().activation, Activation::kRelu6);
  EXPECT_EQ(g.nodes()[1].attr<GemmAttrs>().activation, Activation::kHardSwish);
  EXPECT_EQ(g.nodes()[2].op, OpKind::kClip);
}

TEST(FoldConstants, ShapeArithmeticCollapses) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 3}));
  ValueId c1 = g.add_constant("c1", Tensor::from_floats({3}, std::vector<float>{1, 2, 3}));
  ValueId c2 = g.add_constant("c2", Tensor::from_floats({1}, std::vector<float>{10}));
  ValueId sum = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {c1, c2}, "sum");          // [11,12,13]
  ValueId r = g.add_node1(OpKind::kReshape, ReshapeAttrs{{1, 3}}, {sum}, "reshape");  // [[11,12,13]]
  ValueId t = g.add_node1(OpKind::kTranspose, TransposeAttrs{{1, 0}}, {r}, "t");     // [[11],[12],[13]]
  ValueId t2 = g.add_node1(OpKind::kTranspose, TransposeAttrs{{1, 0}}, {t}, "t2");
  ValueId y = g.add_node1(OpKind::kMul, BinaryAttrs{}, {x, t2}, "scale");
  g.add_output(y);
  ASSERT_TRUE(fold_constants(g));
  verify(g);
  ASSERT_EQ(g.nodes().size(), 1u);
  const Value& k = g.value(g.nodes()[0].inputs[1]);
  ASSERT_TRUE(k.is_constant());
  EXPECT_EQ(k.constant.shape(), (Dims{1, 3}));
  EXPECT_EQ(k.constant.to_float_vector(), (std::vector<float>{11, 12, 13}));
}

TEST(FoldConstants, Int64ConcatForShapes) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 3}));
  ValueId a = g.add_constant("a", Tensor::from_int64s({1}, std::vector<int64_t>{2}));
  ValueId b = g.add_constant("b", Tensor::from_int64s({1}, std::vector<int64_t>{-1}));
  ValueId cat = g.add_node1(OpKind::kConcat, AxisAttrs{0}, {a, b}, "cat");
  g.add_output(x);
  g.add_output(cat);
  ASSERT_TRUE(fold_constants(g));
  const Value& v = g.value(g.outputs()[1]);
  ASSERT_TRUE(v.is_constant());
  EXPECT_EQ(v.name, "cat");
  EXPECT_EQ(v.constant.to_int64_vector(), (std::vector<int64_t>{2, -1}));
}

TEST(EliminateDeadCode, RemovesIdentityAndUnusedBranches) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 4}));
  ValueId id = g.add_node1(OpKind::kIdentity, NoAttrs{}, {x}, "dropout");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {id}, "relu");
  g.add_node1(OpKind::kSigmoid, NoAttrs{}, {x}, "unused");
  ValueId out = g.add_node1(OpKind::kIdentity, NoAttrs{}, {r}, "out");
  g.add_output(out);
  ASSERT_TRUE(eliminate_dead_code(g));
  verify(g);
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0].op, OpKind::kRelu);
  EXPECT_EQ(g.nodes()[0].inputs[0], g.inputs()[0]);
  EXPECT_EQ(g.value(g.outputs()[0]).name, "out");
  EXPECT_FALSE(eliminate_dead_code(g));
}

}  // namespace
}  // namespace modex::passes
