#include "models/metadata.h"

namespace modex::models {

using Json = nlohmann::ordered_json;

Json preprocessing_metadata(int64_t input_size, const CheckpointConfig& cfg) {
  Json p;
  p["input_size"] = input_size;
  bool plain = cfg.resize && *cfg.resize == "resize";
  p["resize"] = plain ? "resize" : "resize_center_crop";
  p["resize_size"] = plain ? input_size : static_cast<int64_t>(input_size * 256 / 224);
  p["layout"] = "NCHW";
  p["color"] = "RGB";
  p["scale"] = 1.0 / 255.0;
  // The checkpoint's own statistics when its config has them; ImageNet's otherwise (what
  // torchvision's pretrained weights and most fine-tuned classifiers expect).
  bool own = cfg.mean.size() == 3 && cfg.std.size() == 3;
  p["mean"] = own ? Json(cfg.mean) : Json{0.485, 0.456, 0.406};
  p["std"] = own ? Json(cfg.std) : Json{0.229, 0.224, 0.225};
  p["normalization_source"] = own ? "checkpoint config" : "imagenet default";
  return p;
}

Json checkpoint_metadata(const BuiltModel& built, const CheckpointConfig& config, int64_t input_size) {
  Json m;
  m["architecture"] = built.architecture;
  m["num_classes"] = built.num_classes;
  m["class_names"] = config.class_names;
  m["preprocessing"] = preprocessing_metadata(input_size, config);
  return m;
}

int64_t nominal_input_size(const BuiltModel& built, const CheckpointConfig& config) {
  return config.input_size.value_or(built.default_input_size);
}

}  // namespace modex::models
