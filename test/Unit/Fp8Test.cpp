//===- Fp8Test.cpp - float->e4m3, FP8 weights, linearW, fused kernels -----===//
//
// floatToE4M3 against a brute-force nearest-code search; FP8 weight storage
// (kept codes, quantize on load); linearW (float, FP8 weight-only, FP8 with
// FP8 activations) against reference loops written from the recipe; the
// fused kernels against the unfused sequences they replace (bit for bit);
// and thread-count independence.
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "ContextImpl.h"
#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"

#include <algorithm>
#include <cfloat>
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

//===----------------------------------------------------------------------===//
// floatToE4M3
//===----------------------------------------------------------------------===//

/// The e4m3fn code nearest to v (|v| <= 448 by saturation first), ties to
/// the even code, found by trying every finite code: independent of the
/// bit manipulation under test.
uint8_t bruteForceE4M3(float v) {
  if (std::isnan(v))
    return 0x7F;
  const bool neg = std::signbit(v);
  double a = std::fabs(double(v));
  if (a > 448)
    a = 448;
  int best = 0;
  double bestErr = INFINITY;
  for (int c = 0; c < 0x7F; ++c) {
    double err = std::fabs(double(e4m3ToFloat(uint8_t(c))) - a);
    if (err < bestErr || (err == bestErr && (c & 1) == 0 && (best & 1))) {
      best = c;
      bestErr = err;
    }
  }
  return uint8_t(best | (neg ? 0x80 : 0));
}

