// Dense (groups = 1) NHWC convolution as an implicit GEMM with an AVX2/FMA 6x16 micro-kernel, or
// where the CPU has AVX-512 (and no limit excludes it) an AVX-512 12x32 one over panel pairs.
//
// Why not XNNPACK here: Debian's libXNNPACK (0.0~git20220216) is compiled so that its f32 5x16
// FMA3 igemm micro-kernel keeps one accumulator on the stack (a store-to-load dependency in the
// inner loop), which makes every dense convolution ~2.5x slower than the hardware allows
// (measured: resnet18 104 ms vs ONNX Runtime 42 ms on one core). Depthwise and the other ops
// stay on XNNPACK. Chosen only when the CPU has AVX2 and FMA; otherwise XNNPACK takes the node.
//
// C[M, O] = A[M, K] · B[K, O] + bias, M = N·OH·OW output pixels, K = kH·kW·C (the weight layout's
// order). B is packed once into 16-column panels. A is never materialised for 1x1 stride-1
// convolutions (the input already is A) nor, with unit dilation and kW*C >= 64, for the others:
// a per-block table points at each kernel row's kW*C contiguous input floats, and only windows
// crossing the border are gathered into zero-padded copies ("indirect A"). Short rows with one
// K block (the 3-channel stems) read their windows in place too, the micro-kernel stepping from
// kernel row to kernel row by the input's row stride, border windows from zero-padded copies laid
// out with that stride ("padded"). The rest (dilated
// convolutions, deep short-row ones) gather im2col rows per block. Work items are blocks of
// output rows; when there are too few for the threads (7x7 / 14x14 late layers), groups of
// output-channel panels too. ReLU / ReLU6 clamp and SiLU are applied to the tile in registers.
// 3x3 stride-1 convolutions with enough pixels and channels go to the Winograd kernel
// (native_winograd.cc, registered first), which runs its GEMMs on this micro-kernel.
#include "runtime/kernels/simd.h"
#include <pthreadpool.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/native_math.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {

void native::parallel(const RunContext& ctx, int64_t items, void (*fn)(void*, size_t), void* self, int64_t work) {
  if (ctx.pool && items > 1 && work >= kParallelWork) {
    std::lock_guard<std::mutex> lock(*ctx.pool_mutex);
    pthreadpool_parallelize_1d(ctx.pool, fn, self, static_cast<size_t>(items), 0);
  } else {
    for (int64_t i = 0; i < items; ++i) fn(self, static_cast<size_t>(i));
  }
}

__attribute__((target("avx2,fma"))) void native::silu_inplace(float* data, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(data + i, silu_avx2(_mm256_loadu_ps(data + i)));
  if (i < count) {
    alignas(32) float tail[8] = {};
    std::memcpy(tail, data + i, (count - i) * sizeof(float));
    _mm256_store_ps(tail, silu_avx2(_mm256_load_ps(tail)));
    std::memcpy(data + i, tail, (count - i) * sizeof(float));
  }
}

namespace {

// With AVX-512 VBMI: vpermi2b looks 64 bytes up in a 128-entry table (two registers) at once; the
// byte's top bit picks between the table's two halves.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void lookup_bytes_vbmi(const uint8_t* table, const uint8_t* x,
                                                                               uint8_t* y, size_t count) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64),
                t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  size_t i = 0;
  for (; i < count; i += 64) {
    const __mmask64 m = count - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (count - i)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(m, x + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
    _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
  }
}

}  // namespace

