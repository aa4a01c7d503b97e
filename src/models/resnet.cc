// torchvision.models.resnet (0.14): ResNet-18/34/50/101/152, ResNeXt and Wide ResNet. The
// Bottleneck is ResNet V1.5 (stride on the 3x3 conv2, not on conv1), as torchvision builds it.
#include <fmt/format.h>

#include <array>

#include "models/architectures.h"

namespace modex::models {

namespace {

// nn.BatchNorm2d's default; ResNet never changes it.
constexpr float kBatchNormEps = 1e-5f;
constexpr std::array<int64_t, 4> kStagePlanes{64, 128, 256, 512};

struct ResNetConfig {
  bool bottleneck;            // Bottleneck (expansion 4) or BasicBlock (expansion 1)
  std::array<int, 4> blocks;  // `layers` argument of ResNet
  int64_t groups = 1;
  int64_t width_per_group = 64;
};

NetValue conv_bn(NetBuilder& b, const NetValue& x, const std::string& block, int index,
                 const ConvSpec& spec) {
  NetValue y = b.conv(x, fmt::format("{}.conv{}", block, index), spec);
  return b.batch_norm(y, fmt::format("{}.bn{}", block, index), kBatchNormEps);
}

// BasicBlock or Bottleneck at module path `block`; `planes` is the stage's width before expansion.
NetValue residual_block(NetBuilder& b, const NetValue& x, const std::string& block,
                        const ResNetConfig& c, int64_t planes, int64_t stride) {
  const std::string relu = block + ".relu";  // one module, called two or three times
  NetValue out;
  if (c.bottleneck) {
    // Bottleneck.__init__: width = int(planes * (base_width / 64.0)) * groups.
    int64_t width = static_cast<int64_t>(static_cast<double>(planes) *
                                         (static_cast<double>(c.width_per_group) / 64.0)) *
                    c.groups;
    out = conv_bn(b, x, block, 1, {.out_channels = width, .kernel = 1});
    out = b.activation(out, Act::kRelu, relu);
    out = conv_bn(b, out, block, 2,
                  {.out_channels = width, .kernel = 3, .stride = stride, .groups = c.groups});
    out = b.activation(out, Act::kRelu, relu);
    out = conv_bn(b, out, block, 3, {.out_channels = planes * 4, .kernel = 1});
  } else {
    out = conv_bn(b, x, block, 1, {.out_channels = planes, .kernel = 3, .stride = stride});
    out = b.activation(out, Act::kRelu, relu);
    out = conv_bn(b, out, block, 2, {.out_channels = planes, .kernel = 3});
  }
  NetValue identity = x;
  // ResNet._make_layer adds a downsample (conv1x1 + BN) exactly when the shape changes.
  if (stride != 1 || x.channels != out.channels) {
    identity = b.conv(x, block + ".downsample.0",
                      {.out_channels = out.channels, .kernel = 1, .stride = stride});
    identity = b.batch_norm(identity, block + ".downsample.1", kBatchNormEps);
  }
  out = b.add(out, identity, block + ".add");
  return b.activation(out, Act::kRelu, relu);
}

NetValue build_resnet(NetBuilder& b, NetValue x, const ResNetConfig& c, const ClassifierSpec& cls) {
  x = b.conv(x, "conv1", {.out_channels = 64, .kernel = 7, .stride = 2});
  x = b.batch_norm(x, "bn1", kBatchNormEps);
  x = b.activation(x, Act::kRelu, "relu");
  x = b.max_pool(x, "maxpool", 3, 2, 1);
  for (size_t stage = 0; stage < kStagePlanes.size(); ++stage)
    for (int i = 0; i < c.blocks[stage]; ++i) {
      int64_t stride = stage > 0 && i == 0 ? 2 : 1;
      x = residual_block(b, x, fmt::format("layer{}.{}", stage + 1, i), c, kStagePlanes[stage],
                         stride);
    }
  x = b.global_pool_flatten(x, "avgpool");
  if (cls.mode == ClassifierMode::kFull) x = b.linear(x, "fc", cls.num_classes);
  return x;
}

}  // namespace

void add_resnets(std::vector<Architecture>& out) {
  struct Entry {
    const char* name;
    ResNetConfig config;
  };
  // The constructors at the end of torchvision/models/resnet.py.
  static const Entry kEntries[] = {
      {"resnet18", {false, {2, 2, 2, 2}}},
      {"resnet34", {false, {3, 4, 6, 3}}},
      {"resnet50", {true, {3, 4, 6, 3}}},
      {"resnet101", {true, {3, 4, 23, 3}}},
      {"resnet152", {true, {3, 8, 36, 3}}},
      {"resnext50_32x4d", {true, {3, 4, 6, 3}, 32, 4}},
      {"resnext101_32x8d", {true, {3, 4, 23, 3}, 32, 8}},
      {"resnext101_64x4d", {true, {3, 4, 23, 3}, 64, 4}},
      {"wide_resnet50_2", {true, {3, 4, 6, 3}, 1, 128}},
      {"wide_resnet101_2", {true, {3, 4, 23, 3}, 1, 128}},
  };
  for (const Entry& e : kEntries) {
    ResNetConfig config = e.config;
    out.push_back({.name = e.name,
                   .stem_key = "conv1.weight",
                   .classifier = "fc",
                   .hidden_classifier = "",
                   .default_input_size = 224,
                   .build = [config](NetBuilder& b, NetValue image, const ClassifierSpec& cls) {
                     return build_resnet(b, image, config, cls);
                   }});
  }
}

}  // namespace modex::models
