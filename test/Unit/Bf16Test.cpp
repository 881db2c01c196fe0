//===- Bf16Test.cpp - bf16 weight storage and the GEMMs on it -------------===//
//
// floatToBf16 against a brute-force nearest search; which weights are kept
// in bf16 (2-D kGemmOnly weights from BF16 checkpoint tensors, or random for
// BF16-declared ones) and what that saves; and the GEMM kernels on bf16
// weights (linearW, gatedUp, moeGate, moeExpertsW) against the same values
// kept in float32, bit for bit, for 1 and 2 threads.
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "ContextImpl.h"
#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace dsrt;
using namespace dsrt_test;

namespace {

using Model = dsrt_test::SpecBuilder;

constexpr uint32_t kGemm = WeightSpec::kGemmOnly;

uint32_t floatBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

//===----------------------------------------------------------------------===//
// floatToBf16
//===----------------------------------------------------------------------===//

/// The nearest bf16 (ties to the even code) of a finite float, by comparing
/// the two truncation neighbours in double: independent of the bit trick.
uint16_t bruteForceBf16(float v) {
  const uint16_t lo = uint16_t(floatBits(v) >> 16); // toward zero
  const uint16_t hi = uint16_t(lo + 1);             // away from zero
  const double a = std::fabs(double(v));
  const double dl = std::fabs(std::fabs(double(bf16ToFloat(lo))) - a);
  const double dh = std::fabs(std::fabs(double(bf16ToFloat(hi))) - a);
  if (dl < dh)
    return lo;
  if (dh < dl)
    return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16Convert, RoundsToNearestEven) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(floatToBf16(-2.5f), 0xC020);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3F82);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(floatToBf16(0x1p-149f), 0x0000); // below half a bf16 subnormal
  const uint16_t nan = floatToBf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(bf16ToFloat(nan)));
  // A NaN whose payload is in the low bits only stays a NaN.
  float lowNan;
  uint32_t bits = 0xFF800001u;
  std::memcpy(&lowNan, &bits, 4);
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(lowNan))));
  EXPECT_TRUE(std::signbit(bf16ToFloat(floatToBf16(lowNan))));
  for (int c = 0; c < 0x10000; ++c) { // every bf16 value is kept
    float v = bf16ToFloat(uint16_t(c));
    if (!std::isnan(v)) {
      ASSERT_EQ(floatToBf16(v), c);
    }
  }
}

TEST(Bf16Convert, MatchesBruteForceOnRandomFloats) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0xFFFFFFFFu);
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(gen);
    if ((b & 0x7F800000u) == 0x7F800000u)
      continue; // inf / NaN: above
    if (i % 4 == 0)
      b = (b & 0xFFFF0000u) | 0x8000u; // exact ties
    float v;
    std::memcpy(&v, &b, 4);
    if (std::fabs(v) >= 0x1.fefffep127f)
      continue; // rounds to infinity: above
    ASSERT_EQ(floatToBf16(v), bruteForceBf16(v)) << std::hex << b;
  }
}

//===----------------------------------------------------------------------===//
// Storage
//===----------------------------------------------------------------------===//




std::vector<uint16_t> toBf16(const std::vector<float> &v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = floatToBf16(v[i]);
  return out;
}

