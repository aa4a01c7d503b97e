// Dense (groups = 1) int8 NHWC convolution on AMX tiles (Intel's Advanced Matrix Extensions:
// eight 1 KB tile registers and TDPBSSD, which multiplies a 16 x 64 int8 tile by a 64 x 16 one and
// adds the products into a 16 x 16 int32 tile: 16,384 multiply-adds per instruction, where AVX2's
// vpmaddwd does 16 and AVX-512 VNNI's vpdpbusd 64).
//
// Arithmetic as in the AVX2 kernel (native_conv_q8.cc): acc = bias[o] - zp_in * sum_k w[o][k] +
// sum_k x[k] * w[o][k], exact in int32; TDPBSSD multiplies signed bytes by signed bytes, so the
// input is used as it is (padding taps read the input zero point, K's padding to 64 has weight 0).
// Requantized as XNNPACK's fp32 kernels do (16 channels at a time with AVX-512), so the integers
// equal the AVX2 kernel's, XNNPACK's and LiteRT's.
//
// Layout. A: the im2col rows of each step's output pixels, gathered into a per-thread buffer, K
// padded to a multiple of 64 (one tile row); for 1x1 stride-1 convolutions the input itself. B: packed once, per panel of 16
// output channels, per 64-deep K step one 16 x 64 tile whose row q holds, for each channel, the
// weights of taps 4q .. 4q+3 (the order TDPBSSD pairs with an A row). Each step of the inner loop
// computes 32 pixels x 32 channels: tiles 0-3 accumulate C (two row halves x two panels) over the
// whole K, from two A tiles (4, 5) and two B tiles (6, 7), so no partial sum leaves the tiles.
// C is then stored to a small int32 buffer and requantized into the output. Work items are blocks
// of output rows and, when those are too few for the threads, groups of panel pairs.
#include "runtime/kernels/simd.h"
#include <pthreadpool.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/native_q8.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

constexpr int64_t kTileK = 64;     // K values per A tile row (bytes)
constexpr int64_t kTileRows = 16;  // rows of an A or C tile, K quads of a B tile
constexpr int64_t kPanel = 16;     // output channels per B tile
constexpr int64_t kStep = 32;      // output pixels per inner step: two A tiles
constexpr int64_t kTileBytes = kTileRows * kTileK;

// The tile configuration LDTILECFG reads (palette 1): every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

const TileConfig& tile_config() {
  static const TileConfig config = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) c.colsb[t] = kTileK, c.rows[t] = kTileRows;
    return c;
  }();
  return config;
}

// 64-byte aligned storage for tile loads (not required by TILELOADD, but a row then never splits a
// cache line).
template <class T>
using Aligned64 = native::AlignedAllocator<T, 64>;

using native::Requant;

// Rows [0, rows) of y (row stride ldy), channels [0, cols) of a 16-channel panel = requantized
// (acc + bias), acc rows ldc apart. The panel's bias, scales and bounds are loaded once: the int8
// stores may alias anything, so the compiler would otherwise reload them for every row.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void requantize_rows(const int32_t* acc, int64_t ldc,
                                                                                  int64_t rows, const int32_t* bias,
                                                                                  const float* scale, const Requant& q,
                                                                                  int8_t* y, int64_t ldy, int64_t cols) {
  const __m512i vb = _mm512_loadu_si512(bias), vzp = _mm512_set1_epi32(q.zp), vmin = _mm512_set1_epi32(q.min_less_zp);
  const __m512 vs = _mm512_loadu_ps(scale), vmax = _mm512_set1_ps(q.max_less_zp);
  const __mmask16 mask = static_cast<__mmask16>(cols == kPanel ? 0xFFFFu : (1u << cols) - 1);
  for (int64_t r = 0; r < rows; ++r) {
    // XNNPACK's fp32 requantization, as native::requantize16.
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_loadu_si512(acc + r * ldc), vb)), vs);
    f = _mm512_min_ps(f, vmax);
    const __m512i i = _mm512_add_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(f), vmin), vzp);
    _mm_mask_storeu_epi8(y + r * ldy, mask, _mm512_cvtsepi32_epi8(i));  // in int8 range: no saturation
  }
}

