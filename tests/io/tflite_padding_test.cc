// The SAME / VALID / explicit-PAD decision for TFLite's window ops.
#include "io/tflite/tflite_padding.h"

#include <gtest/gtest.h>

namespace modex::tflite_io {
namespace {

// One square 2-D window: both dims alike.
std::optional<PaddingPlan> plan2(SpatialWindow w, PadSemantics s) {
  SpatialWindow dims[2] = {w, w};
  return plan_padding(dims, s);
}

TEST(TflitePadding, SamePadsFollowTfliteFormula) {
  EXPECT_EQ(same_padding(224, 3, 2, 1), std::make_pair(int64_t{0}, int64_t{1}));
  EXPECT_EQ(same_padding(225, 3, 2, 1), std::make_pair(int64_t{1}, int64_t{1}));
  EXPECT_EQ(same_padding(8, 3, 1, 2),
            std::make_pair(int64_t{2}, int64_t{2}));  // dilated: effective 5
  EXPECT_EQ(same_padding(7, 7, 2, 1), std::make_pair(int64_t{3}, int64_t{3}));
  EXPECT_EQ(same_padding(4, 1, 2, 1), std::make_pair(int64_t{0}, int64_t{0}));  // never negative
  EXPECT_EQ(padded_output_size(WindowPadding::kSame, 225, 3, 2, 1), 113);
  EXPECT_EQ(padded_output_size(WindowPadding::kValid, 225, 3, 2, 1), 112);
  EXPECT_EQ(padded_output_size(WindowPadding::kValid, 8, 3, 1, 2), 4);
}

TEST(TflitePadding, StrideTwoPadOneIsSameOnlyOnOddInputs) {
  auto odd = plan2({225, 113, 3, 2, 1, 1, 1}, PadSemantics::kZeros);
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->mode, WindowPadding::kSame);
  EXPECT_FALSE(odd->needs_pad_op());
  // On 224, SAME would pad 0 before and 1 after; PyTorch pads 1 before: explicit PAD + VALID.
  // The declared end pad is kept although no window reads it.
  auto even = plan2({224, 112, 3, 2, 1, 1, 1}, PadSemantics::kZeros);
  ASSERT_TRUE(even);
  EXPECT_EQ(even->mode, WindowPadding::kValid);
  EXPECT_TRUE(even->needs_pad_op());
  EXPECT_EQ(even->pad_begin, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(even->pad_end, (std::vector<int64_t>{1, 1}));
}

TEST(TflitePadding, UnpaddedWindowsAreValid) {
  auto p = plan2({8, 6, 3, 1, 1, 0, 0}, PadSemantics::kZeros);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, WindowPadding::kValid);
  EXPECT_FALSE(p->needs_pad_op());
  // 1x1 stride-2 convolutions (ResNet downsampling) read no padding either way.
  p = plan2({8, 4, 1, 2, 1, 0, 0}, PadSemantics::kZeros);
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->needs_pad_op());
}

TEST(TflitePadding, StrideOneSymmetricPadsAreSame) {
  for (auto s : {PadSemantics::kZeros, PadSemantics::kMaxIgnored, PadSemantics::kAverageExcluded}) {
    auto p = plan2({6, 6, 3, 1, 1, 1, 1}, s);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->mode, WindowPadding::kSame);
    EXPECT_FALSE(p->needs_pad_op());
  }
  auto dilated = plan2({8, 8, 3, 1, 2, 2, 2}, PadSemantics::kZeros);
  ASSERT_TRUE(dilated);
  EXPECT_EQ(dilated->mode, WindowPadding::kSame);
}

TEST(TflitePadding, AsymmetricPadsAreExplicit) {
  SpatialWindow dims[2] = {{7, 7, 2, 1, 1, 0, 1}, {7, 7, 2, 1, 1, 1, 0}};
  auto p = plan_padding(dims, PadSemantics::kZeros);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, WindowPadding::kValid);
  EXPECT_EQ(p->pad_begin, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(p->pad_end, (std::vector<int64_t>{1, 0}));
}

TEST(TflitePadding, MixedDimsFallBackToExplicitForBoth) {
  // H is SAME-exact (odd input), W is not (even input): one mode must serve both dims.
  SpatialWindow dims[2] = {{9, 5, 3, 2, 1, 1, 1}, {8, 4, 3, 2, 1, 1, 1}};
  auto p = plan_padding(dims, PadSemantics::kZeros);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, WindowPadding::kValid);
  EXPECT_EQ(p->pad_begin, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(p->pad_end, (std::vector<int64_t>{1, 1}));
}

TEST(TflitePadding, CeilModeOverhangs) {
  // 8 -> 4 with k3 s2: the overhang is SAME's end pad.
  auto same = plan2({8, 4, 3, 2, 1, 0, 0}, PadSemantics::kMaxIgnored);
  ASSERT_TRUE(same);
  EXPECT_EQ(same->mode, WindowPadding::kSame);
  // 7 -> 3 with k3 s3: the last window reads 2 past the end; SAME would pad 1 before.
  auto overhang = plan2({7, 3, 3, 3, 1, 0, 0}, PadSemantics::kMaxIgnored);
  ASSERT_TRUE(overhang);
  EXPECT_EQ(overhang->mode, WindowPadding::kValid);
  EXPECT_EQ(overhang->pad_begin, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(overhang->pad_end, (std::vector<int64_t>{2, 2}));
  // Counted average pads cannot stand in for an overhang PyTorch does not count.
  EXPECT_FALSE(plan2({7, 3, 3, 3, 1, 0, 0}, PadSemantics::kAverageCounted));
}

TEST(TflitePadding, AveragePoolSemantics) {
  // Excluded pads: only SAME (which also excludes them) can express them.
  EXPECT_FALSE(plan2({8, 4, 3, 2, 1, 1, 1}, PadSemantics::kAverageExcluded));
  // Counted pads: never SAME (TFLite would exclude them), explicit zeros instead.
  auto counted = plan2({6, 6, 3, 1, 1, 1, 1}, PadSemantics::kAverageCounted);
  ASSERT_TRUE(counted);
  EXPECT_EQ(counted->mode, WindowPadding::kValid);
  EXPECT_EQ(counted->pad_begin, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(counted->pad_end, (std::vector<int64_t>{1, 1}));
  // Counted but unpadded: plain VALID.
  auto plain = plan2({8, 4, 2, 2, 1, 0, 0}, PadSemantics::kAverageCounted);
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->needs_pad_op());
}

}  // namespace
}  // namespace modex::tflite_io
