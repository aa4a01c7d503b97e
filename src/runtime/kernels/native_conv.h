// The dense convolution's GEMM pieces, shared with the Winograd kernel (native_winograd.cc): the
// AVX2/FMA 6x16 and AVX-512 12x32 (6x32 for short strips) micro-kernels, their blocking constants
// and B-panel prefetch, the choice of kernel per panel step, the fused residual add, the kernels'
// scratch, and the factories of both kernels.
// Callers must check the CPU (native::cpu_has_avx2_fma, native::isa_enabled(Isa::kAvx512)) before
// calling a micro-kernel.
#pragma once

#include "runtime/kernels/simd.h"

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>

#include "runtime/kernels/kernel.h"
#include "runtime/kernels/native_math.h"

namespace modex::runtime::native {

// Rows of the AVX2 micro-kernel's tile and of the AVX-512 one's (a strip of A), the most of either
// (callers' row-pointer arrays), and the columns of a panel.
inline constexpr int64_t kMr = 6, kMrAvx512 = 12, kMaxMr = 12, kNr = 16;
// Deepest K block: a 6-row A strip (12 KB) and a 16-column B panel (32 KB) of this depth stay in
// L1/L2. K is split into equal blocks no deeper than this (576 -> 2 x 288, not 512 + 64), so no
// block runs a short, overhead-dominated loop. (Measured on resnet18 at 1 thread: 512 and 384 about
// equal, 256 and 192 ~10% slower: the extra C reloads cost more than the L1 fit gains. The AVX-512
// kernel's panel pairs are 64 KB at this depth, yet 256 was no faster there on resnet18/50.)
inline constexpr int64_t kKc = 512;
// The dense AVX-512 kernel's: its 12-row strips and L2-bound prefetch made the 32 KB panel pairs
// of this depth (they fit L1) the faster choice. 5 alternating runs against 512: resnet18 28.04 ->
// 27.53 ms at 1 thread and 16.11 -> 15.24 at 2, resnet50 69.74 -> 67.66 and 37.57 -> 37.86,
// mobilenet_v2 8.22 -> 7.91 and 4.58 -> 4.56, efficientnet_b0 14.14 -> 14.17 and 8.93 -> 8.81.
inline constexpr int64_t kKcAvx512 = 256;

// c[r][0..15] = init[r] + sum_k a[r][k] * b[k][0..15] for r < rows (rows <= 6, a[r] valid for
// every r: callers repeat the last row), columns < cols written. init[r] is the bias (first K
// block) or c's row itself (later blocks); the clamp applies on the last K block only.
// pf[0 .. pf_lines * 16) is prefetched on the way: the caller's share of the next B panel, which
// comes from memory in the late layers whose weights do not fit in the caches.
// kWide = false computes only columns 0..7 (the last panel of an O that is 8 mod 16: 24, 40, ...
// channels in MobileNet / EfficientNet), skipping the half of the work that would be discarded.
// With segments > 1, a row's depth is `segments` runs of K floats, run s starting at
// a[r] + s * segment_stride (a convolution's kernel rows in a zero-padded NHWC input), and b holds
// segments * K rows.
template <bool kWide, int kFixedK = 0>
__attribute__((target("avx2,fma"))) void micro_kernel_6x16(int64_t K, const float* const* a, const float* b,
                                                            const float* bias, bool accumulate, float* c,
                                                            int64_t ldc, int64_t rows, int64_t cols, bool last,
                                                            float lo, float hi, bool silu, const float* pf,
                                                            int64_t pf_lines, int64_t segments = 1,
                                                            int64_t segment_stride = 0,
                                                            const float* residual = nullptr) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (!accumulate) {
    c00 = _mm256_loadu_ps(bias);
    c01 = _mm256_loadu_ps(bias + 8);
    c10 = c00, c11 = c01, c20 = c00, c21 = c01, c30 = c00, c31 = c01, c40 = c00, c41 = c01, c50 = c00, c51 = c01;
  } else if (rows == kMr && cols == kNr) {  // a whole tile: continue from c itself
    c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
    c10 = _mm256_loadu_ps(c + ldc), c11 = _mm256_loadu_ps(c + ldc + 8);
    c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
    c40 = _mm256_loadu_ps(c + 4 * ldc), c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
    c50 = _mm256_loadu_ps(c + 5 * ldc), c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
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
  if (!accumulate) {  // as micro_kernel_avx512: the tile's lines asked for with intent to write
    for (int64_t r = 0; r < rows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_ET0);
      if (kWide) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8), _MM_HINT_ET0);
    }
  }
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  if constexpr (kFixedK > 0) K = kFixedK;
  for (int64_t s = 0; s < segments; ++s) {
#pragma GCC unroll 32
    for (int64_t k = 0; k < K; ++k) {
      if (k < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + k * kNr), _MM_HINT_T0);
      __m256 b0 = _mm256_load_ps(b), b1 = kWide ? _mm256_load_ps(b + 8) : b0;
      b += kNr;
      __m256 v = _mm256_broadcast_ss(a0 + k);
      c00 = _mm256_fmadd_ps(v, b0, c00);
      if constexpr (kWide) c01 = _mm256_fmadd_ps(v, b1, c01);
      v = _mm256_broadcast_ss(a1 + k);
      c10 = _mm256_fmadd_ps(v, b0, c10);
      if constexpr (kWide) c11 = _mm256_fmadd_ps(v, b1, c11);
      v = _mm256_broadcast_ss(a2 + k);
      c20 = _mm256_fmadd_ps(v, b0, c20);
      if constexpr (kWide) c21 = _mm256_fmadd_ps(v, b1, c21);
      v = _mm256_broadcast_ss(a3 + k);
      c30 = _mm256_fmadd_ps(v, b0, c30);
      if constexpr (kWide) c31 = _mm256_fmadd_ps(v, b1, c31);
      v = _mm256_broadcast_ss(a4 + k);
      c40 = _mm256_fmadd_ps(v, b0, c40);
      if constexpr (kWide) c41 = _mm256_fmadd_ps(v, b1, c41);
      v = _mm256_broadcast_ss(a5 + k);
      c50 = _mm256_fmadd_ps(v, b0, c50);
      if constexpr (kWide) c51 = _mm256_fmadd_ps(v, b1, c51);
    }
    pf += K * kNr;
    pf_lines -= K;
    a0 += segment_stride, a1 += segment_stride, a2 += segment_stride;
    a3 += segment_stride, a4 += segment_stride, a5 += segment_stride;
  }
  if (!last) lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  __m256 acc[kMr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int64_t r = 0; r < rows; ++r) {
    if (residual && last) {
      alignas(32) float res[kNr] = {};
      std::memcpy(res, residual + r * ldc, static_cast<size_t>(cols) * sizeof(float));
      acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_load_ps(res));
      acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_load_ps(res + 8));
    }
    __m256 y0 = _mm256_min_ps(_mm256_max_ps(acc[r][0], vlo), vhi);
    __m256 y1 = _mm256_min_ps(_mm256_max_ps(acc[r][1], vlo), vhi);
    if (silu && last) {
      y0 = silu_avx2(y0);
      y1 = silu_avx2(y1);
    }
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

