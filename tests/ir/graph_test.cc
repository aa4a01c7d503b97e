#include <gtest/gtest.h>

#include "ir/graph.h"

namespace modex::ir {
namespace {

Tensor weights(Dims shape) { return Tensor::zeros(DType::kFloat32, std::move(shape)); }

ConvAttrs conv_attrs(int64_t k, int64_t s, int64_t p, int64_t groups = 1) {
  ConvAttrs a;
  a.kernel = {k, k};
  a.strides = {s, s};
  a.pads = {p, p, p, p};
  a.groups = groups;
  return a;
}

Graph small_net() {
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(3), Dim::named("height"), Dim::named("width")});
  ValueId w = g.add_constant("conv.weight", weights({8, 3, 3, 3}));
  ValueId c = g.add_node1(OpKind::kConv, conv_attrs(3, 2, 1), {x, w}, "conv");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {c}, "relu");
  ValueId p = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {r}, "pool");
  ValueId f = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {p}, "flatten");
  ValueId fw = g.add_constant("fc.weight", weights({5, 8}));
  ValueId fb = g.add_constant("fc.bias", weights({5}));
  ValueId y = g.add_node1(OpKind::kGemm, GemmAttrs{}, {f, fw, fb}, "fc");
  g.add_output(y);
  g.set_output_name(y, "logits");
  return g;
}

TEST(OpTable, NamesRoundTrip) {
  for (size_t i = 0; i < kOpCount; ++i) {
    OpKind k = static_cast<OpKind>(i);
    EXPECT_EQ(op_from_name(op_name(k)), k);
    EXPECT_TRUE(attrs_match(k, default_attrs(k)));
  }
  EXPECT_FALSE(op_from_name("NoSuchOp"));
  EXPECT_FALSE(attrs_match(OpKind::kConv, NoAttrs{}));
}

TEST(ShapeInference, SymbolicDimsFlowThrough) {
  Graph g = small_net();
  const Value& logits = g.value(g.outputs()[0]);
  EXPECT_EQ(logits.name, "logits");
  EXPECT_EQ(shape_to_string(logits.shape), "[batch,5]");
  ValueId conv = *g.find_value("conv");
  EXPECT_EQ(shape_to_string(g.value(conv).shape), "[batch,8,?,?]");
  verify(g);
}

TEST(ShapeInference, ConcreteBindingsValidateEverything) {
  Graph g = small_net();
  Graph c = g;
  c.infer_shapes({{"batch", 4}, {"height", 224}, {"width", 160}});
  EXPECT_EQ(shape_to_string(c.value(*c.find_value("conv")).shape), "[4,8,112,80]");
  EXPECT_EQ(shape_to_string(c.value(c.outputs()[0]).shape), "[4,5]");
  // The original keeps its symbolic dims.
  EXPECT_EQ(shape_to_string(g.value(g.outputs()[0]).shape), "[batch,5]");
}

TEST(ShapeInference, ConvArithmeticMatchesPyTorch) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 4, 15, 15}));
  ConvAttrs a = conv_attrs(3, 2, 1);
  a.dilations = {2, 2};
  ValueId y = g.add_node1(OpKind::kConv, a, {x, g.add_constant("w", weights({6, 4, 3, 3}))}, "c");
  // floor((15 + 2 - 2*(3-1) - 1) / 2) + 1 = 7
  EXPECT_EQ(shape_to_string(g.value(y).shape), "[1,6,7,7]");
  PoolAttrs p;
  p.kernel = {3, 3};
  p.strides = {2, 2};
  p.pads = {0, 0, 0, 0};
  p.ceil_mode = true;
  ValueId m = g.add_node1(OpKind::kMaxPool, p, {x}, "pool");
  EXPECT_EQ(shape_to_string(g.value(m).shape), "[1,4,7,7]");  // ceil((15-3)/2)+1 = 7
}

TEST(ShapeInference, RejectsChannelMismatchNamingTheNode) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 3, 8, 8}));
  ValueId w = g.add_constant("w", weights({8, 4, 3, 3}));
  try {
    g.add_node1(OpKind::kConv, conv_attrs(3, 1, 1), {x, w}, "stem.conv");
    FAIL();
  } catch (const Error& e) {
    std::string s = e.what();
    EXPECT_NE(s.find("stem.conv"), std::string::npos) << s;
    EXPECT_NE(s.find("3 channels"), std::string::npos) << s;
  }
}

