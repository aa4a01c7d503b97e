// Depthwise (groups = C = O) NHWC float32 convolution with AVX-512 or AVX2/FMA, for the channel
// counts MobileNet and EfficientNet use (multiples of 8), unit dilation.
//
// Why not XNNPACK here: its depthwise kernels (Debian's 2022 build) run MobileNet / EfficientNet's
// 3x3 and 5x5 layers at ~11 GMAC/s on one core, and the SiLU after them is a second pass over the
// output. Here a work item is one output row (or a group of its channels, when the rows are too
// few for the threads). Four adjacent interior pixels are computed together, channel block after
// channel block (each tap's weight vector then serves four multiply-adds, and the four pixels'
// inputs are read in address order); the activation (clamp, or SiLU in registers) is applied
// before the store (EfficientNet-B0's 16 depthwise layers: 4.9 -> 3.5 ms on one core, SiLU
// included). Pixels whose window crosses the left or right border take a per-pixel path that skips
// the outside taps; rows outside the input are skipped.
#include "runtime/kernels/simd.h"
#include <pthreadpool.h>

#include <algorithm>
#include <vector>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/native_math.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using native::cpu_has_avx2_fma;

// What a row needs of the bound kernel, for the two instantiations of the row code.
struct DwRow {
  const float* x;
  float* y;
  const float* weights;  // [kH, kW, C]
  const float* bias;     // [C]
  int64_t C, KH, KW, sh, sw, pt, pl, H, W, OH, OW;
  int64_t ow_lo, ow_hi;  // output columns whose window lies inside the input
  float lo, hi;          // clamp range
  bool silu;
};

namespace avx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
using V = __m256;
constexpr int64_t kLanes = 8;
struct Epilogue {
  V lo, hi;
  bool silu;
};
inline Epilogue make_epilogue(const DwRow& r) { return {_mm256_set1_ps(r.lo), _mm256_set1_ps(r.hi), r.silu}; }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vzero() { return _mm256_setzero_ps(); }
inline V vfinish(V v, const Epilogue& e) {
  v = _mm256_min_ps(_mm256_max_ps(v, e.lo), e.hi);
  return e.silu ? native::silu_avx2(v) : v;
}
#include "runtime/kernels/native_dwconv_row.inc"
#pragma GCC pop_options
}  // namespace avx2

namespace avx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
using V = __m512;
constexpr int64_t kLanes = 16;
struct Epilogue {
  V lo, hi;
  bool silu;
};
inline Epilogue make_epilogue(const DwRow& r) { return {_mm512_set1_ps(r.lo), _mm512_set1_ps(r.hi), r.silu}; }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vzero() { return _mm512_setzero_ps(); }
inline V vfinish(V v, const Epilogue& e) {
  v = _mm512_min_ps(_mm512_max_ps(v, e.lo), e.hi);
  return e.silu ? native::silu_avx512(v) : v;
}
#include "runtime/kernels/native_dwconv_row.inc"
#pragma GCC pop_options
}  // namespace avx512