// c (32 x 32 int32, row stride 32) = A (kStep rows, row stride lda) x B for `steps` K steps:
// b0 and b1 (the second panel, when kTwoPanels) each hold `steps` packed 16 x 64 tiles. With
// kTwoHalves false only A's first 16 rows are computed.
template <bool kTwoHalves, bool kTwoPanels>
__attribute__((target("amx-tile,amx-int8"))) void amx_block(const int8_t* a, int64_t lda, const int8_t* b0,
                                                             const int8_t* b1, int64_t steps, int32_t* c) {
  _tile_zero(0);
  if constexpr (kTwoPanels) _tile_zero(1);
  if constexpr (kTwoHalves) _tile_zero(2);
  if constexpr (kTwoHalves && kTwoPanels) _tile_zero(3);
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, a + s * kTileK, lda);
    _tile_loadd(6, b0 + s * kTileBytes, kTileK);
    _tile_dpbssd(0, 4, 6);
    if constexpr (kTwoPanels) {
      _tile_loadd(7, b1 + s * kTileBytes, kTileK);
      _tile_dpbssd(1, 4, 7);
    }
    if constexpr (kTwoHalves) {
      _tile_loadd(5, a + kTileRows * lda + s * kTileK, lda);
      _tile_dpbssd(2, 5, 6);
      if constexpr (kTwoPanels) _tile_dpbssd(3, 5, 7);
    }
  }
  constexpr int64_t ldc = 2 * kPanel * sizeof(int32_t);
  _tile_stored(0, c, ldc);
  if constexpr (kTwoPanels) _tile_stored(1, c + kPanel, ldc);
  if constexpr (kTwoHalves) _tile_stored(2, c + kTileRows * 2 * kPanel, ldc);
  if constexpr (kTwoHalves && kTwoPanels) _tile_stored(3, c + kTileRows * 2 * kPanel + kPanel, ldc);
}

// dst[0, n) = src[0, n) / = v, 64 bytes at a time (the rows are short: a call to memcpy per
// kernel row of a 1x1 convolution cost more than the copy).
__attribute__((target("avx512f,avx512bw"))) inline void copy_bytes(int8_t* dst, const int8_t* src, int64_t n) {
  for (; n >= 64; n -= 64, src += 64, dst += 64) _mm512_storeu_si512(dst, _mm512_loadu_si512(src));
  if (n > 0) {
    const __mmask64 m = (__mmask64{1} << n) - 1;
    _mm512_mask_storeu_epi8(dst, m, _mm512_maskz_loadu_epi8(m, src));
  }
}
__attribute__((target("avx512f,avx512bw"))) inline void fill_bytes(int8_t* dst, int8_t v, int64_t n) {
  const __m512i x = _mm512_set1_epi8(v);
  for (; n >= 64; n -= 64, dst += 64) _mm512_storeu_si512(dst, x);
  if (n > 0) _mm512_mask_storeu_epi8(dst, (__mmask64{1} << n) - 1, x);
}

__attribute__((target("amx-tile"))) void load_tile_config() { _tile_loadconfig(&tile_config()); }
__attribute__((target("amx-tile"))) void release_tiles() { _tile_release(); }

