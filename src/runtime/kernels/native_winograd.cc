// Winograd F(4x4, 3x3) convolution for dense 3x3 stride-1 NHWC convolutions (most of a ResNet).
//
// Why: the dense kernel (native_conv.cc) already runs its GEMM near the FMA peak, so these layers
// only get faster with fewer multiplies. A 4x4 output tile is A^T [(G g G^T) ⊙ (B^T d B)] A for
// the 6x6 input tile d around it; summed over input channels, the element-wise product becomes 36
// independent GEMMs [tiles x C] · [C x O], one per position of the 6x6 transform: 36 multiplies per
// 16 outputs and channel pair instead of 144. U = G g G^T is computed once (in double) and packed
// like the dense kernel's B, so the GEMMs run on its micro-kernels (AVX2 6x16 or AVX-512 12x32).
//
// Per run, three parallel phases through scratch the kernel holds for its bound shape: the input
// transform of every tile of the zero-padded input into V [36][tiles][C], the GEMMs into
// M [36][tiles][O], and the output transform with bias and activation into the NHWC output (tiles
// at the bottom and right edges write only their pixels inside it).
//
// Small layers lose: with few tiles the GEMMs get few rows while their weights are 4x the dense
// kernel's (36 instead of 9 C x O matrices, read from memory in the late layers), and the
// transforms' share of the time grows as C and O shrink. Those nodes keep the dense kernel: the
// factory declines them when the shape is static, setup() hands a small bound shape to a dense
// kernel otherwise. The 4x weights are also memory: resnet50's peak RSS grows by ~42 MB.
//
// Rounding: the transforms' coefficients (up to 8) cost precision; against the reference kernels
// single layers differ by up to ~1.3e-5 of max |output| (C = 530; the dense kernel: < 1e-6), and
// whole ResNets stay more than 10x inside the 1e-4 ONNX Runtime parity bound.
#include "runtime/kernels/simd.h"
#include <pthreadpool.h>

#include <algorithm>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using native::kKc;
using native::kMr;
using native::kNr;
using native::next_panel_share;
using native::panel_step;
using native::PanelStep;
using native::parallel;
using native::Prefetch;

constexpr int64_t kTile = 4, kIn = 6, kPositions = kIn * kIn;
// The smallest C and O, and output pixels per image, that the Winograd kernel takes. Measured at
// 1 thread on four stacked 3x3 layers, against the dense kernel: 8 channels at 56x56 1.5x faster,
// 16 to 32 channels 1.6-2x, 256 channels 1.2x at 10x10 and 1.6x at 12x12 and 14x14; 512 channels
// 5-10% at 8x8 and equal at 7x7 (4 tiles: the GEMMs stream 36 weight matrices, 37.7 MB, from
// memory). With 2 and 4 channels the gain was inconsistent (the transforms' vectors are mostly
// empty), so fewer than 8 channels also stay on the dense kernel.
constexpr int64_t kMinChannels = 8;
constexpr int64_t kMinOutputPixels = 10 * 10;
// With AVX-512 the dense kernel gains more than Winograd, whose transforms stay AVX2 and whose
// GEMMs get few rows at small sizes. Measured on ResNet-18/50 at 1 thread, Winograd against the
// dense kernel both on AVX-512: 14x14 at 256 channels 2.3-2.9 vs 2.0-2.3 ms (dense wins), 28x28 at
// 128 channels 1.2-1.7 vs 1.7-2.0 ms, 56x56 at 64 channels about equal.
constexpr int64_t kMinOutputPixelsAvx512 = 16 * 16;

bool kernel_pays(int64_t OH, int64_t OW, bool avx512) {
  return OH * OW >= (avx512 ? kMinOutputPixelsAvx512 : kMinOutputPixels);
}

