// The TFLite writer's output, read back through the generated schema accessors: file layout,
// signature, metadata, op codes and versions, padding paths, float16 weights, errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/half.h"
#include "tflite_test_graphs.h"
#include "tflite_test_util.h"

namespace modex::tflite_io {
namespace {

namespace fs = std::filesystem;
using ir::Activation;
using ir::OpKind;
using test::NhwcBuilder;

ir::Graph find_case(const std::string& name) {
  for (auto& c : test::tflite_cases())
    if (c.name == name) return std::move(c.graph);
  throw std::runtime_error("no case " + name);
}

std::string write_case(const std::string& name, const TfliteWriteOptions& options = {}) {
  return to_tflite_bytes(find_case(name), options);
}

// Float32 models written once per case and kept for the whole run, so they may be held by pointer.
const fb::Model* written_model(const std::string& name) {
  static std::map<std::string, std::string> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, write_case(name)).first;
  return test::model_of(it->second);
}

const fb::SubGraph* main_graph(const fb::Model* m) { return m->subgraphs()->Get(0); }

const fb::Tensor* tensor(const fb::Model* m, int32_t i) {
  return main_graph(m)->tensors()->Get(static_cast<uint32_t>(i));
}

std::vector<int32_t> ints(const flatbuffers::Vector<int32_t>* v) {
  return v ? std::vector<int32_t>(v->begin(), v->end()) : std::vector<int32_t>{};
}

// The first operator with this builtin name.
const fb::Operator* find_op(const fb::Model* m, const std::string& name) {
  for (const fb::Operator* op : *main_graph(m)->operators())
    if (test::builtin_name(m, op) == name) return op;
  return nullptr;
}

template <typename T>
std::vector<T> buffer_values(const fb::Model* m, int32_t t) {
  const auto* data = m->buffers()->Get(tensor(m, t)->buffer())->data();
  std::vector<T> out(data->size() / sizeof(T));
  std::memcpy(out.data(), data->data(), data->size());
  return out;
}

TEST(TfliteWriter, FileLayout) {
  std::string bytes = write_case("conv_same");
  EXPECT_EQ(bytes.substr(4, 4), "TFL3");
  const fb::Model* m = test::model_of(bytes);
  EXPECT_EQ(m->version(), 3u);
  EXPECT_EQ(m->description()->str(), std::string("modex ") + MODEX_VERSION);
  ASSERT_EQ(m->subgraphs()->size(), 1u);
  EXPECT_EQ(main_graph(m)->name()->str(), "main");
  // Buffer 0 is the empty sentinel; tensors without data point at it.
  ASSERT_GT(m->buffers()->size(), 1u);
  EXPECT_EQ(m->buffers()->Get(0)->data(), nullptr);
  const fb::Tensor* input = tensor(m, main_graph(m)->inputs()->Get(0));
  EXPECT_EQ(input->buffer(), 0u);
  EXPECT_EQ(input->type(), fb::TensorType::FLOAT32);
  EXPECT_EQ(ints(input->shape()), (std::vector<int32_t>{1, 9, 9, 3}));
  EXPECT_EQ(input->shape_signature(), nullptr);  // static graph
}

TEST(TfliteWriter, WeightBuffersAreSixteenByteAligned) {
  for (const auto& options : {TfliteWriteOptions{}, test::fp16_options()}) {
    std::string bytes = write_case("tiny_cnn", options);
    const fb::Model* m = test::model_of(bytes);
    int with_data = 0;
    for (const fb::Buffer* b : *m->buffers()) {
      if (!b->data()) continue;
      ++with_data;
      EXPECT_EQ((b->data()->data() - reinterpret_cast<const uint8_t*>(bytes.data())) % 16, 0);
    }
    EXPECT_GT(with_data, 15);
  }
}

TEST(TfliteWriter, IdenticalConstantsShareOneBuffer) {
  // Every case: no two buffers hold the same bytes.
  for (auto& c : test::tflite_cases()) {
    std::string bytes = to_tflite_bytes(c.graph, {});
    const fb::Model* m = test::model_of(bytes);
    std::set<std::string> seen;
    for (const fb::Buffer* b : *m->buffers()) {
      if (!b->data()) continue;
      EXPECT_TRUE(seen.emplace(reinterpret_cast<const char*>(b->data()->data()), b->data()->size()).second)
          << c.name << ": two buffers hold the same " << b->data()->size() << " bytes";
    }
  }
  // tiny_cnn's two MEANs reduce the same axes: they read one parameter tensor.
  const fb::Model* m = written_model("tiny_cnn");
  std::vector<int32_t> axes;
  for (const fb::Operator* op : *main_graph(m)->operators())
    if (test::builtin_name(m, op) == "MEAN") axes.push_back(op->inputs()->Get(1));
  ASSERT_EQ(axes.size(), 2u);
  EXPECT_EQ(axes[0], axes[1]);
  EXPECT_EQ(buffer_values<int32_t>(m, axes[0]), (std::vector<int32_t>{1, 2}));

  // Two convolutions with the same weights and biases, as a model whose folded biases are all
  // zero has: their tensors keep their own names and point at the same buffers, whose bytes are
  // the weights'.
  NhwcBuilder b(7);
  auto x = b.input({1, 6, 6, 4});
  auto c1 = b.conv(x, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, "c1");
  ir::Graph& g = b.graph();
  const ir::Node& first = g.node(g.value(c1).producer);
  std::vector<ir::ValueId> ins{c1};
  for (size_t i = 1; i < first.inputs.size(); ++i) {
    const ir::Value& v = g.value(first.inputs[i]);
    ins.push_back(g.add_constant("c2" + v.name.substr(2), v.constant.clone()));
  }
  const auto bias = g.value(first.inputs[2]).constant.values<float>();
  const std::vector<float> bias_values(bias.begin(), bias.end());
  ir::OpAttrs attrs = first.attrs;
  auto c2 = b.op(OpKind::kConv, attrs, ins, "c2");
  std::string bytes = to_tflite_bytes(b.finish(c2), {});
  m = test::model_of(bytes);
  std::vector<const fb::Operator*> convs;
  for (const fb::Operator* op : *main_graph(m)->operators())
    if (test::builtin_name(m, op) == "CONV_2D") convs.push_back(op);
  ASSERT_EQ(convs.size(), 2u);
  for (uint32_t i : {1u, 2u}) {
    const fb::Tensor* t1 = tensor(m, convs[0]->inputs()->Get(i));
    const fb::Tensor* t2 = tensor(m, convs[1]->inputs()->Get(i));
    EXPECT_NE(t1->name()->str(), t2->name()->str());
    EXPECT_EQ(t1->buffer(), t2->buffer());
  }
  EXPECT_EQ(buffer_values<float>(m, convs[0]->inputs()->Get(2)), bias_values);
}

TEST(TfliteWriter, SignatureDefNamesInputAndOutput) {
  std::string bytes = write_case("head_softmax");
  const fb::Model* m = test::model_of(bytes);
  ASSERT_EQ(m->signature_defs()->size(), 1u);
  const fb::SignatureDef* sig = m->signature_defs()->Get(0);
  EXPECT_EQ(sig->signature_key()->str(), "serving_default");
  EXPECT_EQ(sig->subgraph_index(), 0u);
  ASSERT_EQ(sig->inputs()->size(), 1u);
  ASSERT_EQ(sig->outputs()->size(), 1u);
  EXPECT_EQ(sig->inputs()->Get(0)->name()->str(), "image");
  EXPECT_EQ(sig->outputs()->Get(0)->name()->str(), "logits");
  EXPECT_EQ(static_cast<int32_t>(sig->inputs()->Get(0)->tensor_index()),
            main_graph(m)->inputs()->Get(0));
  EXPECT_EQ(static_cast<int32_t>(sig->outputs()->Get(0)->tensor_index()),
            main_graph(m)->outputs()->Get(0));
  EXPECT_EQ(tensor(m, main_graph(m)->outputs()->Get(0))->name()->str(), "logits");
}

TEST(TfliteWriter, MetadataEntries) {
  TfliteWriteOptions options;
  options.metadata_json =
      R"({"architecture": "resnet18", "class_names": ["cat", "dog"], "source_sha256": "ab12"})";
  std::string bytes = write_case("tiny_cnn", options);
  const fb::Model* m = test::model_of(bytes);
  std::map<std::string, std::string> entries;
  for (const fb::Metadata* md : *m->metadata()) {
    const auto* data = m->buffers()->Get(md->buffer())->data();
    entries[md->name()->str()] =
        std::string(reinterpret_cast<const char*>(data->data()), data->size());
  }
  EXPECT_EQ(entries.at("modex_metadata"), options.metadata_json);
  // 16 bytes, zero padded; HARD_SWISH v1 is the newest op here (1.15.0).
  EXPECT_EQ(entries.at("min_runtime_version"), std::string("1.15.0") + std::string(10, '\0'));
  // Grouped convolutions need CONV_2D v6, from 2.9.0.
  const fb::Model* grouped = written_model("grouped_conv");
  for (const fb::Metadata* md : *grouped->metadata())
    if (md->name()->str() == "min_runtime_version") {
      EXPECT_STREQ(
          reinterpret_cast<const char*>(grouped->buffers()->Get(md->buffer())->data()->data()),
          "2.9.0");
    }
}

TEST(TfliteWriter, MetadataMustBeAJsonObject) {
  TfliteWriteOptions options;
  for (const char* bad : {"", "[1, 2]", "{\"a\": ", "\"text\""}) {
    options.metadata_json = bad;
    try {
      write_case("unary_relu", options);
      ADD_FAILURE() << "accepted metadata " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    }
  }
}

TEST(TfliteWriter, OperatorCodesAreDeduplicated) {
  std::string bytes = write_case("tiny_cnn");
  const fb::Model* m = test::model_of(bytes);
  std::set<int32_t> seen;
  for (const fb::OperatorCode* c : *m->operator_codes()) {
    EXPECT_TRUE(seen.insert(c->builtin_code()).second)
        << builtin_op_name(c->builtin_code()) << " listed twice";
    EXPECT_EQ(c->deprecated_builtin_code(), std::min(c->builtin_code(), 127));
  }
  EXPECT_EQ(test::op_counts(inspect_tflite(test::to_buffer(bytes))).at("CONV_2D"), 4);
}

TEST(TfliteWriter, OpVersionsAreTheRuntimes) {
  auto versions = [](const std::string& bytes) {
    std::map<std::string, int> v;
    const fb::Model* m = test::model_of(bytes);
    for (const fb::OperatorCode* c : *m->operator_codes())
      v[builtin_op_name(c->builtin_code())] = c->version();
    return v;
  };
  // Float ops are version 1.
  for (const auto& [op, version] : versions(write_case("tiny_cnn"))) EXPECT_EQ(version, 1) << op;
  EXPECT_EQ(versions(write_case("grouped_conv")).at("CONV_2D"), 6);
  EXPECT_EQ(versions(write_case("matmul")).at("FULLY_CONNECTED"), 5);  // keep_num_dims
  EXPECT_EQ(versions(write_case("matmul")).at("BATCH_MATMUL"), 1);
  EXPECT_EQ(versions(write_case("tiny_cnn", test::fp16_options())).at("DEQUANTIZE"), 3);
  NhwcBuilder b;
  auto x = b.input({1, 9, 9, 4});
  std::string dilated = to_tflite_bytes(b.finish(b.conv(x, 4, 3, 1, {2, 2, 2, 2}, 2, 4)), {});
  EXPECT_EQ(versions(dilated).at("DEPTHWISE_CONV_2D"), 2);
}

TEST(TfliteWriter, PaddingPaths) {
  auto conv_padding = [](const std::string& bytes) {
    const fb::Model* m = test::model_of(bytes);
    return find_op(m, "CONV_2D")->builtin_options_as_Conv2DOptions()->padding();
  };
  EXPECT_EQ(conv_padding(write_case("conv_same")), fb::Padding::SAME);
  EXPECT_EQ(conv_padding(write_case("conv_valid_nobias")), fb::Padding::VALID);
  EXPECT_EQ(conv_padding(write_case("conv_dilated")), fb::Padding::SAME);

  std::string explicit_bytes = write_case("conv_explicit_pad");
  const fb::Model* m = test::model_of(explicit_bytes);
  EXPECT_EQ(conv_padding(explicit_bytes), fb::Padding::VALID);
  const fb::Operator* pad = find_op(m, "PAD");
  ASSERT_NE(pad, nullptr);
  EXPECT_EQ(buffer_values<int32_t>(m, pad->inputs()->Get(1)),
            (std::vector<int32_t>{0, 0, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(ints(tensor(m, pad->outputs()->Get(0))->shape()), (std::vector<int32_t>{1, 10, 10, 3}));
  // The PAD feeds the convolution.
  EXPECT_EQ(find_op(m, "CONV_2D")->inputs()->Get(0), pad->outputs()->Get(0));

  // A max pool over possibly negative values pads with the lowest float...
  std::string max_bytes = write_case("maxpool_explicit");
  m = test::model_of(max_bytes);
  const fb::Operator* padv2 = find_op(m, "PADV2");
  ASSERT_NE(padv2, nullptr);
  EXPECT_EQ(buffer_values<float>(m, padv2->inputs()->Get(2)), (std::vector<float>{-FLT_MAX}));
  EXPECT_EQ(find_op(m, "MAX_POOL_2D")->builtin_options_as_Pool2DOptions()->padding(),
            fb::Padding::VALID);
  // ... and with zeros after a ReLU.
  m = written_model("maxpool_after_relu");
  EXPECT_NE(find_op(m, "PAD"), nullptr);
  EXPECT_EQ(find_op(m, "PADV2"), nullptr);
}

TEST(TfliteWriter, ConvolutionOperands) {
  // Depthwise: filter [1, kH, kW, O] with the IR's [O, kH, kW, 1] values, depth multiplier.
  ir::Graph g = find_case("depthwise_hardswish");
  Tensor w;
  for (const ir::Value& v : g.values())
    if (v.name == "conv.weight") w = v.constant;
  std::string bytes = to_tflite_bytes(g, {});
  const fb::Model* m = test::model_of(bytes);
  const fb::Operator* dw = find_op(m, "DEPTHWISE_CONV_2D");
  ASSERT_NE(dw, nullptr);
  EXPECT_EQ(dw->builtin_options_as_DepthwiseConv2DOptions()->depth_multiplier(), 2);
  EXPECT_EQ(dw->builtin_options_as_DepthwiseConv2DOptions()->fused_activation_function(),
            fb::ActivationFunctionType::NONE);
  EXPECT_EQ(ints(tensor(m, dw->inputs()->Get(1))->shape()), (std::vector<int32_t>{1, 3, 3, 12}));
  auto filter = buffer_values<float>(m, dw->inputs()->Get(1));
  for (int64_t o = 0; o < 12; ++o)
    for (int64_t s = 0; s < 9; ++s)
      ASSERT_EQ(filter[static_cast<size_t>(s * 12 + o)], w.data<float>()[o * 9 + s]);
  // The hard-swish TFLite cannot fuse follows the convolution.
  const fb::Operator* hs = find_op(m, "HARD_SWISH");
  ASSERT_NE(hs, nullptr);
  EXPECT_EQ(hs->inputs()->Get(0), dw->outputs()->Get(0));
  EXPECT_EQ(tensor(m, hs->outputs()->Get(0))->name()->str(), "logits");

  // A convolution without bias gets zeros (TFLite's kernels require one); a fused ReLU6 stays
  // fused.
  m = written_model("conv_valid_nobias");
  const fb::Operator* conv = find_op(m, "CONV_2D");
  ASSERT_EQ(conv->inputs()->size(), 3u);
  EXPECT_EQ(buffer_values<float>(m, conv->inputs()->Get(2)), std::vector<float>(5, 0.0f));
  m = written_model("depthwise_stride2");
  EXPECT_EQ(find_op(m, "DEPTHWISE_CONV_2D")
                ->builtin_options_as_DepthwiseConv2DOptions()
                ->fused_activation_function(),
            fb::ActivationFunctionType::RELU6);
}

TEST(TfliteWriter, FullyConnectedOperands) {
  const fb::Model* m = written_model("gemm_nobias");
  const fb::Operator* fc = find_op(m, "FULLY_CONNECTED");
  ASSERT_EQ(fc->inputs()->size(), 3u);
  EXPECT_EQ(fc->inputs()->Get(2), -1);  // omitted bias
  const auto* o = fc->builtin_options_as_FullyConnectedOptions();
  EXPECT_FALSE(o->keep_num_dims());
  EXPECT_EQ(o->weights_format(), fb::FullyConnectedOptionsWeightsFormat::DEFAULT);
  m = written_model("head_dynamic_batch");
  EXPECT_EQ(find_op(m, "FULLY_CONNECTED")
                ->builtin_options_as_FullyConnectedOptions()
                ->fused_activation_function(),
            fb::ActivationFunctionType::RELU);
}

TEST(TfliteWriter, DynamicBatchShapes) {
  std::string bytes = write_case("tiny_cnn");
  const fb::Model* m = test::model_of(bytes);
  const fb::Tensor* input = tensor(m, main_graph(m)->inputs()->Get(0));
  EXPECT_EQ(ints(input->shape()), (std::vector<int32_t>{1, 16, 16, 3}));
  EXPECT_EQ(ints(input->shape_signature()), (std::vector<int32_t>{-1, 16, 16, 3}));
  EXPECT_EQ(ints(tensor(m, main_graph(m)->outputs()->Get(0))->shape_signature()),
            (std::vector<int32_t>{-1, 10}));
  for (const fb::Tensor* t : *main_graph(m)->tensors()) {
    bool constant = m->buffers()->Get(t->buffer())->data() != nullptr;
    if (constant) {
      EXPECT_EQ(t->shape_signature(), nullptr) << t->name()->str();
    } else {
      ASSERT_NE(t->shape_signature(), nullptr) << t->name()->str();
      EXPECT_EQ(t->shape_signature()->Get(0), -1) << t->name()->str();
      EXPECT_EQ(t->shape()->Get(0), 1) << t->name()->str();
    }
  }
  // The flatten's RESHAPE infers the batch.
  const fb::Operator* reshape = find_op(m, "RESHAPE");
  EXPECT_EQ(buffer_values<int32_t>(m, reshape->inputs()->Get(1)), (std::vector<int32_t>{-1, 8}));
  EXPECT_EQ(ints(reshape->builtin_options_as_ReshapeOptions()->new_shape()),
            (std::vector<int32_t>{-1, 8}));
  // A static graph writes the batch as is.
  m = written_model("head_softmax");
  EXPECT_EQ(buffer_values<int32_t>(m, find_op(m, "RESHAPE")->inputs()->Get(1)),
            (std::vector<int32_t>{1, 8}));
}

TEST(TfliteWriter, Float16WeightsAreDequantized) {
  ir::Graph g = find_case("tiny_cnn");
  size_t float_constants = 0;
  for (const ir::Value& v : g.values())
    float_constants += v.is_constant() && v.dtype == DType::kFloat32;
  std::string bytes = to_tflite_bytes(g, test::fp16_options());
  const fb::Model* m = test::model_of(bytes);
  const fb::SubGraph* sg = main_graph(m);
  std::vector<int> readers(sg->tensors()->size(), 0);
  for (const fb::Operator* op : *sg->operators())
    for (int32_t t : *op->inputs())
      if (t >= 0) ++readers[static_cast<size_t>(t)];
  size_t fp16 = 0;
  for (const fb::Operator* op : *sg->operators()) {
    if (test::builtin_name(m, op) != "DEQUANTIZE") continue;
    const fb::Tensor* in = tensor(m, op->inputs()->Get(0));
    const fb::Tensor* out = tensor(m, op->outputs()->Get(0));
    EXPECT_EQ(in->type(), fb::TensorType::FLOAT16);
    EXPECT_EQ(out->type(), fb::TensorType::FLOAT32);
    EXPECT_NE(m->buffers()->Get(in->buffer())->data(), nullptr);
    EXPECT_EQ(readers[static_cast<size_t>(op->inputs()->Get(0))], 1);
    EXPECT_EQ(ints(in->shape()), ints(out->shape()));
    ++fp16;
  }
  // Every IR weight, plus nothing else float16 (the stem and others carry biases).
  EXPECT_EQ(fp16, float_constants);
  for (const fb::Tensor* t : *sg->tensors()) {
    bool constant = m->buffers()->Get(t->buffer())->data() != nullptr;
    if (constant) {
      EXPECT_NE(t->type(), fb::TensorType::FLOAT32) << t->name()->str() << " kept as float32";
    }
  }
}

TEST(TfliteWriter, Float16HalvesTheFile) {
  NhwcBuilder b(40);
  auto x = b.input({1, 8, 8, 64}, true);
  auto c = b.conv(x, 128, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu);
  auto d = b.conv(c, 128, 3, 1, {1, 1, 1, 1}, 1, 128, Activation::kRelu6, true, "dw");
  auto m = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {d}, "gap");
  auto f = b.op(OpKind::kFlatten, ir::FlattenAttrs{1}, {m}, "flatten");
  ir::Graph g = b.finish(b.gemm(f, 1000));
  size_t f32 = to_tflite_bytes(g, {}).size();
  size_t f16 = to_tflite_bytes(g, test::fp16_options()).size();
  EXPECT_LE(static_cast<double>(f16), 0.52 * static_cast<double>(f32)) << f16 << " vs " << f32;
}

TEST(TfliteWriter, Float16ClampsToItsRange) {
  NhwcBuilder b;
  auto x = b.input({1, 2, 2, 3});
  std::vector<float> values{1e6f, -1e6f, 65504.0f, 70000.0f, 1.0f, std::nanf("")};
  auto k = b.graph().add_constant("big", Tensor::from_floats({1, 1, 2, 3}, values));
  std::string bytes = to_tflite_bytes(
      b.finish(b.op(OpKind::kMul, ir::BinaryAttrs{}, {x, k}, "mul")), test::fp16_options());
  const fb::Model* m = test::model_of(bytes);
  auto half = buffer_values<uint16_t>(m, find_op(m, "DEQUANTIZE")->inputs()->Get(0));
  ASSERT_EQ(half.size(), 6u);
  EXPECT_EQ(half[0], 0x7bff);  // 65504
  EXPECT_EQ(half[1], 0xfbff);  // -65504
  EXPECT_EQ(half[2], 0x7bff);
  EXPECT_EQ(half[3], 0x7bff);
  EXPECT_EQ(half[4], 0x3c00);
  EXPECT_TRUE(std::isnan(f16_to_f32(half[5])));
}

TEST(TfliteWriter, EveryCaseHasItsOps) {
  for (const auto& c : test::tflite_cases()) {
    for (const auto& options : {TfliteWriteOptions{}, test::fp16_options()}) {
      auto counts =
          test::op_counts(inspect_tflite(test::to_buffer(to_tflite_bytes(c.graph, options))));
      for (const auto& [op, n] : c.expect_ops) EXPECT_EQ(counts[op], n) << c.name << ": " << op;
      if (c.name != "nchw_input" && c.name != "matmul") {
        EXPECT_EQ(counts.count("TRANSPOSE"), 0u) << c.name;
      }
      bool has_weights = std::any_of(c.graph.values().begin(), c.graph.values().end(),
                                     [](const ir::Value& v) { return v.is_constant(); });
      EXPECT_EQ(counts.count("DEQUANTIZE") > 0,
                has_weights && options.weights == WeightFormat::kFloat16)
          << c.name;
    }
  }
}

// --- graphs outside the input contract ---

void expect_unsupported(const ir::Graph& g, const std::string& fragment,
                        const std::string& node = "") {
  try {
    to_tflite_bytes(g, {});
    ADD_FAILURE() << "accepted a graph that should fail with: " << fragment;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    if (!node.empty()) {
      EXPECT_EQ(e.location().node, node) << e.what();
    }
  }
}

TEST(TfliteWriter, RejectsGraphsOutsideTheContract) {
  {  // NCHW convolution: the NHWC pass has not run
    ir::Graph g;
    auto x = g.add_input("image", DType::kFloat32, ir::static_shape({1, 3, 8, 8}));
    auto w = g.add_constant("w", Tensor::zeros(DType::kFloat32, {4, 3, 3, 3}));
    ir::ConvAttrs a;
    a.kernel = {3, 3};
    auto y = g.add_node1(OpKind::kConv, a, {x, w}, "stem");
    g.add_output(y);
    expect_unsupported(g, "NHWC", "stem");
  }
  {  // unfolded BatchNorm
    ir::Graph g;
    auto x = g.add_input("image", DType::kFloat32, ir::static_shape({1, 4}));
    std::vector<ir::ValueId> ins{x};
    for (const char* p : {"g", "b", "m", "v"})
      ins.push_back(g.add_constant(p, Tensor::zeros(DType::kFloat32, {4})));
    g.add_output(g.add_node1(OpKind::kBatchNorm, ir::BatchNormAttrs{}, ins, "bn"));
    expect_unsupported(g, "no TFLite form", "bn");
  }
  {  // dynamic height
    ir::Graph g;
    auto x = g.add_input(
        "image", DType::kFloat32,
        {ir::Dim::fixed(1), ir::Dim::named("height"), ir::Dim::fixed(8), ir::Dim::fixed(3)});
    g.add_output(g.add_node1(OpKind::kRelu, ir::NoAttrs{}, {x}, "relu"));
    expect_unsupported(g, "static sizes except the batch");
  }
  {  // softmax over channels of a 4-D map
    NhwcBuilder b;
    auto x = b.input({1, 4, 4, 3});
    expect_unsupported(b.finish(b.op(OpKind::kSoftmax, ir::AxisAttrs{1}, {x}, "softmax")),
                       "last axis", "softmax");
  }
  {  // max pool with dilation
    NhwcBuilder b;
    auto x = b.input({1, 8, 8, 3});
    ir::PoolAttrs a;
    a.kernel = {2, 2};
    a.dilations = {2, 2};
    a.layout = ir::Layout::kNHWC;
    expect_unsupported(b.finish(b.op(OpKind::kMaxPool, a, {x}, "pool")), "dilation", "pool");
  }
  {  // average pool excluding pads that SAME does not reproduce
    NhwcBuilder b;
    auto x = b.input({1, 8, 8, 3});
    expect_unsupported(b.finish(b.pool(OpKind::kAveragePool, x, 3, 2, {1, 1, 1, 1})),
                       "average pool", "pool");
  }
  {  // non-float activations
    ir::Graph g;
    auto x = g.add_input("ids", DType::kInt64, ir::static_shape({1, 4}));
    g.add_output(g.add_node1(OpKind::kIdentity, ir::NoAttrs{}, {x}, "id"));
    expect_unsupported(g, "float32 inputs");
  }
}

TEST(TfliteWriter, FailedWriteLeavesNothing) {
  fs::path dir = fs::temp_directory_path() / ("modex_tflite_writer_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  NhwcBuilder b;
  auto x = b.input({1, 4, 4, 3});
  ir::Graph bad = b.finish(b.op(OpKind::kSoftmax, ir::AxisAttrs{1}, {x}, "softmax"));
  EXPECT_THROW(write_tflite(bad, dir / "model.tflite", {}), Error);
  EXPECT_TRUE(fs::is_empty(dir));
  size_t size = write_tflite(find_case("conv_same"), dir / "model.tflite", {});
  EXPECT_EQ(fs::file_size(dir / "model.tflite"), size);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace modex::tflite_io