class NativeDwConv final : public Kernel {
 public:
  NativeDwConv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C, bool wide)
      : attrs_(a), C_(C), lanes_(wide ? 16 : 8) {
    KH_ = a.kernel[0];
    KW_ = a.kernel[1];
    // [C, kH, kW, 1] -> [kH, kW, C]: a tap's weights for a vector of channels are one load.
    weights_.resize(static_cast<size_t>(KH_ * KW_ * C));
    const float* wd = w.data<float>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < KH_ * KW_; ++t) weights_[static_cast<size_t>(t * C + c)] = wd[c * KH_ * KW_ + t];
    bias_.assign(static_cast<size_t>(C), 0.0f);
    if (b) std::copy_n(b->data<float>(), C, bias_.begin());
    xnn::Range r = xnn::clamp_range(a.activation);
    lo_ = r.min;
    hi_ = r.max;
    silu_ = a.activation == ir::Activation::kSilu;
    if (!silu_) post_.init(a.activation);
  }
  std::string_view name() const override {
    return lanes_ == 16 ? "native_dwconv2d_nhwc_f32_avx512" : "native_dwconv2d_nhwc_f32_avx2";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    const int64_t N = x_.dim(0), H = x_.dim(1), W = x_.dim(2), OH = y_.dim(1), OW = y_.dim(2);
    const int64_t sw = attrs_.strides[1], pl = attrs_.pads[1];
    int64_t ow_lo = std::min(OW, (pl + sw - 1) / sw);
    int64_t ow_hi = W - KW_ + pl >= 0 ? std::min(OW, (W - KW_ + pl) / sw + 1) : 0;
    ow_hi = std::max(ow_hi, ow_lo);
    rows_ = N * OH;
    r_ = DwRow{x_.data<float>(), y_.data_mutable<float>(), weights_.data(), bias_.data(), C_, KH_, KW_,
               attrs_.strides[0], sw, attrs_.pads[0], pl, H, W, OH, OW, ow_lo, ow_hi, lo_, hi_, silu_};
    // Few output rows (the 7x7 / 14x14 late layers) for the threads: the channels are split too,
    // in whole vectors.
    const int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    const int64_t vectors = (C_ + lanes_ - 1) / lanes_;
    groups_ = threads > 1 && rows_ < 8 * threads ? std::min(vectors, (8 * threads + rows_ - 1) / rows_) : 1;
    group_channels_ = (vectors + groups_ - 1) / groups_ * lanes_;
    groups_ = (C_ + group_channels_ - 1) / group_channels_;
    post_.setup(y_.data_mutable<float>(), static_cast<size_t>(y_.numel()), ctx);
  }

  void run(const RunContext& ctx) override {
    native::parallel(ctx, rows_ * groups_, [](void* self, size_t i) {
      auto* k = static_cast<NativeDwConv*>(self);
      const int64_t item = static_cast<int64_t>(i), row = item / k->groups_;
      const int64_t c_begin = item % k->groups_ * k->group_channels_, c_end = std::min(k->C_, c_begin + k->group_channels_);
      if (k->lanes_ == 16) {
        // Whole 16-float vectors, then a last 8 channels (C an odd multiple of 8) on AVX2.
        const int64_t c_wide = c_begin + (c_end - c_begin) / 16 * 16;
        avx512::run_row(k->r_, row, c_begin, c_wide);
        if (c_wide < c_end) avx2::run_row(k->r_, row, c_wide, c_end);
      } else {
        avx2::run_row(k->r_, row, c_begin, c_end);
      }
    }, this, rows_ * r_.OW * C_ * KH_ * KW_);
    post_.run(ctx);
  }

 private:
  ir::ConvAttrs attrs_;
  int64_t C_, lanes_, KH_ = 0, KW_ = 0;
  std::vector<float> weights_, bias_;
  float lo_ = -xnn::kInf, hi_ = xnn::kInf;
  bool silu_ = false;
  xnn::PostActivation post_;
  Tensor x_, y_;
  DwRow r_{};
  int64_t rows_ = 0, groups_ = 1, group_channels_ = 0;
};

std::unique_ptr<Kernel> make_native_dwconv(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ConvAttrs>();
  if (!cpu_has_avx2_fma() || !xnn::available() || a.layout != ir::Layout::kNHWC || a.kernel.size() != 2 ||
      n.inputs.size() > 3)  // no residual input (the engine fuses those into dense convolutions only)
    return nullptr;
  const int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  if (C <= 0 || C % 8 != 0 || a.groups != C || a.dilations[0] != 1 || a.dilations[1] != 1) return nullptr;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || (b && !b->is_constant()) || w.constant.dtype() != DType::kFloat32) return nullptr;
  if (w.constant.rank() != 4 || w.constant.dim(0) != C || w.constant.dim(3) != 1) return nullptr;
  for (int64_t v : a.pads)
    if (v < 0) return nullptr;
  return std::make_unique<NativeDwConv>(a, w.constant, b ? &b->constant : nullptr, C,
                                        native::isa_enabled(native::Isa::kAvx512));
}

}  // namespace

void register_native_dwconv_kernels(KernelRegistry& r) {
  r.add(ir::OpKind::kConv, DType::kFloat32, KernelBackend::kNative, make_native_dwconv);
}

}  // namespace modex::runtime
