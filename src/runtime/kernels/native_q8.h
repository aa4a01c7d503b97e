// What modex's own int8 convolution kernels share: the checks a node must pass before any of them
// takes it, the requantization parameters, and the AMX kernel's factory (native_conv_amx.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <memory>
#include <optional>

#include "runtime/kernels/kernel.h"
#include "runtime/kernels/simd.h"
#include "runtime/kernels/reference_int8.h"

namespace modex::runtime::native {

// An int8 NHWC 2-D convolution (or a fully connected Gemm: weights [O, I]) with constant
// symmetric int8 weights (per-tensor, or per output channel on axis 0), an int32 bias,
// non-negative pads, and requantization scales in the range XNNPACK accepts (the nodes outside it
// keep the reference kernel there too). Returns the prepared node, or nullopt to decline.
std::optional<q8::Prepared> accept_q8_conv(const KernelRequest& req);

// The node's constant int32 bias, or nullptr.
const Tensor* q8_conv_bias(const KernelRequest& req);

// Per output channel, what every int8 kernel folds before its loop: the bias less the input zero
// point times the sum of the channel's weights (wrapping int32 arithmetic, as the accumulation
// itself; padding taps then read the zero point and add nothing), and the requantization scale
// input_scale * weight_scale[o] / output_scale.
struct Q8Channel {
  int32_t bias;
  float scale;
};
Q8Channel q8_channel(const Tensor* bias, std::span<const float> w_scale, const q8::Prepared& p, int64_t o,
                     int32_t weight_sum);

// An allocator of storage aligned to kAlign bytes, for buffers the kernels read as whole vectors
// or tiles (a row then never splits a cache line).
template <class T, size_t kAlign>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, kAlign>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, kAlign>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kAlign))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(kAlign)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, kAlign>&) const { return true; }
};

// The output side of XNNPACK's fp32 requantization: y = clamp(round_to_nearest_even(acc * scale[o])
// + zp_out, act_min, act_max), the clamp applied as acc * scale <= act_max - zp_out in float, then
// >= act_min - zp_out in int32.
struct Requant {
  float max_less_zp;    // act_max - zp_out
  int32_t min_less_zp;  // act_min - zp_out
  int32_t zp;
  static Requant of(const q8::Prepared& p) {
    return {static_cast<float>(p.act_max - p.out.zero_point), p.act_min - p.out.zero_point, p.out.zero_point};
  }
};

// 16 accumulators (channels of `scale`) requantized to int32 outputs in [act_min, act_max].
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) inline __m512i requantize16(__m512i acc,
                                                                                                const float* scale,
                                                                                                const Requant& q) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(scale));
  f = _mm512_min_ps(f, _mm512_set1_ps(q.max_less_zp));
  const __m512i i = _mm512_max_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(q.min_less_zp));
  return _mm512_add_epi32(i, _mm512_set1_epi32(q.zp));
}

// Dense (groups = 1) int8 convolution, or fully connected Gemm (a 1x1 convolution of one pixel
// per row), on AMX tiles; nullptr where AMX is not enabled (native::isa_enabled(Isa::kAmx)) or
// the node is not one it takes.
std::unique_ptr<Kernel> make_amx_conv_q8(const KernelRequest& req);

}  // namespace modex::runtime::native
