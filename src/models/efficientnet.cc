// torchvision.models.efficientnet (0.14): EfficientNet-B0..B7 (MBConv, compound width/depth
// scaling) and EfficientNetV2-S/M/L (Fused-MBConv stages, then MBConv). Stochastic depth and
// dropout are identities at inference and emit nothing.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "models/architectures.h"

namespace modex::models {

namespace {

enum class BlockKind : uint8_t { kMBConv, kFusedMBConv };

// One row of _efficientnet_conf's inverted_residual_setting (MBConvConfig / FusedMBConvConfig
// arguments), before width/depth scaling.
struct StageRow {
  BlockKind kind;
  double expand_ratio;
  int64_t kernel;
  int64_t stride;
  int64_t input_channels;
  int64_t out_channels;
  int64_t num_layers;
};

struct EfficientNetConfig {
  std::vector<StageRow> stages;
  double width_mult = 1.0;  // MBConvConfig's multipliers (V1 only; V2 rows are used as written)
  double depth_mult = 1.0;
  int64_t last_channel = 0;  // 0: 4 * the last stage's output channels (V1)
  float bn_eps = 1e-5f;      // B5-B7 and V2 pass norm_layer=partial(BatchNorm2d, eps=1e-3)
};

// _MBConvConfig.adjust_channels.
int64_t adjust_channels(double channels, double width_mult) {
  return make_divisible(channels * width_mult, 8);
}

// MBConvConfig.adjust_depth: int(math.ceil(num_layers * depth_mult)).
int64_t adjust_depth(int64_t num_layers, double depth_mult) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(num_layers) * depth_mult));
}

// MBConv: [expand 1x1] -> depthwise kxk -> SqueezeExcitation -> project 1x1 (+ residual).
NetValue mbconv(NetBuilder& b, const NetValue& x, const std::string& block, int64_t expanded,
                int64_t kernel, int64_t stride, int64_t out_channels, float eps) {
  int index = 0;
  auto next = [&] { return fmt::format("{}.block.{}", block, index++); };
  NetValue y = x;
  if (expanded != x.channels)
    y = b.conv_norm_act(y, next(), {.out_channels = expanded, .kernel = 1}, eps, Act::kSilu);
  y = b.conv_norm_act(
      y, next(), {.out_channels = expanded, .kernel = kernel, .stride = stride, .groups = expanded},
      eps, Act::kSilu);
  // MBConv: squeeze_channels = max(1, cnf.input_channels // 4), from the block's input width.
  y = b.squeeze_excitation(y, next(), std::max<int64_t>(1, x.channels / 4), Act::kSilu,
                           Act::kSigmoid);
  y = b.conv_norm_act(y, next(), {.out_channels = out_channels, .kernel = 1}, eps, Act::kNone);
  if (stride == 1 && x.channels == out_channels) y = b.add(y, x, block + ".add");
  return y;
}

// FusedMBConv: the expand and depthwise convs fused into one kxk conv, no SE.
NetValue fused_mbconv(NetBuilder& b, const NetValue& x, const std::string& block, int64_t expanded,
                      int64_t kernel, int64_t stride, int64_t out_channels, float eps) {
  NetValue y;
  if (expanded != x.channels) {
    y = b.conv_norm_act(x, block + ".block.0",
                        {.out_channels = expanded, .kernel = kernel, .stride = stride}, eps,
                        Act::kSilu);
    y = b.conv_norm_act(y, block + ".block.1", {.out_channels = out_channels, .kernel = 1}, eps,
                        Act::kNone);
  } else {
    y = b.conv_norm_act(x, block + ".block.0",
                        {.out_channels = out_channels, .kernel = kernel, .stride = stride}, eps,
                        Act::kSilu);
  }
  if (stride == 1 && x.channels == out_channels) y = b.add(y, x, block + ".add");
  return y;
}

