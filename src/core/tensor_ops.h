// Layout helpers on whole tensors, shared by constant folding, layout conversion and the
// reference kernels.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "core/tensor.h"

namespace modex {

// Row-major element strides of a shape.
Dims row_major_strides(const Dims& shape);

// Calls f(i, ia, ib) for every element i of `out` (row-major) with the indices of the elements of
// a and b that numpy broadcasting pairs with it (shapes aligned on the right, size-1 dims repeat).
template <typename F>
void for_each_broadcast(const Dims& a, const Dims& b, const Dims& out, F f) {
  size_t r = out.size();
  auto aligned = [&](const Dims& s) {
    Dims d(r, 1);
    std::copy(s.begin(), s.end(), d.begin() + static_cast<std::ptrdiff_t>(r - s.size()));
    return d;
  };
  Dims ash = aligned(a), bsh = aligned(b);
  Dims ast = row_major_strides(ash), bst = row_major_strides(bsh), ost = row_major_strides(out);
  int64_t n = checked_numel(out);
  for (int64_t i = 0; i < n; ++i) {
    int64_t ia = 0, ib = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / ost[d];
      rem %= ost[d];
      if (ash[d] != 1) ia += idx * ast[d];
      if (bsh[d] != 1) ib += idx * bst[d];
    }
    f(i, ia, ib);
  }
}

// out.shape[i] = x.shape[perm[i]]; an empty perm reverses the dims (numpy's default). Any dtype.
Tensor transposed(const Tensor& x, std::vector<int64_t> perm);

}  // namespace modex
