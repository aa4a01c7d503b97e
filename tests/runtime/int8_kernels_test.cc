// Int8 inference: TFLite's fixed-point helpers, the reference int8 kernels against float math on
// the dequantized operands (within one quantization step), XNNPACK's int8 kernels against the
// reference (integers at most one apart; how often is printed), and the engine's int8 API,
// re-planning and concurrent use. LiteRT parity is tests/oracle/test_runtime_int8.py.
#include <gtest/gtest.h>
#include <pthreadpool.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "int8_test_graphs.h"
#include "modex/runtime.h"
#include "runtime/kernels/kernel.h"
#include "runtime/kernels/native_math.h"
#include "runtime/kernels/reference_int8.h"
#include "runtime/reference.h"
#include "runtime_test_util.h"

namespace modex {
namespace {

using runtime::q8::Multiplier;
using runtime::q8::multiply_by_quantized_multiplier;
using runtime::q8::quantize_multiplier;
namespace native = runtime::native;
using runtime_test::IsaLimit;

Tensor random_input(const ir::Value& v, uint32_t seed, int64_t batch = -1) {
  Dims dims;
  for (const ir::Dim& d : v.shape) dims.push_back(d.is_static() ? d.value : 1);
  if (batch > 0) dims[0] = batch;
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(v.dtype, dims);
  if (v.dtype == DType::kFloat32) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  } else if (v.dtype == DType::kUInt8) {
    std::uniform_int_distribution<int> d(0, 255);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data_mutable<uint8_t>()[i] = static_cast<uint8_t>(d(rng));
  } else {
    std::uniform_int_distribution<int> d(-128, 127);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data_mutable<int8_t>()[i] = static_cast<int8_t>(d(rng));
  }
  return t;
}

std::vector<int64_t> ints(const Tensor& t) { return t.to_int64_vector(); }

TEST(Int8FixedPoint, QuantizeMultiplier) {
  Multiplier half = quantize_multiplier(0.5);
  EXPECT_EQ(half.value, 1 << 30);
  EXPECT_EQ(half.shift, 0);
  Multiplier two = quantize_multiplier(2.0);
  EXPECT_EQ(two.value, 1 << 30);
  EXPECT_EQ(two.shift, 2);
  Multiplier m = quantize_multiplier(0.75);
  EXPECT_EQ(m.value, 1610612736);
  EXPECT_EQ(m.shift, 0);
  // Rounding up to 2^31 moves to the next exponent.
  Multiplier edge = quantize_multiplier(std::nextafter(1.0, 0.0));
  EXPECT_EQ(edge.value, 1 << 30);
  EXPECT_EQ(edge.shift, 1);
  EXPECT_EQ(quantize_multiplier(0.0).value, 0);
}

TEST(Int8FixedPoint, MultiplyMatchesRealArithmetic) {
  EXPECT_EQ(multiply_by_quantized_multiplier(100, quantize_multiplier(0.5)), 50);
  EXPECT_EQ(multiply_by_quantized_multiplier(7, quantize_multiplier(3.0)), 21);
  // Exact halves round away from zero on the positive side.
  EXPECT_EQ(multiply_by_quantized_multiplier(3, quantize_multiplier(0.5)), 2);
  EXPECT_EQ(runtime::q8::rounding_divide_by_pot(5, 1), 3);
  EXPECT_EQ(runtime::q8::rounding_divide_by_pot(-5, 1), -3);
  EXPECT_EQ(runtime::q8::saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN), INT32_MAX);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> xd(-1 << 20, 1 << 20);
  std::uniform_real_distribution<double> md(1e-6, 50.0);
  for (int i = 0; i < 20000; ++i) {
    int32_t x = xd(rng);
    double r = md(rng);
    int32_t got = multiply_by_quantized_multiplier(x, quantize_multiplier(r));
    EXPECT_LE(std::abs(static_cast<double>(got) - static_cast<double>(x) * r), 1.0)
        << x << " * " << r;
  }
}

// The int8 graph with every quantized tensor replaced by its real value: constants dequantized,
// Quantize/Dequantize as identities. Run in the float reference kernels.
ir::Graph float_shadow(const ir::Graph& q) {
  ir::Graph g;
  std::vector<ir::ValueId> map(q.values().size(), ir::kNoValue);
  for (ir::ValueId in : q.inputs())
    map[static_cast<size_t>(in)] =
        g.add_input(q.value(in).name, DType::kFloat32, q.value(in).shape);
  for (size_t v = 0; v < q.values().size(); ++v) {
    const ir::Value& val = q.values()[v];
    if (!val.is_constant()) continue;
    std::vector<int64_t> iv = val.constant.to_int64_vector();
    Tensor f = Tensor::empty(DType::kFloat32, val.constant.shape());
    const int64_t channels = static_cast<int64_t>(val.quant->scale.size());
    const int64_t inner = val.constant.numel() / std::max<int64_t>(val.constant.dim(0), 1);
    for (size_t i = 0; i < iv.size(); ++i) {
      size_t c = channels > 1 ? static_cast<size_t>(static_cast<int64_t>(i) / inner) : 0;
      f.data_mutable<float>()[i] = static_cast<float>((iv[i] - val.quant->zero_point[c]) *
                                                      static_cast<double>(val.quant->scale[c]));
    }
    map[v] = g.add_constant(val.name, f);
  }
  for (const ir::Node& n : q.nodes()) {
    std::vector<ir::ValueId> ins;
    for (ir::ValueId v : n.inputs) ins.push_back(map[static_cast<size_t>(v)]);
    bool identity = n.op == ir::OpKind::kQuantize || n.op == ir::OpKind::kDequantize;
    map[static_cast<size_t>(n.outputs[0])] =
        g.add_node1(identity ? ir::OpKind::kIdentity : n.op,
                    identity ? ir::OpAttrs(ir::NoAttrs{}) : n.attrs, ins, n.name);
  }
  for (ir::ValueId o : q.outputs()) g.add_output(map[static_cast<size_t>(o)]);
  return g;
}

