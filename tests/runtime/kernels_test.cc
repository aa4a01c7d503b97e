// Each XNNPACK kernel against the reference kernels, over its attribute space: single-op graphs
// run by the engine and by run_reference on the same random data.
#include <gtest/gtest.h>
#include <pthreadpool.h>

#include <atomic>
#include <thread>

#include "ir/graph.h"
#include "modex/runtime.h"
#include "runtime/kernels/native_conv.h"
#include "runtime/reference.h"
#include "runtime_test_util.h"

namespace modex::runtime_test {
namespace {
using namespace modex::ir;

Shape nhwc_input_shape(int64_t c) { return {Dim::named("batch"), Dim::named("height"), Dim::named("width"), Dim::fixed(c)}; }

// Runs `g` on `inputs` in the engine (XNNPACK backend) and the reference executor; outputs must
// agree, and the engine must have used `kernel` for some node (when given).
void expect_matches_reference(const Graph& g, const std::vector<Tensor>& inputs, const std::string& kernel,
                              int threads = 2, float tolerance = kF32Tolerance) {
  auto model = Model::from_graph(g, {.threads = threads});
  auto got = model->run(inputs);
  auto want = runtime::run_reference(g, inputs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(close(want[i], got[i], tolerance)) << "output " << i;
  if (!kernel.empty()) {  // "a|b": either kernel (e.g. the native one needs AVX2)
    auto names = model->kernel_names();
    bool found = false;
    for (size_t begin = 0; begin <= kernel.size();) {
      size_t end = std::min(kernel.find('|', begin), kernel.size());
      found |= std::find(names.begin(), names.end(), kernel.substr(begin, end - begin)) != names.end();
      begin = end + 1;
    }
    EXPECT_TRUE(found) << "kernel " << kernel << " not used";
  }
}

struct ConvCase {
  int64_t n, h, w, c, o, k, stride;
  std::vector<int64_t> pads;  // top, left, bottom, right
  int64_t dilation, groups;
  Activation act;
  bool bias;
  std::string kernel;
};

// `output`: the convolution is the graph's output. `fixed_size`: the input's height and width are
// static (else named dims), its batch named either way.
Graph conv_graph(const ConvCase& p, std::mt19937& rng, float weight_scale = 0.5f, bool output = true,
                 bool fixed_size = false) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32,
                          fixed_size ? Shape{Dim::named("batch"), Dim::fixed(p.h), Dim::fixed(p.w), Dim::fixed(p.c)}
                                     : nhwc_input_shape(p.c));
  ConvAttrs a;
  a.kernel = {p.k, p.k};
  a.strides = {p.stride, p.stride};
  a.pads = p.pads;
  a.dilations = {p.dilation, p.dilation};
  a.groups = p.groups;
  a.activation = p.act;
  a.layout = Layout::kNHWC;
  std::vector<ValueId> ins{x, g.add_constant("w", random_tensor({p.o, p.k, p.k, p.c / p.groups}, rng, -weight_scale, weight_scale))};
  if (p.bias) ins.push_back(g.add_constant("b", random_tensor({p.o}, rng)));
  const ValueId y = g.add_node1(OpKind::kConv, a, ins, "conv");
  if (output) g.add_output(y);
  return g;
}

// The native dense convolution's variants this machine runs: AVX-512 (where it has it; then no
// other kernel may take the node) and AVX2 (or XNNPACK, without AVX2), with the fewest output
// pixels Winograd takes on each. The tests run every case on each, under an IsaLimit.
struct DenseVariant {
  runtime::native::Isa isa;
  std::string kernel, winograd;
  int64_t min_winograd_pixels;
};
std::vector<DenseVariant> dense_variants() {
  std::vector<DenseVariant> v;
  if (runtime::native::isa_enabled(runtime::native::Isa::kAvx512))
    v.push_back({runtime::native::Isa::kAvx512, "native_conv2d_nhwc_f32_avx512", "native_winograd_f43_avx512", 16 * 16});
  v.push_back({runtime::native::Isa::kAvx2, "native_conv2d_nhwc_f32_avx2|xnn_conv2d_nhwc_f32",
               "native_winograd_f43|xnn_conv2d_nhwc_f32", 10 * 10});
  return v;
}

TEST(XnnKernels, ConvolutionMatchesReference) {
  for (const DenseVariant& variant : dense_variants()) {
    const IsaLimit isa(variant.isa);
    const std::string dense = variant.kernel, conv = "xnn_conv2d_nhwc_f32",
                      dw = "native_dwconv2d_nhwc_f32_avx512|native_dwconv2d_nhwc_f32_avx2|xnn_dwconv2d_nhwc_f32", xnn_dw = "xnn_dwconv2d_nhwc_f32";
    std::vector<ConvCase> cases = {
        {1, 9, 11, 8, 16, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, dense},
        {2, 10, 9, 8, 12, 3, 2, {0, 1, 1, 0}, 1, 1, Activation::kRelu, true, dense},   // asymmetric pads
        {1, 7, 7, 16, 24, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu6, false, dense},  // 1x1, no bias
        {1, 13, 12, 4, 8, 5, 1, {4, 4, 4, 4}, 2, 1, Activation::kNone, true, dense},    // dilation
        {1, 23, 21, 3, 16, 7, 2, {3, 3, 3, 3}, 1, 1, Activation::kRelu, true, dense},   // ResNet stem
        {2, 8, 8, 16, 32, 3, 1, {1, 1, 1, 1}, 1, 4, Activation::kHardSwish, true, conv},  // grouped
        {1, 12, 10, 16, 16, 3, 2, {1, 1, 1, 1}, 1, 16, Activation::kRelu6, true, dw},     // depthwise
        {1, 11, 11, 24, 24, 5, 1, {2, 2, 2, 2}, 1, 24, Activation::kSilu, true, dw},      // depthwise 5x5
        {1, 9, 9, 8, 16, 3, 1, {1, 1, 1, 1}, 1, 8, Activation::kSigmoid, true, conv},     // multiplier 2
        {3, 6, 5, 32, 8, 3, 1, {1, 0, 1, 2}, 1, 1, Activation::kSilu, true, dense},
        {1, 1, 1, 16, 4, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kSilu, true, dense},  // squeeze-excite 1x1
        {2, 15, 13, 40, 37, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu, true, dense},  // 1x1 direct, row/col tails
        {1, 9, 8, 300, 21, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, dense},   // long K: small row blocks
        {1, 16, 16, 24, 40, 1, 2, {0, 0, 0, 0}, 1, 1, Activation::kNone, false, dense},  // 1x1 stride 2
        // Few output pixels, long K (ResNet layer4): at 2 threads the output channels are split and
        // the rows gathered once into a shared buffer.
        {1, 5, 5, 64, 72, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, dense},
        {1, 4, 3, 130, 50, 3, 2, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, dense},
        {1, 3, 3, 96, 136, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu6, true, dense},  // 1x1 direct, split
        {2, 7, 7, 512, 40, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kSilu, false, dense},
        // AVX-512 strips of 8 and 10 rows for the last 13 to 23 (17 = 10 + 7, 19 = 12 + 7,
        // 22 = 12 + 10, 49 = 3 x 12 + 8 + 5); K blocks of one tap each (C = 256, a multiple of
        // the block), taps outside the input read as zeros, at stride 1 and 2.
        {1, 1, 17, 32, 64, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu, true, dense},
        {1, 1, 19, 32, 64, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, dense},
        {1, 2, 11, 48, 96, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu6, true, dense},
        {1, 7, 7, 256, 64, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, dense},
        {1, 9, 8, 256, 48, 3, 2, {0, 1, 1, 0}, 1, 1, Activation::kNone, true, dense},
        // Indirect A (kernel rows read in place, border windows gathered): odd sizes, asymmetric
        // pads, stride 2, a kernel row split into two K blocks (5 x 120 = 600), 1x1 stride 2.
        {2, 9, 8, 32, 20, 3, 2, {0, 1, 1, 0}, 1, 1, Activation::kRelu, true, dense},
        {1, 6, 7, 120, 18, 5, 1, {2, 2, 2, 2}, 1, 1, Activation::kNone, true, dense},
        {1, 10, 10, 64, 16, 1, 2, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, dense},
        {3, 5, 6, 64, 33, 3, 1, {2, 0, 0, 2}, 1, 1, Activation::kSilu, true, dense},
        // Padded (kernel rows read in place, border windows from zero-padded copies with the input's
        // row stride): the 3x3 and 7x7 stems over 3 channels (fixed 9- and 21-float rows), windows
        // stopping short of the last input row and column, pads wider than the stride, a 5-channel
        // input, O off the 16-column panels, an input narrower than the kernel (no window inside).
        {2, 17, 15, 3, 32, 3, 2, {1, 1, 1, 1}, 1, 1, Activation::kSilu, true, dense},
        {1, 20, 18, 3, 64, 7, 2, {3, 2, 2, 3}, 1, 1, Activation::kRelu, true, dense},
        {1, 10, 11, 5, 20, 3, 2, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, dense},
        {1, 6, 6, 3, 8, 3, 2, {2, 2, 2, 2}, 1, 1, Activation::kRelu6, true, dense},
        {2, 9, 7, 3, 24, 7, 1, {3, 3, 3, 3}, 1, 1, Activation::kNone, false, dense},
        {1, 5, 4, 3, 16, 7, 1, {3, 3, 3, 3}, 1, 1, Activation::kRelu, true, dense},  // narrower than the kernel
        // Depthwise (native for channels in multiples of 8, unit dilation): blocks of four interior
        // pixels and the rest, borders on both sides, all-border tiny inputs, stride 2 with
        // asymmetric pads, a 7-wide kernel (the generic path), activations fused or after.
        {1, 7, 7, 40, 40, 5, 2, {2, 2, 2, 2}, 1, 40, Activation::kNone, false, dw},  // 2 threads: channel groups
        {2, 9, 13, 32, 32, 3, 1, {1, 1, 1, 1}, 1, 32, Activation::kSilu, true, dw},
        {1, 3, 2, 8, 8, 3, 1, {1, 1, 1, 1}, 1, 8, Activation::kRelu, true, dw},
        {1, 15, 17, 16, 16, 3, 2, {0, 1, 1, 0}, 1, 16, Activation::kSigmoid, true, dw},
        {1, 6, 9, 8, 8, 7, 1, {3, 3, 3, 3}, 1, 8, Activation::kHardSwish, true, dw},
        {1, 14, 14, 24, 24, 5, 1, {2, 2, 2, 2}, 1, 24, Activation::kRelu6, true, dw},
        {1, 10, 10, 12, 12, 3, 1, {1, 1, 1, 1}, 1, 12, Activation::kRelu6, true, xnn_dw},  // 12 channels
        {1, 10, 10, 16, 16, 3, 1, {2, 2, 2, 2}, 2, 16, Activation::kNone, true, xnn_dw},   // dilation 2
    };
    std::mt19937 rng(1);
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE("case " + std::to_string(i) + ", " + variant.kernel);
      const ConvCase& p = cases[i];
      Graph g = conv_graph(p, rng);
      expect_matches_reference(g, {random_tensor({p.n, p.h, p.w, p.c}, rng)}, p.kernel, i % 2 ? 1 : 2);
    }
  }
}