__attribute__((target("avx2,fma"))) void native::lookup_bytes(const uint8_t* table, const uint8_t* x, uint8_t* y,
                                                              size_t count) {
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (vbmi && isa_enabled(Isa::kAvx512)) {
    lookup_bytes_vbmi(table, x, y, count);
    return;
  }
  __m256i rows[16];
  for (int t = 0; t < 16; ++t)
    rows[t] = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * t)));
  const __m256i low = _mm256_set1_epi8(0x0F);
  size_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i lo = _mm256_and_si256(v, low);
    __m256i r[16];
    for (int t = 0; t < 16; ++t) r[t] = _mm256_shuffle_epi8(rows[t], lo);
    // vpblendvb reads each byte's top bit: bit 7 (the high nibble's bit 3) first, then bits 6, 5, 4
    // moved up by 16-bit shifts (a byte's bit 7 only ever receives its own lower bits).
    for (int t = 0; t < 8; ++t) r[t] = _mm256_blendv_epi8(r[t], r[t + 8], v);
    const __m256i m2 = _mm256_slli_epi16(v, 1);
    for (int t = 0; t < 4; ++t) r[t] = _mm256_blendv_epi8(r[t], r[t + 4], m2);
    const __m256i m1 = _mm256_slli_epi16(v, 2);
    for (int t = 0; t < 2; ++t) r[t] = _mm256_blendv_epi8(r[t], r[t + 2], m1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_blendv_epi8(r[0], r[1], _mm256_slli_epi16(v, 3)));
  }
  for (; i < count; ++i) y[i] = table[x[i]];
}

__attribute__((target("avx2,fma"))) void native::quantize_int8(const float* x, size_t count, float scale, int32_t zp,
                                                               int32_t lo, int32_t hi, int8_t* y) {
  const __m256 vs = _mm256_set1_ps(scale), vlo = _mm256_set1_ps(static_cast<float>(lo - zp)),
               vhi = _mm256_set1_ps(static_cast<float>(hi - zp)), half = _mm256_set1_ps(0.5f),
               sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256i vzp = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    // The quotient clamped first (max returns its second operand for NaN: lo), then rounded: the
    // bounds are integers, so this equals rounding first.
    __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs), vlo), vhi);
    // Half away from zero: truncate, then step away from zero when the dropped part is >= 0.5
    // (v - trunc(v) is exact).
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(v, t)), half, _CMP_GE_OQ);
    v = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(sign, v))));
    const __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(v), vzp);
    const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(y + i), _mm_packs_epi16(q16, q16));
  }
  for (; i < count; ++i) {
    float v = x[i] / scale;
    v = std::isnan(v) ? static_cast<float>(lo - zp) : std::clamp(v, static_cast<float>(lo - zp), static_cast<float>(hi - zp));
    y[i] = static_cast<int8_t>(static_cast<int32_t>(std::round(v)) + zp);
  }
}

