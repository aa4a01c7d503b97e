// The engine as a whole: a small NCHW classifier (the kinds of nodes the zoo has) planned at
// several shapes, and one Model shared by concurrent callers.
#include <gtest/gtest.h>

#include <thread>

#include "ir/graph.h"
#include "modex/runtime.h"
#include "runtime/reference.h"
#include "runtime_test_util.h"

namespace modex::runtime_test {
namespace {
using namespace modex::ir;

// conv-bn-relu -> maxpool -> depthwise conv + residual add -> SE-style scale -> GAP -> flatten
// -> gemm, with dynamic batch/height/width.
Graph small_classifier() {
  std::mt19937 rng(11);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(3), Dim::named("height"), Dim::named("width")});
  auto conv = [&](ValueId in, int64_t ci, int64_t co, int64_t k, int64_t s, int64_t groups, const std::string& name) {
    ConvAttrs a;
    a.kernel = {k, k};
    a.strides = {s, s};
    int64_t p = k / 2;
    a.pads = {p, p, p, p};
    a.groups = groups;
    return g.add_node1(OpKind::kConv, a,
                       {in, g.add_constant(name + ".w", random_tensor({co, ci / groups, k, k}, rng, -0.4f, 0.4f)),
                        g.add_constant(name + ".b", random_tensor({co}, rng))},
                       name);
  };
  ValueId c1 = conv(x, 3, 16, 3, 2, 1, "stem");
  ValueId bn = g.add_node1(OpKind::kBatchNorm, BatchNormAttrs{1e-5f},
                           {c1, g.add_constant("bn.w", random_tensor({16}, rng, 0.5f, 1.5f)), g.add_constant("bn.b", random_tensor({16}, rng)),
                            g.add_constant("bn.m", random_tensor({16}, rng)), g.add_constant("bn.v", random_tensor({16}, rng, 0.5f, 2.0f))},
                           "bn");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {bn}, "relu");
  PoolAttrs pa;
  pa.kernel = {3, 3};
  pa.strides = {2, 2};
  pa.pads = {1, 1, 1, 1};
  ValueId mp = g.add_node1(OpKind::kMaxPool, pa, {r}, "maxpool");
  ValueId dw = conv(mp, 16, 16, 3, 1, 16, "dw");
  ValueId hs = g.add_node1(OpKind::kHardSwish, NoAttrs{}, {dw}, "hswish");
  ValueId add = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {hs, mp}, "residual");
  ValueId pooled = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {add}, "se.pool");
  ValueId se = conv(pooled, 16, 16, 1, 1, 1, "se.fc");
  ValueId gate = g.add_node1(OpKind::kSigmoid, NoAttrs{}, {se}, "se.gate");
  ValueId scaled = g.add_node1(OpKind::kMul, BinaryAttrs{}, {add, gate}, "se.scale");
  ValueId c2 = conv(scaled, 16, 24, 1, 1, 1, "project");
  ValueId silu = g.add_node1(OpKind::kSilu, NoAttrs{}, {c2}, "silu");
  ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {silu}, "gap");
  ValueId flat = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId fc = g.add_node1(OpKind::kGemm, GemmAttrs{},
                           {flat, g.add_constant("fc.w", random_tensor({10, 24}, rng)), g.add_constant("fc.b", random_tensor({10}, rng))}, "fc");
  g.add_output(fc);
  g.set_output_name(fc, "logits");
  return g;
}

TEST(Engine, ReportsInputsAndOutputs) {
  auto model = Model::from_graph(small_classifier(), {.threads = 1});
  ASSERT_EQ(model->inputs().size(), 1u);
  EXPECT_EQ(model->inputs()[0].name, "image");
  EXPECT_EQ(model->inputs()[0].shape, (std::vector<int64_t>{-1, 3, -1, -1}));
  EXPECT_EQ(model->inputs()[0].dim_names[0], "batch");
  ASSERT_EQ(model->outputs().size(), 1u);
  EXPECT_EQ(model->outputs()[0].name, "logits");
  EXPECT_EQ(model->outputs()[0].shape, (std::vector<int64_t>{-1, 10}));
  EXPECT_THROW(model->run({Tensor::zeros(DType::kFloat32, {1, 4, 8, 8})}), Error);
  EXPECT_THROW(model->run({}), Error);
}

