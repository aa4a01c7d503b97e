// The reference kernels against values worked out by hand (they are the source of truth the
// other kernels are compared with, so they are checked against nothing but arithmetic here).
// Cases the ONNX backend conformance tests (onnx_conformance) first caught.
#include <gtest/gtest.h>

#include "ir/graph.h"
#include "modex/runtime.h"
#include "runtime/kernels/reference_kernels.h"
#include "runtime/reference.h"
#include "runtime_test_util.h"

namespace modex::runtime_test {
namespace {
using namespace modex::ir;

// Naive numpy-matmul oracle over explicit indices (a: [..., M, K], b: [..., K, N], same batch
// shape after broadcasting `a_batch` / `b_batch` against `y_batch`).
std::vector<float> matmul_oracle(const Tensor& a, const Tensor& b, int64_t batches, int64_t a_batches, int64_t b_batches,
                                 int64_t M, int64_t K, int64_t N) {
  std::vector<float> y(static_cast<size_t>(batches * M * N));
  for (int64_t p = 0; p < batches; ++p)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += static_cast<double>(a.data<float>()[(p % a_batches) * M * K + i * K + k]) *
                 b.data<float>()[(p % b_batches) * K * N + k * N + j];
        y[static_cast<size_t>(p * M * N + i * N + j)] = static_cast<float>(acc);
      }
  return y;
}

// onnx node tests test_matmul_3d / test_matmul_4d: the reference MatMul refused anything but 2-D.
TEST(ReferenceMatMul, BatchedAndBroadcast) {
  std::mt19937 rng(5);
  struct Case {
    Dims a, b, y;
    int64_t a_batches, b_batches;
  };
  for (const Case& c : {Case{{2, 3, 4}, {2, 4, 3}, {2, 3, 3}, 2, 2}, Case{{1, 2, 3, 4}, {1, 2, 4, 3}, {1, 2, 3, 3}, 2, 2},
                        Case{{3, 2, 5}, {5, 4}, {3, 2, 4}, 3, 1}, Case{{2, 5}, {3, 5, 4}, {3, 2, 4}, 1, 3}}) {
    Tensor a = random_tensor(c.a, rng), b = random_tensor(c.b, rng);
    Tensor y = Tensor::zeros(DType::kFloat32, c.y);
    runtime::ref::matmul(a, b, y);
    int64_t M = c.y[c.y.size() - 2], N = c.y.back(), K = c.a.back();
    std::vector<float> want = matmul_oracle(a, b, y.numel() / (M * N), c.a_batches, c.b_batches, M, K, N);
    Tensor w = Tensor::from_floats(c.y, want);
    EXPECT_TRUE(close(w, y)) << dims_to_string(c.a) << " x " << dims_to_string(c.b);
  }
}

TEST(ReferenceMatMul, VectorOperands) {
  // [3] x [3, 2] -> [2]; [2, 3] x [3] -> [2]; [3] x [3] -> [].
  Tensor v = Tensor::from_floats({3}, std::vector<float>{1, 2, 3});
  Tensor m = Tensor::from_floats({3, 2}, std::vector<float>{1, 0, 0, 1, 1, 1});
  Tensor mt = Tensor::from_floats({2, 3}, std::vector<float>{1, 0, 1, 0, 1, 1});
  Tensor y1 = Tensor::zeros(DType::kFloat32, {2});
  runtime::ref::matmul(v, m, y1);
  EXPECT_EQ(y1.to_float_vector(), (std::vector<float>{4, 5}));
  Tensor y2 = Tensor::zeros(DType::kFloat32, {2});
  runtime::ref::matmul(mt, v, y2);
  EXPECT_EQ(y2.to_float_vector(), (std::vector<float>{4, 5}));
  Tensor y3 = Tensor::zeros(DType::kFloat32, {});
  runtime::ref::matmul(v, v, y3);
  EXPECT_EQ(y3.to_float_vector(), (std::vector<float>{14}));
}

// The whole path on both backends: a graph with a batched MatMul of two run-time inputs.
TEST(ReferenceMatMul, EngineRunsBatchedMatMul) {
  std::mt19937 rng(6);
  Graph g;
  ValueId a = g.add_input("a", DType::kFloat32, static_shape({2, 3, 4}));
  ValueId b = g.add_input("b", DType::kFloat32, static_shape({2, 4, 5}));
  g.add_output(g.add_node1(OpKind::kMatMul, NoAttrs{}, {a, b}, "matmul"));
  Tensor ta = random_tensor({2, 3, 4}, rng), tb = random_tensor({2, 4, 5}, rng);
  Tensor want = Tensor::from_floats({2, 3, 5}, matmul_oracle(ta, tb, 2, 2, 2, 3, 4, 5));
  for (Backend backend : {Backend::kReference, Backend::kAuto}) {
    auto model = Model::from_graph(g, {.threads = 1, .backend = backend});
    auto got = model->run({ta, tb});
    ASSERT_EQ(got.size(), 1u);
    EXPECT_TRUE(close(want, got[0])) << (backend == Backend::kAuto ? "auto" : "reference");
  }
}

}  // namespace
}  // namespace modex::runtime_test
