// `--route` parsing and the weighted split.
#include "app/serve/router.h"

#include <gtest/gtest.h>

#include <map>

#include "core/error.h"

namespace modex::app::serve {
namespace {

TEST(ServeRouter, ParsesRoutes) {
  Route r = parse_route("clf=fp32:90,int8:10");
  EXPECT_EQ(r.name, "clf");
  ASSERT_EQ(r.variants.size(), 2u);
  EXPECT_EQ(r.variants[0].model, "fp32");
  EXPECT_DOUBLE_EQ(r.variants[0].weight, 90);
  EXPECT_EQ(r.variants[1].model, "int8");
  EXPECT_DOUBLE_EQ(r.variants[1].weight, 10);
  Route one = parse_route("x=a");
  ASSERT_EQ(one.variants.size(), 1u);
  EXPECT_DOUBLE_EQ(one.variants[0].weight, 1);
  EXPECT_DOUBLE_EQ(parse_route("x=a:0.5,b:1.5").variants[1].weight, 1.5);
}

TEST(ServeRouter, RejectsBadRoutes) {
  for (const char* bad : {"clf", "clf=", "=a:1", "clf=a:0", "clf=a:-1", "clf=a:x", "clf=a:1,a:2", "clf=a:1,",
                          "clf=:5", "c f=a:1", "clf=a:inf", "clf=a:nan", "clf=a:"})
    EXPECT_THROW(parse_route(bad), Error) << bad;
}

TEST(ServeRouter, PickFollowsCumulativeWeights) {
  Router r(parse_route("clf=a:90,b:10"));
  EXPECT_EQ(r.pick(0.0).model, "a");
  EXPECT_EQ(r.pick(0.8999).model, "a");
  EXPECT_EQ(r.pick(0.9).model, "b");
  EXPECT_EQ(r.pick(0.99999).model, "b");
  EXPECT_EQ(r.pick(1.0).model, "b");  // clamped
  Router three(parse_route("x=a:1,b:1,c:2"));
  EXPECT_EQ(three.pick(0.2).model, "a");
  EXPECT_EQ(three.pick(0.3).model, "b");
  EXPECT_EQ(three.pick(0.6).model, "c");
}

TEST(ServeRouter, RandomSplitMatchesWeights) {
  Router r(parse_route("clf=a:70,b:20,c:10"), 42);
  std::map<std::string, int> n;
  const int total = 100000;
  for (int i = 0; i < total; ++i) ++n[r.pick().model];
  EXPECT_NEAR(n["a"] / double(total), 0.7, 0.01);
  EXPECT_NEAR(n["b"] / double(total), 0.2, 0.01);
  EXPECT_NEAR(n["c"] / double(total), 0.1, 0.01);
}

}  // namespace
}  // namespace modex::app::serve
