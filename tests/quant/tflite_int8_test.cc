// The int8 TFLite form the writer produces from the quantizer's graph, read back through the
// flatbuffer accessors: tensor types and quantization parameters, the depthwise re-layout, op
// versions; and the weights-only (dynamic) form.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "io/tflite/tflite_ops.h"
#include "io/tflite/tflite_schema.h"
#include "io/tflite/tflite_writer.h"
#include "quant/prepare.h"
#include "quant/quantize.h"

namespace modex::quant {
namespace {
using namespace modex::ir;
namespace fb = modex::tflite_io::fb;

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

// conv 3x3 (ReLU) -> depthwise 3x3 (ReLU6) -> mean -> flatten -> gemm, NHWC.
Graph small_net() {
  std::mt19937 rng(5);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::fixed(8), Dim::fixed(3)});
  ConvAttrs c;
  c.kernel = {3, 3};
  c.pads = {1, 1, 1, 1};
  c.layout = Layout::kNHWC;
  c.activation = Activation::kRelu;
  ValueId c1 = g.add_node1(OpKind::kConv, c,
                           {x, g.add_constant("c1.w", random_tensor({16, 3, 3, 3}, rng, -1, 1)),
                            g.add_constant("c1.b", random_tensor({16}, rng, -1, 1))},
                           "c1");
  c.groups = 16;
  c.activation = Activation::kRelu6;
  ValueId dw = g.add_node1(OpKind::kConv, c,
                           {c1, g.add_constant("dw.w", random_tensor({16, 3, 3, 1}, rng, -1, 1)),
                            g.add_constant("dw.b", random_tensor({16}, rng, -1, 1))},
                           "dw");
  ValueId m = g.add_node1(OpKind::kReduceMean, ReduceAttrs{{1, 2}, true}, {dw}, "mean");
  ValueId f = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {m}, "flat");
  ValueId y = g.add_node1(OpKind::kGemm, GemmAttrs{},
                          {f, g.add_constant("fc.w", random_tensor({4, 16}, rng, -1, 1)),
                           g.add_constant("fc.b", random_tensor({4}, rng, -1, 1))},
                          "logits");
  g.add_output(y);
  return g;
}

struct Parsed {
  std::string bytes;
  const fb::Model* model = nullptr;
  std::map<std::string, const fb::Tensor*> tensors;
  std::map<std::string, int> versions;  // op name -> version
};

Parsed parse(std::string bytes) {
  Parsed p;
  p.bytes = std::move(bytes);
  flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(p.bytes.data()), p.bytes.size());
  EXPECT_TRUE(fb::VerifyModelBuffer(v));
  p.model = fb::GetModel(p.bytes.data());
  const auto* sg = p.model->subgraphs()->Get(0);
  for (const auto* t : *sg->tensors()) p.tensors[t->name()->str()] = t;
  for (const auto* code : *p.model->operator_codes())
    p.versions[tflite_io::builtin_op_name(std::max<int32_t>(code->deprecated_builtin_code(), static_cast<int32_t>(code->builtin_code())))] =
        code->version();
  return p;
}

TEST(TfliteInt8, TensorsCarryTheQuantizerParams) {
  PreparedGraph prep = prepare_for_int8(small_net());
  RangeMap r;
  for (const auto& name : prep.observe) r[name] = {-2.0f, 4.0f};
  Graph q = quantize_int8(prep.graph, r);
  Parsed p = parse(tflite_io::to_tflite_bytes(q, {}));

  const fb::Tensor* in = p.tensors.at("image");
  EXPECT_EQ(in->type(), fb::TensorType::INT8);
  const QuantParams want = *q.value(q.inputs()[0]).quant;
  ASSERT_NE(in->quantization(), nullptr);
  EXPECT_FLOAT_EQ(in->quantization()->scale()->Get(0), want.scale[0]);
  EXPECT_EQ(in->quantization()->zero_point()->Get(0), want.zero_point[0]);

  // Conv filter: per-channel along dim 0; int32 bias with per-channel scales.
  const fb::Tensor* w = p.tensors.at("c1.w");
  EXPECT_EQ(w->type(), fb::TensorType::INT8);
  EXPECT_EQ(w->quantization()->scale()->size(), 16u);
  EXPECT_EQ(w->quantization()->quantized_dimension(), 0);
  const fb::Tensor* b = p.tensors.at("c1.b");
  EXPECT_EQ(b->type(), fb::TensorType::INT32);
  EXPECT_EQ(b->quantization()->scale()->size(), 16u);
  for (size_t c = 0; c < 16; ++c)
    EXPECT_FLOAT_EQ(b->quantization()->scale()->Get(static_cast<flatbuffers::uoffset_t>(c)),
                    want.scale[0] * w->quantization()->scale()->Get(static_cast<flatbuffers::uoffset_t>(c)));

  // Depthwise filter re-laid out to [1, kH, kW, O], params along dim 3, values moved with it.
  const fb::Tensor* dw = p.tensors.at("dw.w/depthwise");
  EXPECT_EQ(dw->type(), fb::TensorType::INT8);
  ASSERT_EQ(dw->shape()->size(), 4u);
  EXPECT_EQ(dw->shape()->Get(0), 1);
  EXPECT_EQ(dw->shape()->Get(3), 16);
  EXPECT_EQ(dw->quantization()->quantized_dimension(), 3);
  const Value& dwq = q.value(*q.find_value("dw.w"));
  const auto* data = p.model->buffers()->Get(dw->buffer())->data();
  for (int64_t o = 0; o < 16; ++o)
    for (int64_t k = 0; k < 9; ++k)
      EXPECT_EQ(static_cast<int8_t>(data->Get(static_cast<flatbuffers::uoffset_t>(k * 16 + o))), dwq.constant.data<int8_t>()[o * 9 + k]);

  // Fully connected: per-tensor weights.
  EXPECT_EQ(p.tensors.at("fc.w")->quantization()->scale()->size(), 1u);
  EXPECT_EQ(p.tensors.at("logits")->type(), fb::TensorType::INT8);

  // int8 op versions.
  EXPECT_EQ(p.versions.at("CONV_2D"), 3);
  EXPECT_EQ(p.versions.at("DEPTHWISE_CONV_2D"), 3);
  EXPECT_EQ(p.versions.at("FULLY_CONNECTED"), 4);
  EXPECT_EQ(p.versions.at("MEAN"), 2);
  EXPECT_EQ(p.versions.count("DEQUANTIZE"), 0u);
  EXPECT_EQ(p.versions.count("QUANTIZE"), 0u);
}