// The AVX-512 tile of a panel pair (the assembly kernels, 6 to 12 rows) against sums computed
// here: every row count, partial second panels, K of 1 (no pair of k), odd and even, kernel-row
// segments, a later K block (accumulating into c), the fused residual, the clamp only on the last
// K block, a prefetch share; rows past `rows` and columns past `cols` left untouched.
TEST(NativeKernels, Avx512TileMatchesItsSums) {
  namespace nv = runtime::native;
  if (!nv::isa_enabled(nv::Isa::kAvx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  constexpr int64_t kLd = 40, kStride = 100;
  const nv::MicroKernel kernels[] = {nv::micro_kernel_avx512<2, 0, 6>, nv::micro_kernel_avx512<2, 0, 8>,
                                     nv::micro_kernel_avx512<2, 0, 10>, nv::micro_kernel_avx512<2, 0, 12>};
  const int64_t tile_rows[] = {6, 8, 10, 12};
  int checked = 0;
  for (int t = 0; t < 4; ++t)
    for (int64_t rows = 1; rows <= tile_rows[t]; ++rows)
      for (int64_t cols : {17, 24, 32})
        for (int64_t K : {1, 2, 7, 64})
          for (int64_t segments : {1, 3})
            for (int variant = 0; variant < 4; ++variant) {
              const bool accumulate = variant & 1, last = variant != 1, with_residual = variant >= 2;
              SCOPED_TRACE("rows " + std::to_string(rows) + " of " + std::to_string(tile_rows[t]) + ", cols " +
                           std::to_string(cols) + ", K " + std::to_string(K) + ", segments " +
                           std::to_string(segments) + ", variant " + std::to_string(variant));
              std::vector<float> a(static_cast<size_t>(12 * (segments * kStride + 8)));
              for (float& v : a) v = u(rng);
              const float* rowp[nv::kMaxMr];
              for (int64_t i = 0; i < 12; ++i)
                rowp[i] = a.data() + std::min(i, rows - 1) * (segments * kStride + 8);
              // B: the pair's interleaved rows, 64-byte aligned, zero past cols.
              std::vector<float> b_store(static_cast<size_t>(segments * K * 32 + 16), 0.0f);
              float* b = b_store.data() + (16 - reinterpret_cast<uintptr_t>(b_store.data()) / 4 % 16) % 16;
              for (int64_t k = 0; k < segments * K; ++k)
                for (int64_t j = 0; j < cols; ++j) b[k * 32 + j] = u(rng);
              std::vector<float> bias(32), c(static_cast<size_t>(14 * kLd)), residual(c.size());
              for (float& v : bias) v = u(rng);
              for (float& v : c) v = u(rng);
              for (float& v : residual) v = u(rng);
              const std::vector<float> before = c;
              const float lo = -0.5f, hi = 0.75f;
              kernels[t](K, rowp, b, bias.data(), accumulate, c.data(), kLd, rows, cols, last, lo, hi, false, b,
                         K / 2, segments, kStride, with_residual ? residual.data() : nullptr);
              for (int64_t r = 0; r < 14; ++r)
                for (int64_t j = 0; j < kLd; ++j) {
                  const size_t at = static_cast<size_t>(r * kLd + j);
                  if (r >= rows || j >= cols) {
                    ASSERT_EQ(c[at], before[at]) << "row " << r << " column " << j << " written";
                    continue;
                  }
                  double want = accumulate ? before[at] : bias[static_cast<size_t>(j)];
                  for (int64_t s = 0; s < segments; ++s)
                    for (int64_t k = 0; k < K; ++k) want += double{rowp[r][s * kStride + k]} * b[(s * K + k) * 32 + j];
                  if (last && with_residual) want += residual[at];
                  if (last) want = std::clamp(want, double{lo}, double{hi});
                  ASSERT_NEAR(c[at], want, 1e-4) << "row " << r << " column " << j;
                }
              ++checked;
            }
  EXPECT_GT(checked, 1000);
}

// The native depthwise kernel on AVX-512 (where the machine has it: 16 channels a vector, a last 8
// on AVX2) and on AVX2 alone, against the reference: channel counts of 1, 2 and 2.5 wide vectors,
// the unrolled 3x3 / 5x5 strides and the generic 7-wide path, borders, channel groups at 2
// threads, fused clamp and SiLU.
TEST(NativeKernels, DepthwiseMatchesReferenceOnEachIsa) {
  if (!runtime::native::cpu_has_avx2_fma()) GTEST_SKIP() << "no AVX2";
  std::vector<ConvCase> cases = {
      {1, 9, 13, 16, 16, 3, 1, {1, 1, 1, 1}, 1, 16, Activation::kSilu, true, ""},
      {2, 11, 10, 40, 40, 3, 2, {0, 1, 1, 0}, 1, 40, Activation::kRelu6, true, ""},
      {1, 7, 7, 32, 32, 5, 2, {2, 2, 2, 2}, 1, 32, Activation::kNone, false, ""},
      {1, 14, 12, 24, 24, 5, 1, {2, 2, 2, 2}, 1, 24, Activation::kSilu, true, ""},
      {1, 6, 9, 48, 48, 7, 1, {3, 3, 3, 3}, 1, 48, Activation::kRelu, true, ""},
      {1, 3, 2, 8, 8, 3, 1, {1, 1, 1, 1}, 1, 8, Activation::kNone, true, ""},
  };
  for (runtime::native::Isa isa : {runtime::native::Isa::kAvx512, runtime::native::Isa::kAvx2}) {
    const bool wide = isa == runtime::native::Isa::kAvx512;
    if (wide && !runtime::native::isa_enabled(isa)) continue;
    const IsaLimit limit(isa);
    std::mt19937 rng(3);
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE("case " + std::to_string(i) + (wide ? " (AVX-512)" : " (AVX2)"));
      const ConvCase& p = cases[i];
      Graph g = conv_graph(p, rng);
      expect_matches_reference(g, {random_tensor({p.n, p.h, p.w, p.c}, rng)},
                               wide ? "native_dwconv2d_nhwc_f32_avx512" : "native_dwconv2d_nhwc_f32_avx2",
                               i % 2 ? 1 : 2);
    }
  }
}

// 3x3 stride-1 convolutions on the Winograd F(4x4, 3x3) kernel: output sizes that are not whole
// tiles (odd, even, 14 x 14), C and O off the 8- and 16-float vectors (O = 24: a last panel of 8
// columns), C deeper than one K block (530), pads 0 / 1 / asymmetric, batch 1 to 3, every fused
// activation path (clamp, SiLU in registers, HardSwish as a separate pass). Its transforms round
// differently from a direct sum (measured here: up to ~1.3e-5 of max |output| at C = 530, ~5e-6
// below, where the dense kernel stays under 1e-6), hence 1e-4 rather than kF32Tolerance. Small
// layers (under 10 x 10 output pixels, with AVX-512 under 16 x 16; under 8 channels) must stay on
// the dense kernel.
TEST(NativeKernels, WinogradConvolutionMatchesReference) {
  for (const DenseVariant& variant : dense_variants()) {
    const IsaLimit isa(variant.isa);
    const std::string wino = variant.winograd, dense = variant.kernel;
    std::vector<ConvCase> cases = {
        {1, 17, 17, 20, 35, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, wino},
        {3, 18, 16, 16, 16, 3, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu, true, wino},
        {1, 20, 19, 33, 24, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu6, true, wino},
        {2, 14, 14, 64, 17, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, false, wino},
        {1, 18, 15, 24, 40, 3, 1, {2, 0, 0, 2}, 1, 1, Activation::kRelu, true, wino},
        {1, 17, 16, 530, 20, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, wino},
        {3, 16, 17, 40, 48, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kSilu, true, wino},
        {1, 16, 16, 24, 16, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kHardSwish, true, wino},
        {1, 10, 10, 8, 9, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, wino},   // smallest taken (AVX2)
        {2, 7, 7, 64, 64, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, dense},   // 7 x 7 output
        {1, 20, 20, 4, 32, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, dense},  // C = 4
        {1, 20, 20, 32, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, dense},  // O = 4
    };
    std::mt19937 rng(5);
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE("case " + std::to_string(i) + ", " + variant.winograd);
      const ConvCase& p = cases[i];
      const int64_t pixels = (p.h + p.pads[0] + p.pads[2] - 2) * (p.w + p.pads[1] + p.pads[3] - 2);
      const std::string& kernel = p.kernel == wino && pixels < variant.min_winograd_pixels ? dense : p.kernel;
      Graph g = conv_graph(p, rng);
      expect_matches_reference(g, {random_tensor({p.n, p.h, p.w, p.c}, rng)}, kernel, i % 2 ? 1 : 2, 1e-4f);
    }
  }
}

