// The ONNX import table: one row per (op type, opset range) form, with the attributes that form
// may carry and the builder that lowers it to IR. Ops whose behaviour changed between opsets
// (Softmax at 13, Squeeze/Unsqueeze axes at 13, Dropout at 12, ...) have one row per form.
#pragma once

#include <string_view>
#include <vector>

#include "io/onnx/reader_node.h"

namespace modex::onnx_io::reader {

using Builder = void (*)(NodeContext&);

struct OpRule {
  std::string_view op_type;
  int since;  // first opset of this form
  int until;  // last opset of this form (inclusive)
  // Every attribute this form may have; the driver rejects others, so a builder never ignores
  // an attribute it does not know.
  std::vector<std::string_view> attributes;
  Builder build;
};

// Every form of an op type, in opset order; empty when modex does not import the op.
std::vector<const OpRule*> rules_for(std::string_view op_type);

}  // namespace modex::onnx_io::reader