TEST(Fp8Convert, RoundTripsEveryCode) {
  for (int code = 0; code < 256; ++code) {
    float v = e4m3ToFloat(uint8_t(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_EQ(floatToE4M3(v), 0x7F) << "NaN code " << code;
      continue;
    }
    EXPECT_EQ(floatToE4M3(v), code) << "code 0x" << std::hex << code;
  }
}

TEST(Fp8Convert, EveryRoundingBoundary) {
  // Between consecutive finite codes c and c + 1 (both signs): the midpoint
  // goes to the even one, the floats just below / above it to c / c + 1.
  for (int sign = 0; sign < 2; ++sign)
    for (int c = 0; c < 0x7E; ++c) {
      const uint8_t lo = uint8_t(c | sign << 7), hi = uint8_t((c + 1) | sign << 7);
      const float a = e4m3ToFloat(lo), b = e4m3ToFloat(hi);
      const float mid = (a + b) / 2; // exact: few mantissa bits
      ASSERT_EQ(double(mid), (double(a) + double(b)) / 2);
      const float toward = sign ? INFINITY : -INFINITY; // toward smaller |.|
      EXPECT_EQ(floatToE4M3(mid), (c & 1) ? hi : lo) << "tie after " << c;
      EXPECT_EQ(floatToE4M3(std::nextafter(mid, toward)), lo) << c;
      EXPECT_EQ(floatToE4M3(std::nextafter(mid, -toward)), hi) << c;
      EXPECT_EQ(floatToE4M3(a), lo);
      EXPECT_EQ(floatToE4M3(std::nextafter(b, toward)), hi);
      EXPECT_EQ(bruteForceE4M3(mid), floatToE4M3(mid)) << c;
    }
}

TEST(Fp8Convert, SaturationNaNAndSigns) {
  for (float v : {448.0f, 448.5f, 464.0f, 479.9f, 480.0f, 500.0f, 1e30f,
                  FLT_MAX, INFINITY}) {
    EXPECT_EQ(floatToE4M3(v), 0x7E) << v;
    EXPECT_EQ(floatToE4M3(-v), 0xFE) << v;
  }
  EXPECT_EQ(floatToE4M3(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(floatToE4M3(-std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(floatToE4M3(std::numeric_limits<float>::signaling_NaN()), 0x7F);
  EXPECT_EQ(floatToE4M3(0.0f), 0x00);
  EXPECT_EQ(floatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(floatToE4M3(1.0f), 0x38);
  EXPECT_EQ(floatToE4M3(-1.0f), 0xB8);
  EXPECT_EQ(floatToE4M3(416.0f), 0x7D);
  EXPECT_EQ(floatToE4M3(432.0f), 0x7E); // tie 416 | 448: 448 is even
  EXPECT_EQ(floatToE4M3(431.99f), 0x7D);
}

TEST(Fp8Convert, Subnormals) {
  EXPECT_EQ(floatToE4M3(0x1p-9f), 0x01);
  EXPECT_EQ(floatToE4M3(0x1p-10f), 0x00);  // tie 0 | 2^-9: 0
  EXPECT_EQ(floatToE4M3(-0x1p-10f), 0x80); // rounds to -0
  EXPECT_EQ(floatToE4M3(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(floatToE4M3(3 * 0x1p-10f), 0x02); // tie 1 | 2: 2
  EXPECT_EQ(floatToE4M3(5 * 0x1p-10f), 0x02); // tie 2 | 3: 2
  EXPECT_EQ(floatToE4M3(7 * 0x1p-10f), 0x04); // tie 3 | 4: 4
  EXPECT_EQ(floatToE4M3(15 * 0x1p-10f), 0x08); // tie 7 | 8 (min normal)
  EXPECT_EQ(floatToE4M3(7 * 0x1p-9f), 0x07);
  EXPECT_EQ(floatToE4M3(0x1p-6f), 0x08);
  EXPECT_EQ(floatToE4M3(1e-45f), 0x00); // float subnormals
  EXPECT_EQ(floatToE4M3(-1e-45f), 0x80);
  EXPECT_EQ(floatToE4M3(FLT_MIN), 0x00);
}

TEST(Fp8Convert, MatchesBruteForceOnRandomFloats) {
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> expo(-14, 10), sgn(-1, 1);
  for (int i = 0; i < 200000; ++i) {
    float v = float(std::copysign(std::exp2(expo(gen)), sgn(gen)));
    ASSERT_EQ(floatToE4M3(v), bruteForceE4M3(v)) << v;
  }
}

//===----------------------------------------------------------------------===//
// Models with weights
//===----------------------------------------------------------------------===//

uint32_t floatBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}




/// Half the e4m3 spacing at |q| (<= 448 + rounding): the most a
/// round-to-nearest can be off.
double halfUlpE4M3(double q) {
  q = std::fabs(q);
  if (q < 0x1p-6)
    return 0x1p-10;
  return std::ldexp(1.0, int(std::floor(std::log2(q))) - 4);
}

/// The recipe, independently: scale per 128x128 block = amax / 448 (1 if
/// 0), codes = nearest e4m3 of w / scale.
void checkQuantized(const Fp8Weight &q, const float *w, int64_t rows,
                    int64_t cols) {
  ASSERT_EQ(q.rows, rows);
  ASSERT_EQ(q.cols, cols);
  const int64_t bc = (cols + 127) / 128;
  for (int64_t br = 0; br * 128 < rows; ++br)
    for (int64_t b = 0; b < bc; ++b) {
      float amax = 0;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
        for (int64_t c = b * 128; c < std::min(cols, b * 128 + 128); ++c)
          amax = std::max(amax, std::fabs(w[r * cols + c]));
      const float scale = amax == 0 ? 1.0f : amax / 448.0f;
      ASSERT_EQ(q.scaleInv[br * bc + b], scale) << br << "," << b;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
        for (int64_t c = b * 128; c < std::min(cols, b * 128 + 128); ++c) {
          const float v = w[r * cols + c], x = v / scale;
          const uint8_t code = q.codes[r * cols + c];
          ASSERT_EQ(code, bruteForceE4M3(x)) << r << "," << c;
          // Dequantized error: at most half an e4m3 ulp of the scaled
          // value (plus the rounding of w / scale), times the scale.
          double deq = double(e4m3ToFloat(code)) * scale;
          ASSERT_LE(std::fabs(deq - v),
                    (halfUlpE4M3(x) + 1e-6 * std::fabs(x)) * scale)
              << r << "," << c;
        }
    }
}

TEST(Fp8Weights, FloatCheckpointQuantizedOnLoad) {
  TempDir dir;
  const int64_t rows = 300, cols = 260; // partial blocks both ways
  std::vector<float> w = randomVector(rows * cols, 1);
  // Different magnitudes per block, one all-zero block, tiny values.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      int64_t b = (r / 128) * 3 + c / 128;
      float &v = w[r * cols + c];
      v *= std::ldexp(1.0f, int(b) * 3 - 10);
      if (b == 4)
        v = 0;
      if (b == 8 && c % 7 == 0)
        v = -0.0f;
    }
  std::vector<uint16_t> bf16(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    bf16[i] = uint16_t(floatBits(w[i]) >> 16); // truncation: any bf16 will do
  std::vector<float> wb(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    wb[i] = bf16ToFloat(bf16[i]);
  writeSafetensors(dir.file("model.safetensors"),
                   {{"w32", "F32", {rows, cols}, rawBytes(w)},
                    {"w16", "BF16", {rows, cols}, rawBytes(bf16)}});
  Model m;
  m.add("w32", rows, cols, DType::F8E4M3);
  m.add("w16", rows, cols, DType::F8E4M3);
  m.add("w32", rows, cols, DType::F32);
  for (int threads : {1, 2}) {
    Context ctx(m.finish(), threads);
    std::string error;
    ASSERT_TRUE(ctx.loadWeights(dir.file("model.safetensors").c_str(), &error))
        << error;
    EXPECT_EQ(ctx.weight(0), nullptr);
    EXPECT_EQ(ctx.weight(1), nullptr);
    ASSERT_NE(ctx.weight(2), nullptr);
    EXPECT_EQ(ctx.fp8Weight(2), nullptr);
    ASSERT_NE(ctx.fp8Weight(0), nullptr);
    checkQuantized(*ctx.fp8Weight(0), w.data(), rows, cols);
    checkQuantized(*ctx.fp8Weight(1), wb.data(), rows, cols);
    EXPECT_EQ(ctx.fp8Weight(0)->scaleInv[4], 1.0f); // the zero block
    EXPECT_EQ(ctx.fp8Weight(0)->codes[0 * cols + 150],
              floatToE4M3(w[150] / ctx.fp8Weight(0)->scaleInv[1]));
  }
}

TEST(Fp8Weights, RandomWeightsAreQuantizedFloatRandomWeights) {
  Model m;
  m.add("model.layers.0.mlp.up_proj.weight", 300, 200, DType::F8E4M3);
  // The float random values (a BF16 weight's are rounded to bf16).
  m.add("model.layers.0.mlp.up_proj.weight", 300, 200, DType::F32);
  m.add("model.norm.weight", 200, 0, DType::F8E4M3); // 1-D: kept in float
  Context one(m.finish(), 1), two(m.finish(), 2);
  one.randomWeights(9);
  two.randomWeights(9);
  const Fp8Weight *a = one.fp8Weight(0), *b = two.fp8Weight(0);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(one.weight(0), nullptr);
  EXPECT_EQ(std::memcmp(a->codes, b->codes, 300 * 200), 0);
  EXPECT_EQ(std::memcmp(a->scaleInv, b->scaleInv, 3 * 2 * 4), 0);
  checkQuantized(*a, one.weight(1), 300, 200);
  EXPECT_EQ(one.fp8Weight(2), nullptr);
  ASSERT_NE(one.weight(2), nullptr);
  EXPECT_NEAR(one.weight(2)[0], 1.0f, 0.1f);
}

//===----------------------------------------------------------------------===//
// linearW
//===----------------------------------------------------------------------===//

/// max |got - want| over max |want|.
double relError(const std::vector<float> &got, const std::vector<double> &want) {
  double err = 0, mag = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    mag = std::max(mag, std::fabs(want[i]));
  }
  return err / mag;
}

/// Reference y [n, out] (packed) of x [n, in] (ldx) for weight `index`.
std::vector<double> referenceLinear(Context &ctx, int64_t index,
                                    const float *x, int64_t ldx, int64_t n,
                                    int64_t in, int64_t out, ActQuant act) {
  std::vector<double> y(n * out, 0.0);
  if (const float *w = ctx.weight(index)) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k)
          s += double(x[i * ldx + k]) * w[o * in + k];
        y[i * out + o] = s;
      }
    return y;
  }
  const Fp8Weight &q = *ctx.fp8Weight(index);
  const int64_t bc = (in + 127) / 128;
  auto wq = [&](int64_t o, int64_t k) {
    return double(e4m3ToFloat(q.codes[o * in + k]));
  };
  auto sw = [&](int64_t o, int64_t t) { return q.scaleInv[(o / 128) * bc + t]; };
  for (int64_t i = 0; i < n; ++i) {
    const float *xi = x + i * ldx;
    if (act == ActQuant::None) {
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k)
          s += double(xi[k]) * (wq(o, k) * sw(o, k / 128));
        y[i * out + o] = s;
      }
      continue;
    }
    // The recipe: per 128-column tile of the row, sx = amax / 448 (1 if
    // 0), xq = e4m3(x / sx); acc += float(tile dot) * sx * sw, in float32.
    std::vector<double> xq(in);
    std::vector<float> sx(bc);
    for (int64_t t = 0; t < bc; ++t) {
      float amax = 0;
      for (int64_t k = t * 128; k < std::min(in, t * 128 + 128); ++k)
        amax = std::max(amax, std::fabs(xi[k]));
      sx[t] = amax == 0 ? 1.0f : amax / 448.0f;
      for (int64_t k = t * 128; k < std::min(in, t * 128 + 128); ++k)
        xq[k] = e4m3ToFloat(floatToE4M3(xi[k] / sx[t]));
    }
    for (int64_t o = 0; o < out; ++o) {
      float acc = 0;
      for (int64_t t = 0; t < bc; ++t) {
        double dot = 0; // exact: 128 products of 4-bit significands
        for (int64_t k = t * 128; k < std::min(in, t * 128 + 128); ++k)
          dot += xq[k] * wq(o, k);
        acc += float(dot) * sx[t] * sw(o, t);
      }
      y[i * out + o] = acc;
    }
  }
  return y;
}

std::vector<float> runLinearW(Context &ctx, int64_t index, const float *x,
                              int64_t ldx, int64_t n, int64_t in, int64_t out,
                              ActQuant act) {
  const int64_t ldy = out + 3;
  std::vector<float> y(n * ldy, 12345.0f), packed;
  cpu::linearW(ctx, x, ldx, n, in, index, out, y.data(), ldy, act);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(y[i * ldy + out], 12345.0f);
    packed.insert(packed.end(), y.begin() + i * ldy,
                  y.begin() + i * ldy + out);
  }
  return packed;
}

struct LinearModel {
  Model m;
  int64_t f, q;
  LinearModel(int64_t out, int64_t in) {
    f = m.add("model.layers.0.self_attn.o_proj.weight", out, in, DType::BF16);
    q = m.add("model.layers.0.self_attn.o_proj.weight", out, in,
              DType::F8E4M3);
    m.finish();
  }
};

TEST(Fp8Linear, MatchesReferenceLoops) {
  for (auto shape : {std::pair<int64_t, int64_t>{300, 200}, {256, 384}}) {
    const int64_t out = shape.first, in = shape.second;
    LinearModel lm(out, in);
    Context ctx(lm.m.spec, 2);
    ctx.randomWeights(3);
    for (int64_t n : {1, 5, 20, 300}) {
      const int64_t ldx = in + 5;
      std::vector<float> x = randomVector(n * ldx, uint32_t(n));
      for (int64_t k = 0; k < in; ++k) // an all-zero tile in row 0
        if (k >= 128 && k < 256)
          x[k] = 0;
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
        auto want = referenceLinear(ctx, lm.f, x.data(), ldx, n, in, out, act);
        auto got = runLinearW(ctx, lm.f, x.data(), ldx, n, in, out, act);
        EXPECT_LT(relError(got, want), 1e-5) << "float " << n << " " << in;
        want = referenceLinear(ctx, lm.q, x.data(), ldx, n, in, out, act);
        got = runLinearW(ctx, lm.q, x.data(), ldx, n, in, out, act);
        EXPECT_LT(relError(got, want), 1e-5)
            << "fp8 act " << int(act) << " n " << n << " in " << in;
      }
      // FP8 approximates the float model (a sanity bound).
      auto exact = referenceLinear(ctx, lm.f, x.data(), ldx, n, in, out,
                                   ActQuant::None);
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
        auto got = runLinearW(ctx, lm.q, x.data(), ldx, n, in, out, act);
        EXPECT_LT(relError(got, exact), act == ActQuant::None ? 0.05 : 0.1);
      }
    }
  }
}

