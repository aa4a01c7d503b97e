#include "core/tensor_ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <tuple>

namespace modex {
namespace {

// Element i of the output comes from the input element whose index is the output index read
// through perm (the definition of a transpose), computed the slow obvious way.
std::vector<int64_t> naive_source_order(const Dims& in, const std::vector<int64_t>& perm) {
  Dims out(in.size());
  for (size_t d = 0; d < in.size(); ++d) out[d] = in[static_cast<size_t>(perm[d])];
  Dims in_st = row_major_strides(in);
  int64_t n = 1;
  for (int64_t d : in) n *= d;
  std::vector<int64_t> src(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, s = 0;
    for (size_t d = out.size(); d-- > 0;) {
      s += (rem % out[d]) * in_st[static_cast<size_t>(perm[d])];
      rem /= out[d];
    }
    src[static_cast<size_t>(i)] = s;
  }
  return src;
}

template <typename T>
void check_dtype(DType dt, std::mt19937& rng) {
  for (int trial = 0; trial < 40; ++trial) {
    size_t r = 1 + rng() % 5;
    Dims shape(r);
    for (auto& d : shape) d = 1 + static_cast<int64_t>(rng() % 5);
    std::vector<int64_t> perm(r);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    Tensor x = Tensor::zeros(dt, shape);
    T* p = reinterpret_cast<T*>(x.raw_mutable());
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<T>(i * 7 + 3);
    Tensor y = transposed(x, perm);
    for (size_t d = 0; d < r; ++d) ASSERT_EQ(y.shape()[d], shape[static_cast<size_t>(perm[d])]);
    auto src = naive_source_order(shape, perm);
    const T* q = reinterpret_cast<const T*>(y.raw());
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_EQ(q[i], p[src[i]]) << "element " << i << " of " << dims_to_string(shape) << " trial " << trial;
  }
}

TEST(Transposed, MatchesTheDefinitionForEveryElementSize) {
  std::mt19937 rng(11);
  check_dtype<float>(DType::kFloat32, rng);
  check_dtype<int64_t>(DType::kInt64, rng);
  check_dtype<uint16_t>(DType::kFloat16, rng);
  check_dtype<uint8_t>(DType::kUInt8, rng);
}

TEST(Transposed, ConvWeightsToNhwcAndBack) {
  Tensor w = Tensor::zeros(DType::kFloat32, {4, 3, 2, 5});
  float* p = w.data_mutable<float>();
  for (int64_t i = 0; i < w.numel(); ++i) p[i] = static_cast<float>(i);
  Tensor nhwc = transposed(w, {0, 2, 3, 1});
  EXPECT_EQ(nhwc.shape(), (Dims{4, 2, 5, 3}));
  // [o][h][w][i] = original [o][i][h][w]
  EXPECT_EQ(nhwc.data<float>()[((1 * 2 + 1) * 5 + 4) * 3 + 2], p[((1 * 3 + 2) * 2 + 1) * 5 + 4]);
  Tensor back = transposed(nhwc, {0, 3, 1, 2});
  EXPECT_TRUE(std::equal(p, p + w.numel(), back.data<float>()));
}

TEST(Transposed, DefaultReversesAndBadPermIsRefused) {
  Tensor x = Tensor::zeros(DType::kFloat32, {2, 3});
  EXPECT_EQ(transposed(x, {}).shape(), (Dims{3, 2}));
  EXPECT_THROW(transposed(x, {0, 0}), Error);
  EXPECT_THROW(transposed(x, {0, 2}), Error);
  EXPECT_THROW(transposed(x, {0}), Error);
  Tensor s = Tensor::scalar_float(4.5f);
  EXPECT_EQ(transposed(s, {}).data<float>()[0], 4.5f);
}

TEST(ForEachBroadcast, PairsElementsLikeNumpy) {
  // a [2,1,3] with b [4,1] -> out [2,4,3]: a repeats over dim 1, b over dims 0 and 2.
  std::vector<std::tuple<int64_t, int64_t, int64_t>> seen;
  for_each_broadcast({2, 1, 3}, {4, 1}, {2, 4, 3}, [&](int64_t i, int64_t ia, int64_t ib) { seen.emplace_back(i, ia, ib); });
  ASSERT_EQ(seen.size(), 24u);
  for (auto [i, ia, ib] : seen) {
    int64_t n = i / 12, h = (i / 3) % 4, w = i % 3;
    EXPECT_EQ(ia, n * 3 + w) << i;
    EXPECT_EQ(ib, h) << i;
  }
  int calls = 0;
  for_each_broadcast({}, {}, {}, [&](int64_t i, int64_t ia, int64_t ib) { calls += (i == 0 && ia == 0 && ib == 0); });
  EXPECT_EQ(calls, 1);  // scalars
}

}  // namespace
}  // namespace modex
