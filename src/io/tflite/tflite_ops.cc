#include "io/tflite/tflite_ops.h"

#include <utility>

namespace modex::tflite_io {
namespace {

// Names of the ops modex writes or reads, and of others common in converted models (vision
// classifiers, TFLite Micro's examples), so that an error names the op it met. In code order.
constexpr std::pair<int32_t, std::string_view> kNames[] = {
    {0, "ADD"},
    {1, "AVERAGE_POOL_2D"},
    {2, "CONCATENATION"},
    {3, "CONV_2D"},
    {4, "DEPTHWISE_CONV_2D"},
    {5, "DEPTH_TO_SPACE"},
    {6, "DEQUANTIZE"},
    {8, "FLOOR"},
    {9, "FULLY_CONNECTED"},
    {11, "L2_NORMALIZATION"},
    {12, "L2_POOL_2D"},
    {13, "LOCAL_RESPONSE_NORMALIZATION"},
    {14, "LOGISTIC"},
    {16, "LSTM"},
    {17, "MAX_POOL_2D"},
    {18, "MUL"},
    {19, "RELU"},
    {20, "RELU_N1_TO_1"},
    {21, "RELU6"},
    {22, "RESHAPE"},
    {23, "RESIZE_BILINEAR"},
    {25, "SOFTMAX"},
    {26, "SPACE_TO_DEPTH"},
    {27, "SVDF"},
    {28, "TANH"},
    {32, "CUSTOM"},
    {34, "PAD"},
    {36, "GATHER"},
    {37, "BATCH_TO_SPACE_ND"},
    {38, "SPACE_TO_BATCH_ND"},
    {39, "TRANSPOSE"},
    {40, "MEAN"},
    {41, "SUB"},
    {42, "DIV"},
    {43, "SQUEEZE"},
    {44, "UNIDIRECTIONAL_SEQUENCE_LSTM"},
    {45, "STRIDED_SLICE"},
    {47, "EXP"},
    {49, "SPLIT"},
    {53, "CAST"},
    {54, "PRELU"},
    {55, "MAXIMUM"},
    {57, "MINIMUM"},
    {60, "PADV2"},
    {65, "SLICE"},
    {67, "TRANSPOSE_CONV"},
    {70, "EXPAND_DIMS"},
    {74, "SUM"},
    {83, "PACK"},
    {97, "RESIZE_NEAREST_NEIGHBOR"},
    {98, "LEAKY_RELU"},
    {102, "SPLIT_V"},
    {114, "QUANTIZE"},
    {117, "HARD_SWISH"},
    {126, "BATCH_MATMUL"},
    {150, "GELU"},
};

}  // namespace

std::string builtin_op_name(int32_t code) {
  for (const auto& [c, name] : kNames)
    if (c == code) return std::string(name);
  return "BUILTIN_" + std::to_string(code);
}

}  // namespace modex::tflite_io