TEST(Bf16Weights, KeptExactlyForGemmOnlyBf16CheckpointTensors) {
  TempDir dir;
  const int64_t rows = 300, cols = 260; // > 65536 elements: parallel copy
  const std::vector<uint16_t> a = toBf16(randomVector(rows * cols, 1));
  const std::vector<float> b = randomVector(rows * cols, 2);
  std::vector<uint16_t> c(rows * cols);
  for (size_t i = 0; i < c.size(); ++i)
    c[i] = uint16_t(0x3C00 + i % 512); // F16 1.0 ..
  const std::vector<uint16_t> n = toBf16(randomVector(cols, 3));
  writeSafetensors(dir.file("model.safetensors"),
                   {{"a", "BF16", {rows, cols}, rawBytes(a)},
                    {"b", "F32", {rows, cols}, rawBytes(b)},
                    {"c", "F16", {rows, cols}, rawBytes(c)},
                    {"n", "BF16", {cols}, rawBytes(n)}});
  Model m;
  const int64_t kept = m.add("a", rows, cols, DType::BF16, kGemm);
  const int64_t plain = m.add("a", rows, cols, DType::BF16); // not GEMM-only
  const int64_t f32 = m.add("b", rows, cols, DType::BF16, kGemm);
  const int64_t f16 = m.add("c", rows, cols, DType::F16, kGemm);
  const int64_t fp8 = m.add("a", rows, cols, DType::F8E4M3, kGemm);
  const int64_t oneD = m.add("n", cols, 0, DType::BF16, kGemm);
  // The checkpoint's dtype decides, not the declared one.
  const int64_t declF32 = m.add("a", rows, cols, DType::F32, kGemm);
  for (int threads : {1, 2}) {
    Context ctx(m.finish(), threads);
    std::string error;
    ASSERT_TRUE(ctx.loadWeights(dir.file("model.safetensors").c_str(), &error))
        << error;
    for (int64_t i : {kept, declF32}) {
      EXPECT_EQ(ctx.weight(i), nullptr) << i;
      EXPECT_EQ(ctx.fp8Weight(i), nullptr) << i;
      ASSERT_NE(ctx.bf16Weight(i), nullptr) << i;
      EXPECT_EQ(std::memcmp(ctx.bf16Weight(i), a.data(), a.size() * 2), 0);
    }
    for (int64_t i : {plain, f32, f16, oneD}) {
      EXPECT_NE(ctx.weight(i), nullptr) << i;
      EXPECT_EQ(ctx.bf16Weight(i), nullptr) << i;
    }
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_EQ(floatBits(ctx.weight(plain)[i]), floatBits(bf16ToFloat(a[i])));
      ASSERT_EQ(floatBits(ctx.weight(f32)[i]), floatBits(b[i]));
      ASSERT_EQ(floatBits(ctx.weight(f16)[i]), floatBits(f16ToFloat(c[i])));
    }
    EXPECT_EQ(ctx.weight(oneD)[5], bf16ToFloat(n[5]));
    EXPECT_EQ(ctx.bf16Weight(fp8), nullptr);
    EXPECT_NE(ctx.fp8Weight(fp8), nullptr);
    EXPECT_EQ(ctx.bf16Weight(-1), nullptr);
    EXPECT_EQ(ctx.bf16Weight(100), nullptr);
    // 2 x bf16, 3 x float32, the 1-D float, FP8 codes + 3x3 scales.
    const int64_t e = rows * cols;
    EXPECT_EQ(ctx.weightBytes(), 2 * 2 * e + 3 * 4 * e + 4 * cols + e + 9 * 4);
  }
}

TEST(Bf16Weights, FailedLoadDropsBf16Weights) {
  TempDir dir;
  const std::vector<uint16_t> a = toBf16(randomVector(6, 1));
  writeSafetensors(dir.file("m.safetensors"),
                   {{"a", "BF16", {2, 3}, rawBytes(a)}});
  Model good, bad;
  good.add("a", 2, 3, DType::BF16, kGemm);
  bad.add("a", 2, 3, DType::BF16, kGemm);
  bad.add("missing", 2, 3, DType::BF16, kGemm);
  Context ctx(good.finish(), 1);
  std::string error;
  ASSERT_TRUE(ctx.loadWeights(dir.file("m.safetensors").c_str(), &error));
  ASSERT_NE(ctx.bf16Weight(0), nullptr);
  EXPECT_EQ(ctx.weightBytes(), 12);
  ctx.randomWeights(1); // replaces them
  ASSERT_NE(ctx.bf16Weight(0), nullptr);
  EXPECT_NE(std::memcmp(ctx.bf16Weight(0), a.data(), 12), 0);
  Context ctx2(bad.finish(), 1);
  ctx2.randomWeights(1);
  ASSERT_NE(ctx2.bf16Weight(0), nullptr);
  EXPECT_FALSE(ctx2.loadWeights(dir.file("m.safetensors").c_str(), &error));
  EXPECT_NE(error.find("missing"), std::string::npos) << error;
  EXPECT_EQ(ctx2.bf16Weight(0), nullptr);
  EXPECT_EQ(ctx2.weightBytes(), 0);
}