Tensor dequantized(const Tensor& t, const ir::Value& v) {
  if (!v.quant) return t.to(DType::kFloat32);
  Tensor f = Tensor::empty(DType::kFloat32, t.shape());
  runtime::q8::dequantize(t, {v.quant->scale[0], static_cast<int32_t>(v.quant->zero_point[0])}, f);
  return f;
}

// Single-op cases (and the binary ops on two inputs): the reference int8 result is the float result
// on the dequantized operands, quantized with the output's params, within one step (HardSwish:
// TFLite's 16-bit approximation, two steps).
// Float -> int8 with TFLite's rounding (half away from zero), clamped, NaN to the minimum: the
// 8-at-a-time path (AVX2) and its scalar tail give what the formula gives for every value.
TEST(Int8Reference, QuantizeRoundsHalfAwayFromZero) {
  const float scale = 0.25f;
  std::vector<float> xs;
  for (int k = -140; k <= 140; ++k) {
    const float tie = (static_cast<float>(k) + 0.5f) * scale;
    xs.insert(xs.end(), {tie, std::nextafter(tie, 0.0f), std::nextafter(tie, 1e9f), std::nextafter(tie, -1e9f),
                         static_cast<float>(k) * scale});
  }
  xs.insert(xs.end(), {0.49999997f * scale, -0.49999997f * scale, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, -0.0f, 3e9f});
  for (int32_t zp : {0, -5, 100}) {
    Tensor x = Tensor::empty(DType::kFloat32, {static_cast<int64_t>(xs.size())});
    std::copy(xs.begin(), xs.end(), x.data_mutable<float>());
    Tensor y = Tensor::empty(DType::kInt8, x.shape());
    runtime::q8::quantize(x, {scale, zp}, y);
    for (size_t i = 0; i < xs.size(); ++i) {
      const double q = std::isnan(xs[i]) ? -1e9 : std::round(static_cast<double>(xs[i] / scale));
      const int64_t want = std::clamp<int64_t>(static_cast<int64_t>(std::clamp(q, -1e9, 1e9)) + zp, -128, 127);
      ASSERT_EQ(y.data<int8_t>()[i], want) << "x = " << xs[i] << ", zp " << zp;
    }
  }
}

TEST(Int8Reference, MatchesFloatMathOnDequantizedOperands) {
  for (auto& c : test::int8_cases()) {
    if (c.graph.nodes().size() != 1) continue;  // chains accumulate rounding
    SCOPED_TRACE(c.name);
    const ir::Value& in = c.graph.value(c.graph.inputs()[0]);
    const ir::Value& out = c.graph.value(c.graph.outputs()[0]);
    Tensor x = random_input(in, 7);
    Tensor q = runtime::run_reference(c.graph, {x})[0];
    Tensor f = runtime::run_reference(float_shadow(c.graph), {dequantized(x, in)})[0];
    ASSERT_EQ(q.numel(), f.numel());
    const float step = out.quant ? out.quant->scale[0] : 0.0f;
    Tensor qf = dequantized(q, out);
    const double tolerance = c.name == "hard_swish" ? 2.0 : 1.0;
    int64_t off = 0;
    for (int64_t i = 0; i < q.numel(); ++i) {
      float want = f.data<float>()[i];
      float got = qf.data<float>()[i];
      if (out.quant) {
        // Saturated outputs are clamped to the int8 range.
        float lo = (out.dtype == DType::kUInt8 ? 0.0f : -128.0f) -
                   static_cast<float>(out.quant->zero_point[0]);
        float hi = (out.dtype == DType::kUInt8 ? 255.0f : 127.0f) -
                   static_cast<float>(out.quant->zero_point[0]);
        want = std::clamp(want, lo * step, hi * step);
        if (std::abs(got - want) > tolerance * step * 1.0001f + 1e-6f) ++off;
      } else {
        // Float output of an int8 op: one step of the op's int8 output.
        const ir::Value& pre = c.graph.value(c.graph.nodes().back().inputs[0]);
        if (std::abs(got - want) > pre.quant->scale[0] * 1.0001f) ++off;
      }
    }
    EXPECT_EQ(off, 0) << off << " of " << q.numel() << " values more than " << tolerance
                      << " step(s) from float math";
  }
}

