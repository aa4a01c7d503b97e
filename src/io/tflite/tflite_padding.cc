#include "io/tflite/tflite_padding.h"

#include <algorithm>

namespace modex::tflite_io {
namespace {

int64_t effective_kernel(int64_t kernel, int64_t dilation) { return dilation * (kernel - 1) + 1; }

struct DimOptions {
  bool valid_exact = false;
  bool same_exact = false;
  int64_t read_begin = 0;  // padding the IR's windows read before / after the input
  int64_t read_end = 0;
};

DimOptions analyse(const SpatialWindow& w, PadSemantics semantics) {
  const int64_t eff = effective_kernel(w.kernel, w.dilation);
  DimOptions o;
  o.read_begin = w.pad_begin;
  // Declared end padding may go unread (stride); ceil_mode windows may read past it.
  o.read_end = std::max<int64_t>(0, (w.out - 1) * w.stride - w.pad_begin + eff - w.in);
  o.valid_exact = o.read_begin == 0 && o.read_end == 0;
  auto [same_begin, same_end] = same_padding(w.in, w.kernel, w.stride, w.dilation);
  // Same output count and same first window start means the same windows.
  o.same_exact =
      w.out == padded_output_size(WindowPadding::kSame, w.in, w.kernel, w.stride, w.dilation) &&
      w.pad_begin == same_begin;
  // SAME pools leave padded positions out of the average; a counted pad is only exact when SAME
  // pads nothing.
  if (semantics == PadSemantics::kAverageCounted)
    o.same_exact = o.same_exact && same_begin == 0 && same_end == 0;
  return o;
}

}  // namespace

bool PaddingPlan::needs_pad_op() const {
  return std::any_of(pad_begin.begin(), pad_begin.end(), [](int64_t p) { return p != 0; }) ||
         std::any_of(pad_end.begin(), pad_end.end(), [](int64_t p) { return p != 0; });
}

std::pair<int64_t, int64_t> same_padding(int64_t in, int64_t kernel, int64_t stride,
                                         int64_t dilation) {
  int64_t out = padded_output_size(WindowPadding::kSame, in, kernel, stride, dilation);
  int64_t total =
      std::max<int64_t>((out - 1) * stride + effective_kernel(kernel, dilation) - in, 0);
  return {total / 2, total - total / 2};
}

int64_t padded_output_size(WindowPadding mode, int64_t in, int64_t kernel, int64_t stride,
                           int64_t dilation) {
  if (mode == WindowPadding::kSame) return (in + stride - 1) / stride;
  return (in - effective_kernel(kernel, dilation) + stride) / stride;
}

std::optional<PaddingPlan> plan_padding(std::span<const SpatialWindow> dims,
                                        PadSemantics semantics) {
  std::vector<DimOptions> opts;
  for (const SpatialWindow& w : dims) opts.push_back(analyse(w, semantics));
  PaddingPlan plan;
  plan.pad_begin.assign(dims.size(), 0);
  plan.pad_end.assign(dims.size(), 0);
  if (std::all_of(opts.begin(), opts.end(), [](const DimOptions& o) { return o.valid_exact; })) {
    plan.mode = WindowPadding::kValid;
    return plan;
  }
  if (std::all_of(opts.begin(), opts.end(), [](const DimOptions& o) { return o.same_exact; })) {
    plan.mode = WindowPadding::kSame;
    return plan;
  }
  // Explicit padding, then VALID. Excluded pads cannot be materialised (they would be averaged),
  // and counted pads must not grow: PyTorch does not count a ceil_mode window's overhang. The
  // declared end padding is kept even where no window reads it (VALID then drops it the same
  // way), so that a reader recovers the IR's pads.
  if (semantics == PadSemantics::kAverageExcluded) return std::nullopt;
  plan.mode = WindowPadding::kValid;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (semantics == PadSemantics::kAverageCounted && opts[i].read_end > dims[i].pad_end)
      return std::nullopt;
    plan.pad_begin[i] = opts[i].read_begin;
    plan.pad_end[i] = std::max(opts[i].read_end, dims[i].pad_end);
  }
  return plan;
}

}  // namespace modex::tflite_io