// Where B's element (k, o) of a K block of kc rows goes in the packed layout of `panels` 16-column
// panels (k counted from the block's start): panel after panel, each [kc][16]; with `pairs` (the
// AVX-512 kernel's layout) the panels 2q and 2q + 1 together as one [kc][32], row k of the pair
// the 16 columns of one then the other, and an odd last panel on its own as before. Either way a
// panel starts where it always did, so the callers' pointer arithmetic is the same.
inline int64_t packed_b_offset(bool pairs, int64_t panels, int64_t kc, int64_t k, int64_t o) {
  const int64_t p = o / kNr;
  if (pairs && (p ^ 1) < panels) return (p & ~int64_t{1}) * kc * kNr + k * 2 * kNr + (p & 1) * kNr + o % kNr;
  return p * kc * kNr + k * kNr + o % kNr;
}

// One output tile of a panel pair for the assembly kernels (gemm_avx512.S, which reads these
// fields at the offsets checked below): see there for what they compute.
struct AsmTile {
  const float* const* a;   // R row pointers
  const float* b;          // the pair's interleaved rows, 64-byte aligned
  float* c;
  int64_t ldc;             // bytes
  const float* bias;       // 32 floats to start from, or null: start from c
  int64_t K, rows, segments, stride;  // stride in floats
  const float* pf;
  int64_t pf_lines;        // at most K / 2
  float lo, hi;
  int64_t mask;            // columns 16..31 that exist
  const float* residual;   // added before the clamp (rows ldc apart, as c's), or null
};
static_assert(offsetof(AsmTile, bias) == 32 && offsetof(AsmTile, pf) == 72 && offsetof(AsmTile, lo) == 88 &&
              offsetof(AsmTile, mask) == 96 && offsetof(AsmTile, residual) == 104);

}  // namespace modex::runtime::native