// Add and Mul of two int8 inputs (different params, broadcasting) against float math.
TEST(Int8Reference, BinaryOpsMatchFloatMath) {
  for (ir::OpKind op : {ir::OpKind::kAdd, ir::OpKind::kMul})
    for (ir::Activation act : {ir::Activation::kNone, ir::Activation::kRelu6})
      for (bool broadcast : {false, true}) {
        test::Int8Builder b(static_cast<uint32_t>(op == ir::OpKind::kAdd) + 2 * broadcast);
        auto x = b.input("x", {1, 5, 5, 7}, 0.03f, -5);
        auto y = b.input("y", broadcast ? Dims{1, 1, 1, 7} : Dims{1, 5, 5, 7}, 0.05f, 9);
        auto z = b.binary(op, x, y, act);
        b.g.add_output(z);
        Tensor xv = random_input(b.g.value(x), 1), yv = random_input(b.g.value(y), 2);
        Tensor q = runtime::run_reference(b.g, {xv, yv})[0];
        Tensor f = runtime::run_reference(
            float_shadow(b.g), {dequantized(xv, b.g.value(x)), dequantized(yv, b.g.value(y))})[0];
        const ir::Value& out = b.g.value(z);
        Tensor qf = dequantized(q, out);
        const float step = out.quant->scale[0];
        const float lo = (-128.0f - static_cast<float>(out.quant->zero_point[0])) * step;
        const float hi = (127.0f - static_cast<float>(out.quant->zero_point[0])) * step;
        int64_t off = 0;
        for (int64_t i = 0; i < q.numel(); ++i)
          off += std::abs(qf.data<float>()[i] - std::clamp(f.data<float>()[i], lo, hi)) >
                 step * 1.0001f;
        EXPECT_EQ(off, 0) << ir::op_name(op) << " broadcast " << broadcast;
        // XNNPACK agrees within one step.
        auto ref = Model::from_graph(b.g, {.threads = 1, .backend = Backend::kReference});
        auto fast = Model::from_graph(b.g, {.threads = 1});
        auto av = ints(ref->run_raw({xv, yv})[0]), bv = ints(fast->run_raw({xv, yv})[0]);
        for (size_t i = 0; i < av.size(); ++i) ASSERT_LE(std::abs(av[i] - bv[i]), 1);
        EXPECT_EQ(fast->kernel_names().at(0).rfind("xnn_", 0), 0u) << fast->kernel_names().at(0);
      }
}

// The same model run with the reference kernels and with XNNPACK's: integers at most one apart.
TEST(Int8Xnnpack, MatchesReferenceWithinOneStep) {
  int64_t total = 0, off_by_one = 0;
  for (auto& c : test::int8_cases()) {
    SCOPED_TRACE(c.name);
    auto ref = Model::from_graph(c.graph, {.threads = 1, .backend = Backend::kReference});
    auto fast = Model::from_graph(c.graph, {.threads = 2, .backend = Backend::kAuto});
    for (uint32_t seed : {1u, 2u, 3u}) {
      Tensor x = random_input(c.graph.value(c.graph.inputs()[0]), seed);
      Tensor a = ref->run_raw({x})[0], b = fast->run_raw({x})[0];
      ASSERT_EQ(a.dtype(), b.dtype());
      if (a.dtype() == DType::kFloat32) {
        // A Dequantize output: one step of the int8 value it dequantizes.
        const ir::Value& pre = c.graph.value(c.graph.nodes().back().inputs[0]);
        for (int64_t i = 0; i < a.numel(); ++i)
          EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], pre.quant->scale[0] * 1.0001f);
        continue;
      }
      auto av = ints(a), bv = ints(b);
      for (size_t i = 0; i < av.size(); ++i) {
        ASSERT_LE(std::abs(av[i] - bv[i]), 1) << "at " << i;
        off_by_one += av[i] != bv[i];
      }
      total += static_cast<int64_t>(av.size());
    }
    std::string kernels;
    for (const auto& k : fast->kernel_names()) kernels += k + " ";
    if (c.name.find("conv") != std::string::npos && c.name != "grouped_conv") {
      EXPECT_TRUE(kernels.find("xnn_") != std::string::npos || kernels.find("native_") != std::string::npos)
          << kernels;
    }
  }
  std::printf("int8 XNNPACK vs reference: %lld of %lld output integers differ by one (%.3f%%)\n",
              static_cast<long long>(off_by_one), static_cast<long long>(total),
              100.0 * static_cast<double>(off_by_one) / static_cast<double>(total));
  EXPECT_LE(off_by_one * 100, total * 5);
}

// Kernel-level parity over a grid of convolution shapes: strides, pads, dilation, groups, odd
// channel counts.
TEST(Int8Xnnpack, ConvolutionGrid) {
  int64_t total = 0, off = 0, cases = 0;
  for (int64_t k : {1, 3, 5})
    for (int64_t stride : {1, 2})
      for (int64_t groups : {1, 3})
        for (bool per_channel : {true, false})
          for (ir::Activation act : {ir::Activation::kNone, ir::Activation::kRelu6}) {
            test::Int8Builder b(
                static_cast<uint32_t>(k * 100 + stride * 10 + groups + per_channel));
            auto x = b.input("x", {2, 9, 7, 3 * groups == 3 ? 3 : 9}, 0.02f, -3);
            int64_t C = b.g.value(x).shape[3].value;
            int64_t O = groups == 1 ? 5 : C;  // depthwise when groups == C
            int64_t g = groups == 1 ? 1 : C;
            auto y = b.conv(x, O, k, stride, {k / 2, k / 2 + 1, k / 2, 0}, g, act, per_channel,
                            k == 3 && stride == 1 ? 2 : 1);
            b.g.add_output(y);
            auto ref = Model::from_graph(b.g, {.threads = 1, .backend = Backend::kReference});
            auto fast = Model::from_graph(b.g, {.threads = 2});
            Tensor in = random_input(b.g.value(x), static_cast<uint32_t>(cases));
            auto av = ints(ref->run_raw({in})[0]), bv = ints(fast->run_raw({in})[0]);
            ASSERT_EQ(fast->kernel_names().size(), 1u);
            const std::string kernel = fast->kernel_names()[0];
            EXPECT_TRUE(kernel.rfind("xnn_", 0) == 0 || (groups == 1 && kernel.rfind("native_", 0) == 0)) << kernel;
            for (size_t i = 0; i < av.size(); ++i) {
              ASSERT_LE(std::abs(av[i] - bv[i]), 1)
                  << "k" << k << " s" << stride << " g" << g << " at " << i;
              off += av[i] != bv[i];
            }
            total += static_cast<int64_t>(av.size());
            ++cases;
          }
  std::printf("int8 conv grid: %lld cases, %lld of %lld integers differ by one (%.3f%%)\n",
              static_cast<long long>(cases), static_cast<long long>(off),
              static_cast<long long>(total),
              100.0 * static_cast<double>(off) / static_cast<double>(total));
}