TEST(Engine, ReplansOnShapeChange) {
  Graph g = small_classifier();
  auto model = Model::from_graph(g, {.threads = 2});
  std::vector<Dims> shapes = {{1, 3, 32, 32}, {3, 3, 32, 32}, {1, 3, 32, 32}, {2, 3, 41, 23}, {1, 3, 17, 64}, {3, 3, 32, 32}};
  std::map<Dims, Tensor> first;
  for (const Dims& s : shapes) {
    SCOPED_TRACE(dims_to_string(s));
    std::mt19937 shape_rng(static_cast<unsigned>(s[0] * 1000 + s[2] * 10 + s[3]));
    Tensor x = random_tensor(s, shape_rng);
    auto got = model->run({x});
    EXPECT_TRUE(close(runtime::run_reference(g, {x})[0], got[0]));
    // Coming back to a shape gives bit-identical results.
    if (auto it = first.find(s); it != first.end()) {
      EXPECT_TRUE(bit_equal(it->second, got[0]));
    }
    first[s] = got[0];
  }
}

// Callers' NCHW images become the graph's NHWC input on the way in: 3 channels (interleaved in
// vector registers, 16 pixels at a time) and others, images over one 4096-pixel chunk with a
// tail, batches, at 1 and 2 threads. A 1x1 convolution per channel count, against the reference.
TEST(Engine, ConvertsNchwImagesOfAnyChannelCount) {
  for (int64_t c : {1, 3, 4}) {
    std::mt19937 rng(static_cast<unsigned>(c));
    Graph g;
    ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(c), Dim::named("height"), Dim::named("width")});
    ConvAttrs a;
    a.kernel = {1, 1};
    ValueId y = g.add_node1(OpKind::kConv, a, {x, g.add_constant("w", random_tensor({8, c, 1, 1}, rng)), g.add_constant("b", random_tensor({8}, rng))}, "conv");
    g.add_output(y);
    for (int threads : {1, 2}) {
      auto model = Model::from_graph(g, {.threads = threads});
      for (const Dims& s : {Dims{1, c, 70, 71}, Dims{2, c, 5, 7}, Dims{3, c, 4, 4}}) {
        SCOPED_TRACE(dims_to_string(s) + " threads " + std::to_string(threads));
        Tensor in = random_tensor(s, rng);
        EXPECT_TRUE(close(runtime::run_reference(g, {in})[0], model->run({in})[0]));
      }
    }
  }
}

TEST(Engine, RunWithHandsOverEveryOutputWithoutCopying) {
  // Intermediate values made graph outputs (as calibration does): run_with hands over the same
  // values as run_raw, as views that the next run overwrites.
  Graph g = small_classifier();
  for (const char* name : {"relu", "residual", "se.gate", "silu"}) g.add_output(*g.find_value(name));
  auto model = Model::from_graph(g, {.threads = 2});
  std::mt19937 rng(5);
  Tensor x1 = random_tensor({2, 3, 24, 24}, rng), x2 = random_tensor({2, 3, 24, 24}, rng);
  const std::vector<Tensor> want = model->run_raw({x1});
  ASSERT_EQ(want.size(), 5u);
  std::vector<Tensor> views;
  int calls = 0;
  model->run_with({x1}, [&](std::span<const Tensor> outs) {
    ++calls;
    ASSERT_EQ(outs.size(), want.size());
    for (size_t i = 0; i < outs.size(); ++i) {
      EXPECT_TRUE(bit_equal(outs[i], want[i])) << model->outputs()[i].name;
      views.push_back(outs[i]);
    }
  });
  EXPECT_EQ(calls, 1);
  // Views, not copies: after the next run on the same executor they hold its values.
  model->run_with({x2}, [](std::span<const Tensor>) {});
  const std::vector<Tensor> second = model->run_raw({x2});
  EXPECT_TRUE(bit_equal(views[0], second[0]));
  EXPECT_FALSE(bit_equal(views[0], want[0]));
}