TEST(Fp8Linear, FloatWeightIsLinear) {
  LinearModel lm(300, 200);
  Context ctx(lm.m.spec, 2);
  ctx.randomWeights(4);
  const int64_t n = 37;
  std::vector<float> x = randomVector(n * 200, 8), a(n * 300), b(n * 300);
  cpu::linear(ctx, x.data(), 200, n, 200, ctx.weight(lm.f), 300, a.data(), 300);
  cpu::linearW(ctx, x.data(), 200, n, 200, lm.f, 300, b.data(), 300,
               ActQuant::Fp8);
  EXPECT_EQ(a, b);
}

TEST(Fp8Linear, LogitsWComputesTheRowsRead) {
  // A greedy prefill reads its last logits row only: logitsW leaves the
  // rows before it as they were and computes that one as linearW does
  // (per-row activation quantization: the same values with FP8 too).
  LinearModel lm(300, 200);
  Context ctx(lm.m.spec, 2);
  ctx.randomWeights(4);
  const int64_t n = 9;
  std::vector<float> x = randomVector(n * 200, 8);
  for (int64_t weight : {lm.f, lm.q})
    for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
      std::vector<float> all(n * 300), some(n * 300, 12345.0f);
      cpu::linearW(ctx, x.data(), 200, n, 200, weight, 300, all.data(), 300,
                   act);
      int32_t tokens[n];
      Context::Outputs o;
      o.logits = false;
      o.argmax = tokens;
      o.argmaxFrom = n - 1;
      ctx.setOutputs(o);
      cpu::logitsW(ctx, x.data(), 200, n, 200, weight, 300, some.data(), 300,
                   act);
      ctx.setOutputs(Context::Outputs());
      for (int64_t i = 0; i < (n - 1) * 300; ++i)
        ASSERT_EQ(some[size_t(i)], 12345.0f) << i;
      for (int64_t i = (n - 1) * 300; i < n * 300; ++i)
        ASSERT_EQ(some[size_t(i)], all[size_t(i)]) << i;
    }
}