// Runs the graph's single node on the kernel `backend` creates for it, alone (no engine, no
// passes): setup and run over a pool of `threads`.
Tensor run_kernel(const ir::Graph& g, runtime::KernelBackend backend, const Tensor& x, int threads,
                  std::string* name) {
  const ir::Node& node = g.nodes().at(0);
  auto kernel = runtime::KernelRegistry::instance().create({g, node}, std::span(&backend, 1));
  *name = std::string(kernel->name());
  const ir::Value& yv = g.value(node.outputs[0]);
  Tensor y = Tensor::empty(yv.dtype, *ir::to_dims(yv.shape));
  pthreadpool_t pool = threads > 1 ? pthreadpool_create(static_cast<size_t>(threads)) : nullptr;
  std::mutex mutex;
  runtime::RunContext ctx{pool, &mutex};
  const Tensor in[3] = {x, g.value(node.inputs[1]).constant, g.value(node.inputs[2]).constant};
  kernel->setup(in, std::span(&y, 1), ctx);
  kernel->run(ctx);
  kernel->run(ctx);  // a second run over the same binding gives the same result
  if (pool) pthreadpool_destroy(pool);
  return y;
}

// modex's own int8 convolutions (dense on AMX or AVX2, Winograd, depthwise on AVX-512 or AVX2) requantize as XNNPACK does, so the two give the same
// integers (and so the same as LiteRT, which runs on XNNPACK); against the reference, one step at
// most. Shapes cover odd K, K split into blocks, 1 to 16 columns in the last panel, channel
// groups at 2 threads (few output pixels), dilation, asymmetric pads, per-tensor scales,
// negative and positive zero points, ReLU / ReLU6 ranges.
TEST(Int8Native, ConvolutionEqualsXnnpack) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "no AVX2";
  struct Case {
    Dims in;
    int64_t O, k, stride;
    std::vector<int64_t> pads;
    int64_t dilation;
    ir::Activation act;
    bool per_channel;
    int64_t zp;
    bool depthwise = false;
    bool winograd = false;  // 3x3 stride 1, C a multiple of 16, >= 100 output pixels
  };
  using ir::Activation;
  const std::vector<Case> cases = {
      {{1, 9, 9, 5}, 7, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu6, true, 3},            // odd K, 7 columns
      {{2, 6, 7, 64}, 40, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu, true, -20},         // K in 2 blocks, 8 left
      {{1, 7, 7, 96}, 136, 1, 1, {0, 0, 0, 0}, 1, Activation::kNone, true, 5},          // 1x1, channel groups
      {{1, 5, 5, 300}, 21, 3, 2, {0, 1, 1, 0}, 1, Activation::kNone, false, -128},      // per-tensor, asym pads
      {{1, 13, 12, 4}, 24, 5, 1, {4, 4, 4, 4}, 2, Activation::kNone, true, 0},          // dilation
      {{1, 23, 21, 3}, 16, 7, 2, {3, 3, 3, 3}, 1, Activation::kRelu, true, -7},         // stem
      {{2, 17, 16, 3}, 32, 3, 2, {1, 1, 1, 1}, 1, Activation::kRelu6, true, 11},        // 3x3 stem, batch 2
      {{1, 9, 8, 16}, 24, 2, 2, {0, 1, 1, 0}, 1, Activation::kNone, true, -30},         // K = 64 exactly
      {{3, 6, 5, 32}, 9, 3, 1, {1, 0, 1, 2}, 1, Activation::kRelu6, false, 127},        // batch 3
      {{1, 1, 1, 1200}, 17, 1, 1, {0, 0, 0, 0}, 1, Activation::kNone, true, 1},         // K in 3 blocks
      {{1, 15, 16, 24}, 33, 1, 2, {0, 0, 0, 0}, 1, Activation::kRelu, true, -1},        // 1x1 stride 2
      // 1x1 stride 1: on AMX the input is A (rows read past C into the next pixel's, weight 0),
      // the last rows gathered; C under, at and over one 64-byte tile row.
      {{2, 9, 8, 40}, 24, 1, 1, {0, 0, 0, 0}, 1, Activation::kRelu6, true, 9},
      {{1, 10, 10, 64}, 48, 1, 1, {0, 0, 0, 0}, 1, Activation::kNone, true, -3},
      {{1, 12, 11, 80}, 200, 1, 1, {0, 0, 0, 0}, 1, Activation::kRelu, false, 60},
      // Depthwise (16 channels at a time): borders, stride 2 with asymmetric pads, 5x5 (an odd
      // tap count), an input smaller than the kernel, dilation.
      {{1, 9, 9, 16}, 16, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu6, true, 3, true},
      {{2, 10, 11, 32}, 32, 3, 2, {0, 1, 1, 0}, 1, Activation::kNone, false, -128, true},
      {{1, 7, 7, 48}, 48, 5, 1, {2, 2, 2, 2}, 1, Activation::kRelu, true, 127, true},
      {{1, 3, 2, 16}, 16, 5, 2, {2, 2, 2, 2}, 1, Activation::kNone, true, -5, true},
      {{1, 8, 8, 32}, 32, 3, 1, {2, 2, 2, 2}, 2, Activation::kNone, true, 0, true},
      // Winograd F(2x2, 3x3): odd output sizes (edge tiles), asymmetric pads, batch 2, channels
      // split into two K blocks (528), extreme zero points (padding taps carry them).
      {{1, 12, 11, 32}, 40, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu6, true, 3, false, true},
      {{2, 11, 12, 16}, 16, 3, 1, {0, 1, 1, 0}, 1, Activation::kNone, false, -128, false, true},
      {{1, 10, 10, 528}, 20, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu, true, 127, false, true},
      {{1, 13, 13, 48}, 72, 3, 1, {0, 0, 0, 0}, 1, Activation::kNone, true, -60, false, true},
  };
  int64_t total = 0, off = 0;
  for (size_t i = 0; i < cases.size() * 2; ++i) {
    // Each case with every instruction set the machine has (AMX for every dense convolution,
    // AVX-512 for depthwise ones), then on AVX2 alone.
    const bool amx = i < cases.size();
    if (amx && !native::isa_enabled(native::Isa::kAmx)) continue;
    const IsaLimit isa(amx ? native::Isa::kAmx : native::Isa::kAvx2);
    const Case& c = cases[i % cases.size()];
    test::Int8Builder b(static_cast<uint32_t>(40 + i % cases.size()));
    auto x = b.input("x", c.in, 0.02f, c.zp);
    b.g.add_output(b.conv(x, c.O, c.k, c.stride, c.pads, c.depthwise ? c.in[3] : 1, c.act, c.per_channel, c.dilation));
    for (int threads : {1, 2}) {
      SCOPED_TRACE("case " + std::to_string(i % cases.size()) + (amx ? " (AMX)" : " (AVX2)") + ", threads " +
                   std::to_string(threads));
      Tensor in = random_input(b.g.value(x), static_cast<uint32_t>(i % cases.size() * 7 + threads));
      std::string native_name, xnn_name, ref_name;
      auto nv = ints(run_kernel(b.g, runtime::KernelBackend::kNative, in, threads, &native_name));
      auto xv = ints(run_kernel(b.g, runtime::KernelBackend::kXnnpack, in, threads, &xnn_name));
      auto rv = ints(run_kernel(b.g, runtime::KernelBackend::kReference, in, 1, &ref_name));
      ASSERT_EQ(native_name, c.depthwise  ? (amx ? "native_dwconv2d_nhwc_q8_avx512" : "native_dwconv2d_nhwc_q8_avx2")
                             : amx        ? "native_conv2d_nhwc_q8_amx"
                             : c.winograd ? "native_winograd_q8_f23"
                                          : "native_conv2d_nhwc_q8_avx2");
      ASSERT_EQ(xnn_name.rfind(c.depthwise ? "xnn_dwconv2d_nhwc_q" : "xnn_conv2d_nhwc_q", 0), 0u) << xnn_name;
      ASSERT_EQ(nv.size(), xv.size());
      int64_t lo = 127, hi = -128;
      for (size_t j = 0; j < nv.size(); ++j) {
        ASSERT_EQ(nv[j], xv[j]) << "at " << j;
        ASSERT_LE(std::abs(nv[j] - rv[j]), 1) << "at " << j;
        off += nv[j] != rv[j];
        lo = std::min(lo, nv[j]), hi = std::max(hi, nv[j]);
      }
      EXPECT_LT(lo, hi);  // not a constant output
      total += static_cast<int64_t>(nv.size());
    }
  }
  std::printf("int8 native conv: equal to XNNPACK; %lld of %lld integers one step from the reference\n",
              static_cast<long long>(off), static_cast<long long>(total));
}