// The declared shape is dynamic, so the kernel decides per bound shape: a small input after a
// large one runs on the dense kernel it creates then, and a large one again on Winograd.
TEST(NativeKernels, WinogradRebindsToDenseForSmallShapes) {
  for (const DenseVariant& variant : dense_variants()) {
    const IsaLimit isa(variant.isa);
    std::mt19937 rng(6);
    ConvCase p{1, 16, 16, 32, 32, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, ""};
    Graph g = conv_graph(p, rng);
    auto model = Model::from_graph(g, {.threads = 2});
    for (int64_t size : {16, 6, 20}) {
      SCOPED_TRACE("size " + std::to_string(size) + ", " + variant.kernel);
      Tensor x = random_tensor({1, size, size, 32}, rng);
      EXPECT_TRUE(close(runtime::run_reference(g, {x})[0], model->run({x})[0], 1e-4f));
      auto names = model->kernel_names();
      ASSERT_EQ(names.size(), 1u);
      if (names[0] != "xnn_conv2d_nhwc_f32") {  // no AVX2: neither native kernel
        const std::string& want = size * size >= variant.min_winograd_pixels ? variant.winograd : variant.kernel;
        EXPECT_EQ(names[0], want.substr(0, want.find('|')));
      }
    }
  }
}

// The engine fuses Add(conv, residual) (and its activation) into the dense convolution, whose
// kernels add the residual per block of output: every path of the dense kernel (1x1 in place,
// indirect rows, the padded stem, gathered dilated rows, the shared gather of few pixels at 2
// threads), Winograd and its dense fallback, each activation (clamp and SiLU in the block, the
// rest as a pass after), either operand order, and two convolutions feeding one Add (a ResNet
// downsample: the later one takes it). Against the reference running the unfused graph, with the
// engine left one kernel per convolution and no Add.
TEST(NativeKernels, ResidualAddFusesIntoTheConvolution) {
  struct ResidualCase {
    ConvCase conv;
    Activation act;  // the Add's
    bool residual_first, second_conv;
  };
  for (const DenseVariant& variant : dense_variants()) {
    const IsaLimit isa(variant.isa);
    const std::string dense = variant.kernel, wino = variant.winograd;
    std::vector<ResidualCase> cases = {
        {{1, 9, 10, 40, 37, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, dense}, Activation::kRelu, false, false},
        {{2, 9, 8, 32, 20, 3, 2, {0, 1, 1, 0}, 1, 1, Activation::kNone, true, dense}, Activation::kNone, true, false},
        {{1, 20, 18, 3, 64, 7, 2, {3, 2, 2, 3}, 1, 1, Activation::kNone, true, dense}, Activation::kRelu6, false, false},
        {{1, 13, 12, 4, 8, 5, 1, {4, 4, 4, 4}, 2, 1, Activation::kNone, true, dense}, Activation::kSilu, false, false},
        {{1, 5, 5, 64, 72, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, dense}, Activation::kRelu, true, false},
        {{1, 3, 3, 96, 136, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, false, dense}, Activation::kHardSwish, false, false},
        {{1, 18, 17, 24, 40, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, wino}, Activation::kRelu, false, false},
        {{2, 17, 16, 16, 20, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, wino}, Activation::kSilu, true, false},
        {{1, 7, 7, 64, 64, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, dense}, Activation::kRelu, false, false},
        {{1, 16, 16, 24, 40, 1, 2, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, dense}, Activation::kRelu, false, true},
        {{2, 14, 14, 16, 32, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, false, dense}, Activation::kNone, true, true},
    };
    std::mt19937 rng(9);
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE("case " + std::to_string(i) + ", " + variant.kernel);
      const ResidualCase& rc = cases[i];
      const ConvCase& p = rc.conv;
      Graph g = conv_graph(p, rng, 0.5f, false, true);
      const ValueId conv_out = *g.find_value("conv");
      const int64_t oh = g.value(conv_out).shape[1].value, ow = g.value(conv_out).shape[2].value;
      ValueId residual;
      std::vector<Tensor> inputs{random_tensor({p.n, p.h, p.w, p.c}, rng)};
      if (rc.second_conv) {  // a 1x1 convolution of the same input, with the first one's stride
        ConvAttrs a;
        a.kernel = {1, 1};
        a.strides = {p.stride, p.stride};
        a.layout = Layout::kNHWC;
        residual = g.add_node1(OpKind::kConv, a, {g.inputs()[0], g.add_constant("w2", random_tensor({p.o, 1, 1, p.c}, rng, -0.5f, 0.5f))}, "conv2");
      } else {
        residual = g.add_input("r", DType::kFloat32, g.value(conv_out).shape);
        inputs.push_back(random_tensor({p.n, oh, ow, p.o}, rng));
      }
      std::vector<ValueId> operands = rc.residual_first ? std::vector<ValueId>{residual, conv_out} : std::vector<ValueId>{conv_out, residual};
      BinaryAttrs add_attrs;
      add_attrs.activation = rc.act;
      g.add_output(g.add_node1(OpKind::kAdd, add_attrs, operands, "add"));
      const std::string& kernel = p.kernel == wino && oh * ow < variant.min_winograd_pixels ? dense : p.kernel;
      const float tolerance = p.kernel == wino ? 1e-4f : kF32Tolerance;
      expect_matches_reference(g, inputs, kernel, i % 2 ? 1 : 2, tolerance);
      auto model = Model::from_graph(g, {.threads = 1});
      model->run(inputs);
      auto names = model->kernel_names();
      ASSERT_FALSE(names.empty());
      if (names[0] != "xnn_conv2d_nhwc_f32") {  // no AVX2: XNNPACK's convolution, and the Add stays
        EXPECT_EQ(names.size(), rc.second_conv ? 2u : 1u);
        for (const std::string& name : names) EXPECT_EQ(name.find("add"), std::string::npos) << name;
      }
    }
  }
}