TEST(Fp8Linear, ThreadCountDoesNotChangeResults) {
  LinearModel lm(300, 200);
  for (int64_t n : {1, 17, 300}) {
    std::vector<float> x = randomVector(n * 200, 11);
    std::vector<std::vector<float>> results[2];
    for (int t = 0; t < 2; ++t) {
      Context ctx(lm.m.spec, t + 1);
      ctx.randomWeights(5);
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
        results[t].push_back(
            runLinearW(ctx, lm.q, x.data(), 200, n, 200, 300, act));
        results[t].push_back(
            runLinearW(ctx, lm.f, x.data(), 200, n, 200, 300, act));
      }
    }
    EXPECT_EQ(results[0], results[1]) << n;
  }
}

//===----------------------------------------------------------------------===//
// Fused kernels == unfused sequences
//===----------------------------------------------------------------------===//

TEST(Fused, AddRmsNormEqualsAddThenRmsNorm) {
  Model m;
  Context ctx(m.finish(), 2);
  for (int64_t d : {7, 64, 300}) {
    const int64_t n = 33, ld = d + 4;
    auto a = randomVector(n * ld, 1, -3, 3), b = randomVector(n * ld, 2);
    auto w = randomVector(d, 3, 0.5f, 1.5f);
    std::vector<float> s1(n * ld, 7.0f), y1(n * ld, 7.0f);
    cpu::add(ctx, a.data(), ld, b.data(), ld, n, d, s1.data(), ld);
    cpu::rmsNorm(ctx, s1.data(), ld, w.data(), n, d, 1e-6, y1.data(), ld);
    std::vector<float> s2(n * ld, 7.0f), y2(n * ld, 7.0f);
    cpu::addRmsNorm(ctx, a.data(), ld, b.data(), ld, n, d, w.data(), 1e-6,
                    s2.data(), ld, y2.data(), ld);
    EXPECT_EQ(s1, s2) << d;
    EXPECT_EQ(y1, y2) << d;
    // In place: the residual stream a += b.
    std::vector<float> a2 = a, y3(n * ld, 7.0f);
    cpu::addRmsNorm(ctx, a2.data(), ld, b.data(), ld, n, d, w.data(), 1e-6,
                    a2.data(), ld, y3.data(), ld);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) {
        ASSERT_EQ(a2[i * ld + j], s1[i * ld + j]);
        ASSERT_EQ(y3[i * ld + j], y1[i * ld + j]);
      }
  }
}