// An int8 fully connected layer on AMX (a 1x1 convolution of one pixel per batch row) gives
// XNNPACK's integers: batch 1 (one tile row of sixteen used), batches that fill and overflow a
// 32-row step, inputs shorter and longer than a 64-byte tile row, odd output counts, ReLU.
TEST(Int8Native, FullyConnectedOnAmxEqualsXnnpack) {
  if (!native::isa_enabled(native::Isa::kAmx)) GTEST_SKIP() << "no AMX";
  struct Case {
    int64_t batch, in, out;
    ir::Activation act;
  };
  const std::vector<Case> cases = {{1, 1280, 1000, ir::Activation::kNone},
                                   {33, 40, 10, ir::Activation::kRelu},
                                   {5, 130, 17, ir::Activation::kNone},
                                   {32, 64, 64, ir::Activation::kRelu}};
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    test::Int8Builder b(static_cast<uint32_t>(90 + i));
    auto x = b.input("x", {c.batch, c.in}, 0.03f, static_cast<int64_t>(i) * 11 - 7);
    b.g.add_output(b.gemm(x, c.out, c.act));
    for (int threads : {1, 2}) {
      SCOPED_TRACE("case " + std::to_string(i) + ", threads " + std::to_string(threads));
      Tensor in = random_input(b.g.value(x), static_cast<uint32_t>(i * 3 + threads));
      std::string amx_name, xnn_name;
      auto av = ints(run_kernel(b.g, runtime::KernelBackend::kNative, in, threads, &amx_name));
      auto xv = ints(run_kernel(b.g, runtime::KernelBackend::kXnnpack, in, threads, &xnn_name));
      ASSERT_EQ(amx_name, "native_fully_connected_q8_amx");
      ASSERT_EQ(xnn_name, "xnn_fully_connected_nc_qs8");
      ASSERT_EQ(av, xv);
      EXPECT_LT(*std::min_element(av.begin(), av.end()), *std::max_element(av.begin(), av.end()));
    }
  }
}