TEST(Bf16Weights, RandomWeightsOfBf16AreBf16Values) {
  Model m;
  const int64_t kept =
      m.add("model.layers.0.mlp.up_proj.weight", 300, 260, DType::BF16, kGemm);
  const int64_t plain =
      m.add("model.layers.0.mlp.up_proj.weight", 300, 260, DType::BF16);
  const int64_t f32 =
      m.add("model.layers.0.mlp.up_proj.weight", 300, 260, DType::F32, kGemm);
  const int64_t f16 =
      m.add("model.layers.0.mlp.up_proj.weight", 300, 260, DType::F16, kGemm);
  const int64_t fp8 = m.add("model.layers.0.mlp.up_proj.weight", 300, 260,
                            DType::F8E4M3, kGemm);
  const int64_t norm = m.add("model.norm.weight", 260, 0, DType::BF16, kGemm);
  const int64_t normF32 = m.add("model.norm.weight", 260, 0, DType::F32);
  Context one(m.finish(), 1), two(m.finish(), 2);
  one.randomWeights(9);
  two.randomWeights(9);
  const int64_t e = 300 * 260;
  for (Context *ctx : {&one, &two}) {
    // Only a 2-D GEMM-only BF16 weight is kept in bf16.
    ASSERT_NE(ctx->bf16Weight(kept), nullptr);
    EXPECT_EQ(ctx->weight(kept), nullptr);
    for (int64_t i : {plain, f32, f16, norm, normF32}) {
      EXPECT_EQ(ctx->bf16Weight(i), nullptr) << i;
      EXPECT_NE(ctx->weight(i), nullptr) << i;
    }
    EXPECT_EQ(ctx->bf16Weight(fp8), nullptr);
    EXPECT_NE(ctx->fp8Weight(fp8), nullptr);
    // F32 and F16 weights hold the float random values; BF16 ones those
    // values rounded to nearest even, kept in bf16 or as float32.
    EXPECT_EQ(std::memcmp(ctx->weight(f16), ctx->weight(f32), e * 4), 0);
    bool anyRounded = false;
    for (int64_t i = 0; i < e; ++i) {
      const float v = ctx->weight(f32)[i];
      ASSERT_EQ(ctx->bf16Weight(kept)[i], floatToBf16(v)) << i;
      ASSERT_EQ(ctx->weight(plain)[i], bf16ToFloat(floatToBf16(v))) << i;
      anyRounded |= bf16ToFloat(floatToBf16(v)) != v;
    }
    EXPECT_TRUE(anyRounded);
    bool normRounded = false;
    for (int64_t i = 0; i < 260; ++i) {
      const float v = ctx->weight(normF32)[i];
      ASSERT_EQ(ctx->weight(norm)[i], bf16ToFloat(floatToBf16(v))) << i;
      normRounded |= bf16ToFloat(floatToBf16(v)) != v;
    }
    EXPECT_TRUE(normRounded);
  }
  EXPECT_EQ(std::memcmp(one.bf16Weight(kept), two.bf16Weight(kept), e * 2), 0);
  EXPECT_EQ(std::memcmp(one.weight(plain), two.weight(plain), e * 4), 0);
}

