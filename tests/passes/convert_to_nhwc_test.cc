#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "passes/passes.h"
#include "runtime/reference.h"

namespace modex::passes {
namespace {
using namespace modex::ir;

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

Tensor nchw_to_nhwc(const Tensor& x) {
  Dims s = x.shape();
  Tensor y = Tensor::zeros(DType::kFloat32, {s[0], s[2], s[3], s[1]});
  for (int64_t n = 0; n < s[0]; ++n)
    for (int64_t c = 0; c < s[1]; ++c)
      for (int64_t h = 0; h < s[2]; ++h)
        for (int64_t w = 0; w < s[3]; ++w)
          y.data_mutable<float>()[((n * s[2] + h) * s[3] + w) * s[1] + c] = x.data<float>()[((n * s[1] + c) * s[2] + h) * s[3] + w];
  return y;
}

int count_op(const Graph& g, OpKind op) {
  int c = 0;
  for (const Node& n : g.nodes()) c += n.op == op;
  return c;
}

struct Builder {
  Graph g;
  std::mt19937 rng{42};
  ValueId input(int64_t c) {
    return g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(c), Dim::named("height"), Dim::named("width")});
  }
  ValueId conv(ValueId x, int64_t in_c, int64_t out_c, int64_t k, int64_t s, int64_t p, int64_t groups = 1, int64_t dil = 1,
               const std::string& name = "conv") {
    ConvAttrs a;
    a.kernel = {k, k};
    a.strides = {s, s};
    a.pads = {p, p, p, p};
    a.dilations = {dil, dil};
    a.groups = groups;
    ValueId w = g.add_constant(name + ".weight", random_tensor({out_c, in_c / groups, k, k}, rng, -0.5f, 0.5f));
    ValueId b = g.add_constant(name + ".bias", random_tensor({out_c}, rng));
    return g.add_node1(OpKind::kConv, a, {x, w, b}, name);
  }
  ValueId bn(ValueId x, int64_t c, const std::string& name) {
    return g.add_node1(OpKind::kBatchNorm, BatchNormAttrs{1e-3f},
                       {x, g.add_constant(name + ".w", random_tensor({c}, rng, 0.5f, 1.5f)), g.add_constant(name + ".b", random_tensor({c}, rng)),
                        g.add_constant(name + ".m", random_tensor({c}, rng)), g.add_constant(name + ".v", random_tensor({c}, rng, 0.2f, 2.0f))},
                       name);
  }
  ValueId op(OpKind k, OpAttrs a, std::vector<ValueId> in, const std::string& name) { return g.add_node1(k, a, in, name); }
};

// Runs the NCHW graph and its NHWC conversion on the same image; outputs must agree.
void expect_same_outputs(const Graph& nchw, const Graph& nhwc, int64_t size = 19, int64_t batch = 2, bool nchw_input = false) {
  std::mt19937 rng(5);
  int64_t c = nchw.value(nchw.inputs()[0]).shape[1].value;
  Tensor x = random_tensor({batch, c, size, size + 2}, rng);
  auto want = runtime::run_reference(nchw, {x});
  auto got = runtime::run_reference(nhwc, {nchw_input ? x : nchw_to_nhwc(x)});
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(want[i].shape(), got[i].shape());
    auto a = want[i].to_float_vector(), b = got[i].to_float_vector();
    for (size_t k = 0; k < a.size(); ++k) ASSERT_NEAR(a[k], b[k], 1e-4f * (1 + std::abs(a[k]))) << "output " << i << " element " << k;
  }
}

TEST(ConvertToNhwc, ClassifierShapedGraphHasNoTranspose) {
  Builder b;
  ValueId x = b.input(3);
  ValueId y = b.conv(x, 3, 8, 3, 2, 1, 1, 1, "stem");  // stride-2, padded
  y = b.bn(y, 8, "stem_bn");                           // standalone BN -> Mul + Add
  y = b.op(OpKind::kClip, ClipAttrs{0, 6}, {y}, "relu6");
  PoolAttrs mp;
  mp.kernel = {3, 3};
  mp.strides = {2, 2};
  mp.pads = {1, 1, 1, 1};
  mp.ceil_mode = true;
  ValueId pooled = b.op(OpKind::kMaxPool, mp, {y}, "maxpool");
  ValueId dw = b.conv(pooled, 8, 16, 3, 1, 2, 8, 2, "dw");  // depthwise x2 multiplier, dilated
  ValueId pw = b.conv(dw, 16, 8, 1, 1, 0, 1, 1, "pw");
  ValueId res = b.op(OpKind::kAdd, BinaryAttrs{}, {pw, pooled}, "residual");
  // Squeeze-excitation: GAP -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid -> broadcast Mul.
  ValueId se = b.op(OpKind::kGlobalAveragePool, NoAttrs{}, {res}, "se_pool");
  se = b.conv(se, 8, 4, 1, 1, 0, 1, 1, "se_fc1");
  se = b.op(OpKind::kSilu, NoAttrs{}, {se}, "se_act");
  se = b.conv(se, 4, 8, 1, 1, 0, 1, 1, "se_fc2");
  se = b.op(OpKind::kHardSigmoid, HardSigmoidAttrs{1.0f / 6, 0.5f}, {se}, "se_gate");
  ValueId scaled = b.op(OpKind::kMul, BinaryAttrs{}, {res, se}, "se_scale");
  ValueId cat = b.op(OpKind::kConcat, AxisAttrs{1}, {scaled, res}, "concat");
  ValueId hs = b.op(OpKind::kHardSwish, NoAttrs{}, {cat}, "hardswish");
  PoolAttrs ap;
  ap.kernel = {2, 2};
  ap.strides = {2, 2};
  ap.pads = {0, 0, 0, 0};
  ValueId avg = b.op(OpKind::kAveragePool, ap, {hs}, "avgpool");
  ValueId gap = b.op(OpKind::kGlobalAveragePool, NoAttrs{}, {avg}, "gap");
  ValueId flat = b.op(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId fc = b.op(OpKind::kGemm, GemmAttrs{}, {flat, b.g.add_constant("fc.w", random_tensor({5, 16}, b.rng)), b.g.add_constant("fc.b", random_tensor({5}, b.rng))}, "fc");
  ValueId sm = b.op(OpKind::kSoftmax, AxisAttrs{1}, {fc}, "softmax");
  b.g.add_output(sm);
  b.g.set_output_name(sm, "probs");

  Graph nhwc = b.g;
  convert_to_nhwc(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kTranspose), 0) << dump(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kGlobalAveragePool), 0);
  EXPECT_EQ(count_op(nhwc, OpKind::kBatchNorm), 0);
  EXPECT_EQ(shape_to_string(nhwc.value(nhwc.inputs()[0]).shape), "[batch,height,width,3]");
  EXPECT_EQ(nhwc.value(nhwc.outputs()[0]).name, "probs");
  for (const Node& n : nhwc.nodes())
    if (n.op == OpKind::kConv) {
      EXPECT_EQ(n.attr<ConvAttrs>().layout, Layout::kNHWC);
    }
  expect_same_outputs(b.g, nhwc);

  // Folding and fusing before the conversion keep the same function too.
  Graph opt = b.g;
  optimize(opt, {.fuse_activations = true});
  convert_to_nhwc(opt);
  EXPECT_EQ(count_op(opt, OpKind::kTranspose), 0);
  expect_same_outputs(b.g, opt);
}

