// ONNX -> IR. Reads any ONNX classifier of the usual CNN op set (default domain, opsets 11-17)
// into a shape-checked ir::Graph. Every node goes through one table keyed by op type and opset
// range (reader_ops.cc); a node, attribute or attribute value the table does not handle is an
// Error naming the node, op and opset, never a silently different model.
//
// The shape computations that dynamic-shape exports contain (Shape -> Gather -> Unsqueeze ->
// Concat -> Reshape, the Pad-list chains, Cast/Slice/ConstantOfShape ...) are evaluated inside the
// importer, over static dims where known and symbolically over dynamic ones, so the IR never sees
// Shape or Gather: a Reshape target [Gather(Shape(x), 0), -1] becomes the attribute [0, -1] (then
// [0, 512] when the other dims are static).
//
// IR forms the importer emits (what a pass or writer downstream can expect):
//   - Conv / MaxPool / AveragePool with explicit pads (auto_pad resolved), 2-D only, NCHW.
//   - BatchNorm as a standalone node (fold_batchnorm merges it into a preceding Conv/Gemm).
//   - Gemm only in the IR form y = x·Wᵀ + b with W a constant [O, I] and b a constant [O]:
//     transB=0 weights are transposed and alpha/beta folded into the constants at import; a
//     transA input gets a Transpose node; a non-constant B becomes Transpose?/MatMul (+ Mul by
//     alpha); a C that is not a per-column vector, or not constant, becomes a separate Add.
//   - Clip(0, +inf) as Relu, Clip(-inf, +inf) as Identity, other Clips with both bounds as
//     attributes (a missing bound is -inf/+inf).
//   - Identity for ONNX Identity and inference-mode Dropout (eliminate_dead_code removes them).
//   - Squeeze/Unsqueeze with explicit axes; Reshape with a static target where 0 copies a dim and
//     -1 infers one; Softmax with its axis (opset < 13 files only when that equals per-axis
//     softmax); Pad with explicit pads and value; Cast to the value's own dtype as Identity.
//   - Flatten with a non-negative axis; Cast/Shape/Gather/Slice/Size/ConstantOfShape never
//     (evaluated here; Cast of a non-constant tensor to another dtype is refused).
//   - Constants (initializers, Constant nodes, evaluated shape chains) as IR constants;
//     Transpose/Reshape/Mul... on constants stay as nodes for fold_constants.
// Only nodes that a graph output depends on are imported (a dead branch may hold any op), and
// initializers are read when first used (an unused one is neither copied nor checked).
// Sizes are bounded: dims below 2^31 (TFLite's limit), at most 2^50 elements per value.
// Graph inputs that are also initializers (old exporters) become constants. Value names,
// graph input and output names are kept; node names too (made unique, generated when empty).
// Unnamed dynamic dims are anonymous (Dim::unknown) in the result.
//
// graph.metadata gets the file's metadata_props plus "source_format" = "onnx",
// "source_opset" and "source_producer" (producer name and version).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "ir/graph.h"

namespace modex::onnx_io {

inline constexpr int kMinImportOpset = 11;
inline constexpr int kMaxImportOpset = 17;

struct OnnxImportOptions {
  // Replaces the declared shape of named graph inputs (same rank as declared, when declared),
  // e.g. to give a dynamic height/width a static size so auto_pad can be resolved.
  std::map<std::string, ir::Shape> input_shapes;
  // Folder that external-data `location`s are resolved in (they must stay inside it).
  // import_onnx() defaults it to the model file's folder; import_onnx_from_memory() refuses
  // external data unless it is set.
  std::filesystem::path external_data_dir;
};

// Reads an .onnx file. Errors carry the file name. External data is read from the model's
// folder (or options.external_data_dir), refusing absolute locations and `..` escapes.
ir::Graph import_onnx(const std::filesystem::path& path, const OnnxImportOptions& options = {});

// Same from bytes in memory; `name` labels errors (a file name or "<memory>").
ir::Graph import_onnx_from_memory(const uint8_t* data, size_t size, const std::string& name,
                                  const OnnxImportOptions& options = {});

}  // namespace modex::onnx_io