TEST(Fused, RopeKvCacheWriteEqualsRopeThenWrite) {
  Model m;
  const ModelSpec &spec = m.finish();
  const int64_t n = 9, ldl = 15, ldk = 11;
  auto latent = randomVector(n * ldl, 4), krope = randomVector(n * ldk, 5);
  std::vector<int32_t> pos = {0, 3, 4, 5, 17, 18, 40, 63, 1};
  // Tokens of two sequences: each token's row goes to its own slot.
  std::vector<int32_t> seqs = {0, 1, 0, 1, 0, 0, 1, 1, 1};
  for (int threads : {1, 2}) {
    Context c1(spec, threads, 2), c2(spec, threads, 2);
    for (Context *c : {&c1, &c2})
      for (int32_t s = 0; s < 2; ++s) {
        std::string error;
        ASSERT_EQ(c->cache().startSequence(&error), s) << error;
        ASSERT_TRUE(c->cache().reserve(s, 64, &error)) << error;
        c->setTokenSequences(seqs.data(), n);
      }
    std::vector<float> k1 = krope, k2 = krope;
    cpu::rope(c1, k1.data(), ldk, n, 1, 8, 0, pos.data(), 0);
    cpu::kvCacheWrite(c1, 1, latent.data(), ldl, k1.data(), ldk, pos.data(), n);
    cpu::ropeKvCacheWrite(c2, 1, latent.data(), ldl, k2.data(), ldk,
                          pos.data(), n, 0);
    EXPECT_EQ(k1, k2);
    for (int32_t s = 0; s < 2; ++s)
      for (int64_t l = 0; l < 2; ++l)
        for (int64_t p = 0; p < 64; ++p)
          ASSERT_EQ(std::memcmp(c1.cacheRow(l, s, p), c2.cacheRow(l, s, p),
                                20 * 4),
                    0)
              << s << "," << l << "," << p;
    EXPECT_EQ(c2.cacheRow(1, 0, 17)[12], k1[4 * ldk]); // token 4: slot 0
    EXPECT_EQ(c2.cacheRow(1, 1, 17)[12], 0.0f);        // not slot 1
    EXPECT_EQ(c2.cacheRow(1, 1, 40)[12], k1[6 * ldk]); // token 6: slot 1
    EXPECT_EQ(c2.cacheRow(1, 0, 40)[12], 0.0f);
  }
}