// Int8 Add and Mul cut into bands of rows (one XNNPACK operator per thread at batch 1) give the
// integers the whole operator gives, and the reference's within one step: residual adds, the
// squeeze-excite scaling with the gate on either side, more threads than rows, fused ReLU; batch
// 2 and rank-2 shapes run whole.
TEST(Int8Xnnpack, BandedBinaryOpsEqualTheWholeOperator) {
  struct Case {
    ir::OpKind op;
    Dims a, b;
    ir::Activation act;
  };
  const std::vector<Case> cases = {
      {ir::OpKind::kAdd, {1, 7, 5, 16}, {1, 7, 5, 16}, ir::Activation::kNone},
      {ir::OpKind::kAdd, {1, 9, 3, 8}, {1, 9, 3, 8}, ir::Activation::kRelu},
      {ir::OpKind::kMul, {1, 9, 4, 24}, {1, 1, 1, 24}, ir::Activation::kNone},
      {ir::OpKind::kMul, {1, 1, 1, 40}, {1, 5, 6, 40}, ir::Activation::kNone},
      {ir::OpKind::kMul, {1, 2, 3, 16}, {1, 2, 3, 16}, ir::Activation::kRelu},
      {ir::OpKind::kAdd, {2, 4, 4, 8}, {2, 4, 4, 8}, ir::Activation::kNone},
      {ir::OpKind::kMul, {3, 10}, {3, 10}, ir::Activation::kNone},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    test::Int8Builder b(static_cast<uint32_t>(120 + i));
    auto xa = b.input("a", c.a, 0.05f, 3);
    auto xb = b.input("b", c.b, 0.04f, -9);
    b.g.add_output(b.binary(c.op, xa, xb, c.act));
    const Tensor ta = random_input(b.g.value(xa), static_cast<uint32_t>(i)),
                 tb = random_input(b.g.value(xb), static_cast<uint32_t>(i + 50));
    auto whole = Model::from_graph(b.g, {.threads = 1});
    auto ref = Model::from_graph(b.g, {.threads = 1, .backend = Backend::kReference});
    const auto want = ints(whole->run_raw({ta, tb})[0]), refv = ints(ref->run_raw({ta, tb})[0]);
    for (int threads : {2, 3, 8}) {
      SCOPED_TRACE("case " + std::to_string(i) + ", threads " + std::to_string(threads));
      auto banded = Model::from_graph(b.g, {.threads = threads});
      EXPECT_EQ(ints(banded->run_raw({ta, tb})[0]), want);
      EXPECT_EQ(ints(banded->run_raw({ta, tb})[0]), want);  // a second run over the same binding
      ASSERT_EQ(banded->kernel_names().at(0), c.op == ir::OpKind::kAdd ? "xnn_add_nd_qs8" : "xnn_multiply_nd_qs8");
    }
    ASSERT_EQ(want.size(), refv.size());
    for (size_t j = 0; j < want.size(); ++j) ASSERT_LE(std::abs(want[j] - refv[j]), 1) << "case " << i << " at " << j;
  }
}

// The int8 constant Pad (what a TFLite max pool with explicit padding reads) on XNNPACK: the
// same bytes as the reference, for pad values that quantize inside and outside the int8 range.
TEST(Int8Xnnpack, PadEqualsReference) {
  for (float value : {0.0f, -1e9f, 0.37f})
    for (int threads : {1, 2}) {
      test::Int8Builder b(9);
      auto x = b.input("x", {2, 5, 7, 6}, 0.02f, -9);
      b.g.add_output(b.same(ir::OpKind::kPad, ir::PadAttrs{{0, 1, 0, 2, 0, 2, 3, 1}, value}, {x}));
      auto fast = Model::from_graph(b.g, {.threads = threads});
      auto ref = Model::from_graph(b.g, {.threads = 1, .backend = Backend::kReference});
      Tensor in = random_input(b.g.value(x), 3);
      Tensor got = fast->run_raw({in})[0];
      ASSERT_EQ(fast->kernel_names().size(), 1u);
      EXPECT_EQ(fast->kernel_names()[0], "xnn_constant_pad_nd_x8");
      EXPECT_EQ(got.shape(), (Dims{2, 8, 10, 9}));
      EXPECT_EQ(ints(got), ints(ref->run_raw({in})[0])) << "value " << value;
    }
}

const test::Int8Case& find_case(const std::vector<test::Int8Case>& cases, const std::string& name) {
  for (const auto& c : cases)
    if (c.name == name) return c;
  throw Error("no case " + name);
}

// With a dynamic spatial shape the int8 Winograd kernel is created, and a small bound shape runs
// on the dense kernel it then makes; a large one again on Winograd. Every shape gives the
// reference's integers within one step.
TEST(Int8Native, WinogradRebindsToDenseForSmallShapes) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "no AVX2";
  const IsaLimit isa(native::Isa::kAvx2);  // AMX, where there is one, takes every dense convolution
  test::Int8Builder b(77);
  auto x = b.input("x", {1, 12, 12, 32}, 0.02f, -4);
  b.g.add_output(b.conv(x, 24, 3, 1, {1, 1, 1, 1}, 1, ir::Activation::kRelu));
  b.g.value(x).shape[1] = ir::Dim::named("height");
  b.g.value(x).shape[2] = ir::Dim::named("width");
  b.g.infer_shapes();
  auto fast = Model::from_graph(b.g, {.threads = 2});
  auto ref = Model::from_graph(b.g, {.threads = 1, .backend = Backend::kReference});
  for (int64_t size : {12, 5, 12}) {
    Tensor in = Tensor::empty(DType::kInt8, {1, size, size, 32});
    std::mt19937 rng(static_cast<uint32_t>(size));
    std::uniform_int_distribution<int> d(-128, 127);
    for (int64_t i = 0; i < in.numel(); ++i) in.data_mutable<int8_t>()[i] = static_cast<int8_t>(d(rng));
    auto got = ints(fast->run_raw({in})[0]), want = ints(ref->run_raw({in})[0]);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_LE(std::abs(got[i] - want[i]), 1) << "size " << size << " at " << i;
    EXPECT_EQ(fast->kernel_names().at(0), size >= 7 ? "native_winograd_q8_f23" : "native_conv2d_nhwc_q8_avx2");
  }
}

