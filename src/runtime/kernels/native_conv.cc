// Dense (groups = 1) NHWC convolution as an implicit GEMM with an AVX2/FMA 6x16 micro-kernel.
//
// Why not XNNPACK here: Debian's libXNNPACK (0.0~git20220216) is compiled so that its f32 5x16
// FMA3 igemm micro-kernel keeps one accumulator on the stack (a store-to-load dependency in the
// inner loop), which makes every dense convolution ~2.5x slower than the hardware allows
// (measured: resnet18 104 ms vs ONNX Runtime 42 ms on one core). Depthwise and the other ops
// stay on XNNPACK. Chosen only when the CPU has AVX2 and FMA; otherwise XNNPACK takes the node.
//
// C[M, O] = A[M, K] · B[K, O] + bias, M = N·OH·OW output pixels, K = kH·kW·C (the weight layout's
// order). B is packed once into 16-column panels; A rows are gathered (im2col) per block of rows,
// except for 1x1 stride-1 convolutions where the input already is A.
#include <immintrin.h>
#include <pthreadpool.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

constexpr int64_t kMr = 6, kNr = 16;
// K block: a 6-row A strip (24 KB) and a 16-column B strip (32 KB) of this depth stay in L1/L2.
constexpr int64_t kKc = 512;

bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// c[r][0..15] = init[r] + sum_k a[r][k] * b[k][0..15] for r < rows (rows <= 6, a[r] valid for
// every r: callers repeat the last row), columns < cols written. init[r] is the bias (first K
// block) or c's row itself (later blocks); the clamp applies on the last K block only.
__attribute__((target("avx2,fma"))) void micro_kernel_6x16(int64_t K, const float* const* a, const float* b,
                                                            const float* bias, bool accumulate, float* c,
                                                            int64_t ldc, int64_t rows, int64_t cols, bool last,
                                                            float lo, float hi) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (!accumulate) {
    c00 = _mm256_loadu_ps(bias);
    c01 = _mm256_loadu_ps(bias + 8);
    c10 = c00, c11 = c01, c20 = c00, c21 = c01, c30 = c00, c31 = c01, c40 = c00, c41 = c01, c50 = c00, c51 = c01;
  } else {
    alignas(32) float init[kMr][kNr] = {};
    for (int64_t r = 0; r < rows; ++r) std::memcpy(init[r], c + r * ldc, static_cast<size_t>(cols) * sizeof(float));
    c00 = _mm256_load_ps(init[0]), c01 = _mm256_load_ps(init[0] + 8);
    c10 = _mm256_load_ps(init[1]), c11 = _mm256_load_ps(init[1] + 8);
    c20 = _mm256_load_ps(init[2]), c21 = _mm256_load_ps(init[2] + 8);
    c30 = _mm256_load_ps(init[3]), c31 = _mm256_load_ps(init[3] + 8);
    c40 = _mm256_load_ps(init[4]), c41 = _mm256_load_ps(init[4] + 8);
    c50 = _mm256_load_ps(init[5]), c51 = _mm256_load_ps(init[5] + 8);
  }
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  for (int64_t k = 0; k < K; ++k) {
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    b += kNr;
    __m256 v = _mm256_broadcast_ss(a0 + k);
    c00 = _mm256_fmadd_ps(v, b0, c00);
    c01 = _mm256_fmadd_ps(v, b1, c01);
    v = _mm256_broadcast_ss(a1 + k);
    c10 = _mm256_fmadd_ps(v, b0, c10);
    c11 = _mm256_fmadd_ps(v, b1, c11);
    v = _mm256_broadcast_ss(a2 + k);
    c20 = _mm256_fmadd_ps(v, b0, c20);
    c21 = _mm256_fmadd_ps(v, b1, c21);
    v = _mm256_broadcast_ss(a3 + k);
    c30 = _mm256_fmadd_ps(v, b0, c30);
    c31 = _mm256_fmadd_ps(v, b1, c31);
    v = _mm256_broadcast_ss(a4 + k);
    c40 = _mm256_fmadd_ps(v, b0, c40);
    c41 = _mm256_fmadd_ps(v, b1, c41);
    v = _mm256_broadcast_ss(a5 + k);
    c50 = _mm256_fmadd_ps(v, b0, c50);
    c51 = _mm256_fmadd_ps(v, b1, c51);
  }
  if (!last) lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  __m256 acc[kMr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int64_t r = 0; r < rows; ++r) {
    __m256 y0 = _mm256_min_ps(_mm256_max_ps(acc[r][0], vlo), vhi);
    __m256 y1 = _mm256_min_ps(_mm256_max_ps(acc[r][1], vlo), vhi);
    float* cr = c + r * ldc;
    if (cols == kNr) {
      _mm256_storeu_ps(cr, y0);
      _mm256_storeu_ps(cr + 8, y1);
    } else {
      alignas(32) float tmp[kNr];
      _mm256_store_ps(tmp, y0);
      _mm256_store_ps(tmp + 8, y1);
      std::memcpy(cr, tmp, static_cast<size_t>(cols) * sizeof(float));
    }
  }
}

