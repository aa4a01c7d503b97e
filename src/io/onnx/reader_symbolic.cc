#include "io/onnx/reader_symbolic.h"

#include <algorithm>
#include <cmath>

#include "core/tensor_ops.h"
#include "io/onnx/reader_tensor.h"

namespace modex::onnx_io::reader {
namespace {

int64_t normalize_axis(int64_t axis, int64_t rank, const char* what) {
  if (axis < -rank || axis >= rank)
    throw Error(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " +
                std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

// numel of a shape the evaluator may build, refusing anything beyond the size limit.
int64_t bounded_numel(const Dims& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in " + dims_to_string(shape));
    if (d != 0 && n > kMaxSymbolicElements / d)
      throw Error("shape computation on a tensor of shape " + dims_to_string(shape) +
                      " is too large to evaluate at import time",
                  ErrorKind::kUnsupported);
    n *= d;
  }
  return n;
}

SymTensor make(DType dtype, Dims shape) {
  SymTensor t;
  t.dtype = dtype;
  t.elems.resize(static_cast<size_t>(bounded_numel(shape)));
  t.shape = std::move(shape);
  return t;
}

// Integer results are kept as the dtype would hold them (int32 arithmetic wraps at 32 bits).
int64_t wrap(DType dtype, int64_t v) {
  switch (dtype) {
    case DType::kInt8:
      return static_cast<int8_t>(v);
    case DType::kUInt8:
      return static_cast<uint8_t>(v);
    case DType::kInt16:
      return static_cast<int16_t>(v);
    case DType::kUInt16:
      return static_cast<uint16_t>(v);
    case DType::kInt32:
      return static_cast<int32_t>(v);
    case DType::kUInt32:
      return static_cast<uint32_t>(v);
    case DType::kBool:
      return v != 0;
    default:
      return v;
  }
}

bool is_int(DType t) { return !is_float(t); }

SymElem static_binary(SymBinaryOp op, DType dtype, const SymElem& a, const SymElem& b) {
  if (is_float(dtype)) {
    switch (op) {
      case SymBinaryOp::kAdd:
        return SymElem::real(a.f + b.f);
      case SymBinaryOp::kSub:
        return SymElem::real(a.f - b.f);
      case SymBinaryOp::kMul:
        return SymElem::real(a.f * b.f);
      case SymBinaryOp::kDiv:
        return SymElem::real(a.f / b.f);
    }
  }
  int64_t r = 0;
  bool overflow = false;
  switch (op) {
    case SymBinaryOp::kAdd:
      overflow = __builtin_add_overflow(a.i, b.i, &r);
      break;
    case SymBinaryOp::kSub:
      overflow = __builtin_sub_overflow(a.i, b.i, &r);
      break;
    case SymBinaryOp::kMul:
      overflow = __builtin_mul_overflow(a.i, b.i, &r);
      break;
    case SymBinaryOp::kDiv:
      if (b.i == 0) throw Error("integer division by zero in a shape computation");
      overflow = a.i == INT64_MIN && b.i == -1;
      if (!overflow) r = a.i / b.i;  // truncates toward zero, as runtimes do for integer Div
      break;
  }
  if (overflow) throw Error("integer overflow in a shape computation");
  return SymElem::integer(wrap(dtype, r));
}

// Arithmetic with a run-time operand: identities keep the dim (so `dim * 1` is still "dim 0 of
// x"); `dim * 0` is 0; anything else is a run-time value with no known relation to a dim.
SymElem dynamic_binary(SymBinaryOp op, const SymElem& a, const SymElem& b) {
  auto is = [](const SymElem& e, int64_t v) { return !e.dynamic && e.i == v; };
  switch (op) {
    case SymBinaryOp::kAdd:
      if (is(b, 0)) return a;
      if (is(a, 0)) return b;
      break;
    case SymBinaryOp::kSub:
      if (is(b, 0)) return a;
      break;
    case SymBinaryOp::kMul:
      if (is(b, 1)) return a;
      if (is(a, 1)) return b;
      if (is(a, 0) || is(b, 0)) return SymElem::integer(0);
      break;
    case SymBinaryOp::kDiv:
      if (is(b, 0)) throw Error("integer division by zero in a shape computation");
      if (is(b, 1)) return a;
      break;
  }
  return SymElem::opaque();
}

}  // namespace

bool SymTensor::is_static() const {
  return std::none_of(elems.begin(), elems.end(), [](const SymElem& e) { return e.dynamic; });
}

std::string SymTensor::describe_dynamic() const {
  for (const SymElem& e : elems) {
    if (!e.dynamic) continue;
    if (!e.origin_name.empty())
      return "dynamic dim " + std::to_string(e.origin_axis) + " of '" + e.origin_name + "'";
    return "a value computed from dynamic dims";
  }
  return "no dynamic value";
}

SymTensor sym_from_tensor(const Tensor& t) {
  SymTensor s = make(t.dtype(), t.shape());
  for (int64_t k = 0; k < t.numel(); ++k)
    s.elems[static_cast<size_t>(k)] = is_float(t.dtype()) ? SymElem::real(float_element(t, k))
                                                          : SymElem::integer(int_element(t, k));
  return s;
}

Tensor sym_to_tensor(const SymTensor& s) {
  if (!s.is_static())
    throw Error("internal: materialising a dynamic shape value", ErrorKind::kInternal);
  bool fl = is_float(s.dtype);
  Tensor wide = Tensor::zeros(fl ? DType::kFloat64 : DType::kInt64, s.shape);
  for (int64_t k = 0; k < s.numel(); ++k) {
    if (fl)
      wide.data_mutable<double>()[k] = s.elems[static_cast<size_t>(k)].f;
    else
      wide.data_mutable<int64_t>()[k] = s.elems[static_cast<size_t>(k)].i;
  }
  return cast_tensor(wide, s.dtype);
}

std::vector<int64_t> sym_static_ints(const SymTensor& s, const std::string& what) {
  std::vector<int64_t> out;
  out.reserve(s.elems.size());
  for (const SymElem& e : s.elems) {
    if (e.dynamic)
      throw Error(what + " must be known when the model is imported, but depends on " +
                      s.describe_dynamic(),
                  ErrorKind::kUnsupported);
    if (is_int(s.dtype)) {
      out.push_back(e.i);
    } else {
      if (!std::isfinite(e.f) || e.f != std::trunc(e.f) || std::fabs(e.f) > 9.0e15)
        throw Error(what + " must be integers, got " + std::to_string(e.f));
      out.push_back(static_cast<int64_t>(e.f));
    }
  }
  return out;
}

SymTensor sym_shape_of(const ir::Value& v, ir::ValueId id, int64_t start, int64_t end) {
  int64_t r = static_cast<int64_t>(v.shape.size());
  auto clamp = [r](int64_t x) { return std::clamp(x < 0 ? x + r : x, int64_t{0}, r); };
  start = clamp(start);
  end = clamp(end);
  SymTensor s = make(DType::kInt64, {std::max<int64_t>(end - start, 0)});
  for (int64_t i = start; i < end; ++i) {
    const ir::Dim& d = v.shape[static_cast<size_t>(i)];
    SymElem& e = s.elems[static_cast<size_t>(i - start)];
    if (d.is_static()) {
      e = SymElem::integer(d.value);
    } else {
      e = SymElem::opaque();
      e.symbol = d.symbol;
      e.origin = id;
      e.origin_axis = i;
      e.origin_name = v.name;
    }
  }
  return s;
}

SymTensor sym_shape_of(const SymTensor& t, int64_t start, int64_t end) {
  ir::Value v;
  v.shape = ir::static_shape(t.shape);
  return sym_shape_of(v, ir::kNoValue, start, end);
}

SymTensor sym_size_of(const ir::Value& v) {
  SymTensor s = make(DType::kInt64, {});
  int64_t n = 1;
  for (const ir::Dim& d : v.shape) {
    if (!d.is_static()) {
      s.elems[0] = SymElem::opaque();
      return s;
    }
    if (__builtin_mul_overflow(n, d.value, &n)) throw Error("Size overflows int64");
  }
  s.elems[0] = SymElem::integer(n);
  return s;
}

SymTensor sym_binary(SymBinaryOp op, const SymTensor& a, const SymTensor& b) {
  if (a.dtype != b.dtype)
    throw Error("input dtypes differ: " + std::string(dtype_name(a.dtype)) + " and " +
                std::string(dtype_name(b.dtype)));
  size_t r = std::max(a.shape.size(), b.shape.size());
  Dims out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t x = i < r - a.shape.size() ? 1 : a.shape[i - (r - a.shape.size())];
    int64_t y = i < r - b.shape.size() ? 1 : b.shape[i - (r - b.shape.size())];
    if (x != y && x != 1 && y != 1)
      throw Error("shapes " + dims_to_string(a.shape) + " and " + dims_to_string(b.shape) +
                  " do not broadcast");
    out[i] = x == 1 ? y : x;
  }
  SymTensor s = make(a.dtype, out);
  for_each_broadcast(a.shape, b.shape, out, [&](int64_t k, int64_t ia, int64_t ib) {
    const SymElem& x = a.elems[static_cast<size_t>(ia)];
    const SymElem& y = b.elems[static_cast<size_t>(ib)];
    s.elems[static_cast<size_t>(k)] =
        x.dynamic || y.dynamic ? dynamic_binary(op, x, y) : static_binary(op, a.dtype, x, y);
  });
  return s;
}

SymTensor sym_gather(const SymTensor& data, const SymTensor& indices, int64_t axis) {
  int64_t r = static_cast<int64_t>(data.shape.size());
  if (r == 0) throw Error("Gather needs data of rank >= 1");
  if (!is_int(indices.dtype) || indices.dtype == DType::kBool)
    throw Error("Gather indices must be integers");
  axis = normalize_axis(axis, r, "axis");
  std::vector<int64_t> idx = sym_static_ints(indices, "Gather indices");
  int64_t dim = data.shape[static_cast<size_t>(axis)];
  for (int64_t& i : idx) {
    if (i < -dim || i >= dim)
      throw Error("Gather index " + std::to_string(i) + " is out of range for a dim of size " +
                  std::to_string(dim));
    if (i < 0) i += dim;
  }
  Dims out_shape(data.shape.begin(), data.shape.begin() + axis);
  out_shape.insert(out_shape.end(), indices.shape.begin(), indices.shape.end());
  out_shape.insert(out_shape.end(), data.shape.begin() + axis + 1, data.shape.end());
  SymTensor s = make(data.dtype, out_shape);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= data.shape[static_cast<size_t>(i)];
  for (int64_t i = axis + 1; i < r; ++i) inner *= data.shape[static_cast<size_t>(i)];
  size_t k = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j : idx)
      for (int64_t in = 0; in < inner; ++in)
        s.elems[k++] = data.elems[static_cast<size_t>((o * dim + j) * inner + in)];
  return s;
}