// The byte-table lookup behind the int8 activation tables, on AVX-512 VBMI (where the machine has
// it) and AVX2, equals indexing the table: every byte value, lengths around both vector widths,
// unaligned starts, in place.
TEST(Int8Native, LookupBytesEqualsIndexing) {
  if (!native::cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(5);
  std::array<uint8_t, 256> table;
  for (auto& t : table) t = static_cast<uint8_t>(rng());
  std::vector<uint8_t> x(1100);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i < 256 ? i : rng());
  for (native::Isa isa : {native::Isa::kAvx512, native::Isa::kAvx2}) {
    const IsaLimit limit(isa);
    for (size_t count : {0, 1, 31, 32, 33, 63, 64, 65, 127, 256, 1099}) {
      for (size_t offset : {0, 3}) {
        SCOPED_TRACE("isa " + std::to_string(static_cast<int>(isa)) + ", count " + std::to_string(count) + ", offset " +
                     std::to_string(offset));
        std::vector<uint8_t> y(count + 2, 0xAB);
        native::lookup_bytes(table.data(), x.data() + offset, y.data() + 1, count);
        EXPECT_EQ(y.front(), 0xAB);
        EXPECT_EQ(y.back(), 0xAB);  // nothing written past the end
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(y[i + 1], table[x[offset + i]]) << "at " << i;
        std::vector<uint8_t> z(x.begin() + static_cast<std::ptrdiff_t>(offset),
                               x.begin() + static_cast<std::ptrdiff_t>(offset + count));
        native::lookup_bytes(table.data(), z.data(), z.data(), count);
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(z[i], table[x[offset + i]]) << "in place, at " << i;
      }
    }
  }
}

// Mul(x, Sigmoid(x)) runs as one table of the input byte (the engine fuses it): every byte value
// gives what the two ops' kernels give run one after the other, on both backends (the reference's
// Q31 multiply, and XNNPACK's multiply as the auto backend runs it unfused).
TEST(Int8Fused, SiluTableEqualsTheTwoOps) {
  auto cases = test::int8_cases();
  const ir::Graph& g = find_case(cases, "silu").graph;
  ASSERT_EQ(g.nodes().size(), 2u);
  Tensor x = Tensor::empty(DType::kInt8, {1, 4, 8, 16});
  for (int64_t i = 0; i < x.numel(); ++i) x.data_mutable<int8_t>()[i] = static_cast<int8_t>(i % 256 - 128);
  using runtime::KernelBackend;
  for (Backend backend : {Backend::kReference, Backend::kAuto}) {
    SCOPED_TRACE(backend == Backend::kAuto ? "auto" : "reference");
    auto model = Model::from_graph(g, {.threads = 2, .backend = backend});
    Tensor fused = model->run_raw({x})[0];
    ASSERT_EQ(model->kernel_names().size(), 1u);
    EXPECT_EQ(model->kernel_names()[0], backend == Backend::kAuto ? "q8_silu_lut_xnnpack_rounding" : "ref_q8_Silu");
    // The two nodes on the kernels the backend would give them unfused.
    std::vector<KernelBackend> order = backend == Backend::kAuto
                                           ? std::vector<KernelBackend>{KernelBackend::kNative, KernelBackend::kXnnpack,
                                                                        KernelBackend::kReference}
                                           : std::vector<KernelBackend>{KernelBackend::kReference};
    std::vector<Tensor> values(g.values().size());
    values[static_cast<size_t>(g.inputs()[0])] = x;
    std::string names;
    for (const ir::Node& n : g.nodes()) {
      auto k = runtime::KernelRegistry::instance().create({g, n}, order);
      names += std::string(k->name()) + " ";
      std::vector<Tensor> in;
      for (ir::ValueId v : n.inputs) in.push_back(values[static_cast<size_t>(v)]);
      Tensor y = Tensor::empty(DType::kInt8, x.shape());
      runtime::RunContext ctx;
      k->setup(in, std::span(&y, 1), ctx);
      k->run(ctx);
      values[static_cast<size_t>(n.outputs[0])] = y;
    }
    if (backend == Backend::kAuto) {
      EXPECT_NE(names.find("xnn_multiply_nd_qs8"), std::string::npos) << names;
    }
    EXPECT_EQ(ints(fused), ints(values[static_cast<size_t>(g.outputs()[0])])) << names;
  }
}

