//===- WeightsTest.cpp - dtype conversion, FP8 dequant, weight loading ----===//

#include "Convert.h"
#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"

#include <cmath>
#include <map>

using namespace dsrt;
using namespace dsrt_test;

namespace {

uint32_t floatBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

/// Bitwise equality, with every NaN equal to every NaN.
::testing::AssertionResult sameFloat(float got, float want) {
  if ((std::isnan(got) && std::isnan(want)) || floatBits(got) == floatBits(want))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "got " << got << " (0x" << std::hex << floatBits(got) << "), want "
         << want << " (0x" << floatBits(want) << ")";
}

/// A reference decode of a sign/exponent/mantissa format from its definition
/// (value = (-1)^s * 2^(e - bias) * (1 + m / 2^mbits), subnormals
/// 2^(1 - bias) * m / 2^mbits), computed in double with ldexp rather than by
/// moving bits.
double referenceDecode(uint32_t bits, int ebits, int mbits, int bias) {
  uint32_t m = bits & ((1u << mbits) - 1);
  uint32_t e = (bits >> mbits) & ((1u << ebits) - 1);
  double sign = (bits >> (ebits + mbits)) & 1 ? -1.0 : 1.0;
  if (e == 0)
    return sign * std::ldexp(double(m), 1 - bias - mbits);
  return sign * std::ldexp(double((1u << mbits) + m), int(e) - bias - mbits);
}

TEST(Convert, E4M3AllCodes) {
  for (int code = 0; code < 256; ++code) {
    float got = e4m3ToFloat(uint8_t(code));
    if ((code & 0x7F) == 0x7F) { // S.1111.111: the only NaNs, no infinities
      EXPECT_TRUE(std::isnan(got)) << "code " << code;
      continue;
    }
    double want = referenceDecode(uint32_t(code), 4, 3, 7);
    EXPECT_TRUE(sameFloat(got, float(want))) << "code 0x" << std::hex << code;
    EXPECT_TRUE(std::isfinite(got));
  }
  // Landmarks of e4m3fn.
  EXPECT_EQ(e4m3ToFloat(0x7E), 448.0f);  // largest finite
  EXPECT_EQ(e4m3ToFloat(0xFE), -448.0f);
  EXPECT_EQ(e4m3ToFloat(0x78), 256.0f);  // e = 15 is a normal exponent
  EXPECT_EQ(e4m3ToFloat(0x38), 1.0f);
  EXPECT_EQ(e4m3ToFloat(0x08), 0x1p-6f); // smallest normal
  EXPECT_EQ(e4m3ToFloat(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(e4m3ToFloat(0x01), 0x1p-9f); // smallest subnormal
  EXPECT_EQ(floatBits(e4m3ToFloat(0x00)), 0u);
  EXPECT_EQ(floatBits(e4m3ToFloat(0x80)), 0x80000000u); // -0
}

TEST(Convert, BF16EdgeCases) {
  EXPECT_EQ(bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0xC000), -2.0f);
  EXPECT_EQ(bf16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(floatBits(bf16ToFloat(0x8000)), 0x80000000u);
  EXPECT_EQ(bf16ToFloat(0x0001), 0x1p-133f); // subnormal
  EXPECT_EQ(bf16ToFloat(0x7F7F), 0x1.FEp127f); // largest finite
  EXPECT_EQ(bf16ToFloat(0x7F80), INFINITY);
  EXPECT_EQ(bf16ToFloat(0xFF80), -INFINITY);
  EXPECT_TRUE(std::isnan(bf16ToFloat(0x7FC0)));
  EXPECT_TRUE(std::isnan(bf16ToFloat(0xFF81)));
}

TEST(Convert, F16AllCodes) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float got = f16ToFloat(uint16_t(h));
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 31) {
      if (m == 0)
        EXPECT_EQ(got, (h & 0x8000) ? -INFINITY : INFINITY) << h;
      else
        EXPECT_TRUE(std::isnan(got)) << h;
      continue;
    }
    ASSERT_TRUE(sameFloat(got, float(referenceDecode(h, 5, 10, 15))))
        << "code 0x" << std::hex << h;
  }
  EXPECT_EQ(f16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(f16ToFloat(0x0001), 0x1p-24f);   // smallest subnormal
  EXPECT_EQ(f16ToFloat(0x03FF), 1023 * 0x1p-24f);
  EXPECT_EQ(f16ToFloat(0x0400), 0x1p-14f);   // smallest normal
  EXPECT_EQ(f16ToFloat(0x7BFF), 65504.0f);   // largest finite
  EXPECT_EQ(f16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(floatBits(f16ToFloat(0x8000)), 0x80000000u);
  // NaN payload survives (quiet bit included).
  EXPECT_EQ(floatBits(f16ToFloat(0x7E01)), 0x7FC02000u);
}

TEST(Convert, UnalignedSource) {
  // Tensors in a mapped file need not be aligned for their dtype.
  std::string buf(1, 'x');
  float f[3] = {1.5f, -2.0f, 1e-30f};
  buf.append(reinterpret_cast<const char *>(f), sizeof f);
  float out[3];
  convertToFloat(DType::F32, reinterpret_cast<const uint8_t *>(buf.data() + 1),
                 3, out);
  EXPECT_EQ(std::memcmp(out, f, sizeof f), 0);

  std::string h("x\x80\x3f\x00\xc0", 5); // 1.0, -2.0 as bf16 at offset 1
  convertToFloat(DType::BF16, reinterpret_cast<const uint8_t *>(h.data() + 1),
                 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
}

TEST(Convert, E4M3BlockScalesWithPartialBlocks) {
  // 130 x 200: blocks of 128 rows x 128 cols, the last ones partial (2 rows,
  // 72 cols), so scales are [2, 2].
  const int64_t rows = 130, cols = 200;
  std::vector<uint8_t> q(rows * cols);
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = uint8_t((i * 37 + 11) % 256 == 0x7F ? 0x3A : (i * 37 + 11) % 256);
  const float scales[4] = {0.5f, 2.0f, 0.25f, 1024.0f};
  std::vector<float> out(rows * cols, -1.0f);
  dequantE4M3(q.data(), cols, scales, 0, 100, out.data());
  dequantE4M3(q.data(), cols, scales, 100, rows, out.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint8_t code = q[r * cols + c];
      float s = scales[(r >= 128) * 2 + (c >= 128)];
      float want = (code & 0x7F) == 0x7F
                       ? NAN
                       : float(referenceDecode(code, 4, 3, 7)) * s;
      ASSERT_TRUE(sameFloat(out[r * cols + c], want)) << r << "," << c;
    }
}

TEST(Convert, RandomWeightsAreDeterministic) {
  WeightSpec w2{"model.layers.0.mlp.up_proj.weight", 2, {96, 48}, DType::BF16};
  WeightSpec norm{"model.layers.0.input_layernorm.weight", 1, {4096, 0},
                  DType::BF16};
  WeightSpec bias{"model.layers.3.mlp.gate.e_score_correction_bias", 1,
                  {4096, 0}, DType::F32};
  auto fill = [](const WeightSpec &w, uint64_t seed) {
    int64_t n = w.rank == 2 ? w.shape[0] * w.shape[1] : w.shape[0];
    std::vector<float> v(n);
    randomWeightRange(w, seed, 0, n, v.data());
    return v;
  };
  std::vector<float> a = fill(w2, 7);
  EXPECT_EQ(a, fill(w2, 7));
  EXPECT_NE(a, fill(w2, 8));
  // Any split of the range gives the same values.
  std::vector<float> split(a.size());
  randomWeightRange(w2, 7, 1000, int64_t(a.size()), split.data());
  randomWeightRange(w2, 7, 0, 1000, split.data());
  EXPECT_EQ(a, split);
  // Another name, another stream.
  WeightSpec other = w2;
  other.name = "model.layers.1.mlp.up_proj.weight";
  EXPECT_NE(a, fill(other, 7));

  // Distributions: uniform(-a, a) with a = sqrt(3 / cols) has variance
  // 1 / cols.
  double limit = std::sqrt(3.0 / 48), sum = 0, sq = 0;
  for (float x : a) {
    EXPECT_LE(std::fabs(x), limit);
    sum += x;
    sq += double(x) * x;
  }
  EXPECT_NEAR(sum / a.size(), 0.0, 0.01);
  EXPECT_NEAR(sq / a.size(), 1.0 / 48, 0.1 / 48);
  for (float x : fill(norm, 3)) {
    EXPECT_GE(x, 0.9f);
    EXPECT_LE(x, 1.1f);
  }
  double biasMax = 0;
  for (float x : fill(bias, 3)) {
    EXPECT_LE(std::fabs(x), 0.05f);
    biasMax = std::max(biasMax, double(std::fabs(x)));
  }
  EXPECT_GT(biasMax, 0.04); // really spread over the range
}

//===----------------------------------------------------------------------===//
// Context::loadWeights / randomWeights
//===----------------------------------------------------------------------===//

ModelSpec specOf(const std::vector<WeightSpec> &weights) {
  ModelSpec s{};
  s.name = "test";
  s.vocabSize = 8;
  s.hiddenSize = 4;
  s.weights = weights.data();
  s.numWeights = int64_t(weights.size());
  s.maxSeqLen = 4;
  s.arenaBytes = 64;
  return s;
}

std::string bf16Bytes(const std::vector<float> &v) {
  std::string out;
  for (float f : v) {
    uint32_t b = floatBits(f);
    out.push_back(char((b >> 16) & 0xFF));
    out.push_back(char(b >> 24));
  }
  return out;
}

TEST(Weights, LoadsEachDType) {
  TempDir dir;
  const int64_t rows = 130, cols = 200; // partial FP8 blocks
  std::string fp8(rows * cols, '\0');
  for (int64_t i = 0; i < rows * cols; ++i)
    fp8[i] = char(0x30 + i % 16); // 0.5 .. 1.875 and 2.0 .. 3.75 (finite)
  std::vector<float> scale{1.0f, 2.0f, 4.0f, 8.0f};
  // Large enough (> 65536 elements) for the parallel path.
  std::vector<float> big(300 * 300);
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = float(int(i % 256) - 128) / 8.0f; // exact in bf16
  writeSafetensors(
      dir.file("model.safetensors"),
      {{"f32", "F32", {3}, rawBytes(std::vector<float>{1.5f, -2.5f, 3e-3f})},
       {"bf16", "BF16", {300, 300}, bf16Bytes(big)},
       {"f16", "F16", {2}, rawBytes(std::vector<uint16_t>{0x3C00, 0x0001})},
       {"q.weight", "F8_E4M3", {rows, cols}, fp8},
       {"q.weight_scale_inv", "F32", {2, 2}, rawBytes(scale)},
       {"unused", "I64", {1}, std::string(8, '\0')}});
  // An F8_E4M3 tensor is kept in FP8 when the model declares it F8E4M3
  // (weight 0), dequantized to float32 otherwise (weight 4).
  std::vector<WeightSpec> ws = {{"q.weight", 2, {rows, cols}, DType::F8E4M3},
                                {"f16", 1, {2, 0}, DType::F16},
                                {"bf16", 2, {300, 300}, DType::BF16},
                                {"f32", 1, {3, 0}, DType::F32},
                                {"q.weight", 2, {rows, cols}, DType::BF16}};
  ModelSpec spec = specOf(ws);
  Context ctx(spec, 2);
  std::string error;
  ASSERT_TRUE(ctx.loadWeights(dir.file("model.safetensors").c_str(), &error))
      << error;

  const float *f32 = ctx.weight(3);
  EXPECT_EQ(f32[0], 1.5f);
  EXPECT_EQ(f32[2], 3e-3f);
  EXPECT_EQ(ctx.weight(1)[0], 1.0f);
  EXPECT_EQ(ctx.weight(1)[1], 0x1p-24f);
  EXPECT_EQ(std::memcmp(ctx.weight(2), big.data(), big.size() * 4), 0);
  EXPECT_EQ(ctx.weight(0), nullptr);
  const Fp8Weight *kept = ctx.fp8Weight(0);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->rows, rows);
  EXPECT_EQ(kept->cols, cols);
  EXPECT_EQ(std::memcmp(kept->codes, fp8.data(), fp8.size()), 0);
  EXPECT_EQ(std::memcmp(kept->scaleInv, scale.data(), 16), 0);
  for (int i = 1; i < 5; ++i)
    EXPECT_EQ(ctx.fp8Weight(i), nullptr) << i;
  const float *q = ctx.weight(4);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float want = e4m3ToFloat(uint8_t(0x30 + (r * cols + c) % 16)) *
                   scale[(r >= 128) * 2 + (c >= 128)];
      ASSERT_EQ(q[r * cols + c], want) << r << "," << c;
    }
}

TEST(Weights, LoadsFromIndexDirectory) {
  TempDir dir;
  writeSafetensors(dir.file("a.safetensors"),
                   {{"x", "F32", {2}, rawBytes(std::vector<float>{1, 2})}});
  writeSafetensors(dir.file("b.safetensors"),
                   {{"y", "BF16", {1}, bf16Bytes({-4.0f})}});
  writeBytes(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})");
  std::vector<WeightSpec> ws = {{"y", 1, {1, 0}, DType::BF16},
                                {"x", 1, {2, 0}, DType::F32}};
  ModelSpec spec = specOf(ws);
  Context ctx(spec, 1);
  std::string error;
  ASSERT_TRUE(ctx.loadWeights(dir.path().c_str(), &error)) << error;
  EXPECT_EQ(ctx.weight(0)[0], -4.0f);
  EXPECT_EQ(ctx.weight(1)[1], 2.0f);
}

