// The Prometheus registry: exposition format 0.0.4 as Prometheus parses it.
#include "app/serve/metrics.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/error.h"

namespace modex::app::serve {
namespace {

bool contains(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }

TEST(ServeMetrics, CountersAndGauges) {
  Metrics m;
  m.declare("reqs_total", Metrics::Type::kCounter, "Requests.");
  m.declare("in_flight", Metrics::Type::kGauge, "Now.");
  m.inc("reqs_total", {{"endpoint", "/x"}, {"code", "200"}});
  m.inc("reqs_total", {{"endpoint", "/x"}, {"code", "200"}}, 2);
  m.inc("reqs_total", {{"endpoint", "/x"}, {"code", "404"}});
  m.inc("in_flight", {}, 1);
  m.inc("in_flight", {}, 1);
  m.inc("in_flight", {}, -1);
  std::string t = m.render();
  EXPECT_TRUE(contains(t, "# HELP reqs_total Requests.\n# TYPE reqs_total counter\n")) << t;
  EXPECT_TRUE(contains(t, "reqs_total{endpoint=\"/x\",code=\"200\"} 3\n")) << t;
  EXPECT_TRUE(contains(t, "reqs_total{endpoint=\"/x\",code=\"404\"} 1\n")) << t;
  EXPECT_TRUE(contains(t, "# TYPE in_flight gauge\nin_flight 1\n")) << t;
  EXPECT_LT(t.find("reqs_total"), t.find("in_flight"));  // declaration order
  EXPECT_DOUBLE_EQ(m.value("reqs_total", {{"endpoint", "/x"}, {"code", "200"}}), 3);
  EXPECT_DOUBLE_EQ(m.value("reqs_total", {{"endpoint", "/y"}}), 0);
}

TEST(ServeMetrics, HistogramBucketsAreCumulative) {
  Metrics m;
  m.declare("lat_seconds", Metrics::Type::kHistogram, "Latency.", {0.01, 0.1, 1});
  for (double v : {0.005, 0.01, 0.05, 0.5, 3.0}) m.observe("lat_seconds", {{"model", "a"}}, v);
  std::string t = m.render();
  EXPECT_TRUE(contains(t, "# TYPE lat_seconds histogram\n")) << t;
  EXPECT_TRUE(contains(t, "lat_seconds_bucket{model=\"a\",le=\"0.01\"} 2\n")) << t;  // le is inclusive
  EXPECT_TRUE(contains(t, "lat_seconds_bucket{model=\"a\",le=\"0.1\"} 3\n")) << t;
  EXPECT_TRUE(contains(t, "lat_seconds_bucket{model=\"a\",le=\"1\"} 4\n")) << t;
  EXPECT_TRUE(contains(t, "lat_seconds_bucket{model=\"a\",le=\"+Inf\"} 5\n")) << t;
  EXPECT_TRUE(contains(t, "lat_seconds_sum{model=\"a\"} 3.565\n")) << t;
  EXPECT_TRUE(contains(t, "lat_seconds_count{model=\"a\"} 5\n")) << t;
  EXPECT_DOUBLE_EQ(m.value("lat_seconds", {{"model", "a"}}), 5);
}

TEST(ServeMetrics, EscapesLabelValuesAndHelp) {
  Metrics m;
  m.declare("x_total", Metrics::Type::kCounter, "Line one\\two\nthree");
  m.inc("x_total", {{"model", "a\"b\\c\nd"}});
  std::string t = m.render();
  EXPECT_TRUE(contains(t, "# HELP x_total Line one\\\\two\\nthree\n")) << t;
  EXPECT_TRUE(contains(t, "x_total{model=\"a\\\"b\\\\c\\nd\"} 1\n")) << t;
}

TEST(ServeMetrics, MisuseIsAnError) {
  Metrics m;
  m.declare("c_total", Metrics::Type::kCounter, "c");
  EXPECT_THROW(m.declare("c_total", Metrics::Type::kCounter, "again"), Error);
  EXPECT_THROW(m.declare("bad name", Metrics::Type::kCounter, "c"), Error);
  EXPECT_THROW(m.declare("h", Metrics::Type::kHistogram, "h", {1, 1}), Error);
  EXPECT_THROW(m.declare("h", Metrics::Type::kHistogram, "h", {}), Error);
  EXPECT_THROW(m.observe("c_total", {}, 1), Error);
  EXPECT_THROW(m.set("c_total", {}, 1), Error);
  EXPECT_THROW(m.inc("undeclared", {}), Error);
}

TEST(ServeMetrics, ConcurrentUpdates) {
  Metrics m;
  m.declare("n_total", Metrics::Type::kCounter, "n");
  m.declare("h", Metrics::Type::kHistogram, "h", latency_buckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        m.inc("n_total", {{"k", "v"}});
        m.observe("h", {}, 0.003);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_DOUBLE_EQ(m.value("n_total", {{"k", "v"}}), 40000);
  EXPECT_DOUBLE_EQ(m.value("h", {}), 40000);
}

}  // namespace
}  // namespace modex::app::serve
