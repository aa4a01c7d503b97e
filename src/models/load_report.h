// What load_state_dict(strict=True) would complain about when a state dict is loaded into one
// architecture: missing keys, unexpected keys, shape mismatches (and non-float parameters, which
// PyTorch would silently cast but which no exporter can mean).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace modex::models {

struct ShapeMismatch {
  std::string key;
  Dims checkpoint;
  Dims expected;
};

struct LoadReport {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<ShapeMismatch> mismatched;
  std::vector<std::string> non_float;  // "key (int64)"
  size_t matched = 0;                  // keys found with the expected shape

  size_t problem_count() const {
    return missing.size() + unexpected.size() + mismatched.size() + non_float.size();
  }
  bool ok() const { return problem_count() == 0; }

  // The strict-load listing: "missing keys: N" (first `max_listed` names), "unexpected keys: N",
  // "shape mismatches: N" with "key: checkpoint [..] vs expected [..]" lines. Each line is
  // indented by `indent`.
  std::string describe(size_t max_listed = 10, const std::string& indent = "  ") const;
};

}  // namespace modex::models