TEST(Int8Engine, QuantInfoRunAndRunRaw) {
  auto cases = test::int8_cases();
  const auto& c = find_case(cases, "small_cnn");
  auto model = Model::from_graph(c.graph, {.threads = 1});
  ASSERT_TRUE(model->inputs()[0].quant.has_value());
  EXPECT_EQ(model->inputs()[0].dtype, DType::kInt8);
  EXPECT_FLOAT_EQ(model->inputs()[0].quant->scale, 0.0157f);
  EXPECT_EQ(model->inputs()[0].quant->zero_point, -1);
  ASSERT_TRUE(model->outputs()[0].quant.has_value());
  Tensor x = random_input(c.graph.value(c.graph.inputs()[0]), 5);
  Tensor raw = model->run_raw({x})[0];
  EXPECT_EQ(raw.dtype(), DType::kInt8);
  // run() dequantizes the same integers.
  Tensor f = model->run({x})[0];
  ASSERT_EQ(f.dtype(), DType::kFloat32);
  const auto& q = *model->outputs()[0].quant;
  for (int64_t i = 0; i < f.numel(); ++i)
    EXPECT_FLOAT_EQ(f.data<float>()[i], static_cast<float>((raw.data<int8_t>()[i] - q.zero_point) *
                                                           static_cast<double>(q.scale)));
  // Float input is quantized with the input's params: the dequantized int8 input gives the same.
  Tensor xf = dequantized(x, c.graph.value(c.graph.inputs()[0]));
  EXPECT_EQ(ints(model->run_raw({xf})[0]), ints(raw));
  // A wrong dtype is refused with the input's name.
  try {
    model->run({Tensor::zeros(DType::kInt32, x.shape())});
    ADD_FAILURE() << "int32 input accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image"), std::string::npos) << e.what();
  }
}

TEST(Int8Engine, ReplansOnShapeChangeAndServesConcurrentCallers) {
  auto cases = test::int8_cases();
  ir::Graph g = find_case(cases, "small_cnn").graph;
  g.value(g.inputs()[0]).shape[0] = ir::Dim::named("batch");
  g.infer_shapes();
  for (Backend backend : {Backend::kAuto, Backend::kReference}) {
    auto model = Model::from_graph(g, {.threads = 2, .backend = backend});
    const ir::Value& in = g.value(g.inputs()[0]);
    std::vector<Tensor> singles;
    std::vector<std::vector<int64_t>> want;
    for (uint32_t s = 0; s < 3; ++s) {
      singles.push_back(random_input(in, 100 + s, 1));
      want.push_back(ints(model->run_raw({singles.back()})[0]));
    }
    // Batch 3 (a new plan), then batch 1 again: every row as computed alone.
    Tensor batch = Tensor::empty(DType::kInt8, {3, 16, 16, 3});
    for (size_t s = 0; s < 3; ++s)
      std::memcpy(batch.raw_mutable() + s * singles[s].nbytes(), singles[s].raw(),
                  singles[s].nbytes());
    auto got = ints(model->run_raw({batch})[0]);
    ASSERT_EQ(got.size(), 30u);
    for (size_t s = 0; s < 3; ++s)
      EXPECT_EQ(std::vector<int64_t>(got.begin() + static_cast<long>(s * 10),
                                     got.begin() + static_cast<long>(s * 10 + 10)),
                want[s]);
    EXPECT_EQ(ints(model->run_raw({singles[0]})[0]), want[0]);
    // Concurrent callers on one model, alternating shapes.
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 10; ++i) {
          if ((t + i) % 2) {
            if (ints(model->run_raw({batch})[0]) != got) ++mismatches;
          } else if (ints(model->run_raw({singles[static_cast<size_t>(t % 3)]})[0]) !=
                     want[static_cast<size_t>(t % 3)]) {
            ++mismatches;
          }
        }
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
  }
}

// Scales far outside anything a calibrator writes (a crafted file): every case runs or fails with
// an Error; nothing overflows into a crash.
TEST(Int8Engine, ExtremeScalesRunOrFailCleanly) {
  for (float factor : {1e-30f, 1e30f, 1e-6f, 1e6f})
    for (bool all : {false, true})
      for (Backend backend : {Backend::kReference, Backend::kAuto})
        for (auto& c : test::int8_cases()) {
          // The outputs' scale set to `factor`, or every quantized activation's scaled by it.
          ir::Graph g = c.graph;
          for (size_t v = 0; v < g.values().size(); ++v) {
            ir::Value& val = g.value(static_cast<ir::ValueId>(v));
            if (!val.quant || val.is_constant()) continue;
            if (all)
              val.quant->scale[0] *= factor * static_cast<float>(v % 3 + 1);
            else if (g.is_graph_output(static_cast<ir::ValueId>(v)))
              val.quant->scale = {factor};
          }
          try {
            auto model = Model::from_graph(g, {.threads = 1, .backend = backend});
            Tensor x = random_input(g.value(g.inputs()[0]), 1);
            Tensor y = model->run_raw({x})[0];
            EXPECT_EQ(y.numel(),
                      *ir::to_dims(g.value(g.outputs()[0]).shape) == y.shape() ? y.numel() : -1);
          } catch (const Error&) {
          }
        }
}

TEST(Int8Engine, BadQuantizationIsAClearError) {
  test::Int8Builder b(1);
  auto x = b.input("image", {1, 4, 4, 3}, 0.02f, 0);
  ir::PoolAttrs p;
  p.kernel = {2, 2};
  p.strides = {2, 2};
  p.pads = {0, 0, 0, 0};
  p.layout = ir::Layout::kNHWC;
  auto y = b.same(ir::OpKind::kMaxPool, p, {x});
  b.g.value(y).quant->scale[0] = 0.5f;  // TFLite requires equal params on a max pool
  b.g.add_output(y);
  try {
    Model::from_graph(b.g);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("MaxPool"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("equal input and output params"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace modex