TEST(TfliteInt8, FloatIoAddsQuantizeAndDequantize) {
  PreparedGraph prep = prepare_for_int8(small_net());
  RangeMap r;
  for (const auto& name : prep.observe) r[name] = {-2.0f, 4.0f};
  Parsed p = parse(tflite_io::to_tflite_bytes(quantize_int8(prep.graph, r, {.io_type = IoType::kFloat32}), {}));
  EXPECT_EQ(p.tensors.at("image")->type(), fb::TensorType::FLOAT32);
  EXPECT_EQ(p.tensors.at("logits")->type(), fb::TensorType::FLOAT32);
  EXPECT_EQ(p.tensors.at("image/int8")->type(), fb::TensorType::INT8);
  EXPECT_EQ(p.versions.at("QUANTIZE"), 1);
  EXPECT_EQ(p.versions.at("DEQUANTIZE"), 2);
}

TEST(TfliteInt8, DynamicWeightsArePerChannelInt8WithDequantize) {
  // A filter large enough to be quantized (>= kDynamicMinElements values).
  std::mt19937 rng(9);
  ConvAttrs c;
  c.kernel = {3, 3};
  c.pads = {1, 1, 1, 1};
  c.layout = Layout::kNHWC;
  Graph big;
  ValueId x = big.add_input("image", DType::kFloat32, {Dim::fixed(1), Dim::fixed(8), Dim::fixed(8), Dim::fixed(16)});
  Tensor wf = random_tensor({32, 3, 3, 16}, rng, -1, 1);
  ValueId y = big.add_node1(OpKind::kConv, c, {x, big.add_constant("w", wf), big.add_constant("b", random_tensor({32}, rng, -1, 1))}, "y");
  big.add_output(y);
  tflite_io::TfliteWriteOptions options;
  options.weights = tflite_io::WeightFormat::kInt8Dynamic;
  Parsed p = parse(tflite_io::to_tflite_bytes(big, options));
  const fb::Tensor* w = p.tensors.at("w");
  EXPECT_EQ(w->type(), fb::TensorType::INT8);
  ASSERT_EQ(w->quantization()->scale()->size(), 32u);
  EXPECT_EQ(p.tensors.at("w/dequantized")->type(), fb::TensorType::FLOAT32);
  EXPECT_EQ(p.tensors.at("b")->type(), fb::TensorType::FLOAT32);  // small: stays float
  EXPECT_EQ(p.versions.at("DEQUANTIZE"), 5);                        // per-channel int8
  EXPECT_EQ(p.versions.at("CONV_2D"), 1);                           // float activations
  // Symmetric: q * scale reproduces the weight within half a step.
  const auto* data = p.model->buffers()->Get(w->buffer())->data();
  const int64_t per = 3 * 3 * 16;
  for (int64_t o = 0; o < 32; ++o) {
    const float s = w->quantization()->scale()->Get(static_cast<flatbuffers::uoffset_t>(o));
    EXPECT_EQ(w->quantization()->zero_point()->Get(static_cast<flatbuffers::uoffset_t>(o)), 0);
    for (int64_t i = 0; i < per; ++i)
      EXPECT_NEAR(static_cast<int8_t>(data->Get(static_cast<flatbuffers::uoffset_t>(o * per + i))) * s, wf.data<float>()[o * per + i],
                  s / 2 + 1e-6);
  }
}

}  // namespace
}  // namespace modex::quant