NetValue build_efficientnet(NetBuilder& b, NetValue x, const EfficientNetConfig& c,
                            const ClassifierSpec& cls) {
  // MBConvConfig scales its channel counts at construction; FusedMBConvConfig (V2) does not, and V2
  // passes no multipliers, so scaling every row by (width_mult, depth_mult) = (1, 1) is exact.
  auto in_channels = [&](const StageRow& r) {
    return adjust_channels(static_cast<double>(r.input_channels), c.width_mult);
  };
  auto out_channels = [&](const StageRow& r) {
    return adjust_channels(static_cast<double>(r.out_channels), c.width_mult);
  };

  x = b.conv_norm_act(x, "features.0",
                      {.out_channels = in_channels(c.stages.front()), .kernel = 3, .stride = 2},
                      c.bn_eps, Act::kSilu);
  int feature = 1;
  for (const StageRow& row : c.stages) {
    int64_t layers = adjust_depth(row.num_layers, c.depth_mult);
    int64_t out = out_channels(row);
    for (int64_t i = 0; i < layers; ++i) {
      // EfficientNet.__init__: blocks after the first of a stage take the stage's output width
      // and stride 1. The expansion is computed from the block's own input width.
      int64_t stride = i == 0 ? row.stride : 1;
      int64_t expanded = adjust_channels(static_cast<double>(x.channels), row.expand_ratio);
      std::string block = fmt::format("features.{}.{}", feature, i);
      x = row.kind == BlockKind::kMBConv
              ? mbconv(b, x, block, expanded, row.kernel, stride, out, c.bn_eps)
              : fused_mbconv(b, x, block, expanded, row.kernel, stride, out, c.bn_eps);
    }
    ++feature;
  }
  int64_t last = c.last_channel > 0 ? c.last_channel : 4 * x.channels;
  x = b.conv_norm_act(x, fmt::format("features.{}", feature), {.out_channels = last, .kernel = 1},
                      c.bn_eps, Act::kSilu);
  x = b.global_pool_flatten(x, "avgpool");
  // classifier.0 is Dropout.
  if (cls.mode == ClassifierMode::kFull) x = b.linear(x, "classifier.1", cls.num_classes);
  return x;
}

std::vector<StageRow> v1_stages() {
  constexpr BlockKind M = BlockKind::kMBConv;
  return {
      {M, 1, 3, 1, 32, 16, 1},   {M, 6, 3, 2, 16, 24, 2},  {M, 6, 5, 2, 24, 40, 2},
      {M, 6, 3, 2, 40, 80, 3},   {M, 6, 5, 1, 80, 112, 3}, {M, 6, 5, 2, 112, 192, 4},
      {M, 6, 3, 1, 192, 320, 1},
  };
}

}  // namespace

void add_efficientnets(std::vector<Architecture>& out) {
  constexpr BlockKind M = BlockKind::kMBConv;
  constexpr BlockKind F = BlockKind::kFusedMBConv;
  struct Entry {
    const char* name;
    EfficientNetConfig config;
    int64_t input_size;  // crop size of the DEFAULT weights' transforms
  };
  const Entry entries[] = {
      {"efficientnet_b0", {v1_stages(), 1.0, 1.0}, 224},
      {"efficientnet_b1", {v1_stages(), 1.0, 1.1}, 240},
      {"efficientnet_b2", {v1_stages(), 1.1, 1.2}, 288},
      {"efficientnet_b3", {v1_stages(), 1.2, 1.4}, 300},
      {"efficientnet_b4", {v1_stages(), 1.4, 1.8}, 380},
      {"efficientnet_b5", {v1_stages(), 1.6, 2.2, 0, 1e-3f}, 456},
      {"efficientnet_b6", {v1_stages(), 1.8, 2.6, 0, 1e-3f}, 528},
      {"efficientnet_b7", {v1_stages(), 2.0, 3.1, 0, 1e-3f}, 600},
      {"efficientnet_v2_s",
       {{{F, 1, 3, 1, 24, 24, 2},
         {F, 4, 3, 2, 24, 48, 4},
         {F, 4, 3, 2, 48, 64, 4},
         {M, 4, 3, 2, 64, 128, 6},
         {M, 6, 3, 1, 128, 160, 9},
         {M, 6, 3, 2, 160, 256, 15}},
        1.0,
        1.0,
        1280,
        1e-3f},
       384},
      {"efficientnet_v2_m",
       {{{F, 1, 3, 1, 24, 24, 3},
         {F, 4, 3, 2, 24, 48, 5},
         {F, 4, 3, 2, 48, 80, 5},
         {M, 4, 3, 2, 80, 160, 7},
         {M, 6, 3, 1, 160, 176, 14},
         {M, 6, 3, 2, 176, 304, 18},
         {M, 6, 3, 1, 304, 512, 5}},
        1.0,
        1.0,
        1280,
        1e-3f},
       480},
      {"efficientnet_v2_l",
       {{{F, 1, 3, 1, 32, 32, 4},
         {F, 4, 3, 2, 32, 64, 7},
         {F, 4, 3, 2, 64, 96, 7},
         {M, 4, 3, 2, 96, 192, 10},
         {M, 6, 3, 1, 192, 224, 19},
         {M, 6, 3, 2, 224, 384, 25},
         {M, 6, 3, 1, 384, 640, 7}},
        1.0,
        1.0,
        1280,
        1e-3f},
       480},
  };
  for (const Entry& e : entries) {
    EfficientNetConfig config = e.config;
    out.push_back({.name = e.name,
                   .stem_key = "features.0.0.weight",
                   .classifier = "classifier.1",
                   .hidden_classifier = "",
                   .default_input_size = e.input_size,
                   .build = [config](NetBuilder& b, NetValue image, const ClassifierSpec& cls) {
                     return build_efficientnet(b, image, config, cls);
                   }});
  }
}

}  // namespace modex::models