// G for the points 0, 1, -1, 2, -2 and infinity (U = G g G^T, 6x6 from 3x3).
constexpr double kG[kIn][3] = {{1.0 / 4, 0, 0},
                               {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                               {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                               {1.0 / 24, 1.0 / 12, 1.0 / 6},
                               {1.0 / 24, -1.0 / 12, 1.0 / 6},
                               {0, 0, 1}};

// r = B^T z over one column (then one row) of a 6x6 input tile, B^T being
//   [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1].
__attribute__((target("avx2,fma"), always_inline)) inline void input_transform(const __m256* z,
                                                                               __m256* r) {
  const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
  __m256 t1 = _mm256_fnmadd_ps(four, z[2], z[4]), t2 = _mm256_fnmadd_ps(four, z[1], z[3]);
  __m256 t3 = _mm256_sub_ps(z[4], z[2]), t4 = _mm256_mul_ps(two, _mm256_sub_ps(z[3], z[1]));
  r[0] = _mm256_fmadd_ps(four, z[0], _mm256_fnmadd_ps(five, z[2], z[4]));
  r[1] = _mm256_add_ps(t1, t2);
  r[2] = _mm256_sub_ps(t1, t2);
  r[3] = _mm256_add_ps(t3, t4);
  r[4] = _mm256_sub_ps(t3, t4);
  r[5] = _mm256_fmadd_ps(four, z[1], _mm256_fnmadd_ps(five, z[3], z[5]));
}

// r = A^T m over one column (then one row) of a 6x6 GEMM result, A^T being
//   [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
__attribute__((target("avx2,fma"), always_inline)) inline void output_transform(const __m256* m,
                                                                                __m256* r) {
  __m256 sum12 = _mm256_add_ps(m[1], m[2]), dif12 = _mm256_sub_ps(m[1], m[2]);
  __m256 sum34 = _mm256_add_ps(m[3], m[4]), dif34 = _mm256_sub_ps(m[3], m[4]);
  r[0] = _mm256_add_ps(_mm256_add_ps(m[0], sum12), sum34);
  r[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), dif34, dif12);
  r[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), sum34, sum12);
  r[3] = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), dif34, _mm256_add_ps(dif12, m[5]));
}

using native::lane_mask;