struct MlpModel {
  Model m;
  int64_t gf, uf, gq, uq;
  MlpModel(int64_t inter, int64_t hidden) {
    gf = m.add("mlp.gate_proj.weight", inter, hidden, DType::F32);
    uf = m.add("mlp.up_proj.weight", inter, hidden, DType::F32);
    gq = m.add("mlp.gate_proj.weight", inter, hidden, DType::F8E4M3);
    uq = m.add("mlp.up_proj.weight", inter, hidden, DType::F8E4M3);
    m.finish();
  }
};

std::vector<float> runGatedUp(Context &ctx, int64_t gate, int64_t up,
                              const float *x, int64_t ldx, int64_t n,
                              int64_t in, int64_t inter, ActQuant act,
                              bool fused) {
  const int64_t ldy = inter + 2;
  std::vector<float> y(n * ldy, 12345.0f);
  if (fused) {
    cpu::gatedUp(ctx, x, ldx, n, in, gate, up, inter, y.data(), ldy, act);
  } else {
    std::vector<float> g(n * inter), u(n * inter);
    cpu::linearW(ctx, x, ldx, n, in, gate, inter, g.data(), inter, act);
    cpu::linearW(ctx, x, ldx, n, in, up, inter, u.data(), inter, act);
    cpu::swiglu(ctx, g.data(), inter, u.data(), inter, n, inter, y.data(),
                ldy);
  }
  return y;
}

TEST(Fused, GatedUpEqualsLinearLinearSwiglu) {
  const int64_t inter = 300, hidden = 200;
  MlpModel mm(inter, hidden);
  std::vector<std::vector<float>> perThreads[2];
  for (int threads : {1, 2}) {
    Context ctx(mm.m.spec, threads);
    ctx.randomWeights(6);
    for (int64_t n : {1, 16, 20, 300}) {
      const int64_t ldx = hidden + 1;
      auto x = randomVector(n * ldx, uint32_t(100 + n), -2, 2);
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8})
        for (auto gu : {std::pair<int64_t, int64_t>{mm.gf, mm.uf},
                        {mm.gq, mm.uq},
                        {mm.gf, mm.uq}}) { // mixed storage
          auto a = runGatedUp(ctx, gu.first, gu.second, x.data(), ldx, n,
                              hidden, inter, act, false);
          auto b = runGatedUp(ctx, gu.first, gu.second, x.data(), ldx, n,
                              hidden, inter, act, true);
          EXPECT_EQ(a, b) << "n " << n << " act " << int(act) << " weights "
                          << gu.first << "," << gu.second;
          perThreads[threads - 1].push_back(b);
        }
    }
  }
  EXPECT_EQ(perThreads[0], perThreads[1]);
}


