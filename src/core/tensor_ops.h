// Layout helpers on whole tensors, shared by constant folding, layout conversion and the
// reference kernels.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace modex {

// Row-major element strides of a shape.
Dims row_major_strides(const Dims& shape);

// out.shape[i] = x.shape[perm[i]]; an empty perm reverses the dims (numpy's default). Any dtype.
Tensor transposed(const Tensor& x, std::vector<int64_t> perm);

}  // namespace modex
