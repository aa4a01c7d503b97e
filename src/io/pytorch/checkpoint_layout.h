// Where the weights and the training config sit inside a loaded checkpoint. People save state
// dicts directly, inside training dicts ({"model_state_dict": ..., "optimizer_state_dict": ...,
// "epoch": 3}), under other conventional keys, and wrapped by DataParallel or torch.compile;
// this finds the weights in all of those without guessing beyond the documented conventions.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "io/pytorch/checkpoint.h"
#include "io/pytorch/pickle_value.h"

namespace modex::pytorch {

// Keys that hold the weights in training checkpoints, in order of preference.
inline constexpr const char* kStateDictKeys[] = {"model_state_dict", "state_dict", "model", "net",
                                                 "model_state",      "weights"};

struct StateDictLocation {
  const pickle::Dict* dict = nullptr;
  std::string key;  // "" for the top level, "state_dict", or a dotted path like "model.state_dict"
};

// Finds the dict of tensors: the first conventional key (searched two levels deep) whose dict
// holds tensors, else the top level itself if it holds tensors, else the first other entry whose
// value is a non-empty dict of only tensors. Throws Error when there is none.
StateDictLocation find_state_dict(const pickle::Value* root);

// The "config" dict, then the same keys at the top level for whatever is still missing. Values
// of unexpected types are ignored: the config is advice, the weights decide.
CheckpointConfig read_config(const pickle::Value* root);

// The same keys from a safetensors "__metadata__" map, where every value is a string
// (class_names and input_size JSON-encoded).
CheckpointConfig config_from_metadata(
    const std::vector<std::pair<std::string, std::string>>& metadata);

// Removes "module." (DataParallel/DDP) and "_orig_mod." (torch.compile) while every key carries
// one, recording each stripped prefix in order.
void strip_wrapper_prefixes(StateDict& weights, std::vector<std::string>& stripped);

}  // namespace modex::pytorch
