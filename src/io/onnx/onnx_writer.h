// IR -> ONNX. Every node maps through one table keyed by op (with opset-dependent forms: Clip's
// min/max inputs, HardSwish below opset 14, Squeeze/Unsqueeze axes inputs from 13). Fused
// activations are written as separate nodes, since ONNX has no fused forms. Quantized graphs are
// written in QDQ form (quant/qdq.h): Quantize/Dequantize become QuantizeLinear/DequantizeLinear
// with scale and zero-point initializers (opset >= 13); any other op reading an integer value is
// refused. Every model is checked with libonnx's checker and strict shape inference; a file is
// committed (renamed into place) only once its model has passed.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "core/file_util.h"
#include "ir/graph.h"

namespace modex::onnx_io {

inline constexpr int kMinOpset = 11;
inline constexpr int kMaxOpset = 17;

struct OnnxWriteOptions {
  int opset = kMinOpset;
  std::string graph_name = "modex";
  std::map<std::string, std::string> metadata;  // written as metadata_props
  std::string doc_string;
};

// Serialised, checked model bytes. Releases the graph's constants as they are copied into the
// proto (so peak memory stays near one copy of the weights); the graph's structure remains.
std::string to_onnx_bytes(ir::Graph& g, const OnnxWriteOptions& options);

// Writes to `path` atomically (temporary file + rename) and checks; nothing is left behind on
// error. Releases the graph's constants like write_onnx_to. Returns the file size.
size_t write_onnx(ir::Graph& g, const std::filesystem::path& path, const OnnxWriteOptions& options);

// Writes into an open AtomicFile, then checks the model, without committing, so a caller can
// commit several outputs together (and must not commit if this throws). Each constant is written
// straight from the graph's buffer (to a scratch file beside the output, from which the file is
// put together once the model has passed) and released from the graph right after, so peak memory
// is the weights or libonnx's checker, not both. The file's bytes are those of to_onnx_bytes.
// Returns the byte count.
size_t write_onnx_to(ir::Graph& g, AtomicFile& file, const OnnxWriteOptions& options);

}  // namespace modex::onnx_io
