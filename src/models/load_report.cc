#include "models/load_report.h"

#include <algorithm>

namespace modex::models {

namespace {

void list_names(std::string& out, const std::vector<std::string>& names, size_t max_listed,
                const std::string& indent) {
  size_t shown = std::min(names.size(), max_listed);
  for (size_t i = 0; i < shown; ++i) out += indent + "  " + names[i] + "\n";
  if (names.size() > shown)
    out += indent + "  ... and " + std::to_string(names.size() - shown) + " more\n";
}

}  // namespace

std::string LoadReport::describe(size_t max_listed, const std::string& indent) const {
  std::string out;
  out += indent + "missing keys: " + std::to_string(missing.size()) + "\n";
  list_names(out, missing, max_listed, indent);
  out += indent + "unexpected keys: " + std::to_string(unexpected.size()) + "\n";
  list_names(out, unexpected, max_listed, indent);
  out += indent + "shape mismatches: " + std::to_string(mismatched.size()) + "\n";
  size_t shown = std::min(mismatched.size(), max_listed);
  for (size_t i = 0; i < shown; ++i) {
    const ShapeMismatch& m = mismatched[i];
    out += indent + "  " + m.key + ": checkpoint " + dims_to_string(m.checkpoint) +
           " vs expected " + dims_to_string(m.expected) + "\n";
  }
  if (mismatched.size() > shown)
    out += indent + "  ... and " + std::to_string(mismatched.size() - shown) + " more\n";
  if (!non_float.empty()) {
    out += indent + "non-float parameters: " + std::to_string(non_float.size()) + "\n";
    list_names(out, non_float, max_listed, indent);
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace modex::models
