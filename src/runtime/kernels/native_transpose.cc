// Transpose of 4-byte elements (float32): the NHWC -> NCHW conversion of a spatial output (a
// feature map, a detection head, a segmentation mask) and the transposes inside imported graphs.
// The reference kernel walks the output element by element; this one first simplifies the
// permutation (size-1 axes dropped, input axes that stay adjacent merged: NHWC -> NCHW is
// [N, HW, C] -> [N, C, HW]), then copies whole rows when the last axis stays last, transposes
// 8x8 tiles in AVX registers when the last two axes swap under an identity batch prefix, and
// otherwise walks the output with the innermost axis unrolled.
#include "runtime/kernels/simd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/kernels/native_conv.h"

namespace modex::runtime {
namespace {

using native::cpu_has_avx2_fma;

// 8x8 float tile: dst[j][i] = src[i][j], rows `lds` / `ldd` floats apart.
__attribute__((target("avx2,fma"))) inline void tile_8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds),
         r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds),
         r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE), s2 = _mm256_shuffle_ps(t1, t3, 0x44),
         s3 = _mm256_shuffle_ps(t1, t3, 0xEE), s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

class NativeTranspose final : public Kernel {
 public:
  explicit NativeTranspose(std::vector<int64_t> perm) : perm_(std::move(perm)) {}
  std::string_view name() const override { return "native_transpose_x32"; }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    x_ = in[0];
    y_ = out[0];
    const int64_t rank = x_.rank();
    std::vector<int64_t> p = perm_;
    if (p.empty())
      for (int64_t d = rank; d-- > 0;) p.push_back(d);
    if (static_cast<int64_t>(p.size()) != rank || y_.numel() != x_.numel())
      throw Error("transpose of " + dims_to_string(x_.shape()) + " to " + dims_to_string(y_.shape()) + ": bad permutation",
                  ErrorKind::kInternal);
    // Output axes in order, each naming its input axis; size-1 axes dropped, then runs of
    // consecutive input axes merged into one.
    std::vector<int64_t> axes;
    for (int64_t a : p)
      if (x_.dim(a) != 1) axes.push_back(a);
    shape_.clear();  // merged input shape, in input order
    perm2_.clear();  // merged output axes -> merged input axes
    std::vector<std::pair<int64_t, int64_t>> groups;  // per merged output axis: input axes [first, last]
    for (int64_t a : axes) {
      if (!groups.empty() && groups.back().second + 1 == a)
        groups.back().second = a;
      else
        groups.push_back({a, a});
    }
    // Merged input axes are the groups sorted by their first input axis.
    std::vector<size_t> order(groups.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t i, size_t j) { return groups[i].first < groups[j].first; });
    std::vector<int64_t> merged_of(groups.size());
    for (size_t k = 0; k < order.size(); ++k) {
      int64_t size = 1;
      for (int64_t a = groups[order[k]].first; a <= groups[order[k]].second; ++a) size *= x_.dim(a);
      shape_.push_back(size);
      merged_of[order[k]] = static_cast<int64_t>(k);
    }
    for (size_t g = 0; g < groups.size(); ++g) perm2_.push_back(merged_of[g]);
    const int64_t r = static_cast<int64_t>(shape_.size());
    if (r <= 1) {
      mode_ = Mode::kCopy;
    } else if (perm2_.back() == r - 1) {
      mode_ = Mode::kRows;
    } else {
      bool batched = perm2_[static_cast<size_t>(r - 1)] == r - 2 && perm2_[static_cast<size_t>(r - 2)] == r - 1;
      for (int64_t d = 0; batched && d < r - 2; ++d) batched = perm2_[static_cast<size_t>(d)] == d;
      mode_ = batched ? Mode::kTiles : Mode::kWalk;
    }
    if (mode_ == Mode::kTiles) {
      rows_ = shape_[static_cast<size_t>(r - 2)];
      cols_ = shape_[static_cast<size_t>(r - 1)];
      batch_ = x_.numel() / (rows_ * cols_);
      strips_ = (rows_ + kStrip - 1) / kStrip;
    }
  }

  void run(const RunContext& ctx) override {
    const float* x = x_.data<float>();
    float* y = y_.data_mutable<float>();
    switch (mode_) {
      case Mode::kCopy: std::memcpy(y, x, static_cast<size_t>(x_.numel()) * sizeof(float)); return;
      case Mode::kTiles:
        native::parallel(ctx, batch_ * strips_, [](void* self, size_t i) {
          static_cast<NativeTranspose*>(self)->strip(static_cast<int64_t>(i));
        }, this, x_.numel());
        return;
      case Mode::kRows:
      case Mode::kWalk: walk(x, y); return;
    }
  }

 private:
  enum class Mode { kCopy, kRows, kTiles, kWalk };
  static constexpr int64_t kStrip = 32;  // input rows per work item of the tiled mode

  // Input rows [32 s, 32 s + 32) of one batch's [rows, cols] matrix, written as output columns.
  __attribute__((target("avx2,fma"))) void strip(int64_t item) {
    const int64_t b = item / strips_, r0 = item % strips_ * kStrip, r1 = std::min(rows_, r0 + kStrip);
    const float* x = x_.data<float>() + b * rows_ * cols_;
    float* y = y_.data_mutable<float>() + b * rows_ * cols_;
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) {
      int64_t c = 0;
      for (; c + 8 <= cols_; c += 8) tile_8x8(x + r * cols_ + c, cols_, y + c * rows_ + r, rows_);
      for (; c < cols_; ++c)
        for (int64_t i = 0; i < 8; ++i) y[c * rows_ + r + i] = x[(r + i) * cols_ + c];
    }
    for (; r < r1; ++r)
      for (int64_t c = 0; c < cols_; ++c) y[c * rows_ + r] = x[r * cols_ + c];
  }

  // Odometer over the output's merged axes but the last; the last is a row copy (kRows) or a
  // strided gather (kWalk).
  void walk(const float* x, float* y) const {
    const size_t r = shape_.size();
    std::vector<int64_t> xst(r, 1), step(r), extent(r), idx(r, 0);
    for (size_t d = r - 1; d-- > 0;) xst[d] = xst[d + 1] * shape_[d + 1];
    for (size_t d = 0; d < r; ++d) {
      step[d] = xst[static_cast<size_t>(perm2_[d])];
      extent[d] = shape_[static_cast<size_t>(perm2_[d])];
    }
    const int64_t inner = extent[r - 1], inner_step = step[r - 1], outer = x_.numel() / inner;
    int64_t off = 0;
    for (int64_t o = 0; o < outer; ++o, y += inner) {
      const float* src = x + off;
      if (mode_ == Mode::kRows) {
        std::memcpy(y, src, static_cast<size_t>(inner) * sizeof(float));
      } else {
        for (int64_t i = 0; i < inner; ++i) y[i] = src[i * inner_step];
      }
      for (size_t d = r - 1; d-- > 0;) {
        off += step[d];
        if (++idx[d] < extent[d]) break;
        off -= step[d] * idx[d];
        idx[d] = 0;
      }
    }
  }

  std::vector<int64_t> perm_;
  Tensor x_, y_;
  std::vector<int64_t> shape_, perm2_;
  Mode mode_ = Mode::kCopy;
  int64_t rows_ = 0, cols_ = 0, batch_ = 0, strips_ = 0;
};