TEST(Bf16Weights, GemmOnlyStorageHalvesBytes) {
  Model gemmOnly, plain;
  for (Model *m : {&gemmOnly, &plain}) {
    const uint32_t f = m == &gemmOnly ? kGemm : 0;
    m->add("model.layers.0.mlp.gate_proj.weight", 512, 256, DType::BF16, f);
    m->add("model.layers.0.mlp.up_proj.weight", 512, 256, DType::BF16, f);
    m->add("model.layers.0.mlp.down_proj.weight", 256, 512, DType::BF16, f);
    m->add("lm_head.weight", 1000, 256, DType::BF16, f);
  }
  Context a(gemmOnly.finish(), 2), b(plain.finish(), 2);
  a.randomWeights(1);
  b.randomWeights(1);
  const int64_t elements = 3 * 512 * 256 + 1000 * 256;
  EXPECT_EQ(b.weightBytes(), 4 * elements);
  EXPECT_EQ(a.weightBytes(), 2 * elements);
  EXPECT_EQ(a.impl().bf16.size(), 4u);
  EXPECT_TRUE(a.impl().storage[0].empty());
  EXPECT_EQ(a.impl().storage[0].capacity(), 0u);
}

//===----------------------------------------------------------------------===//
// Kernels: bf16 weights against the same values in float32, bit for bit
//===----------------------------------------------------------------------===//

/// Makes float32 weight `f` hold exactly the values of bf16 weight `h` (same
/// shape), as a float32 load of the same BF16 checkpoint tensor would.
void twin(Context &ctx, int64_t h, int64_t f) {
  const WeightSpec &w = ctx.spec().weights[h];
  const uint16_t *bits = ctx.bf16Weight(h);
  ASSERT_NE(bits, nullptr);
  std::vector<float> &dst = ctx.impl().storage[size_t(f)];
  ASSERT_EQ(int64_t(dst.size()), w.shape[0] * w.shape[1]);
  ASSERT_EQ(ctx.weight(f), dst.data());
  for (size_t i = 0; i < dst.size(); ++i)
    dst[i] = bf16ToFloat(bits[i]);
}

/// A bf16 weight and its float32 twin of [out, in].
struct Pair {
  int64_t h, f;
};

Pair addPair(Model &m, const std::string &name, int64_t out, int64_t in) {
  Pair p;
  p.h = m.add(name, out, in, DType::BF16, kGemm);
  p.f = m.add(name, out, in, DType::BF16);
  return p;
}

std::vector<float> runLinearW(Context &ctx, int64_t index, const float *x,
                              int64_t ldx, int64_t n, int64_t in, int64_t out,
                              ActQuant act) {
  const int64_t ldy = out + 3;
  std::vector<float> y(n * ldy, 12345.0f);
  cpu::linearW(ctx, x, ldx, n, in, index, out, y.data(), ldy, act);
  return y;
}

TEST(Bf16Kernels, LinearWEqualsFloat32BitForBit) {
  // Shapes around gemm's tiles: 64-column tiles for n <= 16, 128..256
  // otherwise, 128-row tiles past 192 rows; partial tiles everywhere.
  const std::pair<int64_t, int64_t> shapes[] = {
      {300, 200}, {197, 130}, {1000, 96}, {64, 33}, {5, 7}};
  std::vector<std::vector<float>> perThreads[2];
  for (int threads : {1, 2}) {
    for (auto shape : shapes) {
      const int64_t out = shape.first, in = shape.second;
      Model m;
      Pair p = addPair(m, "model.layers.0.self_attn.o_proj.weight", out, in);
      Context ctx(m.finish(), threads);
      ctx.randomWeights(3);
      twin(ctx, p.h, p.f);
      for (int64_t n : {1, 5, 16, 17, 193, 300}) {
        const int64_t ldx = in + 5;
        std::vector<float> x = randomVector(n * ldx, uint32_t(n + out));
        std::vector<float> ref(n * (out + 3), 12345.0f);
        cpu::linear(ctx, x.data(), ldx, n, in, ctx.weight(p.f), out,
                    ref.data(), out + 3);
        for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
          auto got = runLinearW(ctx, p.h, x.data(), ldx, n, in, out, act);
          auto want = runLinearW(ctx, p.f, x.data(), ldx, n, in, out, act);
          ASSERT_EQ(got, want) << out << "x" << in << " n " << n;
          ASSERT_EQ(got, ref) << out << "x" << in << " n " << n;
          perThreads[threads - 1].push_back(got);
        }
      }
    }
  }
  EXPECT_EQ(perThreads[0], perThreads[1]);
}