// The Add stays a node when the convolution's output is also read elsewhere (here: a graph
// output), and when a dim is unknown (a dynamic height: the residual could broadcast).
TEST(NativeKernels, ResidualAddIsNotFusedWhenUnsafe) {
  std::mt19937 rng(10);
  ConvCase p{1, 8, 8, 16, 16, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, ""};
  for (bool fixed_size : {true, false}) {
    Graph g = conv_graph(p, rng, 0.5f, /*output=*/fixed_size, fixed_size);
    const ValueId conv_out = *g.find_value("conv");
    const ValueId r = g.add_input("r", DType::kFloat32, {Dim::named("batch"), Dim::unknown(), Dim::fixed(8), Dim::fixed(16)});
    g.add_output(g.add_node1(OpKind::kAdd, BinaryAttrs{}, {conv_out, r}, "add"));
    for (int64_t rh : {8, 1}) {  // a residual of height 1 broadcasts
      if (fixed_size && rh == 1) continue;
      const std::vector<Tensor> inputs{random_tensor({1, 8, 8, 16}, rng), random_tensor({1, rh, 8, 16}, rng)};
      expect_matches_reference(g, inputs, "");
      auto model = Model::from_graph(g, {.threads = 1});
      model->run(inputs);
      EXPECT_EQ(model->kernel_names().size(), 2u);
    }
  }
}