SymTensor sym_slice(const SymTensor& data, const std::vector<int64_t>& starts,
                    const std::vector<int64_t>& ends, std::vector<int64_t> axes,
                    std::vector<int64_t> steps) {
  int64_t r = static_cast<int64_t>(data.shape.size());
  size_t n = starts.size();
  if (ends.size() != n) throw Error("Slice starts and ends differ in length");
  if (axes.empty())
    for (size_t i = 0; i < n; ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(n, 1);
  if (axes.size() != n || steps.size() != n)
    throw Error("Slice starts, ends, axes and steps differ in length");
  // Per axis, the source indices the output takes.
  std::vector<std::vector<int64_t>> take(static_cast<size_t>(r));
  std::vector<bool> sliced(static_cast<size_t>(r), false);
  for (size_t k = 0; k < n; ++k) {
    int64_t ax = normalize_axis(axes[k], r, "Slice axis");
    if (sliced[static_cast<size_t>(ax)])
      throw Error("Slice axis " + std::to_string(axes[k]) + " repeated");
    sliced[static_cast<size_t>(ax)] = true;
    int64_t dim = data.shape[static_cast<size_t>(ax)];
    int64_t step = steps[k];
    if (step == 0) throw Error("Slice step must not be 0");
    int64_t s = starts[k], e = ends[k];
    if (s < 0) s = s < -dim ? -1 : s + dim;  // written to avoid overflow near INT64_MIN
    if (e < 0) e = e < -dim ? -1 : e + dim;
    // Counted rather than stepped, so a huge step (INT64_MAX is common) cannot overflow.
    uint64_t mag =
        step > 0 ? static_cast<uint64_t>(step) : uint64_t{0} - static_cast<uint64_t>(step);
    if (step > 0) {
      s = std::clamp(s, int64_t{0}, dim);
      e = std::clamp(e, int64_t{0}, dim);
    } else {
      s = std::clamp(s, int64_t{-1}, dim - 1);
      e = std::clamp(e, int64_t{-1}, dim - 1);
    }
    uint64_t span = static_cast<uint64_t>(step > 0 ? e - s : s - e);
    uint64_t count = (step > 0 ? e > s : s > e) ? 1 + (span - 1) / mag : 0;
    for (uint64_t c = 0; c < count; ++c) {
      int64_t offset = static_cast<int64_t>(c * mag);  // <= span, so it fits
      take[static_cast<size_t>(ax)].push_back(step > 0 ? s + offset : s - offset);
    }
  }
  Dims out_shape(static_cast<size_t>(r));
  for (int64_t d = 0; d < r; ++d) {
    auto& t = take[static_cast<size_t>(d)];
    if (!sliced[static_cast<size_t>(d)])
      for (int64_t i = 0; i < data.shape[static_cast<size_t>(d)]; ++i) t.push_back(i);
    out_shape[static_cast<size_t>(d)] = static_cast<int64_t>(t.size());
  }
  SymTensor s = make(data.dtype, out_shape);
  Dims in_st = row_major_strides(data.shape), out_st = row_major_strides(out_shape);
  for (int64_t k = 0; k < s.numel(); ++k) {
    int64_t src = 0, rem = k;
    for (int64_t d = 0; d < r; ++d) {
      int64_t idx = rem / out_st[static_cast<size_t>(d)];
      rem %= out_st[static_cast<size_t>(d)];
      src += take[static_cast<size_t>(d)][static_cast<size_t>(idx)] * in_st[static_cast<size_t>(d)];
    }
    s.elems[static_cast<size_t>(k)] = data.elems[static_cast<size_t>(src)];
  }
  return s;
}

SymTensor sym_concat(const std::vector<const SymTensor*>& inputs, int64_t axis) {
  if (inputs.empty()) throw Error("Concat needs at least one input");
  const SymTensor& first = *inputs[0];
  int64_t r = static_cast<int64_t>(first.shape.size());
  if (r == 0) throw Error("Concat inputs must have rank >= 1");
  axis = normalize_axis(axis, r, "axis");
  Dims out_shape = first.shape;
  out_shape[static_cast<size_t>(axis)] = 0;
  for (const SymTensor* in : inputs) {
    if (in->dtype != first.dtype || in->shape.size() != first.shape.size())
      throw Error("Concat inputs must share dtype and rank");
    for (int64_t d = 0; d < r; ++d)
      if (d != axis && in->shape[static_cast<size_t>(d)] != first.shape[static_cast<size_t>(d)])
        throw Error("Concat input shapes " + dims_to_string(first.shape) + " and " +
                    dims_to_string(in->shape) + " differ outside the concat axis");
    out_shape[static_cast<size_t>(axis)] += in->shape[static_cast<size_t>(axis)];
  }
  SymTensor s = make(first.dtype, out_shape);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= first.shape[static_cast<size_t>(i)];
  for (int64_t i = axis + 1; i < r; ++i) inner *= first.shape[static_cast<size_t>(i)];
  size_t k = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (const SymTensor* in : inputs) {
      int64_t block = in->shape[static_cast<size_t>(axis)] * inner;
      for (int64_t j = 0; j < block; ++j)
        s.elems[k++] = in->elems[static_cast<size_t>(o * block + j)];
    }
  return s;
}

SymTensor sym_reshape(const SymTensor& data, const std::vector<int64_t>& target, bool allowzero) {
  Dims out;
  int infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t t = target[i];
    if (t == 0 && !allowzero) {
      if (i >= data.shape.size())
        throw Error("Reshape target copies dim " + std::to_string(i) + " that the input lacks");
      t = data.shape[i];
    } else if (t == -1) {
      if (infer_at >= 0) throw Error("Reshape target has more than one -1");
      infer_at = static_cast<int>(i);
      out.push_back(-1);
      continue;
    } else if (t < 0) {
      throw Error("invalid Reshape target dim " + std::to_string(t));
    }
    if (t != 0 && known > kMaxSymbolicElements / t)
      throw Error("Reshape target " + dims_to_string(target) + " is too large");
    known *= t;
    out.push_back(t);
  }
  int64_t n = data.numel();
  if (infer_at >= 0) {
    if (known == 0 || n % known != 0)
      throw Error("cannot reshape " + dims_to_string(data.shape) + " to " + dims_to_string(target));
    out[static_cast<size_t>(infer_at)] = n / known;
  } else if (known != n) {
    throw Error("cannot reshape " + dims_to_string(data.shape) + " to " + dims_to_string(target));
  }
  SymTensor s = data;
  s.shape = out;
  return s;
}

