// What modex records about a model built from a checkpoint, in every output it writes (ONNX
// metadata_props, TFLite's modex_metadata, the sidecar) and in the engine's Model::metadata():
// architecture, num_classes, class_names and the preprocessing the model expects.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "io/pytorch/checkpoint.h"
#include "models/zoo.h"

namespace modex::models {

// {"input_size", "resize", "resize_size", "layout": "NCHW", "color", "scale", "mean", "std",
// "normalization_source"}: the checkpoint config's mean/std/resize when it has them, ImageNet's
// conventions (resize to input_size*256/224, center crop) otherwise.
nlohmann::ordered_json preprocessing_metadata(int64_t input_size, const CheckpointConfig& config);

// {"architecture", "num_classes", "class_names", "preprocessing"}.
nlohmann::ordered_json checkpoint_metadata(const BuiltModel& built, const CheckpointConfig& config, int64_t input_size);

// The input size a checkpoint's model is meant for: the config's, else the architecture's own.
int64_t nominal_input_size(const BuiltModel& built, const CheckpointConfig& config);

}  // namespace modex::models