TEST(Engine, ReferenceBackendMatchesRunReference) {
  Graph g = small_classifier();
  auto model = Model::from_graph(g, {.threads = 1, .backend = Backend::kReference});
  std::mt19937 rng(13);
  Tensor x = random_tensor({2, 3, 19, 22}, rng);
  EXPECT_TRUE(close(runtime::run_reference(g, {x})[0], model->run({x})[0]));
  for (const std::string& k : model->kernel_names()) EXPECT_TRUE(k.rfind("ref_", 0) == 0 || k == "alias") << k;
}

void run_concurrently(int model_threads) {
  auto model = Model::from_graph(small_classifier(), {.threads = model_threads});
  constexpr int kThreads = 8, kRuns = 20;
  // Inputs differ per thread and run (two shapes); expectations computed single-threaded first.
  std::vector<std::vector<Tensor>> inputs(kThreads), want(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    std::mt19937 rng(static_cast<unsigned>(100 + t));
    for (int r = 0; r < kRuns; ++r) {
      Dims s = (t + r) % 3 ? Dims{1, 3, 32, 32} : Dims{2, 3, 24, 40};
      inputs[t].push_back(random_tensor(s, rng));
      want[t].push_back(model->run({inputs[t].back()})[0]);
    }
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      for (int r = 0; r < kRuns; ++r) {
        Tensor got = model->run({inputs[t][r]})[0];
        if (!bit_equal(want[t][r], got)) ++mismatches[t];
      }
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST(Engine, ConcurrentRunsAreBitExactSingleThreadedKernels) { run_concurrently(1); }
TEST(Engine, ConcurrentRunsAreBitExactSharedThreadPool) { run_concurrently(2); }

}  // namespace
}  // namespace modex::runtime_test

namespace modex::runtime_test {
namespace {

// torch.onnx.export's SiLU, Mul(x, Sigmoid(x)) in either operand order, becomes one Silu fused
// into the convolution before it; a Sigmoid with another consumer (an SE gate) stays.
TEST(Engine, FusesSigmoidMultiplyIntoSilu) {
  std::mt19937 rng(5);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::named("height"), Dim::named("width")});
  ConvAttrs a;
  a.kernel = {3, 3};
  a.strides = {1, 1};
  a.pads = {1, 1, 1, 1};
  ValueId c = g.add_node1(OpKind::kConv, a,
                          {x, g.add_constant("w", random_tensor({16, 8, 3, 3}, rng)), g.add_constant("b", random_tensor({16}, rng))}, "conv");
  ValueId s = g.add_node1(OpKind::kSigmoid, NoAttrs{}, {c}, "sig");
  ValueId m = g.add_node1(OpKind::kMul, BinaryAttrs{}, {s, c}, "silu");  // gate first
  ValueId s2 = g.add_node1(OpKind::kSigmoid, NoAttrs{}, {m}, "gate");
  ValueId m2 = g.add_node1(OpKind::kMul, BinaryAttrs{}, {m, s2}, "silu2");
  ValueId out = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {m2, s2}, "uses_gate_twice");
  g.add_output(out);
  g.infer_shapes();
  for (int threads : {1, 2}) {
    auto model = Model::from_graph(g, {.threads = threads});
    int sigmoids = 0, muls = 0;
    for (const Node& n : model->graph().nodes()) {
      sigmoids += n.op == OpKind::kSigmoid;
      muls += n.op == OpKind::kMul;
    }
    EXPECT_EQ(sigmoids, 1);  // the gate used by the Add too
    EXPECT_EQ(muls, 1);
    Tensor in = random_tensor({2, 8, 9, 7}, rng, -3.0f, 3.0f);
    EXPECT_TRUE(close(runtime::run_reference(g, {in})[0], model->run({in})[0]));
  }
}

}  // namespace
}  // namespace modex::runtime_test
