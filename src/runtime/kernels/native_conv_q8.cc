// Dense (groups = 1) int8 NHWC convolution as an implicit GEMM with an AVX2 6x16 micro-kernel
// (per-channel qc8 or per-tensor qs8 weights, int32 bias, fused ReLU / ReLU6 range).
//
// Why not XNNPACK here: Debian's libXNNPACK (0.0~git20220216) runs its qc8 convolutions at about
// the rate of its f32 ones (resnet18 int8: 2.4 ms per 3x3 layer, 58 ms in all, against 31 ms for
// modex's f32 kernels), while AVX2's vpmaddwd does 16 int16 multiply-adds per instruction, two
// instructions per cycle on the CPUs we measure. Depthwise and grouped convolutions stay on
// XNNPACK.
//
// Arithmetic. Each output is acc = bias[o] - zp_in * sum_k w[o][k] + sum_k x[k] * w[o][k], exact in
// int32 (x and w sign-extended to int16, pairs of taps multiplied and added by vpmaddwd; padding
// taps read the input zero point, so they add nothing after the correction). It is requantized as
// XNNPACK's fp32 kernels do, so the integers equal XNNPACK's (and so LiteRT's, which runs int8 on
// XNNPACK): scale[o] = input_scale * weight_scale[o] / output_scale in float, then
// y = clamp(round_to_nearest_even(float(acc) * scale[o]) + zp_out, act_min, act_max).
//
// Blocking as in the f32 kernel (native_conv.cc): B (the weights) packed once into 16-channel
// panels of int16 tap pairs; A (the im2col rows, int16 pairs) gathered per block of output pixels
// into a per-thread buffer; K split into blocks whose partial sums wait in an int32 buffer. Work
// items are row blocks, and groups of panels when the rows are too few for the threads.
#include "runtime/kernels/simd.h"
#include <pthreadpool.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/native_q8.h"
#include "runtime/kernels/reference_int8.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using native::cpu_has_avx2_fma;
using native::parallel;

constexpr int64_t kMr = 6, kNr = 16;
constexpr int64_t kKcPairs = 256;  // K block depth in tap pairs: A strip 6 KB, B panel 16 KB

// 32-byte aligned vectors: the packed weights and partial sums are loaded as whole AVX2 vectors.
template <class T>
using Aligned32 = native::AlignedAllocator<T, 32>;

using native::Requant;

// The requantization of one 16-channel panel's outputs.
struct PanelRequant {
  const float* scale;  // the panel's 16 channels
  Requant q;
};

// Requantizes 8 accumulators (channels of `scale`) to int32 outputs in [act_min, act_max].
__attribute__((target("avx2,fma"))) inline __m256i requantize8(__m256i acc, const float* scale, const Requant& q) {
  __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(scale));
  f = _mm256_min_ps(f, _mm256_set1_ps(q.max_less_zp));
  __m256i i = _mm256_max_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(q.min_less_zp));
  return _mm256_add_epi32(i, _mm256_set1_epi32(q.zp));
}

// acc[r][0..15] (+)= sum over kp tap pairs of a[r][k] · b[k][0..15] for 6 rows (a[r] valid for
// every r: callers repeat the last row). a: int16 tap pairs as int32; b: per pair, 8 channels x
// 2 taps then the next 8. The tile starts from `bias` (first K block) or from `acc` (later ones).
// The last K block requantizes `rows` x `cols` outputs into y (row stride ldy); the others store
// the whole tile into acc (row stride kNr).
template <bool kWide>
__attribute__((target("avx2,fma"))) void q8_kernel_6x16(int64_t kp, const int32_t* const* a, const int16_t* b,
                                                        const int32_t* bias, bool first, int32_t* acc,
                                                        const PanelRequant* last, int8_t* y, int64_t ldy, int64_t rows,
                                                        int64_t cols) {
  __m256i c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (first) {
    c00 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias));
    c01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8));
    c10 = c00, c11 = c01, c20 = c00, c21 = c01, c30 = c00, c31 = c01, c40 = c00, c41 = c01, c50 = c00, c51 = c01;
  } else {
    const auto* v = reinterpret_cast<const __m256i*>(acc);  // row r, half h at v[2 * r + h]
    c00 = _mm256_load_si256(v), c01 = _mm256_load_si256(v + 1), c10 = _mm256_load_si256(v + 2);
    c11 = _mm256_load_si256(v + 3), c20 = _mm256_load_si256(v + 4), c21 = _mm256_load_si256(v + 5);
    c30 = _mm256_load_si256(v + 6), c31 = _mm256_load_si256(v + 7), c40 = _mm256_load_si256(v + 8);
    c41 = _mm256_load_si256(v + 9), c50 = _mm256_load_si256(v + 10), c51 = _mm256_load_si256(v + 11);
  }
  const int32_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  for (int64_t k = 0; k < kp; ++k) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = kWide ? _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 16)) : b0;
    b += 2 * kNr;
    __m256i v = _mm256_set1_epi32(a0[k]);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(v, b1));
    v = _mm256_set1_epi32(a1[k]);
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(v, b1));
    v = _mm256_set1_epi32(a2[k]);
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(v, b1));
    v = _mm256_set1_epi32(a3[k]);
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(v, b1));
    v = _mm256_set1_epi32(a4[k]);
    c40 = _mm256_add_epi32(c40, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c41 = _mm256_add_epi32(c41, _mm256_madd_epi16(v, b1));
    v = _mm256_set1_epi32(a5[k]);
    c50 = _mm256_add_epi32(c50, _mm256_madd_epi16(v, b0));
    if constexpr (kWide) c51 = _mm256_add_epi32(c51, _mm256_madd_epi16(v, b1));
  }
  __m256i t[kMr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (!last) {
    for (int64_t r = 0; r < kMr; ++r) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * kNr), t[r][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + r * kNr + 8), t[r][1]);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    __m256i lo = requantize8(t[r][0], last->scale, last->q);
    __m256i hi = kWide ? requantize8(t[r][1], last->scale + 8, last->q) : lo;
    // int32 -> int16 (values already in int8 range, so no saturation) -> int8, in channel order.
    __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
    __m128i w8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
    int8_t* yr = y + r * ldy;
    if (cols == kNr) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(yr), w8);
    } else {
      alignas(16) int8_t tmp[kNr];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), w8);
      std::memcpy(yr, tmp, static_cast<size_t>(cols));
    }
  }
}