extern "C" {
void modex_f32_tile_12x32_avx512(const modex::runtime::native::AsmTile* t);
void modex_f32_tile_10x32_avx512(const modex::runtime::native::AsmTile* t);
void modex_f32_tile_8x32_avx512(const modex::runtime::native::AsmTile* t);
void modex_f32_tile_6x32_avx512(const modex::runtime::native::AsmTile* t);
}

namespace modex::runtime::native {

// The AVX-512 micro-kernel: micro_kernel_6x16's contract for kRows (kMrAvx512) rows over
// kPanels (1 or 2) adjacent 16-column panels, one zmm per row and panel (24 accumulators for two).
// A panel pair is packed interleaved (see packed_b_offset): B's row k is the 32 floats at b + 32k,
// so one pointer walks both panels; pairs run the assembly tiles. pf_lines counts 16-float lines
// (kPanels per k), prefetched into L2, not L1: a panel pair at K = 512 is 64 KB, more than L1, so prefetching the next one into L1 evicted the
// current one (resnet18 at 1 thread 28.06 -> 27.19 ms, resnet50 68.46 -> 67.29, at 2 threads
// 37.05 -> 36.11; 5 alternating runs). Why 12 rows of two panels:
// per k, 2 loads of B and 12 broadcasts of A feed 24 FMAs, so B (read from L2 when its panels
// outgrow L1) streams at half the rate of the 6-row tile (measured on this kernel's GEMMs alone:
// 1x1 K = 64 121 -> 136 GFLOP/s, K = 2304 132 -> 148, one core of a Xeon with AVX-512). Columns
// past `cols` (a partial last panel) are masked out of the loads and stores.
template <int kPanels, int kFixedK = 0, int kRows = kMrAvx512>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) void micro_kernel_avx512(
    int64_t K, const float* const* a, const float* b, const float* bias, bool accumulate, float* c, int64_t ldc,
    int64_t rows, int64_t cols, bool last, float lo, float hi, bool silu, const float* pf, int64_t pf_lines,
    int64_t segments = 1, int64_t segment_stride = 0, const float* residual = nullptr) {
  if constexpr (kFixedK > 0) K = kFixedK;
  if constexpr (kPanels == 2 && (kRows == 12 || kRows == 10 || kRows == 8 || kRows == 6) && kFixedK == 0) {
    // A panel pair's tile of 6 to 12 rows is the assembly kernel's (gemm_avx512.S); SiLU, where
    // it applies, after it, on the stored tile.
    // What the assembly relies on: a pair's second panel has real columns, the tile holds the
    // rows, a first K block starts from the bias (pf_lines is clamped below).
    assert(cols > kNr && cols <= 2 * kNr && rows >= 1 && rows <= kRows && (accumulate || bias));
    constexpr float kInf = std::numeric_limits<float>::infinity();
    const AsmTile t{a, b, c, ldc * static_cast<int64_t>(sizeof(float)), accumulate ? nullptr : bias, K, rows,
                    segments, segment_stride, pf, std::clamp<int64_t>(pf_lines, 0, K / 2), last ? lo : -kInf,
                    last ? hi : kInf, (int64_t{1} << std::clamp<int64_t>(cols - kNr, 0, kNr)) - 1,
                    last ? residual : nullptr};
    if constexpr (kRows == 12) modex_f32_tile_12x32_avx512(&t);
    if constexpr (kRows == 10) modex_f32_tile_10x32_avx512(&t);
    if constexpr (kRows == 8) modex_f32_tile_8x32_avx512(&t);
    if constexpr (kRows == 6) modex_f32_tile_6x32_avx512(&t);
    if (silu && last) {
      const __mmask16 m1 = static_cast<__mmask16>(t.mask);
      for (int64_t r = 0; r < rows; ++r) {
        float* y = c + r * ldc;
        _mm512_storeu_ps(y, silu_avx512(_mm512_loadu_ps(y)));
        _mm512_mask_storeu_ps(y + kNr, m1, silu_avx512(_mm512_maskz_loadu_ps(m1, y + kNr)));
      }
    }
    return;
  }
  __mmask16 mask[kPanels];
  for (int j = 0; j < kPanels; ++j)
    mask[j] = static_cast<__mmask16>((1u << std::clamp<int64_t>(cols - j * kNr, 0, kNr)) - 1);
  __m512 acc[kRows][kPanels];
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int j = 0; j < kPanels; ++j)
      acc[r][j] = !accumulate ? _mm512_loadu_ps(bias + j * kNr)
                  : r < rows  ? _mm512_maskz_loadu_ps(mask[j], c + r * ldc + j * kNr)
                              : _mm512_setzero_ps();
  }
  const float* ar[kRows];
  for (int r = 0; r < kRows; ++r) ar[r] = a[r];
  // The tile's first write (a K block before it has read it): its lines are asked for with intent
  // to write now, so that the stores at the end do not wait for them (a network's outputs are
  // rarely in cache: resnet50 at 1 thread 76.2 -> 71.2 ms, mobilenet_v2 8.55 -> 7.97).
  if (!accumulate) {
#pragma GCC unroll 12
    for (int r = 0; r < kRows; ++r) {
      if (r == rows) break;
      for (int j = 0; j < kPanels; ++j) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + j * kNr), _MM_HINT_ET0);
    }
  }
  for (int64_t s = 0; s < segments; ++s) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; ++k) {
      if (k * kPanels < pf_lines) {
        for (int j = 0; j < kPanels; ++j)
          _mm_prefetch(reinterpret_cast<const char*>(pf + (k * kPanels + j) * kNr), _MM_HINT_T1);
      }
      __m512 bv[kPanels];
      for (int j = 0; j < kPanels; ++j) bv[j] = _mm512_load_ps(b + (k * kPanels + j) * kNr);
#pragma GCC unroll 12
      for (int r = 0; r < kRows; ++r) {
        const __m512 v = _mm512_set1_ps(ar[r][k]);
        for (int j = 0; j < kPanels; ++j) acc[r][j] = _mm512_fmadd_ps(v, bv[j], acc[r][j]);
      }
    }
    b += K * kNr * kPanels;
    pf += K * kNr * kPanels;
    pf_lines -= K * kPanels;
    for (int r = 0; r < kRows; ++r) ar[r] += segment_stride;
  }
  if (!last) lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  // Constant indices (the loop unrolled), so that the accumulators stay in registers.
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) {
    if (r == rows) break;
    for (int j = 0; j < kPanels; ++j) {
      if (residual && last)
        acc[r][j] = _mm512_add_ps(acc[r][j], _mm512_maskz_loadu_ps(mask[j], residual + r * ldc + j * kNr));
      __m512 y = _mm512_min_ps(_mm512_max_ps(acc[r][j], vlo), vhi);
      if (silu && last) y = silu_avx512(y);
      _mm512_mask_storeu_ps(c + r * ldc + j * kNr, mask[j], y);
    }
  }
}

