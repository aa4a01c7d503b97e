// What modex's own int8 convolution kernels share: the checks a node must pass before any of them
// takes it, the requantization parameters, and the AMX kernel's factory (native_conv_amx.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "runtime/kernels/kernel.h"
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

// Dense (groups = 1) int8 convolution, or fully connected Gemm (a 1x1 convolution of one pixel
// per row), on AMX tiles; nullptr where AMX is not enabled (native::isa_enabled(Isa::kAmx)) or
// the node is not one it takes.
std::unique_ptr<Kernel> make_amx_conv_q8(const KernelRequest& req);

}  // namespace modex::runtime::native