// dst[0 .. n) = src[0 .. n) sign-extended to int16.
__attribute__((target("avx2,fma"))) void widen(const int8_t* src, int16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = src[i];
}

class NativeConvQ8 final : public Kernel {
 public:
  NativeConvQ8(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, std::span<const float> w_scale,
               const q8::Prepared& p, int64_t C)
      : attrs_(a), C_(C) {
    O_ = w.dim(0);
    K_ = a.kernel[0] * a.kernel[1] * C;
    KP_ = (K_ + 1) / 2;
    int64_t k_blocks = (KP_ + kKcPairs - 1) / kKcPairs;
    kc_ = (KP_ + k_blocks - 1) / k_blocks;
    panels_ = (O_ + kNr - 1) / kNr;
    // Layout: K blocks of kc_ pairs; within one, panel after panel, each [kc][2 halves][8 ch][2 taps].
    packed_.assign(static_cast<size_t>(panels_ * KP_ * 2 * kNr), 0);
    bias_.assign(static_cast<size_t>(panels_ * kNr), 0);
    scale_.assign(static_cast<size_t>(panels_ * kNr), 0.0f);
    const int8_t* wd = w.data<int8_t>();
    const int32_t zp_in = p.in[0].zero_point;
    for (int64_t o = 0; o < O_; ++o) {
      int64_t panel = o / kNr, lane = o % kNr, half = lane / 8, ch = lane % 8;
      int32_t sum = 0;
      for (int64_t k = 0; k < K_; ++k) {
        int64_t pair = k / 2, k0 = pair / kc_ * kc_, kc = std::min(kc_, KP_ - k0);
        size_t at = static_cast<size_t>(k0 * panels_ * 2 * kNr + panel * kc * 2 * kNr + (pair - k0) * 2 * kNr +
                                        half * 16 + ch * 2 + k % 2);
        packed_[at] = wd[o * K_ + k];
        sum += wd[o * K_ + k];
      }
      const native::Q8Channel q = native::q8_channel(b, w_scale, p, o, sum);
      bias_[static_cast<size_t>(o)] = q.bias;
      scale_[static_cast<size_t>(o)] = q.scale;
    }
    zp_in_ = static_cast<int8_t>(zp_in);
    rq_ = Requant::of(p);
  }
  std::string_view name() const override { return "native_conv2d_nhwc_q8_avx2"; }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    M_ = N_ * OH_ * OW_;
    // Rows per block: up to 96, the gathered rows at most ~512 KB. Too few row blocks for the
    // threads (the 7x7 / 14x14 late layers): groups of panels as well.
    int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    block_rows_ = std::clamp<int64_t>((1 << 19) / (KP_ * 4) / kMr * kMr, kMr, 16 * kMr);
    int64_t row_blocks = (M_ + block_rows_ - 1) / block_rows_;
    col_groups_ = 1;
    if (threads > 1 && row_blocks < 4 * threads) {
      if (row_blocks < 2 * threads && panels_ > 1) {
        col_groups_ = std::min(panels_, (4 * threads + row_blocks - 1) / row_blocks);
      } else {
        int64_t per_thread = (M_ + 2 * threads - 1) / (2 * threads);
        block_rows_ = std::min(block_rows_, std::max(kMr, (per_thread + kMr - 1) / kMr * kMr));
        row_blocks = (M_ + block_rows_ - 1) / block_rows_;
      }
    }
    panels_per_group_ = (panels_ + col_groups_ - 1) / col_groups_;
    col_groups_ = (panels_ + panels_per_group_ - 1) / panels_per_group_;
    row_blocks_ = row_blocks;
  }

  void run(const RunContext& ctx) override {
    parallel(ctx, row_blocks_ * col_groups_, [](void* self, size_t i) {
      static_cast<NativeConvQ8*>(self)->run_block(static_cast<int64_t>(i));
    }, this, M_ * K_ * O_);
  }

 private:
  // Gathers A rows [m0, m0 + rows) as int16 into buf (rows x 2·KP_); taps outside the input read
  // the input zero point, the odd K's padding tap 0.
  void gather(int64_t m0, int64_t rows, int16_t* buf) const {
    const ir::ConvAttrs& a = attrs_;
    const int8_t* xd = x_.data<int8_t>();
    const int64_t KW = a.kernel[1];
    for (int64_t r = 0; r < rows; ++r) {
      int64_t m = m0 + r, n = m / (OH_ * OW_), rem = m % (OH_ * OW_), oh = rem / OW_, ow = rem % OW_;
      int16_t* dst = buf + r * 2 * KP_;
      for (int64_t kh = 0; kh < a.kernel[0]; ++kh) {
        int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
        if (a.dilations[1] == 1) {
          // The kW taps of one kernel row are contiguous in NHWC.
          int64_t iw0 = ow * a.strides[1] - a.pads[1];
          int64_t lo = std::clamp<int64_t>(-iw0, 0, KW), hi = std::clamp<int64_t>(W_ - iw0, 0, KW);
          if (ih < 0 || ih >= H_ || lo >= hi) {
            std::fill_n(dst, KW * C_, zp_in_);
          } else {
            std::fill_n(dst, lo * C_, zp_in_);
            widen(xd + ((n * H_ + ih) * W_ + iw0 + lo) * C_, dst + lo * C_, (hi - lo) * C_);
            std::fill_n(dst + hi * C_, (KW - hi) * C_, zp_in_);
          }
          dst += KW * C_;
          continue;
        }
        for (int64_t kw = 0; kw < KW; ++kw, dst += C_) {
          int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
          if (ih < 0 || ih >= H_ || iw < 0 || iw >= W_)
            std::fill_n(dst, C_, zp_in_);
          else
            widen(xd + ((n * H_ + ih) * W_ + iw) * C_, dst, C_);
        }
      }
      if (K_ % 2) *dst = 0;
    }
  }

  void run_block(int64_t item) {
    int64_t block = item / col_groups_, group = item % col_groups_;
    int64_t p_begin = group * panels_per_group_, p_end = std::min(panels_, p_begin + panels_per_group_);
    int64_t m0 = block * block_rows_, rows = std::min(block_rows_, M_ - m0);
    int64_t strips = (rows + kMr - 1) / kMr;
    // Per-thread buffers (concurrent runs of one model use different threads).
    thread_local std::vector<int16_t> a_buf;
    thread_local std::vector<int32_t, Aligned32<int32_t>> acc_buf;
    if (a_buf.size() < static_cast<size_t>(block_rows_ * 2 * KP_)) a_buf.resize(static_cast<size_t>(block_rows_ * 2 * KP_));
    gather(m0, rows, a_buf.data());
    const bool blocked = kc_ < KP_;
    if (blocked) {
      size_t need = static_cast<size_t>((p_end - p_begin) * strips * kMr * kNr);
      if (acc_buf.size() < need) acc_buf.resize(need);
    }
    const auto* a = reinterpret_cast<const int32_t*>(a_buf.data());
    int8_t* y = y_.data_mutable<int8_t>() + m0 * O_;
    for (int64_t k0 = 0; k0 < KP_; k0 += kc_) {
      int64_t kc = std::min(kc_, KP_ - k0);
      bool last = k0 + kc == KP_;
      for (int64_t p = p_begin; p < p_end; ++p) {
        int64_t cols = std::min(kNr, O_ - p * kNr);
        auto* kernel = cols > 8 ? q8_kernel_6x16<true> : q8_kernel_6x16<false>;
        const int16_t* b = packed_.data() + k0 * panels_ * 2 * kNr + p * kc * 2 * kNr;
        const PanelRequant rq{scale_.data() + p * kNr, rq_};
        for (int64_t s = 0; s < strips; ++s) {
          int64_t r = s * kMr, mr = std::min(kMr, rows - r);
          const int32_t* rowp[kMr];
          for (int64_t i = 0; i < kMr; ++i) rowp[i] = a + (r + std::min(i, mr - 1)) * KP_ + k0;
          int32_t* acc = blocked ? acc_buf.data() + ((p - p_begin) * strips + s) * kMr * kNr : nullptr;
          kernel(kc, rowp, b, bias_.data() + p * kNr, k0 == 0, acc, last ? &rq : nullptr, y + r * O_ + p * kNr, O_,
                 mr, cols);
        }
      }
    }
  }

  ir::ConvAttrs attrs_;
  int64_t C_, O_ = 0, K_ = 0, KP_ = 0, kc_ = 1, panels_ = 0;
  std::vector<int16_t, Aligned32<int16_t>> packed_;
  std::vector<int32_t> bias_;
  std::vector<float> scale_;
  Requant rq_{};
  int16_t zp_in_ = 0;
  Tensor x_, y_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, M_ = 0, block_rows_ = kMr;
  int64_t row_blocks_ = 0, col_groups_ = 1, panels_per_group_ = 0;
};