namespace {

using native::cpu_has_avx2_fma;

using native::kKc;
using native::kMaxMr;
using native::kMr;
using native::kNr;
using native::next_panel_share;
using native::panel_step;
using native::PanelStep;
using native::parallel;
using native::Prefetch;

// Copies n floats; short runs (the 3-channel stem's 9-float kernel rows, gathered for every
// output pixel) in a loop rather than a memmove call, which costs more than the copy there.
inline void copy_floats(const float* src, int64_t n, float* dst) {
  if (n > 32) {
    std::copy_n(src, n, dst);
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Rows per parallel item when gathering into the shared buffer.
constexpr int64_t kGatherRows = 8;

class NativeConv final : public Kernel {
 public:
  NativeConv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C)
      : attrs_(a), C_(C), avx512_(native::isa_enabled(native::Isa::kAvx512)) {
    O_ = w.dim(0);
    K_ = a.kernel[0] * a.kernel[1] * C;
    const int64_t depth = avx512_ ? native::kKcAvx512 : kKc;
    int64_t k_blocks = (K_ + depth - 1) / depth;
    kc_ = (K_ + k_blocks - 1) / k_blocks;
    // Indirect A: with unit dilation the kW taps of one kernel row are kW*C contiguous floats of
    // the NHWC input, so when K blocks split kernel rows evenly, A rows are read in place and only
    // rows whose window crosses the border are gathered (into zero-padded copies). Not worth it
    // for short rows (the 3-channel stem: 21 floats), which gather.
    segment_ = a.kernel[1] * C;
    int64_t splits = (segment_ + depth - 1) / depth;
    indirect_ = a.dilations[1] == 1 && a.dilations[0] == 1 && segment_ >= 64 && segment_ % splits == 0 &&
                !(a.kernel[0] == 1 && a.kernel[1] == 1 && a.strides[0] == 1 && a.strides[1] == 1);
    if (indirect_) kc_ = segment_ / splits;
    // K blocks that each lie within one tap (C a multiple of kc_) point at the input or at zeros.
    tap_blocks_ = indirect_ && C_ % kc_ == 0;
    if (tap_blocks_) zeros_.assign(static_cast<size_t>(kc_), 0.0f);
    // Padded: the rest with unit dilation and one K block (the 3-channel stems: K = 27 or 147)
    // read their kernel rows in place: windows inside the input from the input itself, the micro-
    // kernel stepping from kernel row to kernel row by the input's row stride; windows crossing
    // the border from zero-padded copies laid out with that same stride (see padded_windows), so
    // no interior window is gathered (per output pixel, the gather cost more than its
    // multiply-adds) and no padded copy of the whole input is made per run (0.12-0.2 ms of
    // resnet18's stem inside the network).
    padded_ = !indirect_ && a.dilations[0] == 1 && a.dilations[1] == 1 && K_ <= depth &&
              !(a.kernel[0] == 1 && a.kernel[1] == 1 && a.strides[0] == 1 && a.strides[1] == 1);
    panels_ = (O_ + kNr - 1) / kNr;
    // Panel p holds B[k][16p .. 16p+15] for every k, zero beyond O; bias padded alike. AVX-512
    // interleaves panel pairs (native::packed_b_offset).
    packed_ = Buffer::allocate(static_cast<size_t>(panels_ * K_ * kNr) * sizeof(float));
    bias_.assign(static_cast<size_t>(panels_ * kNr), 0.0f);
    float* p = reinterpret_cast<float*>(packed_->data());
    std::fill_n(p, panels_ * K_ * kNr, 0.0f);
    const float* wd = w.data<float>();
    // Layout: K blocks of kc_ rows; within one, panel after panel, each [kc][16]. Filled 32
    // output channels at a time, k by k: the writes run along the packed rows and the reads along
    // 32 weight rows at once (one channel at a time wrote a line per value: a third of resnet50's
    // load time).
    for (int64_t o0 = 0; o0 < O_; o0 += 2 * kNr) {
      const int64_t o1 = std::min(O_, o0 + 2 * kNr);
      for (int64_t k = 0; k < K_; ++k) {
        const int64_t k0 = k / kc_ * kc_, kc = std::min(kc_, K_ - k0);
        float* block = p + k0 * panels_ * kNr;
        for (int64_t o = o0; o < o1; ++o) block[native::packed_b_offset(avx512_, panels_, kc, k - k0, o)] = wd[o * K_ + k];
      }
    }
    if (b) std::copy_n(b->data<float>(), O_, bias_.begin());
    xnn::Range r = xnn::clamp_range(a.activation);
    lo_ = r.min;
    hi_ = r.max;
    direct_ = a.kernel[0] == 1 && a.kernel[1] == 1 && a.strides[0] == 1 && a.strides[1] == 1 &&
              std::all_of(a.pads.begin(), a.pads.end(), [](int64_t v) { return v == 0; });
    // SiLU (EfficientNet's activation) is applied to the output tile in registers; the other
    // activations clamp there or run as a separate pass.
    silu_ = a.activation == ir::Activation::kSilu;
    if (!silu_) post_.init(a.activation);
  }
  std::string_view name() const override {
    return avx512_ ? "native_conv2d_nhwc_f32_avx512" : "native_conv2d_nhwc_f32_avx2";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    // With a residual input the micro-kernels add its rows to the tile's on the last K block,
    // before the activation, in registers (residual_at), instead of a pass over each finished
    // block.
    residual_ = in.size() > 3 ? in[3] : Tensor();
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    M_ = N_ * OH_ * OW_;
    // Rows per block: up to 96 and the gathered block at most ~1 MB. With several threads and too
    // few row blocks to share (the small late layers: 7x7 or 14x14 pixels, thousands of K), the
    // output channels are split too, and the rows are gathered once into a shared buffer first
    // (instead of by every column group).
    int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    // The blocks are balanced (49 rows at K = 4608 are one block of 60, not 48 + 1: each block
    // streams all the weights, from memory in the late layers).
    const int64_t strip = native::strip_rows(avx512_);
    // Weights over 1 MB (the late layers', read from memory) are streamed once per block, so
    // those blocks are as large as one K block of A rows allows (~1 MB, up to 256 rows: resnet50's
    // 14x14 3x3 layers one block of 204 rows instead of three, 1.96 -> 1.82 ms each); the rest
    // keep up to 96 rows of the whole K, more blocks for the threads.
    const bool heavy = K_ * O_ * static_cast<int64_t>(sizeof(float)) > (1 << 20);
    block_rows_ = heavy ? native::balanced_block_rows(M_, std::clamp<int64_t>((1 << 20) / (kc_ * 4), strip, 256), strip)
                        : native::balanced_block_rows(M_, std::clamp<int64_t>((1 << 20) / (K_ * 4), strip, 96), strip);
    int64_t row_blocks = (M_ + block_rows_ - 1) / block_rows_;
    col_groups_ = 1;
    if (threads > 1 && row_blocks < 4 * threads) {
      if (row_blocks < 2 * threads && panels_ > 1) {
        col_groups_ = std::min(panels_, (4 * threads + row_blocks - 1) / row_blocks);
      } else {
        int64_t per_thread = (M_ + 2 * threads - 1) / (2 * threads);
        block_rows_ = std::min(block_rows_, std::max(strip, (per_thread + strip - 1) / strip * strip));
        row_blocks = (M_ + block_rows_ - 1) / block_rows_;
      }
    }
    panels_per_group_ = (panels_ + col_groups_ - 1) / col_groups_;
    if (avx512_) panels_per_group_ += panels_per_group_ % 2;  // whole pairs for the 12x32 kernel
    col_groups_ = (panels_ + panels_per_group_ - 1) / panels_per_group_;
    row_blocks_ = row_blocks;
    blocks_ = row_blocks_ * col_groups_;
    shared_gather_ = col_groups_ > 1 && !direct_ && !indirect_ && !padded_;
    if (padded_) {
      // The input's row stride; without a window inside the input (W < kW) any stride that
      // separates the copies' slots will do.
      row_stride_ = std::max(W_, attrs_.kernel[1]) * C_;
      slots_per_group_ = row_stride_ / segment_;
    }
    post_.setup(y_.data_mutable<float>(), static_cast<size_t>(y_.numel()), ctx);
  }

  void run(const RunContext& ctx) override {
    if (indirect_ && col_groups_ > 1) {
      // One table for every column group (each built its own before: resnet50's 14x14 layers
      // copied each border window 8 times at 2 threads). The calling thread's buffers, as below.
      thread_local std::vector<const float*> table;
      thread_local std::vector<float> edges;
      table.resize(static_cast<size_t>(M_ * (K_ / kc_)));
      if (!tap_blocks_ && edges.size() < static_cast<size_t>(M_ * K_)) edges.resize(static_cast<size_t>(M_ * K_));
      shared_table_ = table.data();
      shared_edges_ = edges.data();
      if (tap_blocks_) {
        build_table(0, M_, shared_table_, shared_edges_);  // pointers only: not worth the threads
      } else parallel(ctx, (M_ + kGatherRows - 1) / kGatherRows, [](void* self, size_t i) {
        auto* k = static_cast<NativeConv*>(self);
        int64_t m0 = static_cast<int64_t>(i) * kGatherRows;
        k->build_table(m0, std::min(kGatherRows, k->M_ - m0), k->shared_table_ + m0 * (k->K_ / k->kc_),
                       k->shared_edges_ + m0 * k->K_);
      }, this);
    } else {
      shared_table_ = nullptr;
    }
    if (shared_gather_) {
      // The calling thread's buffer: concurrent runs of one model use different threads.
      thread_local std::vector<float> shared;
      if (shared.size() < static_cast<size_t>(M_ * K_)) shared.resize(static_cast<size_t>(M_ * K_));
      gathered_ = shared.data();
      parallel(ctx, (M_ + kGatherRows - 1) / kGatherRows, [](void* self, size_t i) {
        auto* k = static_cast<NativeConv*>(self);
        int64_t m0 = static_cast<int64_t>(i) * kGatherRows;
        k->gather(m0, std::min(kGatherRows, k->M_ - m0), k->gathered_ + m0 * k->K_);
      }, this);
    }
    parallel(ctx, blocks_, [](void* self, size_t i) { static_cast<NativeConv*>(self)->run_block(static_cast<int64_t>(i)); }, this,
             M_ * K_ * O_);
    post_.run(ctx);
  }

 private:


  // Output pixels [m0, m0 + rows) of the padded mode: where each window's first kernel row
  // starts, its later rows row_stride_ floats apart. A window inside the input is read in place;
  // one crossing the border is copied, zero-padded, into the next slot of `canvas`: groups of kH
  // rows of row_stride_ floats, slots_per_group_ windows side by side in each (the stem at 224
  // wide: 32 windows of 7 taps x 3 channels per group). Steps through (n, oh, ow) without a
  // division per pixel. canvas holds at least ceil(rows / slots_per_group_) groups.
  void padded_windows(int64_t m0, int64_t rows, const float** out, float* canvas) const {
    int64_t n = m0 / (OH_ * OW_), rem = m0 % (OH_ * OW_), oh = rem / OW_, ow = rem % OW_;
    const int64_t sh = attrs_.strides[0], sw = attrs_.strides[1], KH = attrs_.kernel[0], KW = attrs_.kernel[1];
    const float* xd = x_.data<float>();
    int64_t slot = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t ih0 = oh * sh - attrs_.pads[0], iw0 = ow * sw - attrs_.pads[1];
      if (ih0 >= 0 && ih0 + KH <= H_ && iw0 >= 0 && iw0 + KW <= W_) {
        out[r] = xd + ((n * H_ + ih0) * W_ + iw0) * C_;
      } else {
        float* base = canvas + slot / slots_per_group_ * KH * row_stride_ + slot % slots_per_group_ * segment_;
        ++slot;
        for (int64_t kh = 0; kh < KH; ++kh) copy_kernel_row(n, ih0 + kh, iw0, base + kh * row_stride_);
        out[r] = base;
      }
      if (++ow == OW_) {
        ow = 0;
        if (++oh == OH_) oh = 0, ++n;
      }
    }
  }

  // dst[0, kW * C) = the kW taps of image n's input row ih from column iw0 on (contiguous in
  // NHWC with unit dilation), zero where they leave the input: one copy plus zero edges.
  void copy_kernel_row(int64_t n, int64_t ih, int64_t iw0, float* dst) const {
    const int64_t KW = attrs_.kernel[1];
    const int64_t lo = std::clamp<int64_t>(-iw0, 0, KW), hi = std::clamp<int64_t>(W_ - iw0, 0, KW);
    if (ih < 0 || ih >= H_ || lo >= hi) {
      std::fill_n(dst, KW * C_, 0.0f);
      return;
    }
    std::fill_n(dst, lo * C_, 0.0f);
    copy_floats(x_.data<float>() + ((n * H_ + ih) * W_ + iw0 + lo) * C_, (hi - lo) * C_, dst + lo * C_);
    std::fill_n(dst + hi * C_, (KW - hi) * C_, 0.0f);
  }

  // Gathers A rows [m0, m0 + rows) into `buf` (rows x K); zero where the window leaves the input.
  void gather(int64_t m0, int64_t rows, float* buf) const {
    const ir::ConvAttrs& a = attrs_;
    const float* xd = x_.data<float>();
    const size_t cbytes = static_cast<size_t>(C_) * sizeof(float);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t m = m0 + r, n = m / (OH_ * OW_), rem = m % (OH_ * OW_), oh = rem / OW_, ow = rem % OW_;
      float* dst = buf + r * K_;
      for (int64_t kh = 0; kh < a.kernel[0]; ++kh) {
        int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
        if (a.dilations[1] == 1) {
          copy_kernel_row(n, ih, ow * a.strides[1] - a.pads[1], dst);
          dst += a.kernel[1] * C_;
          continue;
        }
        for (int64_t kw = 0; kw < a.kernel[1]; ++kw, dst += C_) {
          int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
          if (ih < 0 || ih >= H_ || iw < 0 || iw >= W_)
            std::memset(dst, 0, cbytes);
          else
            std::memcpy(dst, xd + ((n * H_ + ih) * W_ + iw) * C_, cbytes);
        }
      }
    }
  }

