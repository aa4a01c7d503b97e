// Small tensors the importer evaluates itself: the shape arithmetic of dynamic-shape exports
// (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, torch's Pad-list chains, ...). Elements are
// numbers, or integers known only at run time — a dynamic dim of some value, or arithmetic on
// one — so that `Gather(Shape(x), 0)` of a [batch, 512, 1, 1] tensor is "the batch dim of x".
// The IR never needs Shape/Gather/Slice/Cast ops: these values end up as Reshape targets,
// Pad lists, axes, or (when fully static) constants.
//
// Every function validates its arguments like the ONNX op it implements and throws Error
// (without node context; the caller adds it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ir/graph.h"

namespace modex::onnx_io::reader {

// Elements beyond this are not evaluated at import time (shape tensors have a handful).
inline constexpr int64_t kMaxSymbolicElements = 4096;

struct SymElem {
  int64_t i = 0;         // the value, for integer and bool dtypes
  double f = 0.0;        // the value, for float dtypes
  bool dynamic = false;  // integer known only at run time
  // For a dynamic element read by Shape(): the dim's symbol ("batch"; "" when anonymous) and
  // where it was read, so a Reshape can recognise "dim 0 of my own input" and write 0.
  std::string symbol;
  ir::ValueId origin = ir::kNoValue;
  int64_t origin_axis = -1;
  std::string origin_name;

  static SymElem integer(int64_t v) {
    SymElem e;
    e.i = v;
    return e;
  }
  static SymElem real(double v) {
    SymElem e;
    e.f = v;
    return e;
  }
  // A run-time integer with no known relation to any dim (e.g. batch * 512).
  static SymElem opaque() {
    SymElem e;
    e.dynamic = true;
    return e;
  }
};

struct SymTensor {
  DType dtype = DType::kInt64;
  Dims shape;
  std::vector<SymElem> elems;  // row-major, one per element

  int64_t numel() const { return static_cast<int64_t>(elems.size()); }
  bool is_static() const;
  // The first dynamic element, for error messages ("dim 'batch' of 'x'", "a run-time value").
  std::string describe_dynamic() const;
};

// Conversions. from_tensor needs numel <= kMaxSymbolicElements; to_tensor needs is_static().
SymTensor sym_from_tensor(const Tensor& t);
Tensor sym_to_tensor(const SymTensor& s);
// Static values as integers (floats must be whole numbers); throws when any element is dynamic.
std::vector<int64_t> sym_static_ints(const SymTensor& s, const std::string& what);

// ONNX Shape(x)[start:end] (opset 15 slicing; start/end clamp as ONNX specifies).
SymTensor sym_shape_of(const ir::Value& v, ir::ValueId id, int64_t start, int64_t end);
// Shape of a tensor that is itself evaluated here (all dims static).
SymTensor sym_shape_of(const SymTensor& s, int64_t start, int64_t end);
SymTensor sym_size_of(const ir::Value& v);

enum class SymBinaryOp { kAdd, kSub, kMul, kDiv };
SymTensor sym_binary(SymBinaryOp op, const SymTensor& a, const SymTensor& b);
SymTensor sym_gather(const SymTensor& data, const SymTensor& indices, int64_t axis);
SymTensor sym_slice(const SymTensor& data, const std::vector<int64_t>& starts,
                    const std::vector<int64_t>& ends, std::vector<int64_t> axes,
                    std::vector<int64_t> steps);
SymTensor sym_concat(const std::vector<const SymTensor*>& inputs, int64_t axis);
SymTensor sym_reshape(const SymTensor& data, const std::vector<int64_t>& target, bool allowzero);
SymTensor sym_transpose(const SymTensor& data, std::vector<int64_t> perm);
SymTensor sym_squeeze(const SymTensor& data, const std::vector<int64_t>& axes);
SymTensor sym_unsqueeze(const SymTensor& data, const std::vector<int64_t>& axes);
SymTensor sym_cast(const SymTensor& data, DType to);
// A tensor of `shape` filled with the one-element `value`.
SymTensor sym_constant_of_shape(const Dims& shape, const SymTensor& value);

}  // namespace modex::onnx_io::reader