class AmxConvQ8 final : public Kernel {
 public:
  AmxConvQ8(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, std::span<const float> w_scale,
            const q8::Prepared& p, int64_t C, bool gemm)
      : attrs_(a), C_(C), gemm_(gemm) {
    O_ = w.dim(0);
    K_ = a.kernel[0] * a.kernel[1] * C;
    steps_ = (K_ + kTileK - 1) / kTileK;
    Kp_ = steps_ * kTileK;
    panels_ = (O_ + kPanel - 1) / kPanel;
    packed_.assign(static_cast<size_t>(panels_ * steps_ * kTileBytes), 0);
    bias_.assign(static_cast<size_t>(panels_ * kPanel), 0);
    scale_.assign(static_cast<size_t>(panels_ * kPanel), 0.0f);
    const int8_t* wd = w.data<int8_t>();
    for (int64_t o = 0; o < O_; ++o) {
      const int64_t panel = o / kPanel, ch = o % kPanel;
      int32_t sum = 0;
      for (int64_t k = 0; k < K_; ++k) {
        const int8_t v = wd[o * K_ + k];
        sum += v;
        // Tile (panel, k / 64), row (k % 64) / 4, channel ch's 4-byte group, byte k % 4.
        packed_[static_cast<size_t>((panel * steps_ + k / kTileK) * kTileBytes + (k % kTileK) / 4 * kTileK + ch * 4 +
                                    k % 4)] = v;
      }
      const native::Q8Channel q = native::q8_channel(b, w_scale, p, o, sum);
      bias_[static_cast<size_t>(o)] = q.bias;
      scale_[static_cast<size_t>(o)] = q.scale;
    }
    zp_in_ = static_cast<int8_t>(p.in[0].zero_point);
    direct_ = a.kernel[0] == 1 && a.kernel[1] == 1 && a.strides[0] == 1 && a.strides[1] == 1 &&
              std::all_of(a.pads.begin(), a.pads.end(), [](int64_t v) { return v == 0; });
    rq_ = Requant::of(p);
  }
  std::string_view name() const override {
    return gemm_ ? "native_fully_connected_q8_amx" : "native_conv2d_nhwc_q8_amx";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    N_ = x_.dim(0);
    H_ = gemm_ ? 1 : x_.dim(1);
    W_ = gemm_ ? 1 : x_.dim(2);
    OH_ = gemm_ ? 1 : y_.dim(1);
    OW_ = gemm_ ? 1 : y_.dim(2);
    M_ = N_ * OH_ * OW_;
    // Rows per block (the unit of work for the threads): a multiple of the 32-row step, A at most
    // ~128 KB.
    const int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    block_rows_ = std::clamp<int64_t>((1 << 17) / Kp_ / kStep * kStep, kStep, 16 * kStep);
    block_rows_ = std::min(block_rows_, (M_ + kStep - 1) / kStep * kStep);
    int64_t row_blocks = (M_ + block_rows_ - 1) / block_rows_;
    const int64_t pairs = (panels_ + 1) / 2;
    pairs_per_group_ = pairs;
    if (threads > 1 && row_blocks < 4 * threads) {
      if (row_blocks < 2 * threads && pairs > 1) {
        const int64_t groups = std::min(pairs, (4 * threads + row_blocks - 1) / row_blocks);
        pairs_per_group_ = (pairs + groups - 1) / groups;
      } else {
        const int64_t per_thread = (M_ + 2 * threads - 1) / (2 * threads);
        block_rows_ = std::min(block_rows_, std::max(kStep, (per_thread + kStep - 1) / kStep * kStep));
        row_blocks = (M_ + block_rows_ - 1) / block_rows_;
      }
    }
    col_groups_ = (pairs + pairs_per_group_ - 1) / pairs_per_group_;
    row_blocks_ = row_blocks;
    // Padded: short kernel rows (the 3-channel stems: 3 x 3 = 9 bytes) are gathered from a copy
    // of the input bordered with the input zero point, so a row's taps need no bounds checks.
    padded_ = !direct_ && attrs_.dilations[0] == 1 && attrs_.dilations[1] == 1 && attrs_.kernel[1] * C_ < kTileK;
    if (padded_) {
      Hp_ = (OH_ - 1) * attrs_.strides[0] + attrs_.kernel[0];
      Wp_ = (OW_ - 1) * attrs_.strides[1] + attrs_.kernel[1];
      padded_input_.assign(static_cast<size_t>(N_ * Hp_ * Wp_ * C_), zp_in_);
    }
  }

  void run(const RunContext& ctx) override {
    if (padded_)
      native::copy_into_bordered(x_.data<int8_t>(), N_, H_, W_, C_, padded_input_.data(), Hp_, Wp_, attrs_.pads[0],
                                 attrs_.pads[1]);
    native::parallel(ctx, row_blocks_ * col_groups_, [](void* self, size_t i) {
      static_cast<AmxConvQ8*>(self)->run_block(static_cast<int64_t>(i));
    }, this, M_ * K_ * O_);
  }

 private:

  // Padded mode's gather: each kernel row of a window is kW * C contiguous bytes of the copy.
  __attribute__((target("avx512f,avx512bw"))) void gather_padded(int64_t m0, int64_t rows, int64_t padded_rows,
                                                                 int8_t* buf) const {
    const int64_t KH = attrs_.kernel[0], row_len = attrs_.kernel[1] * C_;
    const int64_t sh = attrs_.strides[0], sw = attrs_.strides[1];
    const __mmask64 mask = (__mmask64{1} << row_len) - 1;
    int64_t n = m0 / (OH_ * OW_), oh = m0 % (OH_ * OW_) / OW_, ow = m0 % OW_;
    for (int64_t r = 0; r < rows; ++r) {
      int8_t* dst = buf + r * Kp_;
      if (K_ % kTileK) _mm512_storeu_si512(dst + K_ / kTileK * kTileK, _mm512_setzero_si512());  // K's padding: 0
      const int8_t* src = padded_input_.data() + ((n * Hp_ + oh * sh) * Wp_ + ow * sw) * C_;
      for (int64_t kh = 0; kh < KH; ++kh, dst += row_len, src += Wp_ * C_)
        _mm512_mask_storeu_epi8(dst, mask, _mm512_maskz_loadu_epi8(mask, src));
      if (++ow == OW_) {
        ow = 0;
        if (++oh == OH_) oh = 0, ++n;
      }
    }
    fill_bytes(buf + rows * Kp_, 0, (padded_rows - rows) * Kp_);
  }

  // A rows [m0, m0 + rows) into buf (padded_rows x Kp_): taps outside the input read the input
  // zero point, K's padding and the rows past `rows` read 0 (their weights are 0, their outputs
  // are not stored).
  __attribute__((target("avx512f,avx512bw"))) void gather(int64_t m0, int64_t rows, int64_t padded_rows,
                                                          int8_t* buf) const {
    const ir::ConvAttrs& a = attrs_;
    const int8_t* xd = x_.data<int8_t>();
    const int64_t KW = a.kernel[1];
    // (n, oh, ow) of row r, stepped rather than divided out per row (the stems gather 12,544).
    int64_t n = m0 / (OH_ * OW_), oh = m0 % (OH_ * OW_) / OW_, ow = m0 % OW_;
    for (int64_t r = 0; r < rows; ++r) {
      int8_t* dst = buf + r * Kp_;
      for (int64_t kh = 0; kh < a.kernel[0]; ++kh) {
        const int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
        if (a.dilations[1] == 1) {
          // The kW taps of one kernel row are contiguous in NHWC.
          const int64_t iw0 = ow * a.strides[1] - a.pads[1];
          const int64_t lo = std::clamp<int64_t>(-iw0, 0, KW), hi = std::clamp<int64_t>(W_ - iw0, 0, KW);
          if (ih < 0 || ih >= H_ || lo >= hi) {
            fill_bytes(dst, zp_in_, KW * C_);
          } else {
            fill_bytes(dst, zp_in_, lo * C_);
            copy_bytes(dst + lo * C_, xd + ((n * H_ + ih) * W_ + iw0 + lo) * C_, (hi - lo) * C_);
            fill_bytes(dst + hi * C_, zp_in_, (KW - hi) * C_);
          }
          dst += KW * C_;
          continue;
        }
        for (int64_t kw = 0; kw < KW; ++kw, dst += C_) {
          const int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
          if (ih < 0 || ih >= H_ || iw < 0 || iw >= W_)
            fill_bytes(dst, zp_in_, C_);
          else
            copy_bytes(dst, xd + ((n * H_ + ih) * W_ + iw) * C_, C_);
        }
      }
      fill_bytes(buf + r * Kp_ + K_, 0, Kp_ - K_);
      if (++ow == OW_) {
        ow = 0;
        if (++oh == OH_) oh = 0, ++n;
      }
    }
    fill_bytes(buf + rows * Kp_, 0, (padded_rows - rows) * Kp_);
  }