// Depthwise (groups = C = O, C a multiple of 16) int8 convolution. Each work item is one output
// row; for each pixel a table points at every tap's input pixel, or at a row of the input zero
// point for taps outside the input (which then add nothing after the bias correction, as in the
// dense kernel). A block of channels at a time (16 with AVX2, 32 with AVX-512, a last 16 when C is
// an odd multiple of 16), two taps at a time: the taps' int8 inputs widened to int16 and
// interleaved, so that one vpmaddwd multiplies and adds both taps for 8 (16) channels; the weights
// are packed once in the same interleaved order (per 128-bit lane l, channels 8l .. 8l+3 in the
// first vector, 8l+4 .. 8l+7 in the second, as vpunpcklwd / vpunpckhwd put them), and so are bias
// and scales. Each block's weights are [pairs][2 vectors][block / 2 channels][2 taps].
class NativeDwConvQ8 final : public Kernel {
 public:
  NativeDwConvQ8(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, std::span<const float> w_scale,
                 const q8::Prepared& p, int64_t C, bool wide)
      : attrs_(a), C_(C), block_(wide ? 32 : 16) {
    T_ = a.kernel[0] * a.kernel[1];
    pairs_ = (T_ + 1) / 2;
    packed_.assign(static_cast<size_t>(C * pairs_ * 2), 0);
    bias_.assign(static_cast<size_t>(C), 0);
    scale_.assign(static_cast<size_t>(C), 0.0f);
    const int8_t* wd = w.data<int8_t>();
    const int32_t zp_in = p.in[0].zero_point;
    for (int64_t c = 0; c < C; ++c) {
      // The block holding c starts at c0 and is `width` channels wide; cb's slot in its vectors.
      const int64_t c0 = c / block_ * block_, width = std::min(block_, C - c0), cb = c - c0;
      const int64_t at = (cb % 8 < 4 ? 0 : width / 2) + cb / 8 * 4 + cb % 4;
      int32_t sum = 0;
      for (int64_t t = 0; t < T_; ++t) {
        const int8_t v = wd[c * T_ + t];
        sum += v;
        packed_[static_cast<size_t>(c0 * pairs_ * 2 + t / 2 * width * 2 + at * 2 + t % 2)] = v;
      }
      const native::Q8Channel q = native::q8_channel(b, w_scale, p, c, sum);
      bias_[static_cast<size_t>(c0 + at)] = q.bias;
      scale_[static_cast<size_t>(c0 + at)] = q.scale;
    }
    zero_row_.assign(static_cast<size_t>(C), static_cast<int8_t>(zp_in));
    rq_ = Requant::of(p);
  }
  std::string_view name() const override {
    return block_ == 32 ? "native_dwconv2d_nhwc_q8_avx512" : "native_dwconv2d_nhwc_q8_avx2";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    // Few output rows (the late layers) for the threads: the channels are split too, in whole blocks.
    const int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    const int64_t blocks = (C_ + block_ - 1) / block_;
    groups_ = threads > 1 && N_ * OH_ < 8 * threads ? std::min(blocks, (8 * threads + N_ * OH_ - 1) / (N_ * OH_)) : 1;
    group_channels_ = (blocks + groups_ - 1) / groups_ * block_;
    groups_ = (C_ + group_channels_ - 1) / group_channels_;
  }