TEST(Bf16Kernels, GatedUpEqualsFloat32AndUnfusedBitForBit) {
  const int64_t inter = 300, hidden = 200;
  Model m;
  Pair g = addPair(m, "mlp.gate_proj.weight", inter, hidden);
  Pair u = addPair(m, "mlp.up_proj.weight", inter, hidden);
  m.finish();
  std::vector<std::vector<float>> perThreads[2];
  for (int threads : {1, 2}) {
    Context ctx(m.spec, threads);
    ctx.randomWeights(6);
    twin(ctx, g.h, g.f);
    twin(ctx, u.h, u.f);
    for (int64_t n : {1, 16, 20, 300}) {
      const int64_t ldx = hidden + 1, ldy = inter + 2;
      auto x = randomVector(n * ldx, uint32_t(100 + n), -2, 2);
      // Unfused, all float32: the reference.
      std::vector<float> gs(n * inter), us(n * inter), ref(n * ldy, 12345.0f);
      cpu::linearW(ctx, x.data(), ldx, n, hidden, g.f, inter, gs.data(), inter,
                   ActQuant::None);
      cpu::linearW(ctx, x.data(), ldx, n, hidden, u.f, inter, us.data(), inter,
                   ActQuant::None);
      cpu::swiglu(ctx, gs.data(), inter, us.data(), inter, n, inter,
                  ref.data(), ldy);
      for (auto gu : {std::pair<int64_t, int64_t>{g.h, u.h},
                      {g.f, u.f},
                      {g.h, u.f},
                      {g.f, u.h}})
        for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
          std::vector<float> y(n * ldy, 12345.0f);
          cpu::gatedUp(ctx, x.data(), ldx, n, hidden, gu.first, gu.second,
                       inter, y.data(), ldy, act);
          EXPECT_EQ(y, ref) << "n " << n << " weights " << gu.first << ","
                            << gu.second;
          perThreads[threads - 1].push_back(y);
        }
    }
  }
  EXPECT_EQ(perThreads[0], perThreads[1]);
}


TEST(Bf16Kernels, MoeGateEqualsFloat32BitForBit) {
  const int64_t experts = 16, hidden = 200;
  Model m;
  Pair w = addPair(m, "mlp.gate.weight", experts, hidden);
  const int64_t bias =
      m.add("mlp.gate.e_score_correction_bias", experts, 0, DType::F32);
  m.finish();
  std::vector<std::vector<float>> perThreads[2];
  for (int threads : {1, 2}) {
    Context ctx(m.spec, threads);
    ctx.randomWeights(7);
    twin(ctx, w.h, w.f);
    MoERouting r = v3Routing(experts);
    for (int64_t n : {1, 40}) {
      auto x = randomVector(n * (hidden + 2), uint32_t(12 + n));
      std::vector<float> logits(n * experts), w0(n * 4), w1(n * 4),
          w2(n * 4);
      std::vector<int32_t> i0(n * 4), i1(n * 4), i2(n * 4);
      cpu::linear(ctx, x.data(), hidden + 2, n, hidden, ctx.weight(w.f),
                  experts, logits.data(), experts);
      cpu::moeRoute(ctx, logits.data(), experts, n, ctx.weight(bias), r,
                    i0.data(), w0.data());
      cpu::moeGate(ctx, x.data(), hidden + 2, n, hidden, w.h, ctx.weight(bias),
                   r, i1.data(), w1.data());
      cpu::moeGate(ctx, x.data(), hidden + 2, n, hidden, w.f, ctx.weight(bias),
                   r, i2.data(), w2.data());
      EXPECT_EQ(i0, i1);
      EXPECT_EQ(w0, w1);
      EXPECT_EQ(i1, i2);
      EXPECT_EQ(w1, w2);
      perThreads[threads - 1].push_back(w1);
    }
  }
  EXPECT_EQ(perThreads[0], perThreads[1]);
}