using MicroKernel = void (*)(int64_t K, const float* const* a, const float* b, const float* bias, bool accumulate,
                             float* c, int64_t ldc, int64_t rows, int64_t cols, bool last, float lo, float hi,
                             bool silu, const float* pf, int64_t pf_lines, int64_t segments, int64_t segment_stride,
                             const float* residual);

// One step of a GEMM over the panels [p, end): the micro-kernel, how many panels it covers, their
// real columns (of O) and the rows of its strip. AVX-512 takes panel pairs (a single one last when
// the count is odd) in strips of 12 rows; AVX2 one panel, its narrow variant when at most 8 columns
// are real, in strips of 6.
// Strips: AVX2 takes rows 6 at a time. AVX-512 takes 12 at a time except that the last 13 to 23
// rows are two strips, the first of 8, 10 or 12 rows and the second the rest (5 to 11), each run
// by the smallest of the 6-, 8-, 10- and 12-row tiles that holds it, so that a short remainder is
// not computed as a 6- or 12-row tile: resnet50's 7x7 layers (49 rows) were 4 x 12 + 1 row
// computed as 6, 54 rows of work, and are now 3 x 12 + 8 + 5 (as 6), 50.
struct PanelStep {
  MicroKernel kernel;
  int64_t panels, cols, rows;  // rows: the most a strip has (callers' row pointers)
  MicroKernel k6, k8, k10;     // AVX-512: the tiles of 6, 8 and 10 rows
  MicroKernel for_rows(int64_t mr) const {
    return rows == kMr ? kernel : mr <= 6 ? k6 : mr <= 8 ? k8 : mr <= 10 ? k10 : kernel;
  }
  // Rows of the strip at row r of a block of `total` rows.
  int64_t strip_at(int64_t r, int64_t total) const {
    const int64_t left = total - r;
    if (rows == kMr || left <= kMrAvx512) return std::min(rows, left);
    if (left >= 2 * kMrAvx512) return kMrAvx512;
    return left <= 16 ? 8 : left <= 18 ? 10 : 12;
  }
};
template <int kFixedK = 0>
PanelStep panel_step(bool avx512, int64_t p, int64_t end, int64_t O) {
  if (avx512) {
    const int64_t panels = std::min<int64_t>(2, end - p);
    if (panels == 1) {
      const MicroKernel k12 = micro_kernel_avx512<1, kFixedK>, k6 = micro_kernel_avx512<1, kFixedK, kMr>;
      return {k12, 1, std::min(kNr, O - p * kNr), kMrAvx512, k6, k12, k12};
    }
    // Every tile of a pair runs the assembly kernel, for any K.
    return {micro_kernel_avx512<2>, 2, std::min(2 * kNr, O - p * kNr), kMrAvx512,
            micro_kernel_avx512<2, 0, kMr>, micro_kernel_avx512<2, 0, 8>, micro_kernel_avx512<2, 0, 10>};
  }
  const int64_t cols = std::min(kNr, O - p * kNr);
  const MicroKernel k = cols > 8 ? micro_kernel_6x16<true, kFixedK> : micro_kernel_6x16<false, kFixedK>;
  return {k, 1, cols, kMr, k, k, k};
}