class NativeConv final : public Kernel {
 public:
  NativeConv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C) : attrs_(a), C_(C) {
    O_ = w.dim(0);
    K_ = a.kernel[0] * a.kernel[1] * C;
    panels_ = (O_ + kNr - 1) / kNr;
    // Panel p holds B[k][16p .. 16p+15] for every k, zero beyond O; bias padded alike.
    packed_ = Buffer::allocate(static_cast<size_t>(panels_ * K_ * kNr) * sizeof(float));
    bias_.assign(static_cast<size_t>(panels_ * kNr), 0.0f);
    float* p = reinterpret_cast<float*>(packed_->data());
    std::fill_n(p, panels_ * K_ * kNr, 0.0f);
    const float* wd = w.data<float>();
    // Layout: K blocks of kKc rows; within one, panel after panel, each [kc][16].
    for (int64_t o = 0; o < O_; ++o) {
      for (int64_t k = 0; k < K_; ++k) {
        int64_t k0 = k / kKc * kKc, kc = std::min(kKc, K_ - k0);
        p[k0 * panels_ * kNr + (o / kNr) * kc * kNr + (k - k0) * kNr + o % kNr] = wd[o * K_ + k];
      }
      if (b) bias_[static_cast<size_t>(o)] = b->data<float>()[o];
    }
    xnn::Range r = xnn::clamp_range(a.activation);
    lo_ = r.min;
    hi_ = r.max;
    direct_ = a.kernel[0] == 1 && a.kernel[1] == 1 && a.strides[0] == 1 && a.strides[1] == 1 &&
              std::all_of(a.pads.begin(), a.pads.end(), [](int64_t v) { return v == 0; });
    post_.init(a.activation);
  }
  std::string_view name() const override { return "native_conv2d_nhwc_f32_avx2"; }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    N_ = x_.dim(0);
    H_ = x_.dim(1);
    W_ = x_.dim(2);
    OH_ = y_.dim(1);
    OW_ = y_.dim(2);
    M_ = N_ * OH_ * OW_;
    // Rows per block: up to 96, the gathered block at most ~1 MB, and at least two blocks per
    // thread when M allows.
    int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    int64_t rows = std::clamp<int64_t>((1 << 20) / (K_ * 4) / kMr * kMr, kMr, 16 * kMr);
    int64_t per_thread = (M_ + 2 * threads - 1) / (2 * threads);
    if (threads > 1) rows = std::min(rows, std::max(kMr, (per_thread + kMr - 1) / kMr * kMr));
    block_rows_ = rows;
    blocks_ = (M_ + block_rows_ - 1) / block_rows_;
    post_.setup(y_.data_mutable<float>(), static_cast<size_t>(y_.numel()), ctx);
  }

  void run(const RunContext& ctx) override {
    if (ctx.pool && blocks_ > 1) {
      std::lock_guard<std::mutex> lock(*ctx.pool_mutex);
      pthreadpool_parallelize_1d(
          ctx.pool, [](void* self, size_t i) { static_cast<NativeConv*>(self)->run_block(static_cast<int64_t>(i)); }, this,
          static_cast<size_t>(blocks_), 0);
    } else {
      for (int64_t i = 0; i < blocks_; ++i) run_block(i);
    }
    post_.run(ctx);
  }

 private:
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
          // The kW taps of one kernel row are contiguous in NHWC: one copy plus zero edges.
          int64_t iw0 = ow * a.strides[1] - a.pads[1], KW = a.kernel[1];
          int64_t lo = std::clamp<int64_t>(-iw0, 0, KW), hi = std::clamp<int64_t>(W_ - iw0, 0, KW);
          if (ih < 0 || ih >= H_ || lo >= hi) {
            std::fill_n(dst, KW * C_, 0.0f);
          } else {
            std::fill_n(dst, lo * C_, 0.0f);
            std::copy_n(xd + ((n * H_ + ih) * W_ + iw0 + lo) * C_, (hi - lo) * C_, dst + lo * C_);
            std::fill_n(dst + hi * C_, (KW - hi) * C_, 0.0f);
          }
          dst += KW * C_;
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

  void run_block(int64_t block) {
    int64_t m0 = block * block_rows_, rows = std::min(block_rows_, M_ - m0);
    const float* a;
    int64_t lda;
    if (direct_) {
      a = x_.data<float>() + m0 * C_;
      lda = C_;
    } else {
      thread_local std::vector<float> buf;
      if (buf.size() < static_cast<size_t>(block_rows_ * K_)) buf.resize(static_cast<size_t>(block_rows_ * K_));
      gather(m0, rows, buf.data());
      a = buf.data();
      lda = K_;
    }
    const float* packed = reinterpret_cast<const float*>(packed_->data());
    float* y = y_.data_mutable<float>() + m0 * O_;
    for (int64_t k0 = 0; k0 < K_; k0 += kKc) {
      int64_t kc = std::min(kKc, K_ - k0);
      bool last = k0 + kc == K_;
      for (int64_t p = 0; p < panels_; ++p) {
        int64_t cols = std::min(kNr, O_ - p * kNr);
        const float* b = packed + k0 * panels_ * kNr + p * kc * kNr;
        for (int64_t r = 0; r < rows; r += kMr) {
          int64_t mr = std::min(kMr, rows - r);
          const float* rowp[kMr];
          for (int64_t i = 0; i < kMr; ++i) rowp[i] = a + (r + std::min(i, mr - 1)) * lda + k0;
          micro_kernel_6x16(kc, rowp, b, bias_.data() + p * kNr, k0 > 0, y + r * O_ + p * kNr, O_, mr, cols, last,
                            lo_, hi_);
        }
      }
    }
  }

  ir::ConvAttrs attrs_;
  int64_t C_, O_ = 0, K_ = 0, panels_ = 0;
  std::shared_ptr<Buffer> packed_;
  std::vector<float> bias_;
  float lo_ = -xnn::kInf, hi_ = xnn::kInf;
  bool direct_ = false;
  xnn::PostActivation post_;
  Tensor x_, y_;
  int64_t N_ = 0, H_ = 0, W_ = 0, OH_ = 0, OW_ = 0, M_ = 0, block_rows_ = kMr, blocks_ = 0;
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

void register_native_kernels(KernelRegistry& r) {
  r.add(ir::OpKind::kConv, DType::kFloat32, KernelBackend::kNative, make_native_conv);
}

}  // namespace modex::runtime
