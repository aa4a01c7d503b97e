// Two float32 ops of every squeeze-and-excitation block (EfficientNet, MobileNetV3), with AVX2:
// the spatial mean (GlobalAveragePool / ReduceMean over H and W of an NHWC tensor) and the
// per-channel scaling of the block's input by its gate (Mul of [N, H, W, C] by [N or 1, 1, 1, C]);
// and the residual Add of two tensors of one shape.
//
// Why not XNNPACK here: Debian's build parallelizes both only over the batch, so at batch 1 they
// ran on one thread however many the pool has (EfficientNet-B0 at 2 threads: 0.85 of its ~9.4 ms
// in these two ops, unchanged from 1 thread). Here the mean and the scaling split the rows and
// the add blocks of elements among the threads.
#include "runtime/kernels/simd.h"

#include <algorithm>
#include <vector>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using native::cpu_has_avx2_fma;

// y[n, 0, 0, c] = mean over h, w of x[n, h, w, c]: each image row summed first, then the rows
// (shorter sums round less), times 1 / (H * W). Work items: (image, band of rows), each summing
// every channel of its rows into its own partial sums, which are added up at the end. Bands of
// rows, not blocks of channels, because the op before wrote the rows that way: with the thread
// pool's per-thread ranges each thread then reads rows its own core's cache holds (in blocks of
// channels, efficientnet_b0's 17 means took 0.51 ms at 2 threads against 0.39 at 1).
class NativeMeanHw final : public Kernel {
 public:
  std::string_view name() const override { return "native_mean_hw_f32_avx2"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    x_ = in[0];
    y_ = out[0];
    bands_ = std::min<int64_t>(x_.dim(1), kBands);
    partial_.assign(static_cast<size_t>(x_.dim(0) * bands_ * x_.dim(3)), 0.0f);
  }
  void run(const RunContext& ctx) override {
    native::parallel(ctx, x_.dim(0) * bands_, [](void* self, size_t i) {
      static_cast<NativeMeanHw*>(self)->band(static_cast<int64_t>(i));
    }, this, x_.numel());
    const int64_t N = x_.dim(0), C = x_.dim(3);
    const float inv = 1.0f / static_cast<float>(x_.dim(1) * x_.dim(2));
    float* y = y_.data_mutable<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        float total = 0.0f;
        for (int64_t b = 0; b < bands_; ++b) total += partial_[static_cast<size_t>((n * bands_ + b) * C + c)];
        y[n * C + c] = total * inv;
      }
  }

 private:
  static constexpr int64_t kBands = 8;
  static constexpr int64_t kBlock = 64;

  __attribute__((target("avx2,fma"))) void band(int64_t item) {
    const int64_t H = x_.dim(1), W = x_.dim(2), C = x_.dim(3), n = item / bands_, b = item % bands_;
    const int64_t h0 = b * H / bands_, h1 = (b + 1) * H / bands_;
    const float* x = x_.data<float>() + n * H * W * C;
    float* out = partial_.data() + item * C;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t c1 = std::min(C, c0 + kBlock);
      // The block's vectors side by side: eight independent sums per pixel, not one chain.
      const int64_t vectors = (c1 - c0) / 8;
      __m256 total[kBlock / 8], sum[kBlock / 8];
      for (int64_t j = 0; j < vectors; ++j) total[j] = _mm256_setzero_ps();
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t j = 0; j < vectors; ++j) sum[j] = _mm256_setzero_ps();
        const float* px = x + h * W * C + c0;
        for (int64_t w = 0; w < W; ++w, px += C)
          for (int64_t j = 0; j < vectors; ++j) sum[j] = _mm256_add_ps(sum[j], _mm256_loadu_ps(px + 8 * j));
        for (int64_t j = 0; j < vectors; ++j) total[j] = _mm256_add_ps(total[j], sum[j]);
      }
      for (int64_t j = 0; j < vectors; ++j) _mm256_storeu_ps(out + c0 + 8 * j, total[j]);
      for (int64_t c = c0 + 8 * vectors; c < c1; ++c) {
        float t = 0.0f;
        for (int64_t h = h0; h < h1; ++h) {
          float r = 0.0f;
          for (int64_t w = 0; w < W; ++w) r += x[(h * W + w) * C + c];
          t += r;
        }
        out[c] = t;
      }
    }
  }

  Tensor x_, y_;
  int64_t bands_ = 1;
  std::vector<float> partial_;  // [N, bands, C]: each band's sums
};