TEST(Fused, MoeGateEqualsLinearThenRoute) {
  const int64_t experts = 16, hidden = 200, n = 40;
  Model m;
  int64_t wf = m.add("mlp.gate.weight", experts, hidden, DType::F32);
  int64_t wq = m.add("mlp.gate.weight", experts, hidden, DType::F8E4M3);
  int64_t bias = m.add("mlp.gate.e_score_correction_bias", experts, 0,
                       DType::F32);
  Context ctx(m.finish(), 2);
  ctx.randomWeights(7);
  MoERouting r = v3Routing(experts);
  auto x = randomVector(n * (hidden + 2), 12);
  for (int64_t w : {wf, wq}) {
    std::vector<float> logits(n * experts), w1(n * 4), w2(n * 4);
    std::vector<int32_t> i1(n * 4), i2(n * 4);
    cpu::linearW(ctx, x.data(), hidden + 2, n, hidden, w, experts,
                 logits.data(), experts, ActQuant::None);
    cpu::moeRoute(ctx, logits.data(), experts, n, ctx.weight(bias), r,
                  i1.data(), w1.data());
    cpu::moeGate(ctx, x.data(), hidden + 2, n, hidden, w, ctx.weight(bias), r,
                 i2.data(), w2.data());
    EXPECT_EQ(i1, i2) << w;
    EXPECT_EQ(w1, w2) << w;
  }
}

//===----------------------------------------------------------------------===//
// moeExpertsW
//===----------------------------------------------------------------------===//

struct ExpertModel {
  Model m;
  int64_t experts, hidden, inter;
  std::vector<int64_t> g[2], u[2], d[2]; // [0] float, [1] FP8
  ExpertModel(int64_t experts, int64_t hidden, int64_t inter)
      : experts(experts), hidden(hidden), inter(inter) {
    for (int q = 0; q < 2; ++q)
      for (int64_t e = 0; e < experts; ++e) {
        std::string p = "mlp.experts." + std::to_string(e) + ".";
        DType dt = q ? DType::F8E4M3 : DType::BF16;
        g[q].push_back(m.add(p + "gate_proj.weight", inter, hidden, dt));
        u[q].push_back(m.add(p + "up_proj.weight", inter, hidden, dt));
        d[q].push_back(m.add(p + "down_proj.weight", hidden, inter, dt));
      }
    m.finish();
  }
};

struct Problem {
  int64_t n, topK = 3, ldx, ldy;
  std::vector<float> x, w;
  std::vector<int32_t> idx;
};

Problem problem(const ExpertModel &em, int64_t n, uint32_t seed) {
  Problem p;
  p.n = n;
  p.ldx = em.hidden + 3;
  p.ldy = em.hidden + 1;
  p.x = randomVector(n * p.ldx, seed, -2, 2);
  p.w = randomVector(n * p.topK, seed + 1, 0.1f, 1.0f);
  std::mt19937 gen(seed + 2);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> e(em.experts);
    for (int64_t j = 0; j < em.experts; ++j)
      e[j] = int32_t(j);
    std::shuffle(e.begin(), e.end(), gen);
    p.idx.insert(p.idx.end(), e.begin(), e.begin() + p.topK);
  }
  return p;
}

std::vector<float> runExpertsW(Context &ctx, const ExpertModel &em, int q,
                               const Problem &p, ActQuant act) {
  std::vector<float> y(p.n * p.ldy, 12345.0f);
  cpu::moeExpertsW(ctx, p.x.data(), p.ldx, p.n, em.hidden, em.inter,
                   p.idx.data(), p.w.data(), p.topK, em.g[q].data(),
                   em.u[q].data(), em.d[q].data(), em.experts, y.data(), p.ldy,
                   act);
  return y;
}