// The harness must be able to fail: one changed weight has to be noticed.
TEST(XnnKernels, ComparisonDetectsAPerturbedWeight) {
  std::mt19937 rng(2);
  ConvCase p{1, 8, 8, 8, 8, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, ""};
  Graph g = conv_graph(p, rng);
  Tensor x = random_tensor({1, 8, 8, 8}, rng);
  auto got = Model::from_graph(g)->run({x});
  Graph mutated = g;
  Tensor w = mutated.value(*mutated.find_value("w")).constant.clone();
  w.data_mutable<float>()[17] += 0.05f;
  mutated.value(*mutated.find_value("w")).constant = w;
  EXPECT_TRUE(close(runtime::run_reference(g, {x})[0], got[0]));
  EXPECT_FALSE(close(runtime::run_reference(mutated, {x})[0], got[0]));
}

struct PoolCase {
  bool max;
  int64_t h, w, k, stride;
  std::vector<int64_t> pads;
  int64_t dilation;
  bool ceil_mode, count_include_pad;
  std::string kernel;  // "" when the reference pool is expected
};

TEST(XnnKernels, PoolingMatchesReference) {
  const std::string mx = "xnn_max_pooling2d_nhwc_f32", avg = "xnn_average_pooling2d_nhwc_f32";
  std::vector<PoolCase> cases = {
      {true, 12, 12, 3, 2, {1, 1, 1, 1}, 1, false, false, mx},  // ResNet
      {true, 11, 9, 2, 2, {0, 0, 0, 0}, 1, true, false, mx},    // ceil_mode, odd sizes
      {true, 10, 10, 3, 2, {0, 0, 0, 0}, 1, true, false, mx},
      {true, 13, 12, 3, 1, {2, 2, 2, 2}, 2, false, false, mx},  // dilation
      {true, 9, 9, 3, 3, {1, 1, 1, 1}, 1, true, false, mx},
      {false, 10, 11, 3, 1, {1, 1, 1, 1}, 1, false, false, avg},
      {false, 10, 11, 3, 2, {1, 1, 1, 1}, 1, false, true, ""},  // count_include_pad: reference
      {false, 11, 9, 2, 2, {0, 0, 0, 0}, 1, true, false, avg},   // ceil_mode overhang is never counted
      {false, 11, 9, 3, 2, {0, 0, 0, 0}, 1, true, true, avg},
      {false, 11, 9, 3, 2, {1, 1, 1, 1}, 1, true, false, avg},
      {false, 8, 8, 2, 2, {0, 0, 0, 0}, 1, false, true, avg},
  };
  std::mt19937 rng(3);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const PoolCase& p = cases[i];
    Graph g;
    ValueId x = g.add_input("x", DType::kFloat32, nhwc_input_shape(6));
    PoolAttrs a;
    a.kernel = {p.k, p.k};
    a.strides = {p.stride, p.stride};
    a.pads = p.pads;
    a.dilations = {p.dilation, p.dilation};
    a.ceil_mode = p.ceil_mode;
    a.count_include_pad = p.count_include_pad;
    a.layout = Layout::kNHWC;
    g.add_output(g.add_node1(p.max ? OpKind::kMaxPool : OpKind::kAveragePool, a, {x}, "pool"));
    expect_matches_reference(g, {random_tensor({2, p.h, p.w, 6}, rng)}, p.kernel);
  }
}

