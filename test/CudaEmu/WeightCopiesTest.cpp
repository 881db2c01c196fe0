//===- WeightCopiesTest.cpp - bf16 copies of bf16-valued float weights ----===//
//
// In bf16 mode a float32 device weight whose values are all bf16 (kv_b of a
// bf16 checkpoint, or of a BF16 model's random weights) multiplies in the
// GEMMs as its exact bf16 copy (Device.cu's bf16Twin): the same GEMM, bit
// for bit, as a bf16 weight of those values; a weight with any other value,
// f32 mode and DS_CUDA_WEIGHT_COPIES=none keep the float32 SGEMM.
//
//===----------------------------------------------------------------------===//

#include "EmuPrelude.h"

#include "Cuda/CudaCommon.h"
#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace dsrt;
using dsrt::cuda::ComputeDtype;

namespace {

constexpr int64_t kRows = 16, kIn = 64, kOut = 48;

struct Products {
  std::vector<float> copy, bf16, f32; // the three weights' GEMMs
  size_t twins = 0;
};

/// x [16, 64] times three weights of one name's random values: BF16 read by
/// more than GEMMs (float32 on the device, bf16 values), BF16 GEMM-only
/// (bf16 on the device) and F32 (float values).
Products run(ComputeDtype dtype, const char *copies) {
  dsrt_test::SpecBuilder m;
  const char *name = "model.layers.0.self_attn.kv_b_proj.weight";
  const int64_t wCopy = m.add(name, kOut, kIn, DType::BF16);
  const int64_t wBf16 =
      m.add(name, kOut, kIn, DType::BF16, WeightSpec::kGemmOnly);
  const int64_t wF32 = m.add(name, kOut, kIn, DType::F32);
  Context ctx(m.finish(), 1);
  ctx.randomWeights(3);
  if (copies)
    setenv("DS_CUDA_WEIGHT_COPIES", copies, 1);
  else
    unsetenv("DS_CUDA_WEIGHT_COPIES");
  std::string error;
  const bool ok = cuda::prepare(ctx, dtype, &error);
  unsetenv("DS_CUDA_WEIGHT_COPIES");
  EXPECT_TRUE(ok) << error;
  Products p;
  if (!ok)
    return p;
  const std::vector<float> x = dsrt_test::randomVector(size_t(kRows * kIn), 5);
  auto product = [&](int64_t w) {
    std::vector<float> y(size_t(kRows * kOut), NAN);
    cuda::linearW(ctx, x.data(), kIn, kRows, kIn, w, kOut, y.data(), kOut,
                  ActQuant::None);
    return y;
  };
  p.copy = product(wCopy);
  p.bf16 = product(wBf16);
  p.f32 = product(wF32);
  for (const auto &t : cuda::state(ctx).twins)
    p.twins += t.second != nullptr;
  return p;
}

bool same(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(WeightCopies, Bf16ValuedFloatWeightMultipliesAsBf16) {
  // 16 rows: above the GEMV's 8, so cuBLASLt's GEMM.
  const Products p = run(ComputeDtype::BF16, nullptr);
  ASSERT_FALSE(p.copy.empty());
  EXPECT_EQ(p.twins, 1u); // the F32 weight's values are not all bf16
  EXPECT_TRUE(same(p.copy, p.bf16));
  EXPECT_FALSE(same(p.copy, p.f32));
  for (float v : p.copy)
    ASSERT_TRUE(std::isfinite(v));
}

TEST(WeightCopies, NoneAndF32ModeMultiplyTheFloat32Weight) {
  const Products withCopy = run(ComputeDtype::BF16, nullptr);
  const Products none = run(ComputeDtype::BF16, "none");
  const Products f32 = run(ComputeDtype::F32, nullptr);
  ASSERT_FALSE(none.copy.empty());
  ASSERT_FALSE(f32.copy.empty());
  EXPECT_EQ(none.twins, 0u);
  EXPECT_EQ(f32.twins, 0u);
  // The float32 SGEMM of the same (bf16) values: f32 mode's, and not the
  // bf16 GEMM's (whose input is rounded to bf16), but close to it.
  EXPECT_TRUE(same(none.copy, f32.copy));
  EXPECT_FALSE(same(none.copy, withCopy.copy));
  double err = 0, ref = 0;
  for (size_t i = 0; i < none.copy.size(); ++i) {
    err = std::max(err, double(std::fabs(none.copy[i] - withCopy.copy[i])));
    ref = std::max(ref, double(std::fabs(none.copy[i])));
  }
  EXPECT_LT(err, 2e-2 * ref);
  EXPECT_GT(err, 0.0);
}

} // namespace