/// Token by token from linearW and swiglu.
std::vector<double> expertsByToken(Context &ctx, const ExpertModel &em, int q,
                                   const Problem &p, ActQuant act) {
  std::vector<double> y(p.n * p.ldy, 12345.0);
  std::vector<float> g(em.inter), u(em.inter), h(em.inter), o(em.hidden);
  for (int64_t i = 0; i < p.n; ++i) {
    for (int64_t j = 0; j < em.hidden; ++j)
      y[i * p.ldy + j] = 0;
    for (int64_t k = 0; k < p.topK; ++k) {
      int32_t e = p.idx[i * p.topK + k];
      const float *xi = p.x.data() + i * p.ldx;
      cpu::linearW(ctx, xi, p.ldx, 1, em.hidden, em.g[q][e], em.inter,
                   g.data(), em.inter, act);
      cpu::linearW(ctx, xi, p.ldx, 1, em.hidden, em.u[q][e], em.inter,
                   u.data(), em.inter, act);
      cpu::swiglu(ctx, g.data(), em.inter, u.data(), em.inter, 1, em.inter,
                  h.data(), em.inter);
      cpu::linearW(ctx, h.data(), em.inter, 1, em.inter, em.d[q][e],
                   em.hidden, o.data(), em.hidden, act);
      for (int64_t j = 0; j < em.hidden; ++j)
        y[i * p.ldy + j] += double(p.w[i * p.topK + k]) * o[j];
    }
  }
  return y;
}

TEST(Fp8MoE, ExpertsWMatchTokenByTokenAndMoeExperts) {
  ExpertModel em(6, 200, 136);
  Context ctx(em.m.spec, 2);
  ctx.randomWeights(8);
  for (int64_t n : {1, 13, 40}) {
    Problem p = problem(em, n, uint32_t(n));
    for (int q = 0; q < 2; ++q)
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8}) {
        auto got = runExpertsW(ctx, em, q, p, act);
        auto want = expertsByToken(ctx, em, q, p, act);
        EXPECT_LT(relError(got, want), 1e-5)
            << "n " << n << " fp8 " << q << " act " << int(act);
      }
    // Float weights by index: moeExperts exactly.
    std::vector<const float *> g, u, d;
    for (int64_t e = 0; e < em.experts; ++e) {
      g.push_back(ctx.weight(em.g[0][e]));
      u.push_back(ctx.weight(em.u[0][e]));
      d.push_back(ctx.weight(em.d[0][e]));
    }
    std::vector<float> y(p.n * p.ldy, 12345.0f);
    cpu::moeExperts(ctx, p.x.data(), p.ldx, p.n, em.hidden, em.inter,
                    p.idx.data(), p.w.data(), p.topK, g.data(), u.data(),
                    d.data(), em.experts, y.data(), p.ldy);
    EXPECT_EQ(y, runExpertsW(ctx, em, 0, p, ActQuant::Fp8));
  }
}

TEST(Fp8MoE, MissingExpertsAndThreads) {
  ExpertModel em(6, 200, 136);
  Problem p = problem(em, 30, 77);
  std::vector<std::vector<float>> res[2];
  for (int t = 0; t < 2; ++t) {
    Context ctx(em.m.spec, t + 1);
    ctx.randomWeights(8);
    for (int q = 0; q < 2; ++q)
      for (ActQuant act : {ActQuant::None, ActQuant::Fp8})
        res[t].push_back(runExpertsW(ctx, em, q, p, act));
    // An expert with index -1 contributes nothing.
    ExpertModel &e2 = em;
    int64_t saved = e2.g[1][2];
    e2.g[1][2] = -1;
    auto y = runExpertsW(ctx, e2, 1, p, ActQuant::Fp8);
    e2.g[1][2] = saved;
    Problem p2 = p;
    for (int64_t r = 0; r < p.n * p.topK; ++r)
      if (p2.idx[r] == 2)
        p2.w[r] = 0; // same as weight 0 for that expert
    auto want = runExpertsW(ctx, em, 1, p2, ActQuant::Fp8);
    double err = 0;
    for (size_t i = 0; i < y.size(); ++i)
      err = std::max(err, double(std::fabs(y[i] - want[i])));
    EXPECT_LT(err, 1e-5);
    res[t].push_back(y);
  }
  EXPECT_EQ(res[0], res[1]);
}

} // namespace