  void run_block(int64_t item) {
    int64_t block = item / col_groups_, group = item % col_groups_;
    int64_t p_begin = group * panels_per_group_, p_end = std::min(panels_, p_begin + panels_per_group_);
    const int64_t strip = native::strip_rows(avx512_), strips = (M_ + strip - 1) / strip;
    int64_t m0 = std::min(M_, block * strips / row_blocks_ * strip),
            rows = std::min(M_, (block + 1) * strips / row_blocks_ * strip) - m0;
    const float* packed = reinterpret_cast<const float*>(packed_->data());
    float* y = y_.data_mutable<float>() + m0 * O_;
    if (indirect_)
      run_block_indirect(m0, rows, p_begin, p_end, packed, y);
    else if (padded_)
      run_block_padded(m0, rows, p_begin, p_end, packed, y);
    else
      run_block_gemm(m0, rows, p_begin, p_end, packed, y);
  }

  // The residual's rows for the tile at row r (of the block at m0) and panel p, on the last K
  // block: the micro-kernels add them before the activation.
  const float* residual_at(int64_t m0, int64_t r, int64_t p, bool last) const {
    return last && residual_.defined() ? residual_.data<float>() + (m0 + r) * O_ + p * kNr : nullptr;
  }

  // The share of the strip at row r of the B that its item multiplies next, after the K block at
  // k0 (kc rows) up to panel p_next: the next panels of that block, or the first of the next block.
  Prefetch next_b(const float* packed, int64_t k0, int64_t kc, int64_t p_next, int64_t p_begin, int64_t p_end,
                  int64_t r, int64_t rows, int64_t strip) const {
    const int64_t step = avx512_ ? 2 : 1;
    if (p_next < p_end)
      return native::share_of(packed + k0 * panels_ * kNr + p_next * kc * kNr, kc * std::min(step, p_end - p_next), r,
                              rows, strip);
    const int64_t k1 = k0 + kc, kc1 = std::min(kc_, K_ - k1);
    if (kc1 <= 0) return {packed, 0};
    return native::share_of(packed + k1 * panels_ * kNr + p_begin * kc1 * kNr, kc1 * std::min(step, p_end - p_begin),
                            r, rows, strip);
  }