struct ExpertModel {
  Model m;
  int64_t experts, hidden, inter;
  std::vector<int64_t> g[2], u[2], d[2]; // [0] float32 twins, [1] bf16
  ExpertModel(int64_t experts, int64_t hidden, int64_t inter)
      : experts(experts), hidden(hidden), inter(inter) {
    for (int64_t e = 0; e < experts; ++e) {
      std::string p = "mlp.experts." + std::to_string(e) + ".";
      Pair pg = addPair(m, p + "gate_proj.weight", inter, hidden);
      Pair pu = addPair(m, p + "up_proj.weight", inter, hidden);
      Pair pd = addPair(m, p + "down_proj.weight", hidden, inter);
      g[0].push_back(pg.f);
      g[1].push_back(pg.h);
      u[0].push_back(pu.f);
      u[1].push_back(pu.h);
      d[0].push_back(pd.f);
      d[1].push_back(pd.h);
    }
    m.finish();
  }
  void twins(Context &ctx) const {
    for (int64_t e = 0; e < experts; ++e) {
      twin(ctx, g[1][e], g[0][e]);
      twin(ctx, u[1][e], u[0][e]);
      twin(ctx, d[1][e], d[0][e]);
    }
  }
};

std::vector<float> runExpertsW(Context &ctx, const ExpertModel &em,
                               const std::vector<int64_t> &g,
                               const std::vector<int64_t> &u,
                               const std::vector<int64_t> &d, int64_t n,
                               uint32_t seed, ActQuant act) {
  const int64_t topK = 3, ldx = em.hidden + 3, ldy = em.hidden + 1;
  auto x = randomVector(n * ldx, seed, -2, 2);
  auto w = randomVector(n * topK, seed + 1, 0.1f, 1.0f);
  std::mt19937 gen(seed + 2);
  std::vector<int32_t> idx;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> e(em.experts);
    for (int64_t j = 0; j < em.experts; ++j)
      e[j] = int32_t(j);
    std::shuffle(e.begin(), e.end(), gen);
    idx.insert(idx.end(), e.begin(), e.begin() + topK);
  }
  std::vector<float> y(n * ldy, 12345.0f);
  cpu::moeExpertsW(ctx, x.data(), ldx, n, em.hidden, em.inter, idx.data(),
                   w.data(), topK, g.data(), u.data(), d.data(), em.experts,
                   y.data(), ldy, act);
  return y;
}

TEST(Bf16Kernels, MoeExpertsWEqualsFloat32BitForBit) {
  ExpertModel em(6, 200, 136);
  // Mixed: even experts bf16, odd ones float32.
  std::vector<int64_t> mg, mu, md;
  for (int64_t e = 0; e < em.experts; ++e) {
    mg.push_back(em.g[e % 2 == 0][e]);
    mu.push_back(em.u[e % 2 == 0][e]);
    md.push_back(em.d[e % 2 == 0][e]);
  }
  std::vector<std::vector<float>> perThreads[2];
  for (int threads : {1, 2}) {
    Context ctx(em.m.spec, threads);
    ctx.randomWeights(8);
    em.twins(ctx);
    for (int64_t n : {1, 13, 40, 200}) // 200 x 3 / 6: > 16 rows per expert
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
        auto want = runExpertsW(ctx, em, em.g[0], em.u[0], em.d[0], n,
                                uint32_t(n), act);
        auto got = runExpertsW(ctx, em, em.g[1], em.u[1], em.d[1], n,
                               uint32_t(n), act);
        auto mixed = runExpertsW(ctx, em, mg, mu, md, n, uint32_t(n), act);
        EXPECT_EQ(got, want) << "n " << n;
        EXPECT_EQ(mixed, want) << "n " << n;
        perThreads[threads - 1].push_back(got);
      }
  }
  EXPECT_EQ(perThreads[0], perThreads[1]);
}

} // namespace