std::unique_ptr<Kernel> make_mean_hw(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  if (!cpu_has_avx2_fma() || x.shape.size() != 4 || x.dtype != DType::kFloat32) return nullptr;
  std::vector<int64_t> axes;
  for (int64_t ax : n.attr<ir::ReduceAttrs>().axes) axes.push_back(ax < 0 ? ax + 4 : ax);
  std::sort(axes.begin(), axes.end());
  if (axes != std::vector<int64_t>{1, 2}) return nullptr;
  return std::make_unique<NativeMeanHw>();
}

// y[n, h, w, c] = x[n, h, w, c] * s[n or 0, 0, 0, c], clamped to the fused activation's range.
// Work items: rows (n, h).
class NativeChannelScale final : public Kernel {
 public:
  NativeChannelScale(int data_input, xnn::Range range) : data_(data_input), range_(range) {}
  std::string_view name() const override { return "native_channel_scale_f32_avx2"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    x_ = in[static_cast<size_t>(data_)];
    s_ = in[static_cast<size_t>(1 - data_)];
    y_ = out[0];
    if (x_.rank() != 4 || s_.rank() != 4 || s_.dim(1) != 1 || s_.dim(2) != 1 || s_.dim(3) != x_.dim(3) ||
        (s_.dim(0) != 1 && s_.dim(0) != x_.dim(0)) || y_.shape() != x_.shape())
      throw Error("channel scaling of " + dims_to_string(x_.shape()) + " by " + dims_to_string(s_.shape()) +
                      ": expected [N, H, W, C] by [N or 1, 1, 1, C]",
                  ErrorKind::kInternal);
  }
  void run(const RunContext& ctx) override {
    native::parallel(ctx, x_.dim(0) * x_.dim(1), [](void* self, size_t i) {
      static_cast<NativeChannelScale*>(self)->row(static_cast<int64_t>(i));
    }, this, x_.numel());
  }

 private:
  __attribute__((target("avx2,fma"))) void row(int64_t item) {
    const int64_t H = x_.dim(1), W = x_.dim(2), C = x_.dim(3), n = item / H;
    const float* x = x_.data<float>() + item * W * C;
    const float* s = s_.data<float>() + (s_.dim(0) == 1 ? 0 : n) * C;
    float* y = y_.data_mutable<float>() + item * W * C;
    const __m256 lo = _mm256_set1_ps(range_.min), hi = _mm256_set1_ps(range_.max);
    for (int64_t w = 0; w < W; ++w, x += C, y += C) {
      int64_t c = 0;
      for (; c + 8 <= C; c += 8)
        _mm256_storeu_ps(y + c, _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(s + c)), lo), hi));
      for (; c < C; ++c) y[c] = std::min(std::max(x[c] * s[c], range_.min), range_.max);
    }
  }

  int data_;
  xnn::Range range_;
  Tensor x_, s_, y_;
};