// The spatial mean (native on AVX2: bands of rows as work items, fewer or more rows than bands,
// 64-channel blocks of vectors and a scalar tail).
TEST(XnnKernels, GlobalMeanMatchesReference) {
  std::mt19937 rng(4);
  struct Case {
    Dims in;
    int threads;
  };
  for (bool keepdims : {true, false})
    for (const Case& c : {Case{{3, 7, 9, 20}, 2}, Case{{1, 15, 15, 150}, 2}, Case{{2, 3, 2, 64}, 1}, Case{{1, 2, 2, 5}, 2},
                          Case{{2, 40, 10, 72}, 2}, Case{{1, 40, 10, 72}, 3}}) {
      Graph g;
      ValueId x = g.add_input("x", DType::kFloat32, nhwc_input_shape(c.in[3]));
      // An NHWC op first so the graph is taken as NHWC.
      PoolAttrs pa;
      pa.kernel = {2, 2};
      pa.layout = Layout::kNHWC;
      ValueId p = g.add_node1(OpKind::kMaxPool, pa, {x}, "pool");
      g.add_output(g.add_node1(OpKind::kReduceMean, ReduceAttrs{{1, 2}, keepdims}, {p}, "mean"));
      expect_matches_reference(g, {random_tensor(c.in, rng)}, "native_mean_hw_f32_avx2|xnn_global_average_pooling_nwc_f32",
                               c.threads);
    }
}

TEST(XnnKernels, FullyConnectedMatchesReference) {
  std::mt19937 rng(5);
  for (Activation act : {Activation::kNone, Activation::kRelu, Activation::kHardSwish, Activation::kSigmoid}) {
    for (bool bias : {true, false}) {
      Graph g;
      ValueId x = g.add_input("x", DType::kFloat32, {Dim::named("batch"), Dim::fixed(64)});
      std::vector<ValueId> ins{x, g.add_constant("w", random_tensor({10, 64}, rng))};
      if (bias) ins.push_back(g.add_constant("b", random_tensor({10}, rng)));
      g.add_output(g.add_node1(OpKind::kGemm, GemmAttrs{act}, ins, "fc"));
      expect_matches_reference(g, {random_tensor({3, 64}, rng)}, "xnn_fully_connected_nc_f32");
    }
  }
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, {Dim::named("batch"), Dim::fixed(32)});
  g.add_output(g.add_node1(OpKind::kMatMul, NoAttrs{}, {x, g.add_constant("w", random_tensor({32, 7}, rng))}, "mm"));
  expect_matches_reference(g, {random_tensor({5, 32}, rng)}, "xnn_fully_connected_nc_f32");
}

struct BinaryCase {
  OpKind op;
  Dims a, b;
  bool b_constant;
  Activation act;
  std::string kernel = {};  // default: the XNNPACK kernel of the op
};

TEST(XnnKernels, BinaryMatchesReference) {
  std::vector<BinaryCase> cases = {
      // Residual adds (native on AVX2: blocks of elements among the threads, tails off the 8-float
      // vectors and the 4096-element blocks).
      {OpKind::kAdd, {2, 5, 6, 8}, {2, 5, 6, 8}, false, Activation::kNone, "native_add_f32_avx2|xnn_add_nd_f32"},
      {OpKind::kAdd, {2, 5, 6, 8}, {2, 5, 6, 8}, false, Activation::kRelu, "native_add_f32_avx2|xnn_add_nd_f32"},
      {OpKind::kAdd, {1, 64, 64, 65}, {1, 64, 64, 65}, false, Activation::kRelu6, "native_add_f32_avx2|xnn_add_nd_f32"},
      // squeeze-excite scale (NCHW; NHWC in the engine)
      {OpKind::kMul, {2, 8, 5, 6}, {2, 8, 1, 1}, false, Activation::kNone, "native_channel_scale_f32_avx2|xnn_multiply_nd_f32"},
      {OpKind::kSub, {3, 4, 7}, {4, 1}, true, Activation::kRelu6},
      {OpKind::kDiv, {5, 1, 8}, {1, 6, 1}, false, Activation::kNone},  // both sides broadcast
      {OpKind::kMul, {4, 9}, {9}, true, Activation::kHardSwish},
      {OpKind::kAdd, {4, 9}, {}, true, Activation::kSigmoid},  // scalar
      {OpKind::kSub, {2, 3, 4, 5}, {1, 3, 1, 1}, true, Activation::kSilu},
      {OpKind::kDiv, {2, 3, 4, 5}, {3, 1, 1}, true, Activation::kNone},
      // NHWC squeeze-excite scaling, [N, H, W, C] by [N or 1, 1, 1, C] (native on AVX2): a
      // channel tail, the batch broadcast, the gate as the first operand with a fused ReLU.
      {OpKind::kMul, {2, 5, 7, 24}, {2, 1, 1, 24}, false, Activation::kNone, "native_channel_scale_f32_avx2|xnn_multiply_nd_f32"},
      {OpKind::kMul, {3, 4, 4, 13}, {1, 1, 1, 13}, false, Activation::kRelu6, "native_channel_scale_f32_avx2|xnn_multiply_nd_f32"},
      {OpKind::kMul, {1, 1, 1, 16}, {1, 6, 6, 16}, false, Activation::kRelu, "native_channel_scale_f32_avx2|xnn_multiply_nd_f32"},
  };
  const char* names[] = {"xnn_add_nd_f32", "xnn_subtract_nd_f32", "xnn_multiply_nd_f32", "xnn_divide_nd_f32"};
  std::mt19937 rng(6);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const BinaryCase& p = cases[i];
    Graph g;
    auto shape = [](const Dims& d) { return static_shape(d); };
    ValueId a = g.add_input("a", DType::kFloat32, shape(p.a));
    Tensor bt = random_tensor(p.b, rng, 0.5f, 1.5f);  // away from zero for Div
    std::vector<Tensor> inputs{random_tensor(p.a, rng)};
    ValueId b;
    if (p.b_constant) {
      b = g.add_constant("b", bt);
    } else {
      b = g.add_input("b", DType::kFloat32, shape(p.b));
      inputs.push_back(bt);
    }
    g.add_output(g.add_node1(p.op, BinaryAttrs{p.act}, {a, b}, "op"));
    size_t which = p.op == OpKind::kAdd ? 0 : p.op == OpKind::kSub ? 1 : p.op == OpKind::kMul ? 2 : 3;
    expect_matches_reference(g, inputs, p.kernel.empty() ? names[which] : p.kernel, i % 2 ? 1 : 2);
  }
}