SymTensor sym_transpose(const SymTensor& data, std::vector<int64_t> perm) {
  size_t r = data.shape.size();
  if (perm.empty())
    for (size_t i = r; i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  if (perm.size() != r)
    throw Error("Transpose perm has " + std::to_string(perm.size()) + " entries for rank " +
                std::to_string(r));
  std::vector<bool> seen(r, false);
  Dims out_shape(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t p = perm[i];
    if (p < 0 || p >= static_cast<int64_t>(r) || seen[static_cast<size_t>(p)])
      throw Error("Transpose perm is not a permutation");
    seen[static_cast<size_t>(p)] = true;
    out_shape[i] = data.shape[static_cast<size_t>(p)];
  }
  SymTensor s = make(data.dtype, out_shape);
  Dims in_st = row_major_strides(data.shape), out_st = row_major_strides(out_shape);
  for (int64_t k = 0; k < s.numel(); ++k) {
    int64_t src = 0, rem = k;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / out_st[d];
      rem %= out_st[d];
      src += idx * in_st[static_cast<size_t>(perm[d])];
    }
    s.elems[static_cast<size_t>(k)] = data.elems[static_cast<size_t>(src)];
  }
  return s;
}

SymTensor sym_squeeze(const SymTensor& data, const std::vector<int64_t>& axes) {
  int64_t r = static_cast<int64_t>(data.shape.size());
  std::vector<bool> drop(static_cast<size_t>(r), axes.empty());
  if (axes.empty())
    for (int64_t d = 0; d < r; ++d)
      drop[static_cast<size_t>(d)] = data.shape[static_cast<size_t>(d)] == 1;
  for (int64_t ax : axes) {
    int64_t a = normalize_axis(ax, r, "Squeeze axis");
    if (data.shape[static_cast<size_t>(a)] != 1)
      throw Error("cannot squeeze axis " + std::to_string(ax) + " of size " +
                  std::to_string(data.shape[static_cast<size_t>(a)]));
    drop[static_cast<size_t>(a)] = true;
  }
  SymTensor s = data;
  s.shape.clear();
  for (int64_t d = 0; d < r; ++d)
    if (!drop[static_cast<size_t>(d)]) s.shape.push_back(data.shape[static_cast<size_t>(d)]);
  return s;
}

