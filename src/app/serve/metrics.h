// A small Prometheus registry for `modex serve`: counters, gauges and histograms with labels,
// rendered in the text exposition format 0.0.4 (HELP and TYPE lines, cumulative `_bucket`
// series with `le`, `_sum`, `_count`). Thread-safe; one mutex, held for a map update.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace modex::app::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Request latencies in seconds: 1 ms to 10 s.
std::vector<double> latency_buckets();

class Metrics {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  // Families are declared once, before use; the order of declaration is the order of output.
  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]*; histogram buckets must be increasing.
  void declare(const std::string& name, Type type, const std::string& help, std::vector<double> buckets = {});

  void inc(const std::string& name, const Labels& labels, double by = 1);   // counter or gauge
  void set(const std::string& name, const Labels& labels, double value);    // gauge
  void observe(const std::string& name, const Labels& labels, double value);  // histogram

  // A series' current value (counters, gauges) or observation count (histograms); 0 if absent.
  double value(const std::string& name, const Labels& labels) const;

  std::string render() const;

 private:
  struct Series {
    double value = 0;                // counter / gauge
    std::vector<uint64_t> buckets;   // histogram: per bucket (not cumulative)
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;
    std::map<Labels, Series> series;
  };
  Family& family(const std::string& name, Type a, Type b);

  mutable std::mutex mutex_;
  std::vector<std::string> order_;
  std::map<std::string, Family> families_;
};

// Label value escaping of the text format: backslash, double quote and line feed.
std::string escape_label_value(std::string_view v);

}  // namespace modex::app::serve