// Rows of a full strip on this ISA: block sizes are whole strips.
inline int64_t strip_rows(bool avx512) { return avx512 ? kMrAvx512 : kMr; }

// Rows per block for M rows in blocks of about `most` rows: as few blocks as `most` allows, of
// equal size rounded up to whole strips (so no block is a short remainder).
inline int64_t balanced_block_rows(int64_t M, int64_t most, int64_t strip) {
  const int64_t blocks = std::max<int64_t>(1, (M + most - 1) / most), per = (M + blocks - 1) / blocks;
  return std::max(strip, (per + strip - 1) / strip * strip);
}

// The strip starting at row r prefetches its share of the packed B after the `span` rows at b
// (span = kc times the step's panels: the next step's panels, or the next K block's first: the
// layout is contiguous in that order), so that the strips of one step together fetch the next
// one. Prefetching past the end cannot fault.
struct Prefetch {
  const float* at;
  int64_t lines;
};
// share_of: that share of the `next_span` lines at `next` (0: nothing to fetch), for callers whose
// next B is not the one after b: a column group's next step after its last panels is its first
// panels of the next K block, not the panels after them, which are another group's.
inline Prefetch share_of(const float* next, int64_t next_span, int64_t r, int64_t rows, int64_t strip) {
  // (r + strip - 1) / strip: the strip's index, also for a last one that starts short of a full
  // strip's multiple (PanelStep::strip_at).
  int64_t strips = (rows + strip - 1) / strip, share = (next_span + strips - 1) / strips,
          first = (r + strip - 1) / strip * share;
  return {next + first * kNr, std::clamp<int64_t>(next_span - first, 0, share)};
}
inline Prefetch next_panel_share(const float* b, int64_t span, int64_t r, int64_t rows, int64_t strip = kMr) {
  return share_of(b + span * kNr, span, r, rows, strip);
}