  void run_block(int64_t item) {
    const int64_t block = item / col_groups_, group = item % col_groups_;
    const int64_t p_begin = group * pairs_per_group_ * 2;
    const int64_t p_end = std::min(panels_, p_begin + pairs_per_group_ * 2);
    const int64_t m0 = block * block_rows_, rows = std::min(block_rows_, M_ - m0);
    // Per-thread buffer for one step's gathered rows (concurrent runs of one model use different
    // threads).
    thread_local std::vector<int8_t, Aligned64<int8_t>> a_buf;
    if (a_buf.size() < static_cast<size_t>(kStep * Kp_)) a_buf.resize(static_cast<size_t>(kStep * Kp_));
    alignas(64) int32_t c[kStep * 2 * kPanel];
    const int8_t* xd = x_.data<int8_t>();
    int8_t* y = y_.data_mutable<int8_t>() + m0 * O_;
    load_tile_config();
    for (int64_t r = 0; r < rows; r += kStep) {
      const int64_t step_rows = std::min(kStep, rows - r), tile_rows = step_rows > kTileRows ? kStep : kTileRows;
      // Direct: the input's pixels are the A rows (stride C). The last K step reads up to Kp - C
      // bytes past a row, into the next pixel's, where the weights are 0; it must stay inside the
      // input, so the last rows of the tensor are gathered.
      const int8_t* a;
      int64_t lda;
      if (direct_ && (m0 + r + tile_rows - 1) * C_ + Kp_ <= M_ * C_) {
        a = xd + (m0 + r) * C_;
        lda = C_;
      } else {
        if (padded_)
          gather_padded(m0 + r, step_rows, tile_rows, a_buf.data());
        else
          gather(m0 + r, step_rows, tile_rows, a_buf.data());
        a = a_buf.data();
        lda = Kp_;
      }
      for (int64_t p = p_begin; p < p_end; p += 2) {
        const bool two_panels = p + 1 < p_end, two_halves = step_rows > kTileRows;
        const int8_t* b0 = packed_.data() + p * steps_ * kTileBytes;
        const int8_t* b1 = b0 + steps_ * kTileBytes;
        if (two_halves && two_panels)
          amx_block<true, true>(a, lda, b0, b1, steps_, c);
        else if (two_halves)
          amx_block<true, false>(a, lda, b0, b1, steps_, c);
        else if (two_panels)
          amx_block<false, true>(a, lda, b0, b1, steps_, c);
        else
          amx_block<false, false>(a, lda, b0, b1, steps_, c);
        for (int64_t q = p; q < p + (two_panels ? 2 : 1); ++q) {
          const int64_t cols = std::min(kPanel, O_ - q * kPanel);
          requantize_rows(c + (q - p) * kPanel, 2 * kPanel, step_rows, bias_.data() + q * kPanel,
                          scale_.data() + q * kPanel, rq_, y + r * O_ + q * kPanel, O_, cols);
        }
      }
    }
    release_tiles();
  }

  ir::ConvAttrs attrs_;
  int64_t C_;
  bool gemm_;  // a fully connected layer: x [N, C], y [N, O]
  int64_t O_ = 0, K_ = 0, Kp_ = 0, steps_ = 0, panels_ = 0;
  std::vector<int8_t, Aligned64<int8_t>> packed_;
  std::vector<int32_t> bias_;
  std::vector<float> scale_;
  Requant rq_{};
  int8_t zp_in_ = 0;
  bool direct_ = false;  // 1x1, stride 1, no padding: the input is A
  bool padded_ = false;  // short kernel rows: gathered from padded_input_
  int64_t Hp_ = 0, Wp_ = 0;
  std::vector<int8_t> padded_input_;  // [N, Hp, Wp, C], bordered with the input zero point
  Tensor x_, y_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, M_ = 0, block_rows_ = kStep;
  int64_t row_blocks_ = 0, col_groups_ = 1, pairs_per_group_ = 1;
};

}  // namespace

std::unique_ptr<Kernel> native::make_amx_conv_q8(const KernelRequest& req) {
  if (!isa_enabled(Isa::kAmx)) return nullptr;
  const ir::Value& x = req.graph.value(req.node.inputs[0]);
  const ir::Value& w = req.graph.value(req.node.inputs[1]);
  if (!w.is_constant()) return nullptr;
  const bool gemm = req.node.op == ir::OpKind::kGemm;
  ir::ConvAttrs a;
  if (gemm) {
    // [N, I] x [O, I]^T: a 1x1 convolution over N pixels of I channels.
    if (x.shape.size() != 2 || w.constant.rank() != 2) return nullptr;
    a.kernel = {1, 1};
    a.layout = ir::Layout::kNHWC;
  } else {
    a = req.node.attr<ir::ConvAttrs>();
    if (a.groups != 1 || w.constant.rank() != 4) return nullptr;
  }
  const int64_t C = xnn::static_dim(req.graph, req.node.inputs[0], gemm ? 1 : 3);
  if (C <= 0 || w.constant.dim(w.constant.rank() - 1) != C) return nullptr;
  auto p = accept_q8_conv(req);
  if (!p) return nullptr;
  return std::make_unique<AmxConvQ8>(a, w.constant, q8_conv_bias(req), w.quant->scale, *p, C, gemm);
}

}  // namespace modex::runtime
