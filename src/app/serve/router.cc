#include "app/serve/router.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "app/serve/request.h"
#include "core/error.h"

namespace modex::app::serve {

Route parse_route(std::string_view spec) {
  Route r;
  size_t eq = spec.find('=');
  if (eq == std::string_view::npos || eq + 1 >= spec.size())
    throw Error(fmt::format("--route '{}': expected NAME=MODEL:WEIGHT,MODEL:WEIGHT", spec));
  r.name = std::string(spec.substr(0, eq));
  if (!valid_model_name(r.name))
    throw Error(fmt::format("--route '{}': route name '{}' must be 1-128 characters of A-Z a-z 0-9 . _ -", spec, r.name));
  std::string_view rest = spec.substr(eq + 1);
  while (true) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    Variant v;
    size_t colon = item.rfind(':');
    v.model = std::string(item.substr(0, colon));
    v.weight = 1;
    if (colon != std::string_view::npos) {
      std::string w(item.substr(colon + 1));
      char* end = nullptr;
      v.weight = std::strtod(w.c_str(), &end);
      if (w.empty() || end != w.c_str() + w.size() || !std::isfinite(v.weight) || !(v.weight > 0))
        throw Error(fmt::format("--route '{}': weight '{}' of variant '{}' must be a number greater than 0", spec, w,
                                v.model));
    }
    if (!valid_model_name(v.model))
      throw Error(fmt::format("--route '{}': variant '{}' is not a model name", spec, item));
    for (const auto& o : r.variants)
      if (o.model == v.model) throw Error(fmt::format("--route '{}': model '{}' is listed twice", spec, v.model));
    r.variants.push_back(v);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return r;
}

Router::Router(Route route, uint64_t seed) : route_(std::move(route)), rng_(seed) {
  check(!route_.variants.empty(), fmt::format("route '{}' has no variants", route_.name));
  double total = 0;
  for (const auto& v : route_.variants) total += v.weight;
  double c = 0;
  for (const auto& v : route_.variants) cumulative_.push_back(c += v.weight / total);
  cumulative_.back() = 1.0;
}

const Variant& Router::pick(double u) const {
  auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
  size_t i = std::min(static_cast<size_t>(it - cumulative_.begin()), cumulative_.size() - 1);
  return route_.variants[i];
}

const Variant& Router::pick() {
  double u;
  {
    std::lock_guard lock(mutex_);
    u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  }
  return pick(u);
}

}  // namespace modex::app::serve