// The dense NHWC convolution (native_conv.cc) for a node the caller has already checked (groups 1,
// constant weights [O, kH, kW, C], non-negative pads, AVX2/FMA and XNNPACK available).
// fn(self, i) for i in [0, items): over the pool when there is one (held under its mutex, so
// concurrent runs can share it), more than one item and at least kParallelWork multiply-adds of
// `work` (waking the pool's threads costs more than the small SE-block convolutions take), else on
// the calling thread.
inline constexpr int64_t kParallelWork = 1 << 18;
void parallel(const RunContext& ctx, int64_t items, void (*fn)(void*, size_t), void* self,
              int64_t work = std::numeric_limits<int64_t>::max());

// The pixels of an NHWC input x [N, H, W, C] into `bordered` [N, Hp, Wp, C], a copy of it framed
// by `top` rows and `left` columns (the convolution's leading pads) and cut where no window
// reaches: the padded modes' input, whose border (zero, or the int8 zero point) is written once
// and left as it is.
template <class T>
void copy_into_bordered(const T* x, int64_t N, int64_t H, int64_t W, int64_t C, T* bordered, int64_t Hp, int64_t Wp,
                        int64_t top, int64_t left) {
  const int64_t rows = std::min(H, Hp - top), cols = std::min(W, Wp - left);
  if (rows <= 0 || cols <= 0) return;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ih = 0; ih < rows; ++ih)
      std::memcpy(bordered + ((n * Hp + ih + top) * Wp + left) * C, x + (n * H + ih) * W * C,
                  static_cast<size_t>(cols * C) * sizeof(T));
}

// A kernel's float scratch, grown (never shrunk) on setup, zero-filled when it grows; a Buffer,
// so that megabytes of it sit on huge pages (Buffer::allocate).
class Scratch {
 public:
  void resize(int64_t count) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    if (buffer_ && buffer_->size() >= bytes) return;
    buffer_ = Buffer::allocate(bytes);
    std::memset(buffer_->data(), 0, bytes);
  }
  float* data() { return reinterpret_cast<float*>(buffer_->data()); }
  const float* data() const { return reinterpret_cast<const float*>(buffer_->data()); }

 private:
  std::shared_ptr<Buffer> buffer_;
};

std::unique_ptr<Kernel> make_dense_conv(const ir::ConvAttrs& a, const Tensor& w, const Tensor* b, int64_t C);

// The Winograd F(4x4, 3x3) convolution, or nullptr for the nodes it does not take.
std::unique_ptr<Kernel> make_winograd_conv(const KernelRequest& req);

}  // namespace modex::runtime::native
