#include "core/tensor_ops.h"

#include <cstring>

namespace modex {

Dims row_major_strides(const Dims& shape) {
  Dims s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

Tensor transposed(const Tensor& x, std::vector<int64_t> perm) {
  size_t r = static_cast<size_t>(x.rank());
  if (perm.empty())
    for (size_t i = r; i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  if (perm.size() != r) throw Error("transpose: perm does not match the tensor's rank", ErrorKind::kInternal);
  Dims out(r);
  for (size_t i = 0; i < r; ++i) out[i] = x.shape()[static_cast<size_t>(perm[i])];
  Dims in_st = row_major_strides(x.shape()), out_st = row_major_strides(out);
  Tensor y = Tensor::zeros(x.dtype(), out);
  size_t es = dtype_size(x.dtype());
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t src = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / out_st[d];
      rem %= out_st[d];
      src += idx * in_st[static_cast<size_t>(perm[d])];
    }
    std::memcpy(y.raw_mutable() + static_cast<size_t>(i) * es, x.raw() + static_cast<size_t>(src) * es, es);
  }
  return y;
}

}  // namespace modex
