// Reference execution: plain, obviously-correct float32 kernels for every IR op, in both
// layouts. The source of truth that optimised kernels and graph rewrites are tested against;
// not meant to be fast.
#pragma once

#include <vector>

#include "ir/graph.h"

namespace modex::runtime {

// Runs the graph on concrete inputs (one per graph input, in order). Quantized nodes run the int8
// reference kernels (kernels/reference_int8.h); quantized inputs and outputs are integers. Named dynamic dims are bound
// from the inputs' shapes. Returns one tensor per graph output.
std::vector<Tensor> run_reference(const ir::Graph& g, const std::vector<Tensor>& inputs);

}  // namespace modex::runtime