SymTensor sym_unsqueeze(const SymTensor& data, const std::vector<int64_t>& axes) {
  int64_t r = static_cast<int64_t>(data.shape.size() + axes.size());
  std::vector<bool> added(static_cast<size_t>(r), false);
  for (int64_t ax : axes) {
    int64_t a = normalize_axis(ax, r, "Unsqueeze axis");
    if (added[static_cast<size_t>(a)])
      throw Error("Unsqueeze axis " + std::to_string(ax) + " repeated");
    added[static_cast<size_t>(a)] = true;
  }
  SymTensor s = data;
  s.shape.clear();
  size_t j = 0;
  for (int64_t d = 0; d < r; ++d)
    s.shape.push_back(added[static_cast<size_t>(d)] ? 1 : data.shape[j++]);
  return s;
}

SymTensor sym_cast(const SymTensor& data, DType to) {
  if (data.dtype == to) return data;
  if (data.is_static()) return sym_from_tensor(cast_tensor(sym_to_tensor(data), to));
  if (!is_int(data.dtype) || !is_int(to) || to == DType::kBool)
    throw Error("cannot cast " + data.describe_dynamic() + " from " +
                    std::string(dtype_name(data.dtype)) + " to " + std::string(dtype_name(to)) +
                    " at import time",
                ErrorKind::kUnsupported);
  // Run-time dims stay what they are (they fit any integer type a shape computation uses).
  SymTensor s = data;
  s.dtype = to;
  for (SymElem& e : s.elems)
    if (!e.dynamic) e.i = wrap(to, e.i);
  return s;
}

SymTensor sym_constant_of_shape(const Dims& shape, const SymTensor& value) {
  if (value.numel() != 1) throw Error("ConstantOfShape value must have one element");
  SymTensor s = make(value.dtype, shape);
  std::fill(s.elems.begin(), s.elems.end(), value.elems[0]);
  return s;
}

}  // namespace modex::onnx_io::reader