  void run(const RunContext& ctx) override {
    native::parallel(ctx, N_ * OH_ * groups_, [](void* self, size_t i) {
      static_cast<NativeDwConvQ8*>(self)->row(static_cast<int64_t>(i));
    }, this, N_ * OH_ * OW_ * C_ * T_);
  }

 private:
  // Points taps[0 .. 2 * pairs_) at the input pixels of output pixel ow (the odd tap count's last,
  // weightless tap at the zero row).
  void pixel_taps(int64_t n, int64_t oh, int64_t ow, const int8_t** taps) const {
    const ir::ConvAttrs& a = attrs_;
    const int8_t* x = x_.data<int8_t>() + n * H_ * W_ * C_;
    int64_t t = 0;
    for (int64_t kh = 0; kh < a.kernel[0]; ++kh) {
      const int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
      for (int64_t kw = 0; kw < a.kernel[1]; ++kw, ++t) {
        const int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
        taps[t] = ih >= 0 && ih < H_ && iw >= 0 && iw < W_ ? x + (ih * W_ + iw) * C_ : zero_row_.data();
      }
    }
    if (T_ % 2) taps[T_] = zero_row_.data();  // its weights are 0
  }

  // 16 channels from c (a 16-wide block, packed at wb) of one output pixel.
  __attribute__((target("avx2,fma"))) void block16(const int8_t* const* taps, int64_t c, const int16_t* wb,
                                                   int8_t* yo) const {
    __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias_.data() + c));
    __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias_.data() + c + 8));
    for (int64_t pr = 0; pr < pairs_; ++pr) {
      const __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(taps[2 * pr] + c)));
      const __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(taps[2 * pr + 1] + c)));
      const __m256i* wp = reinterpret_cast<const __m256i*>(wb + pr * 32);
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), _mm256_loadu_si256(wp)));
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), _mm256_loadu_si256(wp + 1)));
    }
    // lo holds channels 0-3 | 8-11, hi 4-7 | 12-15: packing per 128-bit lane restores the order.
    const __m256i q16 = _mm256_packs_epi32(requantize8(lo, scale_.data() + c, rq_),
                                           requantize8(hi, scale_.data() + c + 8, rq_));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(yo + c),
                     _mm_packs_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1)));
  }

  // The item's output row (n * OH + oh) = item / groups_, channels of group item % groups_.
  std::pair<int64_t, int64_t> channels_of(int64_t item) const {
    const int64_t c_begin = item % groups_ * group_channels_;
    return {c_begin, std::min(C_, c_begin + group_channels_)};
  }

  // One output row; with 32-channel blocks, a last 16 channels on AVX2 when C is an odd multiple
  // of 16.
  __attribute__((target("avx2,fma"))) void row(int64_t item) {
    const auto [c_begin, c_end] = channels_of(item);
    item /= groups_;
    const int64_t n = item / OH_, oh = item % OH_;
    int8_t* y = y_.data_mutable<int8_t>() + item * OW_ * C_;
    thread_local std::vector<const int8_t*> taps;
    taps.resize(static_cast<size_t>(pairs_ * 2));
    for (int64_t ow = 0; ow < OW_; ++ow) {
      pixel_taps(n, oh, ow, taps.data());
      int8_t* yo = y + ow * C_;
      int64_t c = block_ == 32 ? blocks32(taps.data(), c_begin, c_end, yo) : c_begin;
      for (; c < c_end; c += 16) block16(taps.data(), c, packed_.data() + c * pairs_ * 2, yo);
    }
  }

  // The whole 32-channel blocks from c_begin (AVX-512) of one output pixel; returns where they end.
  __attribute__((target("avx512f,avx512bw,avx512vl"))) int64_t blocks32(const int8_t* const* taps, int64_t c_begin,
                                                                         int64_t c_end, int8_t* yo) const {
    int64_t c = c_begin;
    for (; c + 32 <= c_end; c += 32) {
      const int16_t* wb = packed_.data() + c * pairs_ * 2;
      __m512i lo = _mm512_loadu_si512(bias_.data() + c), hi = _mm512_loadu_si512(bias_.data() + c + 16);
      for (int64_t pr = 0; pr < pairs_; ++pr) {
        const __m512i x0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[2 * pr] + c)));
        const __m512i x1 =
            _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[2 * pr + 1] + c)));
        lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(x0, x1), _mm512_loadu_si512(wb + pr * 64)));
        hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(x0, x1), _mm512_loadu_si512(wb + pr * 64 + 32)));
      }
      // Per 128-bit lane l, lo holds channels 8l .. 8l+3 and hi 8l+4 .. 8l+7: vpackssdw restores
      // the order, vpmovswb narrows (the values are in int8 range already).
      const __m512i q16 = _mm512_packs_epi32(native::requantize16(lo, scale_.data() + c, rq_),
                                             native::requantize16(hi, scale_.data() + c + 16, rq_));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yo + c), _mm512_cvtsepi16_epi8(q16));
    }
    return c;
  }

  ir::ConvAttrs attrs_;
  int64_t C_, block_, T_ = 0, pairs_ = 0;
  std::vector<int16_t, Aligned32<int16_t>> packed_;
  std::vector<int32_t> bias_;
  std::vector<float> scale_;
  std::vector<int8_t> zero_row_;
  Requant rq_{};
  Tensor x_, y_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, groups_ = 1, group_channels_ = 0;
};