std::unique_ptr<Kernel> make_transpose(const KernelRequest& req) {
  const ir::Node& n = req.node;
  if (!cpu_has_avx2_fma() || n.inputs.empty()) return nullptr;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  const ir::Value& y = req.graph.value(n.outputs[0]);
  if (x.dtype != DType::kFloat32 || y.dtype != DType::kFloat32) return nullptr;
  return std::make_unique<NativeTranspose>(n.attr<ir::TransposeAttrs>().perm);
}

// Pixels [p0, p1) of one image: 3 planes interleaved 16 pixels at a time (two permutes per 16
// output floats: red and green placed, then blue), the rest and other channel counts plane by
// plane.
struct PlanesToPixels {
  const float* src;
  float* dst;
  int64_t N, C, HW, chunks_per_image;
  static constexpr int64_t kChunk = 4096;

  __attribute__((target("avx512f"))) static void three(const float* s, int64_t HW, float* d, int64_t p0, int64_t p1) {
    alignas(64) int32_t rg[3][16], pick_b[3][16];
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 16; ++j) {
        // Output float g of the block is channel g % 3 of pixel g / 3: lane g / 3 of that plane.
        const int g = 16 * k + j, ch = g % 3;
        rg[k][j] = ch == 0 ? g / 3 : ch == 1 ? 16 + g / 3 : 0;
        pick_b[k][j] = ch == 2 ? 16 + g / 3 : j;
      }
    __m512i i_rg[3], i_b[3];
    for (int k = 0; k < 3; ++k) {
      i_rg[k] = _mm512_load_si512(rg[k]);
      i_b[k] = _mm512_load_si512(pick_b[k]);
    }
    const float *r = s, *g = s + HW, *b = s + 2 * HW;
    int64_t p = p0;
    for (; p + 16 <= p1; p += 16) {
      const __m512 vr = _mm512_loadu_ps(r + p), vg = _mm512_loadu_ps(g + p), vb = _mm512_loadu_ps(b + p);
      for (int k = 0; k < 3; ++k) {
        const __m512 t = _mm512_permutex2var_ps(vr, i_rg[k], vg);
        _mm512_storeu_ps(d + 3 * p + 16 * k, _mm512_permutex2var_ps(t, i_b[k], vb));
      }
    }
    for (; p < p1; ++p)
      for (int c = 0; c < 3; ++c) d[3 * p + c] = s[c * HW + p];
  }

  void run(int64_t item) const {
    const int64_t n = item / chunks_per_image, p0 = item % chunks_per_image * kChunk, p1 = std::min(HW, p0 + kChunk);
    const float* s = src + n * C * HW;
    float* d = dst + n * HW * C;
    if (C == 3 && native::isa_enabled(native::Isa::kAvx512)) return three(s, HW, d, p0, p1);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = p0; p < p1; ++p) d[p * C + c] = s[c * HW + p];
  }
};

}  // namespace

void planes_to_pixels(const RunContext& ctx, const float* src, int64_t N, int64_t C, int64_t HW, float* dst) {
  PlanesToPixels job{src, dst, N, C, HW, (HW + PlanesToPixels::kChunk - 1) / PlanesToPixels::kChunk};
  native::parallel(ctx, N * job.chunks_per_image, [](void* self, size_t i) {
    static_cast<const PlanesToPixels*>(self)->run(static_cast<int64_t>(i));
  }, &job, N * C * HW * 8);  // threads from ~32K floats on
}

void register_native_transpose_kernels(KernelRegistry& r) {
  r.add(ir::OpKind::kTranspose, DType::kFloat32, KernelBackend::kNative, make_transpose);
}

}  // namespace modex::runtime
