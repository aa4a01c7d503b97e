#include "core/tensor_ops.h"

#include <cstring>

namespace modex {

Dims row_major_strides(const Dims& shape) {
  Dims s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

namespace {

// Copies x into y (output order) walking the output with an odometer; the innermost dim is a
// strided loop over fixed-size elements, so the cost is a load and a store per element.
template <typename T>
void permute_copy(const T* src, T* dst, const Dims& out, const Dims& src_st) {
  size_t r = out.size();
  int64_t inner = out[r - 1], inner_st = src_st[r - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < r; ++d) outer *= out[d];
  Dims idx(r, 0);
  int64_t base = 0;
  for (int64_t o = 0; o < outer; ++o) {
    const T* s = src + base;
    for (int64_t i = 0; i < inner; ++i) dst[i] = s[i * inner_st];
    dst += inner;
    for (size_t d = r - 1; d-- > 0;) {  // next outer index
      base += src_st[d];
      if (++idx[d] < out[d]) break;
      base -= src_st[d] * out[d];
      idx[d] = 0;
    }
  }
}

}  // namespace

Tensor transposed(const Tensor& x, std::vector<int64_t> perm) {
  size_t r = static_cast<size_t>(x.rank());
  if (perm.empty())
    for (size_t i = r; i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  if (perm.size() != r) throw Error("transpose: perm does not match the tensor's rank", ErrorKind::kInternal);
  std::vector<bool> seen(r, false);
  for (int64_t p : perm) {
    if (p < 0 || static_cast<size_t>(p) >= r || seen[static_cast<size_t>(p)])
      throw Error("transpose: perm is not a permutation of the tensor's axes", ErrorKind::kInternal);
    seen[static_cast<size_t>(p)] = true;
  }
  Dims out(r), src_st(r);
  Dims in_st = row_major_strides(x.shape());
  for (size_t i = 0; i < r; ++i) {
    out[i] = x.shape()[static_cast<size_t>(perm[i])];
    src_st[i] = in_st[static_cast<size_t>(perm[i])];
  }
  Tensor y = Tensor::empty(x.dtype(), out);
  if (x.numel() == 0) return y;
  if (r == 0) {
    std::memcpy(y.raw_mutable(), x.raw(), dtype_size(x.dtype()));
    return y;
  }
  switch (dtype_size(x.dtype())) {
    case 1: permute_copy(reinterpret_cast<const uint8_t*>(x.raw()), reinterpret_cast<uint8_t*>(y.raw_mutable()), out, src_st); break;
    case 2: permute_copy(reinterpret_cast<const uint16_t*>(x.raw()), reinterpret_cast<uint16_t*>(y.raw_mutable()), out, src_st); break;
    case 4: permute_copy(reinterpret_cast<const uint32_t*>(x.raw()), reinterpret_cast<uint32_t*>(y.raw_mutable()), out, src_st); break;
    case 8: permute_copy(reinterpret_cast<const uint64_t*>(x.raw()), reinterpret_cast<uint64_t*>(y.raw_mutable()), out, src_st); break;
    default: throw Error("transpose: unsupported element size", ErrorKind::kInternal);
  }
  return y;
}

}  // namespace modex
