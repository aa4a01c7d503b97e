// TFLite's convolutions and pools know only SAME and VALID padding; modex's IR carries explicit
// pads (PyTorch's symmetric ones, ONNX's begin/end pairs). This maps one onto the other, per op,
// from the static input sizes: SAME or VALID when either computes exactly the IR's windows,
// otherwise an explicit PAD before the op and VALID.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace modex::tflite_io {

enum class WindowPadding : uint8_t { kSame, kValid };

// What padded positions contribute to a window. It decides when SAME is exact (TFLite's pools
// skip padded positions; its convolutions read them as zeros) and whether an explicit PAD can
// stand in for the IR's padding.
enum class PadSemantics : uint8_t {
  kZeros,            // convolution: padded positions are zeros
  kMaxIgnored,       // max pool: padded positions never win (explicit PAD with -FLT_MAX)
  kAverageExcluded,  // average pool, padded positions not counted (count_include_pad = false)
  kAverageCounted,   // average pool, declared pads counted as zeros (count_include_pad = true)
};

// One spatial dim of a window op. `out` is the IR's output size, which already reflects
// ceil_mode, so windows start at i * stride - pad_begin for i in [0, out).
struct SpatialWindow {
  int64_t in = 0;
  int64_t out = 0;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t dilation = 1;
  int64_t pad_begin = 0;
  int64_t pad_end = 0;
};

struct PaddingPlan {
  WindowPadding mode = WindowPadding::kValid;
  // Per spatial dim, the padding an explicit PAD must add before the op (mode is then VALID);
  // all zero when the mode alone reproduces the IR's windows.
  std::vector<int64_t> pad_begin;
  std::vector<int64_t> pad_end;
  bool needs_pad_op() const;
};

// The {begin, end} pads TFLite's SAME implies for one dim.
std::pair<int64_t, int64_t> same_padding(int64_t in, int64_t kernel, int64_t stride,
                                         int64_t dilation);

// The output size of one dim under SAME or VALID.
int64_t padded_output_size(WindowPadding mode, int64_t in, int64_t kernel, int64_t stride,
                           int64_t dilation);

// The cheapest exact plan, or nullopt when TFLite cannot express the windows (average pooling
// whose excluded pads SAME does not reproduce; counted pads with ceil_mode overhang).
std::optional<PaddingPlan> plan_padding(std::span<const SpatialWindow> dims,
                                        PadSemantics semantics);

}  // namespace modex::tflite_io