class WinogradConv final : public Kernel {
 public:
  WinogradConv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C)
      : attrs_(a), w_(w), C_(C), O_(w.dim(0)), avx512_(native::isa_enabled(native::Isa::kAvx512)) {
    if (b) b_ = *b;
    int64_t k_blocks = (C_ + kKc - 1) / kKc;
    kc_ = (C_ + k_blocks - 1) / k_blocks;
    panels_ = (O_ + kNr - 1) / kNr;
    ldm_ = panels_ * kNr;
    ldv_ = (C_ + 7) / 8 * 8;
    // Per position, the dense kernel's B layout: K blocks of kc_ rows, within one panel after
    // panel, each [kc][16] (AVX-512: pairs interleaved), zero beyond O.
    packed_ = Buffer::allocate(static_cast<size_t>(kPositions * C_ * ldm_) * sizeof(float));
    float* p = reinterpret_cast<float*>(packed_->data());
    std::fill_n(p, kPositions * C_ * ldm_, 0.0f);
    const float* wd = w.data<float>();
    for (int64_t o = 0; o < O_; ++o) {
      for (int64_t c = 0; c < C_; ++c) {
        double gg[kIn][3] = {};  // G g
        for (int64_t i = 0; i < kIn; ++i)
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw)
              gg[i][kw] += kG[i][kh] * wd[((o * 3 + kh) * 3 + kw) * C_ + c];
        int64_t k0 = c / kc_ * kc_, kc = std::min(kc_, C_ - k0);
        for (int64_t i = 0; i < kIn; ++i)
          for (int64_t j = 0; j < kIn; ++j) {
            double u = gg[i][0] * kG[j][0] + gg[i][1] * kG[j][1] + gg[i][2] * kG[j][2];
            p[(i * kIn + j) * C_ * ldm_ + k0 * ldm_ + native::packed_b_offset(avx512_, panels_, kc, c - k0, o)] =
                static_cast<float>(u);
          }
      }
    }
    bias_.assign(static_cast<size_t>(ldm_), 0.0f);
    if (b) std::copy_n(b->data<float>(), O_, bias_.begin());
    xnn::Range r = xnn::clamp_range(a.activation);
    lo_ = r.min;
    hi_ = r.max;
    silu_ = a.activation == ir::Activation::kSilu;
    if (!silu_) post_.init(a.activation);
  }

  std::string_view name() const override {
    return dense_active_ ? dense_->name() : avx512_ ? "native_winograd_f43_avx512" : "native_winograd_f43";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    residual_ = in.size() > 3 ? in[3] : Tensor();
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    dense_active_ = !kernel_pays(OH_, OW_, avx512_);
    if (dense_active_) {
      if (!dense_) dense_ = native::make_dense_conv(attrs_, w_, b_.defined() ? &b_ : nullptr, C_);
      dense_->setup(in, out, ctx);
      return;
    }
    tiles_h_ = (OH_ + kTile - 1) / kTile;
    tiles_w_ = (OW_ + kTile - 1) / kTile;
    tiles_ = N_ * tiles_h_ * tiles_w_;
    v_.resize(kPositions * tiles_ * ldv_);
    m_.resize(kPositions * tiles_ * ldm_);
    // GEMM rows (tiles) per parallel item: a block of A at most ~256 KB, so it stays in L2 while
    // every panel of the position's U passes over it.
    const int64_t strip = native::strip_rows(avx512_);
    block_rows_ = native::balanced_block_rows(tiles_, std::clamp<int64_t>((1 << 18) / (kc_ * 4), strip, 96), strip);
    row_blocks_ = (tiles_ + block_rows_ - 1) / block_rows_;
    post_.setup(y_.data_mutable<float>(), static_cast<size_t>(y_.numel()), ctx);
  }

  void run(const RunContext& ctx) override {
    if (dense_active_) {
      dense_->run(ctx);
      return;
    }
    parallel(ctx, tiles_, [](void* self, size_t i) {
      static_cast<WinogradConv*>(self)->transform_input(static_cast<int64_t>(i));
    }, this);
    parallel(ctx, kPositions * row_blocks_, [](void* self, size_t i) {
      static_cast<WinogradConv*>(self)->gemm(static_cast<int64_t>(i));
    }, this);
    parallel(ctx, tiles_, [](void* self, size_t i) {
      static_cast<WinogradConv*>(self)->transform_output(static_cast<int64_t>(i));
    }, this);
    post_.run(ctx);
  }

 private:

  // V[pos][tile][0, C) = B^T d B for the 6x6 input window of `tile` (zero outside the input).
  __attribute__((target("avx2,fma"))) void transform_input(int64_t tile) {
    int64_t n = tile / (tiles_h_ * tiles_w_), rem = tile % (tiles_h_ * tiles_w_);
    int64_t ih0 = rem / tiles_w_ * kTile - attrs_.pads[0],
            iw0 = rem % tiles_w_ * kTile - attrs_.pads[1];
    const float* src[kIn][kIn];
    for (int64_t i = 0; i < kIn; ++i)
      for (int64_t j = 0; j < kIn; ++j) {
        int64_t ih = ih0 + i, iw = iw0 + j;
        src[i][j] = ih >= 0 && ih < H_ && iw >= 0 && iw < W_
                        ? x_.data<float>() + ((n * H_ + ih) * W_ + iw) * C_
                        : nullptr;
      }
    float* v = v_.data() + tile * ldv_;
    const int64_t pos_stride = tiles_ * ldv_;
    // V's lines of this tile (36 rows, one per position, far apart: more write streams than the
    // hardware prefetcher follows) asked for with intent to write before they are computed:
    // resnet18 at 1 thread 29.4 -> 28.3 ms.
    for (int64_t pos = 0; pos < kPositions; ++pos)
      for (int64_t c = 0; c < ldv_; c += 16) _mm_prefetch(reinterpret_cast<const char*>(v + pos * pos_stride + c), _MM_HINT_ET0);
    for (int64_t c = 0; c < C_; c += 8) {
      // V's rows are padded to 8 floats, so only the input loads need the tail mask.
      const bool full = c + 8 <= C_;
      const __m256i mask = lane_mask(std::min<int64_t>(8, C_ - c));
      __m256 d[kIn][kIn], t[kIn][kIn];
      for (int64_t i = 0; i < kIn; ++i)
        for (int64_t j = 0; j < kIn; ++j)
          d[j][i] = !src[i][j] ? _mm256_setzero_ps()
                    : full     ? _mm256_loadu_ps(src[i][j] + c)
                               : _mm256_maskload_ps(src[i][j] + c, mask);
      // d is held transposed (d[j] is input column j), so both passes take contiguous vectors.
      for (int64_t j = 0; j < kIn; ++j) {
        __m256 r[kIn];
        input_transform(d[j], r);
        for (int64_t i = 0; i < kIn; ++i) t[i][j] = r[i];
      }
      for (int64_t i = 0; i < kIn; ++i) {
        __m256 r[kIn];
        input_transform(t[i], r);
        for (int64_t j = 0; j < kIn; ++j)
          _mm256_storeu_ps(v + (i * kIn + j) * pos_stride + c, r[j]);
      }
    }
  }

  // M[pos][rows of the block] = V[pos][rows] · U[pos], all panels; item = (position, row block).
  void gemm(int64_t item) {
    int64_t pos = item / row_blocks_, m0 = item % row_blocks_ * block_rows_,
            rows = std::min(block_rows_, tiles_ - m0);
    const float* a = v_.data() + (pos * tiles_ + m0) * ldv_;
    const float* u = reinterpret_cast<const float*>(packed_->data()) + pos * C_ * ldm_;
    float* c = m_.data() + (pos * tiles_ + m0) * ldm_;
    static const float kZeros[2 * kNr] = {};
    for (int64_t k0 = 0; k0 < C_; k0 += kc_) {
      int64_t kc = std::min(kc_, C_ - k0);
      for (int64_t p = 0; p < panels_;) {
        // M's rows are whole panels wide: the last panel's padding columns take the discarded
        // sums, and (AVX2) a panel of at most 8 real columns computes only those.
        const PanelStep step = panel_step(avx512_, p, panels_, O_);
        const float* b = u + k0 * ldm_ + p * kc * kNr;
        for (int64_t r = 0, mr; r < rows; r += mr) {
          mr = step.strip_at(r, rows);
          const float* rowp[native::kMaxMr];
          for (int64_t i = 0; i < step.rows; ++i) rowp[i] = a + (r + std::min(i, mr - 1)) * ldv_ + k0;
          // U comes from memory when it outgrows the caches (9.4 MB at 256 channels): measured
          // ~10% less CPU time at 14x14 with the dense kernel's prefetch of the next panel.
          Prefetch pf = next_panel_share(b, kc * step.panels, r, rows, step.rows);
          step.for_rows(mr)(kc, rowp, b, kZeros, k0 > 0, c + r * ldm_ + p * kNr, ldm_, mr, step.panels * kNr, true,
                      -xnn::kInf, xnn::kInf, false, pf.at, pf.lines, 1, 0, nullptr);
        }
        p += step.panels;
      }
    }
  }

  // The output pixels of `tile` = A^T m A + bias, clamped (and SiLU), for m = M[.][tile].
  __attribute__((target("avx2,fma"))) void transform_output(int64_t tile) {
    int64_t n = tile / (tiles_h_ * tiles_w_), rem = tile % (tiles_h_ * tiles_w_);
    int64_t oh0 = rem / tiles_w_ * kTile, ow0 = rem % tiles_w_ * kTile;
    int64_t rows = std::min(kTile, OH_ - oh0), cols = std::min(kTile, OW_ - ow0);
    const float* m = m_.data() + tile * ldm_;
    const int64_t pos_stride = tiles_ * ldm_;
    const int64_t at = ((n * OH_ + oh0) * OW_ + ow0) * O_;
    float* y = y_.data_mutable<float>() + at;
    const float* res = residual_.defined() ? residual_.data<float>() + at : nullptr;
    const __m256 vlo = _mm256_set1_ps(lo_), vhi = _mm256_set1_ps(hi_);
    for (int64_t o = 0; o < O_; o += 8) {
      const bool full = o + 8 <= O_;
      const __m256i mask = lane_mask(std::min<int64_t>(8, O_ - o));
      __m256 d[kIn][kIn], s[kTile][kIn];
      for (int64_t i = 0; i < kIn; ++i)
        for (int64_t j = 0; j < kIn; ++j)
          d[j][i] = _mm256_loadu_ps(m + (i * kIn + j) * pos_stride + o);
      for (int64_t j = 0; j < kIn; ++j) {
        __m256 r[kTile];
        output_transform(d[j], r);
        for (int64_t i = 0; i < kTile; ++i) s[i][j] = r[i];
      }
      const __m256 bias = _mm256_loadu_ps(bias_.data() + o);
      for (int64_t i = 0; i < rows; ++i) {
        __m256 r[kTile];
        output_transform(s[i], r);
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t off = (i * OW_ + j) * O_ + o;
          __m256 out = _mm256_add_ps(r[j], bias);
          if (res) out = _mm256_add_ps(out, full ? _mm256_loadu_ps(res + off) : _mm256_maskload_ps(res + off, mask));
          out = _mm256_min_ps(_mm256_max_ps(out, vlo), vhi);
          if (silu_) out = native::silu_avx2(out);
          float* dst = y + off;
          if (full)
            _mm256_storeu_ps(dst, out);
          else
            _mm256_maskstore_ps(dst, mask, out);
        }
      }
    }
  }

  ir::ConvAttrs attrs_;
  Tensor w_, b_;  // kept for the dense kernel small bound shapes get
  int64_t C_, O_;
  bool avx512_;  // GEMMs on the AVX-512 12x32 micro-kernel, else the AVX2 6x16 one
  int64_t kc_ = 1, panels_ = 0, ldm_ = 0, ldv_ = 0;
  std::shared_ptr<Buffer> packed_;  // U: per position, the dense kernel's panel layout
  std::vector<float> bias_;         // padded to ldm_
  float lo_ = -xnn::kInf, hi_ = xnn::kInf;
  bool silu_ = false;
  xnn::PostActivation post_;
  std::unique_ptr<Kernel> dense_;
  bool dense_active_ = false;
  Tensor x_, y_, residual_;  // residual_: the fused Add's other input, added before the activation
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, tiles_h_ = 0, tiles_w_ = 0, tiles_ = 0;
  int64_t block_rows_ = kMr, row_blocks_ = 0;
  native::Scratch v_, m_;  // V [36][tiles][ldv_] and M [36][tiles][ldm_]
};

}  // namespace

std::unique_ptr<Kernel> native::make_winograd_conv(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ConvAttrs>();
  const std::vector<int64_t> three{3, 3}, one{1, 1};
  if (!cpu_has_avx2_fma() || !xnn::available() || a.layout != ir::Layout::kNHWC ||
      a.kernel != three || a.strides != one || a.dilations != one || a.groups != 1)
    return nullptr;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b =
      n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || (b && !b->is_constant())) return nullptr;
  int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  if (C < kMinChannels || w.constant.dim(3) != C || w.constant.dim(0) < kMinChannels)
    return nullptr;
  for (int64_t v : a.pads)
    if (v < 0) return nullptr;
  // With a static spatial shape, a small layer keeps the dense kernel from the start.
  int64_t H = xnn::static_dim(req.graph, n.inputs[0], 1),
          W = xnn::static_dim(req.graph, n.inputs[0], 2);
  if (H > 0 && W > 0 &&
      !kernel_pays(H + a.pads[0] + a.pads[2] - 2, W + a.pads[1] + a.pads[3] - 2, native::isa_enabled(native::Isa::kAvx512)))
    return nullptr;
  return std::make_unique<WinogradConv>(a, w.constant, b ? &b->constant : nullptr, C);
}

}  // namespace modex::runtime