  // Gathered (or, for 1x1 stride-1 convolutions, in-place) A rows, K block by K block.
  void run_block_gemm(int64_t m0, int64_t rows, int64_t p_begin, int64_t p_end, const float* packed, float* y) {
    const float* a;
    int64_t lda;
    if (direct_) {
      a = x_.data<float>() + m0 * C_;
      lda = C_;
    } else if (shared_gather_) {
      a = gathered_ + m0 * K_;
      lda = K_;
    } else {
      thread_local std::vector<float> buf;
      if (buf.size() < static_cast<size_t>(block_rows_ * K_)) buf.resize(static_cast<size_t>(block_rows_ * K_));
      gather(m0, rows, buf.data());
      a = buf.data();
      lda = K_;
    }
    for (int64_t k0 = 0; k0 < K_; k0 += kc_) {
      int64_t kc = std::min(kc_, K_ - k0);
      bool last = k0 + kc == K_;
      for (int64_t p = p_begin; p < p_end;) {
        const PanelStep step = panel_step(avx512_, p, p_end, O_);
        const float* b = packed + k0 * panels_ * kNr + p * kc * kNr;
        for (int64_t r = 0, mr; r < rows; r += mr) {
          mr = step.strip_at(r, rows);
          const float* rowp[kMaxMr];
          for (int64_t i = 0; i < step.rows; ++i) rowp[i] = a + (r + std::min(i, mr - 1)) * lda + k0;
          Prefetch pf = next_b(packed, k0, kc, p + step.panels, p_begin, p_end, r, rows, step.rows);
          step.for_rows(mr)(kc, rowp, b, bias_.data() + p * kNr, k0 > 0, y + r * O_ + p * kNr, O_, mr, step.cols, last,
                      lo_, hi_, silu_, pf.at, pf.lines, 1, 0, residual_at(m0, r, p, last));
        }
        p += step.panels;
      }
    }
  }

