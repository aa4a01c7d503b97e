// int8 ONNX in QDQ form for `modex export --quantize int8`: the optimised float NCHW graph (what
// the float ONNX file is written from) calibrated in modex's engine on the same representative
// images as the TFLite int8 model, then rewritten by quant::to_qdq.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"
#include "ir/graph.h"
#include "quant/calibration.h"
#include "quant/qdq.h"

namespace modex::app {

// [N,H,W,C] batches as [N,C,H,W] (what an NCHW graph takes).
Tensor nhwc_to_nchw(const Tensor& batch);

// The ranges of every value quant::qdq_calibration_values(g) lists, observed over `batches`
// ([N,C,H,W] float images) with `observer`. progress(images done, total).
quant::RangeMap calibrate_qdq(const ir::Graph& g, const std::vector<Tensor>& batches,
                              const quant::ObserverOptions& observer,
                              const std::function<void(int64_t, int64_t)>& progress);

// The opset a QDQ file is written with: per-channel QuantizeLinear/DequantizeLinear need 13.
inline int qdq_opset(int requested) { return requested < 13 ? 13 : requested; }

}  // namespace modex::app