// Winograd F(2x2, 3x3) for dense 3x3 stride-1 int8 convolutions (most of a ResNet's work), in
// exact integer arithmetic: a 2x2 output tile is A^T [U ⊙ (B^T d B)] A / 4 for the 4x4 input tile
// d around it, with U = G' g G'^T and G' = 2G = [2 0 0; 1 1 1; 1 -1 1; 0 0 2] (integer, so U is 4x
// the textbook transform and the result 4x the sum, divided back exactly). Bounds: |B^T d B| <=
// 512 and |U| <= 9 * 2 * 2 * 128 = 1152 fit int16, so the 16 GEMMs [tiles x C] · [C x O] (one per
// position of the 4x4 transform) run on the dense kernel's vpmaddwd micro-kernel into int32: 16
// multiplies per 4 outputs and channel instead of 36. The output transform's sums may wrap in
// int32, but the final value (4x the convolution's accumulator) fits, and wrapping addition is
// exact modulo 2^32, so the integers are the dense kernel's, and XNNPACK's, exactly. Padding taps
// read the input zero point, corrected in the bias as there.
//
// Three parallel phases per run, as the float Winograd kernel (native_winograd.cc): input
// transform of every tile into V [16][tiles][C], GEMMs into M (per position, strips of 6 tiles x
// panels of 16 channels, the micro-kernel's tile layout), output transform with bias and
// requantization. Layers with few output pixels keep the dense kernel (setup switches to it).
constexpr int64_t kWinoPositions = 16;
// Measured on resnet18's layers at one thread against the dense kernel: 56x56 ~1.3x faster,
// 28x28 and 14x14 ~1.4x, 7x7 (16 tiles) still ~1.3x.
constexpr int64_t kWinoMinOutputPixels = 7 * 7;

// r = B^T z over one column (then one row) of a 4x4 input tile, B^T = [1 0 -1 0; 0 1 1 0;
// 0 -1 1 0; 0 1 0 -1].
__attribute__((target("avx2,fma"), always_inline)) inline void wino_input(const __m256i* z, __m256i* r) {
  r[0] = _mm256_sub_epi16(z[0], z[2]);
  r[1] = _mm256_add_epi16(z[1], z[2]);
  r[2] = _mm256_sub_epi16(z[2], z[1]);
  r[3] = _mm256_sub_epi16(z[1], z[3]);
}

// r = A^T m over one column (then one row) of a 4x4 GEMM result, A^T = [1 1 1 0; 0 1 -1 -1].
__attribute__((target("avx2,fma"), always_inline)) inline void wino_output(const __m256i* m, __m256i* r) {
  r[0] = _mm256_add_epi32(_mm256_add_epi32(m[0], m[1]), m[2]);
  r[1] = _mm256_sub_epi32(_mm256_sub_epi32(m[1], m[2]), m[3]);
}

