// The importer's evaluator for shape arithmetic (io/onnx/reader_symbolic.h), op by op: ONNX's
// clamping and broadcasting rules, run-time dims carried through, and its size and overflow limits.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "core/error.h"
#include "io/onnx/reader_symbolic.h"
#include "io/onnx/reader_tensor.h"

namespace modex::onnx_io::reader {
namespace {

SymTensor ints(Dims shape, const std::vector<int64_t>& v) {
  return sym_from_tensor(Tensor::from_int64s(std::move(shape), v));
}

std::vector<int64_t> values(const SymTensor& s) { return sym_static_ints(s, "test"); }

// Shape() of a [batch, 512, ?, 7] value with id 3.
SymTensor shape_of_x() {
  ir::Value v;
  v.name = "x";
  v.shape = {ir::Dim::named("batch"), ir::Dim::fixed(512), ir::Dim::unknown(), ir::Dim::fixed(7)};
  return sym_shape_of(v, 3, 0, std::numeric_limits<int64_t>::max());
}

TEST(OnnxSymbolic, ShapeOfKeepsWhereDynamicDimsCameFrom) {
  SymTensor s = shape_of_x();
  EXPECT_EQ(s.shape, Dims{4});
  EXPECT_FALSE(s.is_static());
  EXPECT_TRUE(s.elems[0].dynamic);
  EXPECT_EQ(s.elems[0].symbol, "batch");
  EXPECT_EQ(s.elems[0].origin, 3);
  EXPECT_EQ(s.elems[0].origin_axis, 0);
  EXPECT_EQ(s.elems[1].i, 512);
  EXPECT_TRUE(s.elems[2].dynamic);
  EXPECT_EQ(s.elems[2].symbol, "");
  EXPECT_EQ(s.describe_dynamic(), "dynamic dim 0 of 'x'");
  EXPECT_THROW(sym_static_ints(s, "the target"), Error);
}

TEST(OnnxSymbolic, ShapeStartEndClampLikeOnnx) {
  ir::Value v;
  v.shape = ir::static_shape({2, 3, 4, 5});
  EXPECT_EQ(values(sym_shape_of(v, 0, 1, -1)), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(values(sym_shape_of(v, 0, -10, 2)), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values(sym_shape_of(v, 0, 3, 100)), (std::vector<int64_t>{5}));
  EXPECT_EQ(sym_shape_of(v, 0, 3, 1).numel(), 0);
  EXPECT_EQ(values(sym_size_of(v)), (std::vector<int64_t>{120}));
}

TEST(OnnxSymbolic, GatherWithNegativeAndMatrixIndices) {
  SymTensor s = shape_of_x();
  SymTensor g = sym_gather(s, ints({}, {-1}), 0);
  EXPECT_EQ(g.shape, Dims{});
  EXPECT_EQ(values(g), std::vector<int64_t>{7});
  SymTensor m = sym_gather(ints({2, 3}, {1, 2, 3, 4, 5, 6}), ints({2}, {2, 0}), 1);
  EXPECT_EQ(m.shape, (Dims{2, 2}));
  EXPECT_EQ(values(m), (std::vector<int64_t>{3, 1, 6, 4}));
  EXPECT_THROW(sym_gather(s, ints({1}, {4}), 0), Error);
  EXPECT_THROW(sym_gather(s, ints({1}, {-5}), 0), Error);
}

TEST(OnnxSymbolic, SliceClampsAndCountsWithoutOverflow) {
  SymTensor v = ints({5}, {0, 1, 2, 3, 4});
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(values(sym_slice(v, {1}, {kMax}, {}, {})), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(values(sym_slice(v, {0}, {kMax}, {0}, {kMax})), (std::vector<int64_t>{0}));
  EXPECT_EQ(values(sym_slice(v, {-1}, {kMin}, {0}, {-1})), (std::vector<int64_t>{4, 3, 2, 1, 0}));
  EXPECT_EQ(values(sym_slice(v, {-1}, {kMin}, {0}, {kMin})), (std::vector<int64_t>{4}));
  EXPECT_EQ(values(sym_slice(v, {4}, {0}, {0}, {-2})), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(sym_slice(v, {3}, {1}, {}, {}).numel(), 0);
  EXPECT_EQ(values(sym_slice(ints({2, 3}, {1, 2, 3, 4, 5, 6}), {1}, {3}, {-1}, {})),
            (std::vector<int64_t>{2, 3, 5, 6}));
  EXPECT_THROW(sym_slice(v, {0}, {1}, {0}, {0}), Error);
  EXPECT_THROW(sym_slice(v, {0, 0}, {1, 1}, {0, 0}, {}), Error);
  EXPECT_THROW(sym_slice(v, {0}, {1, 2}, {}, {}), Error);
}

TEST(OnnxSymbolic, ConcatReshapeTransposeSqueeze) {
  SymTensor shape = shape_of_x(), minus_one = ints({1}, {-1});
  SymTensor c = sym_concat({&shape, &minus_one}, 0);
  EXPECT_EQ(c.shape, Dims{5});
  EXPECT_EQ(c.elems[4].i, -1);
  SymTensor pairs = sym_reshape(ints({8}, {1, 1, 2, 0, 0, 0, 0, 0}), {-1, 2}, false);
  EXPECT_EQ(pairs.shape, (Dims{4, 2}));
  EXPECT_EQ(values(sym_transpose(pairs, {1, 0})), (std::vector<int64_t>{1, 2, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(sym_reshape(pairs, {0, -1}, false).shape, (Dims{4, 2}));
  EXPECT_THROW(sym_reshape(pairs, {0, -1}, true), Error);  // allowzero: 0 is a size, not a copy
  EXPECT_THROW(sym_reshape(pairs, {3, -1}, false), Error);
  EXPECT_THROW(sym_reshape(pairs, {-1, -1}, false), Error);
  SymTensor u = sym_unsqueeze(ints({}, {7}), {0});
  EXPECT_EQ(u.shape, Dims{1});
  EXPECT_EQ(sym_squeeze(u, {}).shape, Dims{});
  EXPECT_THROW(sym_squeeze(pairs, {0}), Error);
  EXPECT_THROW(sym_unsqueeze(u, {0, 0}), Error);
  EXPECT_THROW(sym_transpose(pairs, {0, 0}), Error);
  EXPECT_THROW(sym_concat({&pairs, &u}, 0), Error);
}

TEST(OnnxSymbolic, ArithmeticKeepsDimsThroughIdentities) {
  SymTensor batch = sym_gather(shape_of_x(), ints({1}, {0}), 0);
  for (auto [op, other] : {std::pair{SymBinaryOp::kMul, 1}, std::pair{SymBinaryOp::kDiv, 1},
                           std::pair{SymBinaryOp::kAdd, 0}, std::pair{SymBinaryOp::kSub, 0}}) {
    SymTensor r = sym_binary(op, batch, ints({1}, {other}));
    EXPECT_EQ(r.elems[0].symbol, "batch");
    EXPECT_EQ(r.elems[0].origin_axis, 0);
  }
  EXPECT_EQ(values(sym_binary(SymBinaryOp::kMul, batch, ints({}, {0}))), std::vector<int64_t>{0});
  SymTensor twice = sym_binary(SymBinaryOp::kMul, batch, ints({}, {2}));
  EXPECT_TRUE(twice.elems[0].dynamic);
  EXPECT_EQ(twice.elems[0].origin, ir::kNoValue);  // no longer "dim 0 of x"
  EXPECT_THROW(sym_binary(SymBinaryOp::kDiv, batch, ints({}, {0})), Error);
}

TEST(OnnxSymbolic, StaticArithmeticBroadcastsAndChecksOverflow) {
  EXPECT_EQ(values(sym_binary(SymBinaryOp::kMul, ints({2, 1}, {2, 3}), ints({3}, {1, 10, 100}))),
            (std::vector<int64_t>{2, 20, 200, 3, 30, 300}));
  EXPECT_EQ(values(sym_binary(SymBinaryOp::kDiv, ints({2}, {7, -7}), ints({}, {2}))),
            (std::vector<int64_t>{3, -3}));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THROW(sym_binary(SymBinaryOp::kAdd, ints({}, {kMax}), ints({}, {1})), Error);
  EXPECT_THROW(sym_binary(SymBinaryOp::kDiv, ints({}, {std::numeric_limits<int64_t>::min()}),
                          ints({}, {-1})),
               Error);
  EXPECT_THROW(sym_binary(SymBinaryOp::kAdd, ints({2}, {1, 2}), ints({3}, {1, 2, 3})), Error);
  EXPECT_THROW(
      sym_binary(SymBinaryOp::kAdd, ints({1}, {1}), sym_from_tensor(Tensor::scalar_float(1))),
      Error);
  SymTensor f = sym_binary(SymBinaryOp::kDiv, sym_from_tensor(Tensor::scalar_float(3)),
                           sym_from_tensor(Tensor::scalar_float(2)));
  EXPECT_DOUBLE_EQ(f.elems[0].f, 1.5);
}

TEST(OnnxSymbolic, Cast) {
  SymTensor i32 = sym_cast(ints({2}, {int64_t{1} << 33 | 5, -1}), DType::kInt32);
  EXPECT_EQ(values(i32), (std::vector<int64_t>{5, -1}));  // integer casts wrap
  SymTensor f = sym_cast(ints({1}, {3}), DType::kFloat32);
  EXPECT_EQ(sym_to_tensor(f).to_float_vector(), std::vector<float>{3.0f});
  EXPECT_EQ(values(sym_cast(sym_from_tensor(Tensor::scalar_float(-2.75f)), DType::kInt64)),
            std::vector<int64_t>{-2});
  EXPECT_THROW(sym_cast(sym_from_tensor(Tensor::scalar_float(1e30f)), DType::kInt32), Error);
  EXPECT_THROW(
      sym_cast(sym_from_tensor(Tensor::scalar_float(std::numeric_limits<float>::quiet_NaN())),
               DType::kInt64),
      Error);
  SymTensor dyn = sym_cast(shape_of_x(), DType::kInt32);  // run-time dims stay run-time dims
  EXPECT_EQ(dyn.elems[0].symbol, "batch");
  EXPECT_THROW(sym_cast(shape_of_x(), DType::kFloat32), Error);
  EXPECT_EQ(sym_to_tensor(sym_cast(ints({2}, {0, 7}), DType::kBool)).to_int64_vector(),
            (std::vector<int64_t>{0, 1}));
}

TEST(OnnxSymbolic, ConstantOfShapeAndSizeLimit) {
  SymTensor z = sym_constant_of_shape({2, 3}, ints({1}, {9}));
  EXPECT_EQ(z.shape, (Dims{2, 3}));
  EXPECT_EQ(values(z), std::vector<int64_t>(6, 9));
  EXPECT_THROW(sym_constant_of_shape({2}, ints({2}, {1, 2})), Error);
  try {
    sym_constant_of_shape({kMaxSymbolicElements + 1}, ints({1}, {0}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  }
  EXPECT_THROW(sym_reshape(ints({1}, {1}), {std::numeric_limits<int64_t>::max(), 2}, false), Error);
}

TEST(OnnxTensorCast, FloatConversionsSaturateOrRefuse) {
  Tensor big = Tensor::zeros(DType::kFloat64, {2});
  big.data_mutable<double>()[0] = 1e300;
  big.data_mutable<double>()[1] = -1e300;
  EXPECT_EQ(cast_tensor(big, DType::kFloat32).to_float_vector(),
            (std::vector<float>{std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity()}));
  Tensor edge = Tensor::zeros(DType::kFloat64, {1});
  edge.data_mutable<double>()[0] = 9223372036854775807.0;  // rounds to 2^63: out of int64 range
  EXPECT_THROW(cast_tensor(edge, DType::kInt64), Error);
  edge.data_mutable<double>()[0] = -9223372036854775808.0;
  EXPECT_EQ(cast_tensor(edge, DType::kInt64).to_int64_vector(),
            std::vector<int64_t>{std::numeric_limits<int64_t>::min()});
  EXPECT_THROW(cast_tensor(Tensor::scalar_float(-1), DType::kUInt8), Error);
}

}  // namespace
}  // namespace modex::onnx_io::reader
