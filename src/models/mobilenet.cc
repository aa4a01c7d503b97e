// torchvision.models.mobilenetv2 and mobilenetv3 (0.14), width_mult 1.0, no dilation / reduced
// tail (those variants have the same keys as the plain ones and cannot be told apart from weights).
#include <fmt/format.h>

#include <algorithm>

#include "models/architectures.h"

namespace modex::models {

namespace {

// --- MobileNetV2 ---

constexpr float kV2BatchNormEps = 1e-5f;  // plain nn.BatchNorm2d

// MobileNetV2's inverted_residual_setting: t (expansion), c (output channels), n (repeats), s.
struct V2Row {
  int64_t expand_ratio;
  int64_t out_channels;
  int64_t repeats;
  int64_t stride;
};

constexpr V2Row kV2Setting[] = {
    {1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2},  {6, 64, 4, 2},
    {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};

// mobilenetv2.InvertedResidual: `conv` is a Sequential of [pw Conv2dNormActivation], dw
// Conv2dNormActivation, a bare 1x1 Conv2d and a BatchNorm2d.
NetValue v2_inverted_residual(NetBuilder& b, const NetValue& x, const std::string& block,
                              int64_t out_channels, int64_t stride, int64_t expand_ratio) {
  int64_t hidden = x.channels * expand_ratio;  // int(round(inp * expand_ratio)) with integer ratios
  int index = 0;
  auto next = [&] { return fmt::format("{}.conv.{}", block, index++); };
  NetValue y = x;
  if (expand_ratio != 1)
    y = b.conv_norm_act(y, next(), {.out_channels = hidden, .kernel = 1}, kV2BatchNormEps,
                        Act::kRelu6);
  y = b.conv_norm_act(y, next(),
                      {.out_channels = hidden, .kernel = 3, .stride = stride, .groups = hidden},
                      kV2BatchNormEps, Act::kRelu6);
  y = b.conv(y, next(), {.out_channels = out_channels, .kernel = 1});
  y = b.batch_norm(y, next(), kV2BatchNormEps);
  if (stride == 1 && x.channels == out_channels)
    y = b.add(x, y, block + ".add");  // x + self.conv(x)
  return y;
}

NetValue build_mobilenet_v2(NetBuilder& b, NetValue x, const ClassifierSpec& cls) {
  constexpr double kWidthMult = 1.0;
  constexpr int64_t kRoundNearest = 8;
  int64_t input_channel = make_divisible(32 * kWidthMult, kRoundNearest);
  int64_t last_channel = make_divisible(1280 * std::max(1.0, kWidthMult), kRoundNearest);
  x = b.conv_norm_act(x, "features.0", {.out_channels = input_channel, .kernel = 3, .stride = 2},
                      kV2BatchNormEps, Act::kRelu6);
  int feature = 1;
  for (const V2Row& row : kV2Setting) {
    int64_t out = make_divisible(static_cast<double>(row.out_channels) * kWidthMult, kRoundNearest);
    for (int64_t i = 0; i < row.repeats; ++i)
      x = v2_inverted_residual(b, x, fmt::format("features.{}", feature++), out,
                               i == 0 ? row.stride : 1, row.expand_ratio);
  }
  x = b.conv_norm_act(x, fmt::format("features.{}", feature),
                      {.out_channels = last_channel, .kernel = 1}, kV2BatchNormEps, Act::kRelu6);
  // MobileNetV2 pools with nn.functional.adaptive_avg_pool2d (no module); named like the others.
  x = b.global_pool_flatten(x, "avgpool");
  // classifier.0 is Dropout.
  if (cls.mode == ClassifierMode::kFull) x = b.linear(x, "classifier.1", cls.num_classes);
  return x;
}

// --- MobileNetV3 ---

// MobileNetV3 builds its norm layer as partial(nn.BatchNorm2d, eps=0.001, momentum=0.01).
constexpr float kV3BatchNormEps = 1e-3f;

// InvertedResidualConfig arguments, as _mobilenet_v3_conf lists them (dilation 1 everywhere).
struct V3Row {
  int64_t input_channels;
  int64_t kernel;
  int64_t expanded_channels;
  int64_t out_channels;
  bool use_se;
  bool use_hardswish;  // "HS" vs "RE"
  int64_t stride;
};

struct V3Config {
  std::vector<V3Row> rows;
  int64_t last_channel;  // the classifier's hidden width
};

NetValue v3_inverted_residual(NetBuilder& b, const NetValue& x, const std::string& block,
                              const V3Row& r) {
  // Channels are adjust_channels(c, width_mult = 1) = c: every value in the tables is a multiple
  // of 8.
  Act act = r.use_hardswish ? Act::kHardSwish : Act::kRelu;
  int index = 0;
  auto next = [&] { return fmt::format("{}.block.{}", block, index++); };
  NetValue y = x;
  if (r.expanded_channels != r.input_channels)
    y = b.conv_norm_act(y, next(), {.out_channels = r.expanded_channels, .kernel = 1},
                        kV3BatchNormEps, act);
  y = b.conv_norm_act(y, next(),
                      {.out_channels = r.expanded_channels,
                       .kernel = r.kernel,
                       .stride = r.stride,
                       .groups = r.expanded_channels},
                      kV3BatchNormEps, act);
  if (r.use_se)
    y = b.squeeze_excitation(y, next(),
                             make_divisible(static_cast<double>(r.expanded_channels / 4), 8),
                             Act::kRelu, Act::kHardSigmoid);
  y = b.conv_norm_act(y, next(), {.out_channels = r.out_channels, .kernel = 1}, kV3BatchNormEps,
                      Act::kNone);
  if (r.stride == 1 && r.input_channels == r.out_channels) y = b.add(y, x, block + ".add");
  return y;
}

NetValue build_mobilenet_v3(NetBuilder& b, NetValue x, const V3Config& c,
                            const ClassifierSpec& cls) {
  x = b.conv_norm_act(x, "features.0",
                      {.out_channels = c.rows.front().input_channels, .kernel = 3, .stride = 2},
                      kV3BatchNormEps, Act::kHardSwish);
  int feature = 1;
  for (const V3Row& row : c.rows) {
    if (row.input_channels != x.channels)
      throw Error("MobileNetV3 table: block input width disagrees with the previous block",
                  ErrorKind::kInternal);
    x = v3_inverted_residual(b, x, fmt::format("features.{}", feature++), row);
  }
  x = b.conv_norm_act(x, fmt::format("features.{}", feature),
                      {.out_channels = 6 * x.channels, .kernel = 1}, kV3BatchNormEps,
                      Act::kHardSwish);
  x = b.global_pool_flatten(x, "avgpool");
  if (cls.mode == ClassifierMode::kNone) return x;
  // classifier: Linear(classifier.0) -> Hardswish(.1) -> Dropout(.2) -> Linear(.3).
  x = b.linear(x, "classifier.0", c.last_channel);
  x = b.activation(x, Act::kHardSwish, "classifier.1");
  if (cls.mode == ClassifierMode::kFull) x = b.linear(x, "classifier.3", cls.num_classes);
  return x;
}

V3Config v3_large() {
  return {{
              {16, 3, 16, 16, false, false, 1},
              {16, 3, 64, 24, false, false, 2},
              {24, 3, 72, 24, false, false, 1},
              {24, 5, 72, 40, true, false, 2},
              {40, 5, 120, 40, true, false, 1},
              {40, 5, 120, 40, true, false, 1},
              {40, 3, 240, 80, false, true, 2},
              {80, 3, 200, 80, false, true, 1},
              {80, 3, 184, 80, false, true, 1},
              {80, 3, 184, 80, false, true, 1},
              {80, 3, 480, 112, true, true, 1},
              {112, 3, 672, 112, true, true, 1},
              {112, 5, 672, 160, true, true, 2},
              {160, 5, 960, 160, true, true, 1},
              {160, 5, 960, 160, true, true, 1},
          },
          1280};
}

V3Config v3_small() {
  return {{
              {16, 3, 16, 16, true, false, 2},
              {16, 3, 72, 24, false, false, 2},
              {24, 3, 88, 24, false, false, 1},
              {24, 5, 96, 40, true, true, 2},
              {40, 5, 240, 40, true, true, 1},
              {40, 5, 240, 40, true, true, 1},
              {40, 5, 120, 48, true, true, 1},
              {48, 5, 144, 48, true, true, 1},
              {48, 5, 288, 96, true, true, 2},
              {96, 5, 576, 96, true, true, 1},
              {96, 5, 576, 96, true, true, 1},
          },
          1024};
}

}  // namespace

void add_mobilenets(std::vector<Architecture>& out) {
  out.push_back({.name = "mobilenet_v2",
                 .stem_key = "features.0.0.weight",
                 .classifier = "classifier.1",
                 .hidden_classifier = "",
                 .default_input_size = 224,
                 .build = build_mobilenet_v2});
  struct Entry {
    const char* name;
    V3Config config;
  };
  for (const Entry& e :
       {Entry{"mobilenet_v3_small", v3_small()}, Entry{"mobilenet_v3_large", v3_large()}}) {
    V3Config config = e.config;
    out.push_back({.name = e.name,
                   .stem_key = "features.0.0.weight",
                   .classifier = "classifier.3",
                   .hidden_classifier = "classifier.0",
                   .default_input_size = 224,
                   .build = [config](NetBuilder& b, NetValue image, const ClassifierSpec& cls) {
                     return build_mobilenet_v3(b, image, config, cls);
                   }});
  }
}

}  // namespace modex::models