  // One K block (kc_ = K_): the micro-kernel walks the kH kernel rows of each window itself, with
  // the row length a constant for the stems (3x3 and 7x7 over 3 channels: 9 and 21 floats).
  void run_block_padded(int64_t m0, int64_t rows, int64_t p_begin, int64_t p_end, const float* packed, float* y) {
    thread_local std::vector<const float*> windows;
    thread_local std::vector<float> canvas;
    windows.resize(static_cast<size_t>(rows));
    const size_t canvas_floats =
        static_cast<size_t>((rows + slots_per_group_ - 1) / slots_per_group_ * attrs_.kernel[0] * row_stride_);
    if (canvas.size() < canvas_floats) canvas.resize(canvas_floats);
    padded_windows(m0, rows, windows.data(), canvas.data());
    const int64_t row_len = attrs_.kernel[1] * C_, row_stride = row_stride_;
    for (int64_t p = p_begin; p < p_end;) {
      const PanelStep step = row_len == 9    ? panel_step<9>(avx512_, p, p_end, O_)
                             : row_len == 21 ? panel_step<21>(avx512_, p, p_end, O_)
                                             : panel_step(avx512_, p, p_end, O_);
      const float* b = packed + p * K_ * kNr;
      for (int64_t r = 0, mr; r < rows; r += mr) {
        mr = step.strip_at(r, rows);
        const float* rowp[kMaxMr];
        for (int64_t i = 0; i < step.rows; ++i) rowp[i] = windows[static_cast<size_t>(r + std::min(i, mr - 1))];
        Prefetch pf = next_panel_share(b, K_ * step.panels, r, rows, step.rows);
        step.for_rows(mr)(row_len, rowp, b, bias_.data() + p * kNr, false, y + r * O_ + p * kNr, O_, mr, step.cols, true,
                    lo_, hi_, silu_, pf.at, pf.lines, attrs_.kernel[0], row_stride,
                    residual_at(m0, r, p, true));
      }
      p += step.panels;
    }
  }