TEST(XnnKernels, UnaryMatchesReference) {
  struct Case {
    OpKind op;
    OpAttrs attrs;
    std::string kernel;
  };
  std::vector<Case> cases = {
      {OpKind::kRelu, NoAttrs{}, "xnn_clamp_nc_f32"},
      {OpKind::kClip, ClipAttrs{-0.5f, 0.25f}, "xnn_clamp_nc_f32"},
      {OpKind::kLeakyRelu, LeakyReluAttrs{0.1f}, "xnn_leaky_relu_nc_f32"},
      {OpKind::kSigmoid, NoAttrs{}, "xnn_sigmoid_nc_f32"},
      {OpKind::kHardSwish, NoAttrs{}, "xnn_hardswish_nc_f32"},
      {OpKind::kSilu, NoAttrs{}, "xnn_silu_f32"},
      {OpKind::kTanh, NoAttrs{}, "ref_Tanh"},
      {OpKind::kHardSigmoid, HardSigmoidAttrs{0.25f, 0.4f}, "xnn_hardsigmoid_f32"},
  };
  std::mt19937 rng(7);
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(op_name(c.op)));
    Graph g;
    ValueId x = g.add_input("x", DType::kFloat32, {Dim::named("batch"), Dim::fixed(1000)});
    g.add_output(g.add_node1(c.op, c.attrs, {x}, "op"));
    expect_matches_reference(g, {random_tensor({3, 1000}, rng, -6.0f, 6.0f)}, c.kernel);
  }
}

// The native transpose over each of its modes: a plain copy (only size-1 axes move), whole rows
// (the last axis stays), 8x8 tiles (the last two merged axes swap: NHWC -> NCHW, with tails off
// the tiles and batches), and the strided walk (any other permutation); the default reversed
// permutation too.
TEST(NativeKernels, TransposeMatchesReference) {
  struct Case {
    Dims shape;
    std::vector<int64_t> perm;
  };
  std::vector<Case> cases = {
      {{1, 5, 1, 7}, {2, 0, 1, 3}},            // copy
      {{2, 3, 4, 5}, {1, 0, 2, 3}},            // rows of 20
      {{2, 13, 11, 19}, {0, 3, 1, 2}},         // NHWC -> NCHW: [2, 143, 19] tiles and tails
      {{1, 56, 56, 64}, {0, 3, 1, 2}},         // a feature map, split among the threads
      {{3, 8, 16}, {0, 2, 1}},                 // whole tiles only
      {{4, 6, 7}, {2, 1, 0}},                  // walk
      {{2, 3, 4, 5, 6}, {4, 2, 0, 3, 1}},      // walk, rank 5
      {{3, 1, 4, 2}, {}},                      // reversed
      {{9, 10}, {1, 0}},                       // one 2-D transpose
  };
  std::mt19937 rng(12);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    Graph g;
    ValueId x = g.add_input("x", DType::kFloat32, static_shape(cases[i].shape));
    g.add_output(g.add_node1(OpKind::kTranspose, TransposeAttrs{cases[i].perm}, {x}, "transpose"));
    expect_matches_reference(g, {random_tensor(cases[i].shape, rng)}, "native_transpose_x32|ref_Transpose",
                             i % 2 ? 1 : 2, 0.0f);
  }
}

TEST(XnnKernels, SoftmaxPadConcatTransposeMatchReference) {
  std::mt19937 rng(8);
  {
    Graph g;
    ValueId x = g.add_input("x", DType::kFloat32, {Dim::named("batch"), Dim::fixed(10)});
    g.add_output(g.add_node1(OpKind::kSoftmax, AxisAttrs{1}, {x}, "softmax"));
    expect_matches_reference(g, {random_tensor({4, 10}, rng, -5, 5)}, "xnn_softmax_nc_f32");
  }
  {
    Graph g;  // not the last axis: reference
    ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 5, 3}));
    g.add_output(g.add_node1(OpKind::kSoftmax, AxisAttrs{1}, {x}, "softmax"));
    expect_matches_reference(g, {random_tensor({2, 5, 3}, rng, -5, 5)}, "ref_Softmax");
  }
  {
    Graph g;  // NCHW graph: the NHWC conversion permutes the pads
    ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 3, 5, 4}));
    g.add_output(g.add_node1(OpKind::kPad, PadAttrs{{0, 0, 1, 2, 0, 0, 2, 1}, 0.5f}, {x}, "pad"));
    expect_matches_reference(g, {random_tensor({2, 3, 5, 4}, rng)}, "xnn_constant_pad_nd_x32");
  }
  {
    Graph g;
    ValueId a = g.add_input("a", DType::kFloat32, static_shape({2, 3, 5, 4}));
    ValueId b = g.add_input("b", DType::kFloat32, static_shape({2, 6, 5, 4}));
    ValueId c = g.add_node1(OpKind::kConcat, AxisAttrs{1}, {a, b}, "concat");
    g.add_output(g.add_node1(OpKind::kTranspose, TransposeAttrs{{0, 2, 1, 3}}, {c}, "transpose"));
    expect_matches_reference(g, {random_tensor({2, 3, 5, 4}, rng), random_tensor({2, 6, 5, 4}, rng)}, "ref_Concat");
  }
}

}  // namespace
}  // namespace modex::runtime_test