TEST(ShapeInference, RejectsBadAttributesAndShapes) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 4, 8, 8}));
  ValueId w = g.add_constant("w", weights({6, 2, 3, 3}));
  EXPECT_NO_THROW(g.add_node1(OpKind::kConv, conv_attrs(3, 1, 1, 2), {x, w}, "grouped"));
  EXPECT_THROW(g.add_node1(OpKind::kConv, conv_attrs(3, 1, 1, 4), {x, w}, "bad_groups"), Error);
  EXPECT_THROW(g.add_node1(OpKind::kConv, conv_attrs(5, 1, 1), {x, w}, "bad_kernel"), Error);
  EXPECT_THROW(g.add_node1(OpKind::kConv, conv_attrs(3, 0, 1), {x, w}, "bad_stride"), Error);
  ValueId y = g.add_input("y", DType::kFloat32, static_shape({1, 3, 8, 8}));
  EXPECT_THROW(g.add_node1(OpKind::kAdd, BinaryAttrs{}, {x, y}, "add"), Error);
  EXPECT_THROW(g.add_node1(OpKind::kReshape, ReshapeAttrs{{5, -1}}, {x}, "reshape"), Error);
  EXPECT_THROW(g.add_node1(OpKind::kConv, NoAttrs{}, {x, w}, "wrong_attrs"), Error);
  ValueId r = g.add_node1(OpKind::kReshape, ReshapeAttrs{{0, -1}}, {x}, "flat");
  EXPECT_EQ(shape_to_string(g.value(r).shape), "[1,256]");
}

TEST(ShapeInference, FlattenNegativeAxisCountsFromTheEnd) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 3, 4, 5}));
  ValueId a = g.add_node1(OpKind::kFlatten, FlattenAttrs{-1}, {x}, "f1");
  EXPECT_EQ(shape_to_string(g.value(a).shape), "[24,5]");
  ValueId b = g.add_node1(OpKind::kFlatten, FlattenAttrs{4}, {x}, "f2");
  EXPECT_EQ(shape_to_string(g.value(b).shape), "[120,1]");
  EXPECT_THROW(g.add_node1(OpKind::kFlatten, FlattenAttrs{-5}, {x}, "f3"), Error);
}

TEST(ShapeInference, Broadcasting) {
  Graph g;
  ValueId a = g.add_input("a", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::fixed(4), Dim::fixed(4)});
  ValueId b = g.add_input("b", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::fixed(1), Dim::fixed(1)});
  ValueId m = g.add_node1(OpKind::kMul, BinaryAttrs{}, {a, b}, "se_scale");
  EXPECT_EQ(shape_to_string(g.value(m).shape), "[batch,8,4,4]");
}

TEST(Verifier, CatchesOutOfOrderAndStaleShapes) {
  Graph g = small_net();
  verify(g);
  Graph stale = g;
  stale.value(*stale.find_value("relu")).shape = static_shape({1, 1, 1, 1});
  EXPECT_THROW(verify(stale), Error);
  Graph cyc = g;
  // Make the conv read the relu's output: a cycle / read-before-write.
  cyc.node(0).inputs[0] = *cyc.find_value("relu");
  EXPECT_THROW(verify(cyc), Error);
}

TEST(Compact, DropsDeadNodesAndRenumbers) {
  Graph g = small_net();
  size_t nodes = g.nodes().size();
  ValueId relu = *g.find_value("relu");
  ValueId conv = *g.find_value("conv");
  g.replace_all_uses(relu, conv);
  g.node(g.value(relu).producer).dead = true;
  g.compact();
  EXPECT_EQ(g.nodes().size(), nodes - 1);
  EXPECT_FALSE(g.find_value("relu"));
  verify(g);
}

TEST(Dump, ReadableListing) {
  Graph g = small_net();
  std::string d = dump(g);
  EXPECT_NE(d.find("graph(%image: float32[batch,3,height,width])"), std::string::npos) << d;
  EXPECT_NE(d.find("%conv: float32[batch,8,?,?] = Conv(%image, %conv.weight<[8,3,3,3]>) {kernel=[3,3] strides=[2,2] pads=[1,1,1,1]}"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("return %logits"), std::string::npos) << d;
}

}  // namespace
}  // namespace modex::ir