class WinogradQ8 final : public Kernel {
 public:
  WinogradQ8(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, std::span<const float> w_scale,
             const q8::Prepared& p, int64_t C)
      : attrs_(a), C_(C), O_(w.dim(0)), w_(w), w_scale_(w_scale.begin(), w_scale.end()), prepared_(p) {
    if (b) b_ = *b;
    KP_ = C_ / 2;
    int64_t k_blocks = (KP_ + kKcPairs - 1) / kKcPairs;
    kc_ = (KP_ + k_blocks - 1) / k_blocks;
    panels_ = (O_ + kNr - 1) / kNr;
    const int64_t pos_size = panels_ * KP_ * 2 * kNr;
    packed_.assign(static_cast<size_t>(kWinoPositions * pos_size), 0);
    bias_.assign(static_cast<size_t>(panels_ * kNr), 0);
    scale_.assign(static_cast<size_t>(panels_ * kNr), 0.0f);
    const int8_t* wd = w.data<int8_t>();
    const int32_t zp_in = p.in[0].zero_point;
    constexpr int32_t kG2[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
    for (int64_t o = 0; o < O_; ++o) {
      const int64_t panel = o / kNr, lane = o % kNr, half = lane / 8, ch = lane % 8;
      int32_t sum = 0;
      for (int64_t c = 0; c < C_; ++c) {
        int32_t g[3][3], gg[4][3] = {};
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw) sum += g[kh][kw] = wd[((o * 3 + kh) * 3 + kw) * C_ + c];
        for (int i = 0; i < 4; ++i)
          for (int kh = 0; kh < 3; ++kh)
            for (int kw = 0; kw < 3; ++kw) gg[i][kw] += kG2[i][kh] * g[kh][kw];
        const int64_t pair = c / 2, k0 = pair / kc_ * kc_, kc = std::min(kc_, KP_ - k0);
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int32_t u = gg[i][0] * kG2[j][0] + gg[i][1] * kG2[j][1] + gg[i][2] * kG2[j][2];
            packed_[static_cast<size_t>((i * 4 + j) * pos_size + k0 * panels_ * 2 * kNr + panel * kc * 2 * kNr +
                                        (pair - k0) * 2 * kNr + half * 16 + ch * 2 + c % 2)] = static_cast<int16_t>(u);
          }
      }
      const native::Q8Channel q = native::q8_channel(b, w_scale, p, o, sum);
      bias_[static_cast<size_t>(o)] = q.bias;
      scale_[static_cast<size_t>(o)] = q.scale;
    }
    zp_in_ = static_cast<int16_t>(zp_in);
    rq_ = Requant::of(p);
  }

  std::string_view name() const override { return dense_active_ ? dense_->name() : "native_winograd_q8_f23"; }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    dense_active_ = OH_ * OW_ < kWinoMinOutputPixels;
    if (dense_active_) {
      if (!dense_)
        dense_ = std::make_unique<NativeConvQ8>(attrs_, w_, b_.defined() ? &b_ : nullptr, w_scale_, prepared_, C_);
      dense_->setup(in, out, ctx);
      return;
    }
    tiles_h_ = (OH_ + 1) / 2;
    tiles_w_ = (OW_ + 1) / 2;
    tiles_ = N_ * tiles_h_ * tiles_w_;
    strips_ = (tiles_ + kMr - 1) / kMr;
    v_.resize(static_cast<size_t>(kWinoPositions * tiles_ * C_));
    m_.resize(static_cast<size_t>(kWinoPositions * strips_ * panels_ * kMr * kNr));
    // GEMM rows (tiles) per parallel item: a block of V at most ~256 KB.
    block_rows_ = std::clamp<int64_t>((1 << 18) / (kc_ * 4) / kMr * kMr, kMr, 16 * kMr);
    row_blocks_ = (tiles_ + block_rows_ - 1) / block_rows_;
  }

  void run(const RunContext& ctx) override {
    if (dense_active_) {
      dense_->run(ctx);
      return;
    }
    native::parallel(ctx, tiles_, [](void* self, size_t i) {
      static_cast<WinogradQ8*>(self)->transform_input(static_cast<int64_t>(i));
    }, this);
    native::parallel(ctx, kWinoPositions * row_blocks_, [](void* self, size_t i) {
      static_cast<WinogradQ8*>(self)->gemm(static_cast<int64_t>(i));
    }, this);
    native::parallel(ctx, tiles_, [](void* self, size_t i) {
      static_cast<WinogradQ8*>(self)->transform_output(static_cast<int64_t>(i));
    }, this);
  }

 private:
  // V[pos][tile][0, C) = B^T d B (int16) for the 4x4 input window of `tile`.
  __attribute__((target("avx2,fma"))) void transform_input(int64_t tile) {
    const int64_t n = tile / (tiles_h_ * tiles_w_), rem = tile % (tiles_h_ * tiles_w_);
    const int64_t ih0 = rem / tiles_w_ * 2 - attrs_.pads[0], iw0 = rem % tiles_w_ * 2 - attrs_.pads[1];
    const int8_t* src[4][4];
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t ih = ih0 + i, iw = iw0 + j;
        src[i][j] = ih >= 0 && ih < H_ && iw >= 0 && iw < W_ ? x_.data<int8_t>() + ((n * H_ + ih) * W_ + iw) * C_ : nullptr;
      }
    int16_t* v = v_.data() + tile * C_;
    const int64_t pos_stride = tiles_ * C_;
    const __m256i zp = _mm256_set1_epi16(zp_in_);
    for (int64_t c = 0; c < C_; c += 16) {
      __m256i d[4][4], t[4][4];
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 4; ++j)
          d[j][i] = src[i][j] ? _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i][j] + c)))
                              : zp;
      for (int64_t j = 0; j < 4; ++j) {  // columns (d is held transposed), then rows
        __m256i r[4];
        wino_input(d[j], r);
        for (int64_t i = 0; i < 4; ++i) t[i][j] = r[i];
      }
      for (int64_t i = 0; i < 4; ++i) {
        __m256i r[4];
        wino_input(t[i], r);
        for (int64_t j = 0; j < 4; ++j)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + (i * 4 + j) * pos_stride + c), r[j]);
      }
    }
  }

  // M[pos] for the tiles of one row block, all panels; item = (position, row block).
  void gemm(int64_t item) {
    const int64_t pos = item / row_blocks_, m0 = item % row_blocks_ * block_rows_;
    const int64_t rows = std::min(block_rows_, tiles_ - m0), strips = (rows + kMr - 1) / kMr;
    const auto* a = reinterpret_cast<const int32_t*>(v_.data() + (pos * tiles_ + m0) * C_);
    const int16_t* u = packed_.data() + pos * panels_ * KP_ * 2 * kNr;
    alignas(32) static const int32_t kZeros[kNr] = {};
    for (int64_t k0 = 0; k0 < KP_; k0 += kc_) {
      const int64_t kc = std::min(kc_, KP_ - k0);
      for (int64_t p = 0; p < panels_; ++p) {
        auto* kernel = O_ - p * kNr > 8 ? q8_kernel_6x16<true> : q8_kernel_6x16<false>;
        const int16_t* b = u + k0 * panels_ * 2 * kNr + p * kc * 2 * kNr;
        for (int64_t s = 0; s < strips; ++s) {
          const int64_t r = s * kMr, mr = std::min(kMr, rows - r);
          const int32_t* rowp[kMr];
          for (int64_t i = 0; i < kMr; ++i) rowp[i] = a + (r + std::min(i, mr - 1)) * KP_ + k0;
          int32_t* acc = m_.data() + ((pos * strips_ + m0 / kMr + s) * panels_ + p) * kMr * kNr;
          kernel(kc, rowp, b, kZeros, k0 == 0, acc, nullptr, nullptr, 0, mr, kNr);
        }
      }
    }
  }

  // The tile's output pixels: (A^T m A) / 4 + bias, requantized.
  __attribute__((target("avx2,fma"))) void transform_output(int64_t tile) {
    const int64_t n = tile / (tiles_h_ * tiles_w_), rem = tile % (tiles_h_ * tiles_w_);
    const int64_t oh0 = rem / tiles_w_ * 2, ow0 = rem % tiles_w_ * 2;
    const int64_t rows = std::min<int64_t>(2, OH_ - oh0), cols = std::min<int64_t>(2, OW_ - ow0);
    const int32_t* m = m_.data() + (tile / kMr * panels_ * kMr + tile % kMr) * kNr;
    const int64_t pos_stride = strips_ * panels_ * kMr * kNr;
    int8_t* y = y_.data_mutable<int8_t>() + ((n * OH_ + oh0) * OW_ + ow0) * O_;
    for (int64_t p = 0; p < panels_; ++p, m += kMr * kNr) {
      const int64_t count = std::min(kNr, O_ - p * kNr);
      __m256i out[2][2][2];  // [row][col][half]
      for (int64_t h = 0; h < 2; ++h) {
        __m256i d[4][4], s[2][4];
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t j = 0; j < 4; ++j)
            d[j][i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(m + (i * 4 + j) * pos_stride + h * 8));
        for (int64_t j = 0; j < 4; ++j) {
          __m256i r[2];
          wino_output(d[j], r);
          s[0][j] = r[0];
          s[1][j] = r[1];
        }
        const int64_t o = p * kNr + h * 8;
        const __m256i bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias_.data() + o));
        for (int64_t i = 0; i < 2; ++i) {
          __m256i r[2];
          wino_output(s[i], r);
          for (int64_t j = 0; j < 2; ++j)
            out[i][j][h] = requantize8(_mm256_add_epi32(_mm256_srai_epi32(r[j], 2), bias), scale_.data() + o, rq_);
        }
      }
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(out[i][j][0], out[i][j][1]), 0xD8);
          const __m128i w8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
          int8_t* dst = y + (i * OW_ + j) * O_ + p * kNr;
          if (count == kNr) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), w8);
          } else {
            alignas(16) int8_t tmp[kNr];
            _mm_store_si128(reinterpret_cast<__m128i*>(tmp), w8);
            std::memcpy(dst, tmp, static_cast<size_t>(count));
          }
        }
    }
  }

  ir::ConvAttrs attrs_;
  int64_t C_, O_, KP_ = 0, kc_ = 1, panels_ = 0;
  Tensor w_, b_;  // kept for the dense kernel small bound shapes get
  std::vector<float> w_scale_;
  q8::Prepared prepared_;
  std::unique_ptr<NativeConvQ8> dense_;
  bool dense_active_ = false;
  std::vector<int16_t, Aligned32<int16_t>> packed_;  // U per position, the dense kernel's B layout
  std::vector<int32_t> bias_;
  std::vector<float> scale_;
  int16_t zp_in_ = 0;
  Requant rq_{};
  Tensor x_, y_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, tiles_h_ = 0, tiles_w_ = 0, tiles_ = 0, strips_ = 0;
  int64_t block_rows_ = kMr, row_blocks_ = 0;
  std::vector<int16_t> v_;                        // V [16][tiles][C]
  std::vector<int32_t, Aligned32<int32_t>> m_;    // M [16][strips][panels][6][16]
};