// modex's pthreadpool (src/runtime/kernels/thread_pool.cc): every parallelize form visits each
// item of its grid exactly once, with the right tile extents, on a pool and without one.
namespace pool_test {

struct Grid {
  std::vector<size_t> range;
  std::vector<std::atomic<int>> hits;
  explicit Grid(std::vector<size_t> r) : range(std::move(r)), hits(count()) {}
  size_t count() const {
    size_t n = 1;
    for (size_t v : range) n *= v;
    return n;
  }
  // Marks the box [start, start + extent) (extent 1 in untiled dims).
  void mark(const std::vector<size_t>& start, const std::vector<size_t>& extent) {
    for (size_t idx = 0; idx < hits.size(); ++idx) {
      size_t r = idx;
      bool in = true;
      for (size_t d = range.size(); d-- > 0;) {
        size_t c = r % range[d];
        r /= range[d];
        in &= c >= start[d] && c < start[d] + extent[d];
      }
      if (in) hits[idx].fetch_add(1);
    }
  }
  bool all_once() const {
    return std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h.load() == 1; });
  }
};

}  // namespace pool_test

TEST(ThreadPool, EveryParallelizeFormVisitsEachItemOnce) {
  using pool_test::Grid;
  for (size_t threads : {0, 1, 2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    pthreadpool_t pool = threads ? pthreadpool_create(threads) : nullptr;
    if (threads) {
      EXPECT_EQ(pthreadpool_get_threads_count(pool), threads);
    }
    {
      Grid g({1000});
      pthreadpool_parallelize_1d(pool, [](void* c, size_t i) { static_cast<Grid*>(c)->mark({i}, {1}); }, &g, 1000, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({103});
      pthreadpool_parallelize_1d_tile_1d(pool, [](void* c, size_t i, size_t n) { static_cast<Grid*>(c)->mark({i}, {n}); }, &g,
                                         103, 10, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({7, 9});
      pthreadpool_parallelize_2d(pool, [](void* c, size_t i, size_t j) { static_cast<Grid*>(c)->mark({i, j}, {1, 1}); }, &g, 7,
                                 9, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({5, 17});
      pthreadpool_parallelize_2d_tile_1d(
          pool, [](void* c, size_t i, size_t j, size_t nj) { static_cast<Grid*>(c)->mark({i, j}, {1, nj}); }, &g, 5, 17, 4,
          PTHREADPOOL_FLAG_DISABLE_DENORMALS);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({13, 17});
      pthreadpool_parallelize_2d_tile_2d(
          pool, [](void* c, size_t i, size_t j, size_t ni, size_t nj) { static_cast<Grid*>(c)->mark({i, j}, {ni, nj}); }, &g,
          13, 17, 3, 5, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({3, 4, 5});
      pthreadpool_parallelize_3d(
          pool, [](void* c, size_t i, size_t j, size_t k) { static_cast<Grid*>(c)->mark({i, j, k}, {1, 1, 1}); }, &g, 3, 4, 5, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({3, 10, 11});
      pthreadpool_parallelize_3d_tile_2d(
          pool,
          [](void* c, size_t i, size_t j, size_t k, size_t nj, size_t nk) {
            static_cast<Grid*>(c)->mark({i, j, k}, {1, nj, nk});
          },
          &g, 3, 10, 11, 4, 3, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({2, 3, 4, 5});
      pthreadpool_parallelize_4d(
          pool, [](void* c, size_t i, size_t j, size_t k, size_t l) { static_cast<Grid*>(c)->mark({i, j, k, l}, {1, 1, 1, 1}); },
          &g, 2, 3, 4, 5, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({2, 3, 7, 9});
      pthreadpool_parallelize_4d_tile_2d(
          pool,
          [](void* c, size_t i, size_t j, size_t k, size_t l, size_t nk, size_t nl) {
            static_cast<Grid*>(c)->mark({i, j, k, l}, {1, 1, nk, nl});
          },
          &g, 2, 3, 7, 9, 2, 4, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({2, 3, 2, 3, 4});
      pthreadpool_parallelize_5d(
          pool,
          [](void* c, size_t i, size_t j, size_t k, size_t l, size_t m) {
            static_cast<Grid*>(c)->mark({i, j, k, l, m}, {1, 1, 1, 1, 1});
          },
          &g, 2, 3, 2, 3, 4, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({2, 2, 3, 7, 5});
      pthreadpool_parallelize_5d_tile_2d(
          pool,
          [](void* c, size_t i, size_t j, size_t k, size_t l, size_t m, size_t nl, size_t nm) {
            static_cast<Grid*>(c)->mark({i, j, k, l, m}, {1, 1, 1, nl, nm});
          },
          &g, 2, 2, 3, 7, 5, 3, 2, 0);
      EXPECT_TRUE(g.all_once());
    }
    {
      Grid g({2, 1, 2, 3, 5, 7});
      pthreadpool_parallelize_6d_tile_2d(
          pool,
          [](void* c, size_t i, size_t j, size_t k, size_t l, size_t m, size_t n, size_t nm, size_t nn) {
            static_cast<Grid*>(c)->mark({i, j, k, l, m, n}, {1, 1, 1, 1, nm, nn});
          },
          &g, 2, 1, 2, 3, 5, 7, 2, 3, 0);
      EXPECT_TRUE(g.all_once());
    }
    if (pool) pthreadpool_destroy(pool);
  }
}

// Calls follow each other within microseconds in a network, while workers may still be scanning
// the previous call's chunk ranges: every item of every call must run exactly once, also with
// two threads calling into one pool.
TEST(ThreadPool, BackToBackCallsRunEachItemOnce) {
  struct Call {
    std::vector<std::atomic<int>> hits;
    explicit Call(size_t n) : hits(n) {}
  };
  for (size_t threads : {2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    pthreadpool_t pool = pthreadpool_create(threads);
    auto run_calls = [pool](size_t calls, size_t seed) {
      size_t wrong = 0;
      for (size_t k = 0; k < calls; ++k) {
        Call c(1 + (k * 7 + seed) % 53);
        pthreadpool_parallelize_1d(pool, [](void* p, size_t i) { static_cast<Call*>(p)->hits[i].fetch_add(1); }, &c,
                                   c.hits.size(), 0);
        for (const auto& h : c.hits) wrong += h.load() != 1;
      }
      return wrong;
    };
    EXPECT_EQ(run_calls(20000, 0), 0u);
    size_t other = 0;
    std::thread second([&] { other = run_calls(5000, 3); });
    EXPECT_EQ(run_calls(5000, 1), 0u);
    second.join();
    EXPECT_EQ(other, 0u);
    pthreadpool_destroy(pool);
  }
}