/// Loads `ws` from a file of `tensors`; expects failure, returns the error.
std::string loadError(const TempDir &dir, const std::vector<RawTensor> &tensors,
                      const std::vector<WeightSpec> &ws) {
  std::string path = dir.file("m.safetensors");
  writeSafetensors(path, tensors);
  ModelSpec spec = specOf(ws);
  Context ctx(spec, 1);
  std::string error;
  EXPECT_FALSE(ctx.loadWeights(path.c_str(), &error));
  return error;
}

TEST(Weights, Errors) {
  TempDir dir;
  const std::string p = dir.file("m.safetensors");
  const std::string f32x6 = std::string(24, '\0');
  const WeightSpec w23{"w", 2, {2, 3}, DType::F32};

  EXPECT_EQ(loadError(dir, {{"v", "F32", {2, 3}, f32x6}}, {w23}),
            p + ": tensor 'w' not found");
  EXPECT_EQ(loadError(dir, {{"w", "F32", {3, 2}, f32x6}}, {w23}),
            p + ": tensor 'w' has shape [3, 2]; the model expects [2, 3]");
  EXPECT_EQ(loadError(dir, {{"w", "F32", {6}, f32x6}}, {w23}),
            p + ": tensor 'w' has shape [6]; the model expects [2, 3]");
  EXPECT_EQ(loadError(dir, {{"w", "I32", {2, 3}, f32x6}}, {w23}),
            p + ": tensor 'w' has unsupported dtype I32 (supported: F32, "
                "BF16, F16, F8_E4M3)");

  const std::string fp8 = std::string(6, '\x38');
  EXPECT_EQ(loadError(dir, {{"w", "F8_E4M3", {2, 3}, fp8}}, {w23}),
            p + ": tensor 'w_scale_inv' not found (the block scales of the "
                "F8_E4M3 tensor 'w')");
  EXPECT_EQ(loadError(dir,
                      {{"w", "F8_E4M3", {2, 3}, fp8},
                       {"w_scale_inv", "F32", {1, 2}, std::string(8, '\0')}},
                      {w23}),
            p + ": tensor 'w_scale_inv' has shape [1, 2]; the block scales "
                "of 'w' [2, 3] need [1, 1]");
  EXPECT_EQ(loadError(dir,
                      {{"w", "F8_E4M3", {2, 3}, fp8},
                       {"w_scale_inv", "I8", {1, 1}, std::string(1, '\0')}},
                      {w23}),
            p + ": tensor 'w_scale_inv' has dtype I8; block scales must be "
                "F32, BF16 or F16");

  std::string missing = dir.file("nothing.safetensors");
  std::vector<WeightSpec> ws = {w23};
  ModelSpec spec = specOf(ws);
  Context ctx(spec, 1);
  std::string error;
  EXPECT_FALSE(ctx.loadWeights(missing.c_str(), &error));
  EXPECT_EQ(error, missing + ": No such file or directory");
}

TEST(Weights, RandomWeightsIndependentOfOrderAndThreads) {
  std::vector<WeightSpec> ws = {
      {"model.embed_tokens.weight", 2, {512, 256}, DType::BF16}, // parallel
      {"model.norm.weight", 1, {256, 0}, DType::BF16},
      {"model.layers.0.mlp.gate.e_score_correction_bias", 1, {16, 0},
       DType::F32}};
  std::vector<WeightSpec> reversed(ws.rbegin(), ws.rend());
  ModelSpec s1 = specOf(ws), s2 = specOf(reversed);
  Context one(s1, 1), four(s2, 4);
  one.randomWeights(42);
  four.randomWeights(42);
  for (int i = 0; i < 3; ++i) {
    int j = 2 - i;
    int64_t n = ws[i].rank == 2 ? ws[i].shape[0] * ws[i].shape[1]
                                : ws[i].shape[0];
    EXPECT_EQ(std::memcmp(one.weight(i), four.weight(j), n * 4), 0)
        << ws[i].name;
  }
  EXPECT_NEAR(one.weight(1)[0], 1.0f, 0.1f);
  one.randomWeights(43);
  EXPECT_NE(one.weight(0)[0], four.weight(2)[0]);
}

} // namespace