std::unique_ptr<Kernel> make_native_conv_q8(const KernelRequest& req) {
  const auto& a = req.node.attr<ir::ConvAttrs>();
  if (a.groups != 1) return nullptr;
  const int64_t C = xnn::static_dim(req.graph, req.node.inputs[0], 3);
  const ir::Value& w = req.graph.value(req.node.inputs[1]);
  if (C <= 0 || !w.is_constant() || w.constant.rank() != 4 || w.constant.dim(3) != C) return nullptr;
  auto p = native::accept_q8_conv(req);
  if (!p) return nullptr;
  return std::make_unique<NativeConvQ8>(a, w.constant, native::q8_conv_bias(req), w.quant->scale, *p, C);
}

std::unique_ptr<Kernel> make_winograd_q8(const KernelRequest& req) {
  const auto& a = req.node.attr<ir::ConvAttrs>();
  const std::vector<int64_t> three{3, 3}, one{1, 1};
  if (a.kernel != three || a.strides != one || a.dilations != one || a.groups != 1) return nullptr;
  const int64_t C = xnn::static_dim(req.graph, req.node.inputs[0], 3);
  const ir::Value& w = req.graph.value(req.node.inputs[1]);
  if (C < 16 || C % 16 != 0 || !w.is_constant() || w.constant.rank() != 4 || w.constant.dim(3) != C) return nullptr;
  // With a static spatial shape, a small layer keeps the dense kernel from the start.
  const int64_t H = xnn::static_dim(req.graph, req.node.inputs[0], 1), W = xnn::static_dim(req.graph, req.node.inputs[0], 2);
  if (H > 0 && W > 0 &&
      (H + a.pads[0] + a.pads[2] - 2) * (W + a.pads[1] + a.pads[3] - 2) < kWinoMinOutputPixels)
    return nullptr;
  auto p = native::accept_q8_conv(req);
  if (!p) return nullptr;
  return std::make_unique<WinogradQ8>(a, w.constant, native::q8_conv_bias(req), w.quant->scale, *p, C);
}