  // The indirect mode's table for output rows [m0, m0 + rows): [rows][k_blocks] pointers to each
  // K block of each row's A, into the input, or for windows crossing the border into a
  // zero-padded copy made in edges (row r at edges + r * K_).
  void build_table(int64_t m0, int64_t rows, const float** table, float* edges) const {
    const ir::ConvAttrs& a = attrs_;
    const int64_t k_blocks = K_ / kc_, splits = segment_ / kc_, KW = a.kernel[1];
    const float* xd = x_.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      int64_t m = m0 + r, n = m / (OH_ * OW_), rem = m % (OH_ * OW_), oh = rem / OW_, ow = rem % OW_;
      int64_t iw0 = ow * a.strides[1] - a.pads[1];
      if (tap_blocks_) {
        // Each K block lies within one tap: a tap outside the input reads zeros_, nothing is
        // copied (resnet50's 14x14 and 7x7 layers: 108 and 44 border windows of 3 taps per run).
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          const int64_t k = kb * kc_, kh = k / segment_, tap = k % segment_ / C_, c0 = k % C_;
          const int64_t ih = oh * a.strides[0] - a.pads[0] + kh, iw = iw0 + tap;
          table[r * k_blocks + kb] = ih < 0 || ih >= H_ || iw < 0 || iw >= W_
                                         ? zeros_.data()
                                         : xd + ((n * H_ + ih) * W_ + iw) * C_ + c0;
        }
        continue;
      }
      for (int64_t kh = 0; kh < a.kernel[0]; ++kh) {
        int64_t ih = oh * a.strides[0] - a.pads[0] + kh;
        const float* seg;
        if (ih >= 0 && ih < H_ && iw0 >= 0 && iw0 + KW <= W_) {
          seg = xd + ((n * H_ + ih) * W_ + iw0) * C_;
        } else {
          float* dst = edges + r * K_ + kh * segment_;
          copy_kernel_row(n, ih, iw0, dst);
          seg = dst;
        }
        for (int64_t s = 0; s < splits; ++s) table[r * k_blocks + kh * splits + s] = seg + s * kc_;
      }
    }
  }

  // One K block per table column: row pointers into the input (or into zero-padded copies of the
  // border windows), so no interior row is copied. With the output channels split among items
  // (few rows, several threads) the table is built once per run, shared.
  void run_block_indirect(int64_t m0, int64_t rows, int64_t p_begin, int64_t p_end, const float* packed, float* y) {
    const int64_t k_blocks = K_ / kc_;
    const float* const* table;
    if (shared_table_) {
      table = shared_table_ + m0 * k_blocks;
    } else {
      thread_local std::vector<const float*> own;
      thread_local std::vector<float> edges;
      own.resize(static_cast<size_t>(rows * k_blocks));
      if (!tap_blocks_ && edges.size() < static_cast<size_t>(rows * K_)) edges.resize(static_cast<size_t>(rows * K_));
      build_table(m0, rows, own.data(), edges.data());
      table = own.data();
    }
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      int64_t k0 = kb * kc_;
      bool last = kb + 1 == k_blocks;
      for (int64_t p = p_begin; p < p_end;) {
        const PanelStep step = panel_step(avx512_, p, p_end, O_);
        const float* b = packed + k0 * panels_ * kNr + p * kc_ * kNr;
        for (int64_t r = 0, mr; r < rows; r += mr) {
          mr = step.strip_at(r, rows);
          const float* rowp[kMaxMr];
          for (int64_t i = 0; i < step.rows; ++i) rowp[i] = table[static_cast<size_t>((r + std::min(i, mr - 1)) * k_blocks + kb)];
          Prefetch pf = next_b(packed, k0, kc_, p + step.panels, p_begin, p_end, r, rows, step.rows);
          step.for_rows(mr)(kc_, rowp, b, bias_.data() + p * kNr, kb > 0, y + r * O_ + p * kNr, O_, mr, step.cols, last,
                      lo_, hi_, silu_, pf.at, pf.lines, 1, 0, residual_at(m0, r, p, last));
        }
        p += step.panels;
      }
    }
  }

  ir::ConvAttrs attrs_;
  int64_t C_, O_ = 0, K_ = 0, kc_ = 1, panels_ = 0, segment_ = 0;
  bool indirect_ = false, padded_ = false;
  bool tap_blocks_ = false;   // indirect_ with K blocks inside single taps: see build_table
  std::vector<float> zeros_;  // tap_blocks_: kc_ zeros, the blocks of taps outside the input
  bool avx512_;  // the 12x32 AVX-512 micro-kernel over panel pairs, else the AVX2 6x16 one
  std::shared_ptr<Buffer> packed_;
  std::vector<float> bias_;
  float lo_ = -xnn::kInf, hi_ = xnn::kInf;
  bool direct_ = false, silu_ = false;
  xnn::PostActivation post_;
  Tensor x_, y_, residual_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, M_ = 0, block_rows_ = kMr, blocks_ = 0;
  int64_t row_blocks_ = 0, col_groups_ = 1, panels_per_group_ = 0;
  bool shared_gather_ = false;
  float* gathered_ = nullptr;        // shared_gather_: M x K rows, valid during run()
  const float** shared_table_ = nullptr;  // indirect_ with column groups: M x k-blocks, during run()
  float* shared_edges_ = nullptr;         // its border windows' copies (row m at m * K_)
  int64_t row_stride_ = 0, slots_per_group_ = 1;  // padded_: see padded_windows
};

std::unique_ptr<Kernel> make_native_conv(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ConvAttrs>();
  if (!cpu_has_avx2_fma() || !xnn::available() || a.layout != ir::Layout::kNHWC || a.kernel.size() != 2 || a.groups != 1)
    return nullptr;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || (b && !b->is_constant())) return nullptr;
  int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  if (C <= 0 || w.constant.dim(3) != C) return nullptr;
  for (int64_t v : a.pads)
    if (v < 0) return nullptr;
  return std::make_unique<NativeConv>(a, w.constant, b ? &b->constant : nullptr, C);
}

}  // namespace

std::unique_ptr<Kernel> native::make_dense_conv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C) {
  return std::make_unique<NativeConv>(a, w, b, C);
}

void register_native_kernels(KernelRegistry& r) {
  // Winograd first: it declines every node but 3x3 stride-1 convolutions large enough to gain.
  r.add(ir::OpKind::kConv, DType::kFloat32, KernelBackend::kNative, native::make_winograd_conv);
  r.add(ir::OpKind::kConv, DType::kFloat32, KernelBackend::kNative, make_native_conv);
}

}  // namespace modex::runtime