TEST(ConvertToNhwc, NchwInputKeepsOneTransposeAtTheInput) {
  Builder b;
  ValueId x = b.input(3);
  ValueId y = b.conv(x, 3, 4, 3, 1, 1);
  ValueId gap = b.op(OpKind::kGlobalAveragePool, NoAttrs{}, {y}, "gap");
  ValueId flat = b.op(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  b.g.add_output(flat);
  Graph nhwc = b.g;
  convert_to_nhwc(nhwc, {.nchw_input = true});
  EXPECT_EQ(count_op(nhwc, OpKind::kTranspose), 1);
  EXPECT_EQ(shape_to_string(nhwc.value(nhwc.inputs()[0]).shape), "[batch,3,height,width]");
  expect_same_outputs(b.g, nhwc, 9, 1, /*nchw_input=*/true);
}

TEST(ConvertToNhwc, FlattenOfASpatialMapTransposesBack) {
  // VGG-style: flattening a C x H x W map needs NCHW element order.
  Builder b;
  ValueId x = b.input(2);
  ValueId y = b.conv(x, 2, 3, 3, 2, 1);
  ValueId flat = b.op(OpKind::kFlatten, FlattenAttrs{1}, {y}, "flatten");
  b.g.add_output(flat);
  Graph nhwc = b.g;
  convert_to_nhwc(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kTranspose), 1);
  expect_same_outputs(b.g, nhwc, 6, 2);
}

TEST(ConvertToNhwc, PadAndConstantBroadcastsFollowTheLayout) {
  Builder b;
  ValueId x = b.input(3);
  ValueId padded = b.op(OpKind::kPad, PadAttrs{{0, 0, 1, 2, 0, 0, 3, 0}, 0.5f}, {x}, "pad");
  ValueId bias = b.g.add_constant("per_channel", random_tensor({3, 1, 1}, b.rng));
  ValueId s = b.op(OpKind::kSub, BinaryAttrs{}, {padded, bias}, "sub");
  ValueId m = b.op(OpKind::kMul, BinaryAttrs{}, {s, b.g.add_constant("scalar", Tensor::scalar_float(2.0f))}, "mul");
  ValueId mean = b.op(OpKind::kReduceMean, ReduceAttrs{{2, 3}, true}, {m}, "mean");
  b.g.add_output(mean);
  Graph nhwc = b.g;
  convert_to_nhwc(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kTranspose), 1);  // only for the NCHW graph output
  expect_same_outputs(b.g, nhwc, 5, 2);
}

TEST(ConvertToNhwc, BatchNormOverFeaturesBecomesMulAdd) {
  // BatchNorm1d after a non-foldable op (here a ReLU after the linear layer): TFLite has no
  // batch normalisation, so it must become Mul + Add over [N, C].
  Builder b;
  ValueId x = b.input(3);
  ValueId y = b.conv(x, 3, 6, 3, 2, 1);
  ValueId gap = b.op(OpKind::kGlobalAveragePool, NoAttrs{}, {y}, "gap");
  ValueId flat = b.op(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId fc = b.op(OpKind::kGemm, GemmAttrs{}, {flat, b.g.add_constant("fc.w", random_tensor({4, 6}, b.rng)), b.g.add_constant("fc.b", random_tensor({4}, b.rng))}, "fc");
  ValueId r = b.op(OpKind::kRelu, NoAttrs{}, {fc}, "relu");
  ValueId bn = b.bn(r, 4, "bn1d");
  b.g.add_output(bn);
  Graph nhwc = b.g;
  optimize(nhwc, {.fuse_activations = true});
  convert_to_nhwc(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kBatchNorm), 0) << dump(nhwc);
  EXPECT_EQ(count_op(nhwc, OpKind::kTranspose), 0) << dump(nhwc);
  expect_same_outputs(b.g, nhwc, 7, 3);
}

}  // namespace
}  // namespace modex::passes
