#include <gtest/gtest.h>

#include <cmath>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"

namespace modex {
namespace {

TEST(Half, EveryFiniteFloat16RoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    uint16_t bits = static_cast<uint16_t>(h);
    if ((bits & 0x7c00) == 0x7c00) continue;  // inf/nan
    float f = f16_to_f32(bits);
    EXPECT_EQ(f32_to_f16(f), bits) << "bits " << h;
  }
}

TEST(Half, KnownValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);          // overflow -> inf
  EXPECT_EQ(f32_to_f16(5.9604645e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie rounds to even
  EXPECT_FLOAT_EQ(f16_to_f32(0x3555), 0.333251953125f);
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(bf16_to_f32(0x3f80), 1.0f);
  float x = 1.0f + 1.0f / 256;  // exactly halfway between two bf16 values -> even
  EXPECT_EQ(f32_to_bf16(x), 0x3f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
}

TEST(Tensor, ZerosAndViews) {
  Tensor t = Tensor::zeros(DType::kFloat32, {2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  for (float v : t.values<float>()) EXPECT_EQ(v, 0.0f);
  auto buf = Buffer::allocate(16);
  EXPECT_THROW(Tensor::view(buf, 8, DType::kFloat32, {3}), Error);  // 12 bytes at 8 > 16
  EXPECT_NO_THROW(Tensor::view(buf, 8, DType::kFloat32, {2}));
  EXPECT_THROW(Tensor::zeros(DType::kFloat32, {-1}), Error);
  EXPECT_THROW(Tensor::zeros(DType::kFloat32, {1LL << 40, 1LL << 40}), Error);
}

TEST(Tensor, ReshapeKeepsDataAndChecksCount) {
  std::vector<float> v{1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_floats({2, 3}, v);
  Tensor r = t.reshaped({3, 2});
  EXPECT_EQ(r.raw(), t.raw());
  EXPECT_THROW(t.reshaped({4}), Error);
}

TEST(Tensor, ConvertsBetweenDtypes) {
  std::vector<float> v{1.5f, -2.0f, 65504.0f};
  Tensor t = Tensor::from_floats({3}, v);
  Tensor h = t.to(DType::kFloat16);
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(h.to_float_vector(), v);
  Tensor i = Tensor::from_int64s({2}, std::vector<int64_t>{(1LL << 53) + 1, -7});
  EXPECT_EQ(i.to_int64_vector()[0], (1LL << 53) + 1);  // no trip through double
  EXPECT_EQ(i.to(DType::kInt32).to_int64_vector()[1], -7);
}

TEST(Tensor, CloneIsDeepAndUniqueTracksSharing) {
  Tensor t = Tensor::zeros(DType::kFloat32, {4});
  EXPECT_TRUE(t.unique());
  Tensor shared = t;
  EXPECT_FALSE(t.unique());
  Tensor c = t.clone();
  c.data_mutable<float>()[0] = 3.0f;
  EXPECT_EQ(t.data<float>()[0], 0.0f);
}

TEST(Buffer, LargeBuffersAreWholeAlignedPagesTheCallerCanFill) {
  // 1 MiB and more come from a 2 MiB-aligned mapping (huge pages where the kernel grants them);
  // every byte is usable, the sizes are kept exact, and freeing them (munmap) leaves the rest.
  for (size_t bytes : {size_t{1} << 20, (size_t{2} << 20) - 64, size_t{2} << 20, (size_t{5} << 20) + 12345}) {
    auto buf = Buffer::allocate(bytes);
    ASSERT_EQ(buf->size(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
    std::memset(buf->data(), 0xA5, bytes);
    EXPECT_EQ(buf->data()[0], 0xA5);
    EXPECT_EQ(buf->data()[bytes - 1], 0xA5);
  }
  auto small = Buffer::allocate(1000);
  std::memset(small->data(), 1, 1000);
  EXPECT_EQ(small->data()[999], 1);
}

TEST(Buffer, LazyIsFilledOnFirstAccessOnly) {
  std::atomic<int> fills{0};
  auto lazy = Buffer::allocate_lazy(8, [&](uint8_t* out) {
    ++fills;
    for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(i);
  });
  Tensor t = Tensor::view(lazy, 4, DType::kUInt8, {4});
  Tensor r = t.reshaped({2, 2});
  EXPECT_EQ(fills, 0) << "making views must not read the data";
  std::vector<std::thread> readers;
  std::atomic<int> wrong{0};
  for (int k = 0; k < 8; ++k)
    readers.emplace_back([&] {
      if (r.data<uint8_t>()[3] != 7) ++wrong;
    });
  for (auto& th : readers) th.join();
  EXPECT_EQ(fills, 1);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(t.values<uint8_t>()[0], 4);
}

TEST(Buffer, LazyFillRetriesAfterAnError) {
  int calls = 0;
  auto lazy = Buffer::allocate_lazy(4, [&](uint8_t* out) {
    if (++calls == 1) throw Error("read failed");
    std::memset(out, 1, 4);
  });
  EXPECT_THROW(lazy->data(), Error);
  EXPECT_EQ(lazy->data()[3], 1);
  EXPECT_EQ(calls, 2);
}

TEST(Buffer, LazyBytesMoveOut) {
  Tensor t = Tensor::view(Buffer::allocate_lazy(3, [](uint8_t* out) { std::memcpy(out, "abc", 3); }), 0, DType::kUInt8, {3});
  EXPECT_EQ(t.take_bytes(), "abc");
  EXPECT_FALSE(t.defined());
}

}  // namespace
}  // namespace modex