std::unique_ptr<Kernel> make_channel_scale(const KernelRequest& req) {
  const ir::Node& n = req.node;
  if (!cpu_has_avx2_fma() || n.inputs.size() != 2) return nullptr;
  const ir::Activation act = n.attr<ir::BinaryAttrs>().activation;
  if (!xnn::fused_by_clamp(act)) return nullptr;
  const ir::Value &a = req.graph.value(n.inputs[0]), &b = req.graph.value(n.inputs[1]);
  if (a.dtype != DType::kFloat32 || b.dtype != DType::kFloat32 || a.shape.size() != 4 || b.shape.size() != 4)
    return nullptr;
  auto gate = [](const ir::Value& v) { return v.shape[1].is_static() && v.shape[1].value == 1 && v.shape[2].is_static() && v.shape[2].value == 1; };
  auto data = [](const ir::Value& v) {  // a spatial tensor: H and W not both a static 1
    return !(v.shape[1].is_static() && v.shape[1].value == 1 && v.shape[2].is_static() && v.shape[2].value == 1);
  };
  int data_input;
  if (data(a) && gate(b))
    data_input = 0;
  else if (data(b) && gate(a))
    data_input = 1;
  else
    return nullptr;
  const ir::Value &x = data_input == 0 ? a : b, &s = data_input == 0 ? b : a;
  if (!x.shape[3].is_static() || !s.shape[3].is_static() || x.shape[3].value != s.shape[3].value) return nullptr;
  if (!(s.shape[0].is_static() && s.shape[0].value == 1) && s.shape[0] != x.shape[0]) return nullptr;
  return std::make_unique<NativeChannelScale>(data_input, xnn::clamp_range(act));
}

// y = clamp(a + b) over two tensors of one shape (the residual adds of ResNets and MobileNets,
// ReLU fused), split among the threads in blocks of 16 KB (XNNPACK's add splits only the batch).
// IEEE addition then the clamp: the floats XNNPACK's kernel gives.
class NativeAdd final : public Kernel {
 public:
  explicit NativeAdd(xnn::Range range) : range_(range) {}
  std::string_view name() const override { return "native_add_f32_avx2"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    a_ = in[0];
    b_ = in[1];
    y_ = out[0];
    if (a_.shape() != b_.shape() || y_.shape() != a_.shape())
      throw Error("add of " + dims_to_string(a_.shape()) + " and " + dims_to_string(b_.shape()) +
                      ": expected one shape",
                  ErrorKind::kInternal);
  }
  void run(const RunContext& ctx) override {
    native::parallel(ctx, (y_.numel() + kBlock - 1) / kBlock, [](void* self, size_t i) {
      static_cast<NativeAdd*>(self)->block(static_cast<int64_t>(i));
    }, this, y_.numel());
  }

 private:
  static constexpr int64_t kBlock = 4096;
  __attribute__((target("avx2,fma"))) void block(int64_t item) {
    const int64_t begin = item * kBlock, end = std::min(y_.numel(), begin + kBlock);
    const float *a = a_.data<float>(), *b = b_.data<float>();
    float* y = y_.data_mutable<float>();
    const __m256 lo = _mm256_set1_ps(range_.min), hi = _mm256_set1_ps(range_.max);
    int64_t i = begin;
    for (; i + 8 <= end; i += 8)
      _mm256_storeu_ps(y + i, _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)), lo), hi));
    for (; i < end; ++i) y[i] = std::min(std::max(a[i] + b[i], range_.min), range_.max);
  }
  xnn::Range range_;
  Tensor a_, b_, y_;
};

std::unique_ptr<Kernel> make_add(const KernelRequest& req) {
  const ir::Node& n = req.node;
  if (!cpu_has_avx2_fma() || n.inputs.size() != 2) return nullptr;
  const ir::Activation act = n.attr<ir::BinaryAttrs>().activation;
  if (!xnn::fused_by_clamp(act)) return nullptr;
  const ir::Value &a = req.graph.value(n.inputs[0]), &b = req.graph.value(n.inputs[1]);
  if (a.dtype != DType::kFloat32 || b.dtype != DType::kFloat32 || a.shape != b.shape) return nullptr;
  return std::make_unique<NativeAdd>(xnn::clamp_range(act));
}

}  // namespace

void register_native_elementwise_kernels(KernelRegistry& r) {
  r.add(ir::OpKind::kReduceMean, DType::kFloat32, KernelBackend::kNative, make_mean_hw);
  r.add(ir::OpKind::kMul, DType::kFloat32, KernelBackend::kNative, make_channel_scale);
  r.add(ir::OpKind::kAdd, DType::kFloat32, KernelBackend::kNative, make_add);
}

}  // namespace modex::runtime