std::unique_ptr<Kernel> make_native_dwconv_q8(const KernelRequest& req) {
  const auto& a = req.node.attr<ir::ConvAttrs>();
  const int64_t C = xnn::static_dim(req.graph, req.node.inputs[0], 3);
  const ir::Value& w = req.graph.value(req.node.inputs[1]);
  if (C <= 0 || C % 16 != 0 || a.groups != C || !w.is_constant() || w.constant.rank() != 4 ||
      w.constant.dim(0) != C || w.constant.dim(3) != 1)
    return nullptr;
  auto p = native::accept_q8_conv(req);
  if (!p) return nullptr;
  return std::make_unique<NativeDwConvQ8>(a, w.constant, native::q8_conv_bias(req), w.quant->scale, *p, C,
                                          native::isa_enabled(native::Isa::kAvx512));
}

}  // namespace

std::optional<q8::Prepared> native::accept_q8_conv(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const bool gemm = n.op == ir::OpKind::kGemm;
  if (!cpu_has_avx2_fma()) return std::nullopt;
  if (!gemm) {
    const auto& a = n.attr<ir::ConvAttrs>();
    if (a.layout != ir::Layout::kNHWC || a.kernel.size() != 2) return std::nullopt;
    for (int64_t v : a.pads)
      if (v < 0) return std::nullopt;
  }
  if (!q8::is_quantized_node(req.graph, n) || req.graph.value(n.inputs[0]).dtype != DType::kInt8 ||
      req.graph.value(n.outputs[0]).dtype != DType::kInt8)
    return std::nullopt;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || w.constant.dtype() != DType::kInt8 || w.constant.rank() != (gemm ? 2 : 4) || !w.quant ||
      (b && (!b->is_constant() || b->constant.dtype() != DType::kInt32)))
    return std::nullopt;
  for (int64_t zp : w.quant->zero_point)
    if (zp != 0) return std::nullopt;
  const auto& ws = w.quant->scale;
  if (ws.size() != 1 && (static_cast<int64_t>(ws.size()) != w.constant.dim(0) || w.quant->axis != 0))
    return std::nullopt;
  q8::Prepared p = q8::prepare(req.graph, n);  // throws on bad quantization, as the reference does
  for (float s : ws) {
    double r = static_cast<double>(p.in[0].scale) * s / p.out.scale;
    if (!std::isfinite(r) || r < 0x1.0p-30 || r >= 0x1.0p+7) return std::nullopt;
  }
  return p;
}

const Tensor* native::q8_conv_bias(const KernelRequest& req) {
  const ir::Node& n = req.node;
  return n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]).constant : nullptr;
}

native::Q8Channel native::q8_channel(const Tensor* bias, std::span<const float> w_scale, const q8::Prepared& p,
                                     int64_t o, int32_t weight_sum) {
  const uint32_t b = bias ? static_cast<uint32_t>(bias->data<int32_t>()[o]) : 0u;
  const uint32_t zp_in = static_cast<uint32_t>(p.in[0].zero_point);
  const float ws = w_scale.size() > 1 ? w_scale[static_cast<size_t>(o)] : w_scale[0];
  return {static_cast<int32_t>(b - zp_in * static_cast<uint32_t>(weight_sum)), p.in[0].scale * ws / p.out.scale};
}

void register_native_q8_kernels(KernelRegistry& r) {
  // AMX first where the CPU has it (every dense convolution, faster than Winograd's fewer
  // multiplies on AVX2); then Winograd, which declines every node but 3x3 stride-1 convolutions
  // large enough to gain.
  r.add(ir::OpKind::kConv, DType::kInt8, KernelBackend::kNative, native::make_amx_conv_q8);
  r.add(ir::OpKind::kGemm, DType::kInt8, KernelBackend::kNative, native::make_amx_conv_q8);
  r.add(ir::OpKind::kConv, DType::kInt8, KernelBackend::kNative, make_winograd_q8);
  r.add(ir::OpKind::kConv, DType::kInt8, KernelBackend::kNative, make_native_conv_q8);
  r.add(ir::OpKind::kConv, DType::kInt8, KernelBackend::kNative, make_native_dwconv_q8);
}

}  // namespace modex::runtime
