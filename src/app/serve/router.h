// A/B tests and gradual roll-outs: `--route NAME=modelA:90,modelB:10` sends each request for
// NAME to one variant with probability proportional to its weight.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace modex::app::serve {

struct Variant {
  std::string model;
  double weight = 0;
};

struct Route {
  std::string name;
  std::vector<Variant> variants;  // weights > 0; at least one
};

// "NAME=a:90,b:10" (a variant without ":W" weighs 1). Throws modex::Error naming the spec on an
// invalid name, a missing variant list, a weight that is not a finite number > 0, or a model
// listed twice.
Route parse_route(std::string_view spec);

class Router {
 public:
  explicit Router(Route route, uint64_t seed = std::random_device{}());
  const Route& route() const { return route_; }
  // The variant for a uniform draw u in [0, 1): variant i covers [c_{i-1}, c_i) of the
  // normalised cumulative weights. Deterministic, for tests.
  const Variant& pick(double u) const;
  // A random variant (thread-safe).
  const Variant& pick();

 private:
  Route route_;
  std::vector<double> cumulative_;  // normalised, last == 1
  std::mutex mutex_;
  std::mt19937_64 rng_;
};

}  // namespace modex::app::serve
