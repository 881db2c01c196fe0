//===- KernelsTest.cpp - libdsrt CPU kernels against reference loops -----===//
//
// Every kernel is checked against a plain loop written here (in double), on
// random inputs with strided (ld > width) buffers. Needs lib/Runtime on the
// include path (ContextImpl.h, ThreadPool.h) and links libdsrt.
//
//===----------------------------------------------------------------------===//

#include "ContextImpl.h"
#include "Cpu/CpuCommon.h"
#include "ThreadPool.h"
#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace dsrt;

namespace {

using dsrt_test::plainRope;
using dsrt_test::randomVector;

/// A ModelSpec with no weights and the given cache geometry and RoPE specs.
struct TestSpec {
  std::vector<RopeSpec> ropes;
  ModelSpec spec{};

  explicit TestSpec(std::vector<RopeSpec> r = {}, int64_t cacheLayers = 1,
                    int64_t kvLoraRank = 8, int64_t qkRopeDim = 4,
                    int64_t maxSeqLen = 64)
      : ropes(std::move(r)) {
    spec.name = "test";
    spec.vocabSize = 16;
    spec.hiddenSize = 8;
    spec.weights = nullptr;
    spec.numWeights = 0;
    spec.ropes = ropes.data();
    spec.numRopes = static_cast<int64_t>(ropes.size());
    spec.cacheLayers = cacheLayers;
    spec.kvLoraRank = kvLoraRank;
    spec.qkRopeDim = qkRopeDim;
    spec.maxSeqLen = maxSeqLen;
    spec.arenaBytes = 1000;
  }
};



/// max |got - want| over max |want|: a norm-wise relative error.
double relError(const float *got, const double *want, size_t n) {
  double err = 0, mag = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    mag = std::max(mag, std::fabs(want[i]));
  }
  return err / mag;
}

double relError(const std::vector<float> &got, const std::vector<float> &want) {
  std::vector<double> w(want.begin(), want.end());
  return relError(got.data(), w.data(), got.size());
}

constexpr double kTol = 1e-5;
constexpr float kSentinel = 12345.0f;

//===----------------------------------------------------------------------===//
// Thread pool and Context
//===----------------------------------------------------------------------===//

TEST(ThreadPool, CoversRangeOnceInContiguousChunks) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> calls{0};
      pool.parallelFor(n, [&](int64_t b, int64_t e) {
        EXPECT_LT(b, e);
        ++calls;
        for (int64_t i = b; i < e; ++i)
          ++hits[i];
      });
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n;
      EXPECT_LE(calls.load(),
                std::max<int64_t>(std::min<int64_t>(threads, n), 0));
    }
  }
}

TEST(ThreadPool, MinChunkAndNesting) {
  ThreadPool pool(4);
  std::atomic<int> calls{0};
  pool.parallelFor(
      10, [&](int64_t, int64_t) { ++calls; }, 100);
  EXPECT_EQ(calls.load(), 1); // too small to split

  // A nested parallelFor runs inline instead of deadlocking.
  std::atomic<int64_t> total{0};
  pool.parallelFor(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallelFor(10, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
  });
  EXPECT_EQ(total.load(), 80);

  // Many back-to-back jobs (wake-up/hand-off races).
  std::atomic<int64_t> sum{0};
  for (int r = 0; r < 2000; ++r)
    pool.parallelFor(4, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 8000);
}

TEST(Context, ArenaCacheAndParallelFor) {
  TestSpec ts({plainRope(4)}, /*cacheLayers=*/2, /*kvLoraRank=*/6,
              /*qkRopeDim=*/4, /*maxSeqLen=*/10);
  ts.spec.arenaBytes = 0; // still gets a (64-byte) arena
  Context ctx(ts.spec, 2);
  EXPECT_EQ(ctx.threads(), 2);
  EXPECT_EQ(&ctx.spec(), &ts.spec);
  ASSERT_NE(ctx.arena(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ctx.arena()) % 64, 0u);
  // One slot by default, one 64-position block for its 10 positions.
  EXPECT_EQ(ctx.cache().totalBlocks(), 1);
  std::string error;
  int32_t seq = ctx.cache().startSequence(&error);
  ASSERT_EQ(seq, 0) << error;
  ASSERT_TRUE(ctx.cache().reserve(seq, 10, &error)) << error;
  EXPECT_EQ(ctx.cache().capacity(seq), 64);
  // Within a block, a layer's rows are contiguous; layers follow each other.
  EXPECT_EQ(ctx.cacheRow(0, seq, 1) - ctx.cacheRow(0, seq, 0), 10);
  EXPECT_EQ(ctx.cacheRow(1, seq, 0) - ctx.cacheRow(0, seq, 0), 64 * 10);
  EXPECT_EQ(ctx.cacheRow(1, seq, 3), ctx.cache().row(1, seq, 3));
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t p = 0; p < 10; ++p)
      for (int j = 0; j < 10; ++j)
        EXPECT_EQ(ctx.cacheRow(l, seq, p)[j], 0.0f);
  // Token sequences: slot 0 until set, and past the set range.
  EXPECT_EQ(ctx.tokenSequence(0), 0);
  const int32_t seqs[] = {3, 1};
  ctx.setTokenSequences(seqs, 2);
  EXPECT_EQ(ctx.tokenSequence(0), 3);
  EXPECT_EQ(ctx.tokenSequence(1), 1);
  EXPECT_EQ(ctx.tokenSequence(2), 0);
  EXPECT_EQ(ctx.tokenSequence(-1), 0);
  ctx.setTokenSequences(seqs, 1);
  EXPECT_EQ(ctx.tokenSequence(1), 0);
  ASSERT_EQ(ctx.impl().ropes.size(), 1u);
  EXPECT_EQ(ctx.impl().ropes[0].positions, 10);

  std::vector<int> seen(50, 0);
  struct State {
    std::vector<int> *seen;
  } state{&seen};
  dsrt::parallelFor(
      ctx, 50,
      [](void *s, int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          ++(*static_cast<State *>(s)->seen)[i];
      },
      &state);
  for (int v : seen)
    EXPECT_EQ(v, 1);
}

TEST(Context, LogitsRowsFrom) {
  TestSpec ts({plainRope(4)}, 1, 6, 4, 10);
  Context ctx(ts.spec, 1);
  EXPECT_EQ(ctx.logitsRowsFrom(5), 0); // default: logits wanted
  int32_t tokens[5];
  Context::Outputs o;
  o.logits = false;
  o.argmax = tokens;
  o.argmaxFrom = 4; // a greedy prefill: its last row
  ctx.setOutputs(o);
  EXPECT_EQ(ctx.logitsRowsFrom(5), 4);
  EXPECT_EQ(ctx.logitsRowsFrom(3), 3); // past n: no row
  o.argmaxFrom = -2;
  ctx.setOutputs(o);
  EXPECT_EQ(ctx.logitsRowsFrom(5), 0);
  o.argmaxFrom = 4;
  o.logits = true; // --dump-logits: every row
  ctx.setOutputs(o);
  EXPECT_EQ(ctx.logitsRowsFrom(5), 0);
  o.logits = false;
  o.argmax = nullptr; // nothing asks for a row: keep them all
  ctx.setOutputs(o);
  EXPECT_EQ(ctx.logitsRowsFrom(5), 0);
}

//===----------------------------------------------------------------------===//
// Dense kernels
//===----------------------------------------------------------------------===//

TEST(Kernels, LinearWithStrides) {
  TestSpec ts;
  Context ctx(ts.spec, 2);
  const int64_t n = 5, in = 37, out = 23, ldx = 41, ldy = 29;
  auto xbuf = randomVector(n * ldx, 1);
  auto w = randomVector(out * in, 2);
  std::vector<float> ybuf(n * ldy, kSentinel);
  const float *x = xbuf.data() + 3; // a column slice of a wider buffer
  float *y = ybuf.data() + 4;
  cpu::linear(ctx, x, ldx, n, in, w.data(), out, y, ldy);

  std::vector<double> want(n * out);
  std::vector<float> got(n * out);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k)
        s += double(x[i * ldx + k]) * w[o * in + k];
      want[i * out + o] = s;
      got[i * out + o] = y[i * ldy + o];
    }
  EXPECT_LT(relError(got.data(), want.data(), got.size()), kTol);
  // Nothing outside the [n, out] view is written.
  for (int64_t i = 0; i < n * ldy; ++i) {
    int64_t c = i % ldy - 4;
    if (c < 0 || c >= out || i / ldy >= n) {
      EXPECT_EQ(ybuf[i], kSentinel) << i;
    }
  }
}

/// C [m, n] (ldc) = alpha * A W^T + beta * C through gemvF32 or, when
/// `bits` is not null, gemvBf16 on those bits.
std::vector<float> runGemv(Context &ctx, int64_t m, int64_t n, int64_t k,
                           float alpha, const std::vector<float> &a,
                           int64_t lda, const std::vector<float> &w,
                           const std::vector<uint16_t> *bits, int64_t ldw,
                           float beta, const std::vector<float> &c0,
                           int64_t ldc) {
  std::vector<float> c = c0;
  if (bits)
    cpu::gemvBf16(ctx, m, n, k, alpha, a.data(), lda, bits->data(), ldw, beta,
                  c.data(), ldc);
  else
    cpu::gemvF32(ctx, m, n, k, alpha, a.data(), lda, w.data(), ldw, beta,
                 c.data(), ldc);
  return c;
}

/// Bitwise equality (the NaN padding included).
bool sameBits(const std::vector<float> &x, const std::vector<float> &y) {
  return x.size() == y.size() &&
         std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// The decode GEMV: right against double sums; each row's bits do not depend
// on how many rows come with it, on the thread count, or on whether the
// weight is stored in bf16 or as the same values in float32; C outside
// [m, n] is untouched; beta 0 does not read C.
TEST(Kernels, GemvRowsThreadsAndStorage) {
  TestSpec ts;
  Context one(ts.spec, 1), two(ts.spec, 2);
  for (int64_t k : {1, 7, 16, 33, 200})
    for (int64_t n : {1, 5, 130}) {
      const int64_t m = cpu::kGemvMaxRows, lda = k + 3, ldw = k + 2,
                    ldc = n + 1;
      auto a = randomVector(size_t(m * lda), uint32_t(k * 7 + n));
      auto w = randomVector(size_t(n * ldw), uint32_t(k * 11 + n));
      std::vector<uint16_t> bits(w.size());
      for (size_t i = 0; i < w.size(); ++i) { // bf16 values, float32 twin
        uint32_t u;
        std::memcpy(&u, &w[i], 4);
        bits[i] = uint16_t(u >> 16);
        u = uint32_t(bits[i]) << 16;
        std::memcpy(&w[i], &u, 4);
      }
      std::vector<float> nan(size_t(m * ldc), std::nanf(""));
      const auto full =
          runGemv(two, m, n, k, 1.0f, a, lda, w, nullptr, ldw, 0.0f, nan, ldc);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t l = 0; l < k; ++l)
            s += double(a[size_t(i * lda + l)]) * w[size_t(j * ldw + l)];
          EXPECT_NEAR(full[size_t(i * ldc + j)], s, 1e-5 * (1 + std::fabs(s)))
              << "k " << k << " n " << n << " row " << i << " col " << j;
        }
        EXPECT_TRUE(std::isnan(full[size_t(i * ldc + n)])); // the padding
      }
      EXPECT_TRUE(sameBits(
          runGemv(one, m, n, k, 1.0f, a, lda, w, nullptr, ldw, 0.0f, nan, ldc),
          full))
          << "threads, k " << k << " n " << n;
      EXPECT_TRUE(sameBits(
          runGemv(two, m, n, k, 1.0f, a, lda, w, &bits, ldw, 0.0f, nan, ldc),
          full))
          << "bf16, k " << k << " n " << n;
      // Fewer rows, starting anywhere: the same bits per row.
      for (int64_t r0 = 0; r0 < m; ++r0)
        for (int64_t rows = 1; r0 + rows <= m; ++rows) {
          std::vector<float> part(a.begin() + r0 * lda, a.end());
          auto got = runGemv(two, rows, n, k, 1.0f, part, lda, w, nullptr, ldw,
                             0.0f, nan, ldc);
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < n; ++j)
              ASSERT_EQ(got[size_t(i * ldc + j)],
                        full[size_t((r0 + i) * ldc + j)])
                  << "rows " << r0 << "+" << rows << " k " << k << " n " << n;
        }
      // alpha and beta: alpha * dot + beta * C, each rounded as written.
      auto c0 = randomVector(size_t(m * ldc), 5);
      auto scaled =
          runGemv(two, m, n, k, 0.5f, a, lda, w, nullptr, ldw, 2.0f, c0, ldc);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const size_t at = size_t(i * ldc + j);
          EXPECT_EQ(scaled[at], 0.5f * full[at] + 2.0f * c0[at]);
        }
    }
}

TEST(Kernels, RmsNorm) {
  TestSpec ts;
  Context ctx(ts.spec, 2);
  for (int64_t n : {3, 300}) { // 300 rows takes the parallel path
    const int64_t d = 129, ldx = 131, ldy = 140;
    const double eps = 1e-6;
    auto x = randomVector(n * ldx, 3, -3, 3);
    auto w = randomVector(d, 4, 0.5, 1.5);
    std::vector<float> y(n * ldy, kSentinel);
    cpu::rmsNorm(ctx, x.data(), ldx, w.data(), n, d, eps, y.data(), ldy);
    for (int64_t i = 0; i < n; ++i) {
      double ss = 0;
      for (int64_t j = 0; j < d; ++j)
        ss += double(x[i * ldx + j]) * x[i * ldx + j];
      double r = 1.0 / std::sqrt(ss / d + eps);
      std::vector<double> want(d);
      for (int64_t j = 0; j < d; ++j)
        want[j] = x[i * ldx + j] * r * w[j];
      EXPECT_LT(relError(y.data() + i * ldy, want.data(), d), kTol) << i;
      EXPECT_EQ(y[i * ldy + d], kSentinel);
    }
  }
}

TEST(Kernels, RmsNormInPlace) {
  TestSpec ts;
  Context ctx(ts.spec, 1);
  auto x = randomVector(2 * 16, 5);
  std::vector<float> w(16, 1.0f), y(2 * 16);
  cpu::rmsNorm(ctx, x.data(), 16, w.data(), 2, 16, 1e-6, y.data(), 16);
  cpu::rmsNorm(ctx, x.data(), 16, w.data(), 2, 16, 1e-6, x.data(), 16);
  EXPECT_EQ(x, y);
}

TEST(Kernels, SwiGLUAndAdd) {
  TestSpec ts;
  Context ctx(ts.spec, 2);
  const int64_t n = 7, d = 45, ldg = 50, ldu = 47, ldy = 46;
  auto g = randomVector(n * ldg, 6, -8, 8);
  auto u = randomVector(n * ldu, 7);
  std::vector<float> y(n * ldy, kSentinel), z(n * ldy, kSentinel);
  cpu::swiglu(ctx, g.data(), ldg, u.data(), ldu, n, d, y.data(), ldy);
  cpu::add(ctx, g.data(), ldg, u.data(), ldu, n, d, z.data(), ldy);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> want(d);
    for (int64_t j = 0; j < d; ++j) {
      double gv = g[i * ldg + j];
      want[j] = gv / (1.0 + std::exp(-gv)) * u[i * ldu + j];
      EXPECT_EQ(z[i * ldy + j], g[i * ldg + j] + u[i * ldu + j]);
    }
    EXPECT_LT(relError(y.data() + i * ldy, want.data(), d), kTol);
    EXPECT_EQ(y[i * ldy + d], kSentinel);
    EXPECT_EQ(z[i * ldy + d], kSentinel);
  }
}

TEST(Kernels, Embedding) {
  TestSpec ts;
  Context ctx(ts.spec, 2);
  const int64_t vocab = 11, hidden = 9, ldo = 12;
  auto table = randomVector(vocab * hidden, 8);
  const int32_t ids[] = {3, 0, 10, 3, 7};
  std::vector<float> out(5 * ldo, kSentinel);
  cpu::embedding(ctx, table.data(), vocab, hidden, ids, 5, out.data(), ldo);
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < hidden; ++j)
      EXPECT_EQ(out[i * ldo + j], table[ids[i] * hidden + j]);
    EXPECT_EQ(out[i * ldo + hidden], kSentinel);
  }
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

TEST(Rope, RotatesInterleavedPairsOfEachHead) {
  const int64_t dim = 8;
  TestSpec ts({plainRope(4), plainRope(dim, 500.0)});
  Context ctx(ts.spec, 2);
  const int64_t n = 4, heads = 3, headStride = 12, offset = 4;
  const int64_t ldx = heads * headStride + 2;
  const int32_t pos[] = {0, 5, 63, 17};
  auto x = randomVector(n * ldx, 9);
  auto orig = x;
  cpu::rope(ctx, x.data(), ldx, n, heads, headStride, offset, pos, 1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < ldx; ++c) {
      int64_t h = c / headStride, k = c % headStride - offset;
      if (h >= heads || k < 0 || k >= dim) {
        EXPECT_EQ(x[i * ldx + c], orig[i * ldx + c]) << "untouched column";
        continue;
      }
      int64_t j = k / 2;
      double angle = pos[i] * std::pow(500.0, -2.0 * j / dim);
      double a = orig[i * ldx + c - (k % 2)],
             b = orig[i * ldx + c - (k % 2) + 1];
      double want = k % 2 == 0 ? a * std::cos(angle) - b * std::sin(angle)
                               : a * std::sin(angle) + b * std::cos(angle);
      EXPECT_NEAR(x[i * ldx + c], want, 2e-6) << i << " " << c;
    }
}

/// The table entry (position p, pair j) from the YaRN formula, written out.
void yarnReference(const RopeSpec &r, int64_t p, int64_t j, double *c,
                   double *s) {
  const double dim = r.dim, orig = r.originalMaxPositionEmbeddings;
  auto cd = [&](double rot) {
    return dim * std::log(orig / (rot * 2 * M_PI)) / (2 * std::log(r.theta));
  };
  double low = std::max(std::floor(cd(r.betaFast)), 0.0);
  double high = std::min(std::ceil(cd(r.betaSlow)), dim - 1);
  if (low == high)
    high += 0.001;
  double ramp = std::min(std::max((j - low) / (high - low), 0.0), 1.0);
  double freq = 1.0 / std::pow(r.theta, 2.0 * j / dim);
  double smooth = 1 - ramp;
  freq = freq / r.factor * (1 - smooth) + freq * smooth;
  auto m = [&](double mm) {
    return r.factor <= 1 ? 1.0 : 0.1 * mm * std::log(r.factor) + 1.0;
  };
  double att = m(r.mscale) / m(r.mscaleAllDim);
  *c = std::cos(p * freq) * att;
  *s = std::sin(p * freq) * att;
}

RopeSpec yarnRope(double mscale, double mscaleAllDim) {
  RopeSpec r = plainRope(64, 10000.0);
  r.yarn = true;
  r.factor = 40;
  r.originalMaxPositionEmbeddings = 4096;
  r.betaFast = 32;
  r.betaSlow = 1;
  r.mscale = mscale;
  r.mscaleAllDim = mscaleAllDim;
  return r;
}

TEST(Rope, YaRNTableMatchesFormula) {
  // V3's rope_scaling: correction range [10, 23] of 32 pairs, so pairs below
  // 10 keep their frequency, above 23 are divided by 40, and 11..22 ramp.
  for (auto [ms, msAll] : {std::pair{1.0, 1.0}, std::pair{0.707, 1.0}}) {
    RopeSpec r = yarnRope(ms, msAll);
    RopeTable t = buildRopeTable(r, 300);
    ASSERT_EQ(t.dim, 64);
    ASSERT_EQ(t.positions, 300);
    ASSERT_EQ(t.cos.size(), 300u * 32);
    for (int64_t p : {0, 1, 7, 123, 299})
      for (int64_t j = 0; j < 32; ++j) {
        double c, s;
        yarnReference(r, p, j, &c, &s);
        EXPECT_NEAR(t.cos[p * 32 + j], c, 1e-6) << p << " " << j;
        EXPECT_NEAR(t.sin[p * 32 + j], s, 1e-6) << p << " " << j;
      }
  }
  // Spot checks by hand: pair 0 is untouched, pair 31 is fully interpolated,
  // pair 16 is on the ramp ((16 - 10) / 13 of the way).
  RopeTable t = buildRopeTable(yarnRope(1, 1), 2);
  double f0 = 1.0, f31 = std::pow(10000.0, -62.0 / 64) / 40;
  double f16 = std::pow(10000.0, -32.0 / 64);
  double ramp = 6.0 / 13.0;
  f16 = f16 / 40 * ramp + f16 * (1 - ramp);
  EXPECT_NEAR(t.cos[32 + 0], std::cos(f0), 1e-7);
  EXPECT_NEAR(t.sin[32 + 31], std::sin(f31), 1e-9);
  EXPECT_NEAR(t.sin[32 + 16], std::sin(f16), 1e-9);
  // mscale != mscale_all_dim scales cos and sin by the ratio.
  RopeTable t2 = buildRopeTable(yarnRope(0.707, 1.0), 1);
  double att = (0.1 * 0.707 * std::log(40.0) + 1) / (0.1 * std::log(40.0) + 1);
  EXPECT_NEAR(t2.cos[0], att, 1e-7);
  EXPECT_NE(att, 1.0);
}

TEST(Rope, YaRNDegenerateRange) {
  // A 4-position original context: both correction dims are below 0 and
  // clamp to low = high = 0; the reference then widens the ramp by 0.001
  // instead of dividing by zero, so pair 0 keeps its frequency and the
  // others are interpolated.
  RopeSpec r = yarnRope(1, 1);
  r.dim = 8;
  r.originalMaxPositionEmbeddings = 4;
  RopeTable t = buildRopeTable(r, 5);
  for (int64_t p = 0; p < 5; ++p)
    for (int64_t j = 0; j < 4; ++j) {
      double c, s;
      yarnReference(r, p, j, &c, &s);
      EXPECT_NEAR(t.cos[p * 4 + j], c, 1e-6);
      EXPECT_NEAR(t.sin[p * 4 + j], s, 1e-6);
    }
  EXPECT_NEAR(t.sin[4 + 0], std::sin(1.0), 1e-7);
  EXPECT_NEAR(t.sin[4 + 1], std::sin(std::pow(10000.0, -2.0 / 8) / 40), 1e-9);
}

TEST(Rope, KernelUsesYaRNTable) {
  TestSpec ts({yarnRope(0.707, 1.0)});
  Context ctx(ts.spec, 1);
  const int32_t pos[] = {0, 33};
  auto x = randomVector(2 * 64, 10);
  auto orig = x;
  cpu::rope(ctx, x.data(), 64, 2, 1, 64, 0, pos, 0);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 32; ++j) {
      double c, s;
      yarnReference(ts.ropes[0], pos[i], j, &c, &s);
      double a = orig[i * 64 + 2 * j], b = orig[i * 64 + 2 * j + 1];
      EXPECT_NEAR(x[i * 64 + 2 * j], a * c - b * s, 2e-6);
      EXPECT_NEAR(x[i * 64 + 2 * j + 1], a * s + b * c, 2e-6);
    }
}

//===----------------------------------------------------------------------===//
// MLA
//===----------------------------------------------------------------------===//

struct MlaCase {
  int64_t n, heads, nope, rope, vdim, lora;
  double scale;
};

struct MlaInputs {
  MlaCase c;
  int64_t ldq, ldkv, ldk, ldl;
  std::vector<float> q, latent, krope, kvB, kv;

  /// `seed` varies q, latent and krope (another sequence); kvB, the layer's
  /// weight, is the same for every seed.
  explicit MlaInputs(const MlaCase &c, uint32_t seed = 0) : c(c) {
    ldq = c.heads * (c.nope + c.rope) + 3;
    ldkv = c.heads * (c.nope + c.vdim) + 1;
    ldk = c.rope + 2;
    ldl = c.lora + 5;
    q = randomVector(c.n * ldq, 11 + seed);
    latent = randomVector(c.n * ldl, 12 + seed);
    krope = randomVector(c.n * ldk, 13 + seed);
    kvB = randomVector(c.heads * (c.nope + c.vdim) * c.lora, 14, -0.3f, 0.3f);
    // The naive form's kv = latent * kvB^T.
    int64_t rows = c.heads * (c.nope + c.vdim);
    kv.assign(c.n * ldkv, 0.0f);
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t k = 0; k < c.lora; ++k)
          s += double(latent[i * ldl + k]) * kvB[r * c.lora + k];
        kv[i * ldkv + r] = static_cast<float>(s);
      }
  }

  TestSpec spec() const { return TestSpec({}, 2, c.lora, c.rope, c.n + 4); }
};

/// Direct causal attention in double from q, kv, krope.
std::vector<double> mlaReference(const MlaInputs &in) {
  const MlaCase &c = in.c;
  std::vector<double> out(c.n * c.heads * c.vdim);
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t i = 0; i < c.n; ++i) {
      const float *qi = in.q.data() + i * in.ldq + h * (c.nope + c.rope);
      std::vector<double> s(i + 1);
      double mx = -1e300;
      for (int64_t j = 0; j <= i; ++j) {
        const float *kj = in.kv.data() + j * in.ldkv + h * (c.nope + c.vdim);
        double d = 0;
        for (int64_t k = 0; k < c.nope; ++k)
          d += double(qi[k]) * kj[k];
        for (int64_t k = 0; k < c.rope; ++k)
          d += double(qi[c.nope + k]) * in.krope[j * in.ldk + k];
        s[j] = d * c.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double &v : s)
        sum += v = std::exp(v - mx);
      for (int64_t e = 0; e < c.vdim; ++e) {
        double o = 0;
        for (int64_t j = 0; j <= i; ++j)
          o += s[j] / sum *
               in.kv[j * in.ldkv + h * (c.nope + c.vdim) + c.nope + e];
        out[(i * c.heads + h) * c.vdim + e] = o;
      }
    }
  return out;
}

/// Runs both forms in a fresh Context with `threads`; returns naive (all
/// rows), absorbed (all rows) and absorbed for the last token alone, each
/// [n or 1, heads*vdim] packed.
struct MlaOutputs {
  std::vector<float> naive, absorbed, last;
};

MlaOutputs runMla(const MlaInputs &in, int threads) {
  const MlaCase &c = in.c;
  TestSpec ts = in.spec();
  Context ctx(ts.spec, threads);
  const int64_t width = c.heads * c.vdim, ldo = width + 2;
  std::vector<float> out(c.n * ldo, kSentinel);
  cpu::mlaAttentionNaive(ctx, in.q.data(), in.ldq, in.kv.data(), in.ldkv,
                         in.krope.data(), in.ldk, c.n, c.heads, c.nope, c.rope,
                         c.vdim, c.scale, out.data(), ldo);
  MlaOutputs r;
  for (int64_t i = 0; i < c.n; ++i) {
    EXPECT_EQ(out[i * ldo + width], kSentinel);
    r.naive.insert(r.naive.end(), out.begin() + i * ldo,
                   out.begin() + i * ldo + width);
  }

  std::string error;
  const int32_t seq = ctx.cache().startSequence(&error);
  EXPECT_EQ(seq, 0) << error;
  EXPECT_TRUE(ctx.cache().reserve(seq, c.n, &error)) << error;
  std::vector<int32_t> pos(c.n);
  for (int64_t i = 0; i < c.n; ++i)
    pos[i] = static_cast<int32_t>(i);
  cpu::kvCacheWrite(ctx, 1, in.latent.data(), in.ldl, in.krope.data(), in.ldk,
                    pos.data(), c.n);
  const int64_t p = c.n - 1;
  EXPECT_EQ(ctx.cacheRow(1, seq, p)[0], in.latent[p * in.ldl]);
  EXPECT_EQ(ctx.cacheRow(1, seq, p)[c.lora], in.krope[p * in.ldk]);
  EXPECT_EQ(ctx.cacheRow(0, seq, p)[0], 0.0f); // other layer untouched

  std::fill(out.begin(), out.end(), kSentinel);
  cpu::mlaAttentionAbsorbed(ctx, 1, in.q.data(), in.ldq, in.kvB.data(),
                            pos.data(), c.n, c.heads, c.nope, c.rope, c.vdim,
                            c.scale, out.data(), ldo);
  for (int64_t i = 0; i < c.n; ++i) {
    EXPECT_EQ(out[i * ldo + width], kSentinel);
    r.absorbed.insert(r.absorbed.end(), out.begin() + i * ldo,
                      out.begin() + i * ldo + width);
  }

  // Decode step: the last token alone at its position.
  std::vector<float> one(width, kSentinel);
  cpu::mlaAttentionAbsorbed(ctx, 1, in.q.data() + (c.n - 1) * in.ldq, in.ldq,
                            in.kvB.data(), pos.data() + c.n - 1, 1, c.heads,
                            c.nope, c.rope, c.vdim, c.scale, one.data(), width);
  r.last = one;
  return r;
}

TEST(MLA, NaiveMatchesReferenceAndAbsorbed) {
  for (MlaCase c :
       {MlaCase{20, 4, 16, 8, 12, 32, 0.2}, MlaCase{1, 2, 8, 4, 8, 16, 0.35},
        MlaCase{64, 2, 8, 4, 8, 16, 0.3}, MlaCase{150, 3, 8, 4, 8, 16, 0.3},
        MlaCase{300, 2, 16, 8, 16, 64, 0.25}}) {
    MlaInputs in(c);
    MlaOutputs r = runMla(in, 2);
    std::vector<double> want = mlaReference(in);
    EXPECT_LT(relError(r.naive.data(), want.data(), want.size()), kTol)
        << "n " << c.n;
    EXPECT_LT(relError(r.absorbed, r.naive), kTol) << "n " << c.n;
    std::vector<float> lastNaive(r.naive.end() - c.heads * c.vdim,
                                 r.naive.end());
    EXPECT_LT(relError(r.last, lastNaive), kTol) << "n " << c.n;
    // Decoding the last token alone agrees with it within a batch (not
    // bitwise: BLAS may round a 1-row GEMM differently).
    EXPECT_LT(
        relError(r.last, std::vector<float>(r.absorbed.end() - c.heads * c.vdim,
                                            r.absorbed.end())),
        kTol);
  }
}

TEST(MLA, ThreadCountDoesNotChangeResults) {
  // 3 heads: heads go to the pool whole; 1 head: its GEMMs are split.
  for (int64_t heads : {3, 1}) {
    MlaInputs in(MlaCase{300, heads, 32, 16, 32, 128, 0.1});
    MlaOutputs one = runMla(in, 1), two = runMla(in, 2);
    EXPECT_EQ(one.naive, two.naive);
    EXPECT_EQ(one.absorbed, two.absorbed);
    EXPECT_EQ(one.last, two.last);
  }
}

/// A token of a decode call: position `pos` of sequence slot `seq`, whose
/// query, latent and rope key are row `pos` of `in`.
struct SeqToken {
  int32_t seq, pos;
  const MlaInputs *in;
};

/// kvCacheWrite of the tokens' latent and rope-key rows to cache layer 1, in
/// one call (tokens of several sequences allowed).
void writeTokens(Context &ctx, const std::vector<SeqToken> &tokens) {
  const MlaInputs &in0 = *tokens[0].in;
  const int64_t n = int64_t(tokens.size()), ldl = in0.ldl, ldk = in0.ldk;
  std::vector<float> latent(n * ldl), krope(n * ldk);
  std::vector<int32_t> seqs(n), pos(n);
  for (int64_t t = 0; t < n; ++t) {
    const SeqToken &tok = tokens[t];
    std::copy_n(tok.in->latent.begin() + tok.pos * ldl, ldl,
                latent.begin() + t * ldl);
    std::copy_n(tok.in->krope.begin() + tok.pos * ldk, ldk,
                krope.begin() + t * ldk);
    seqs[t] = tok.seq;
    pos[t] = tok.pos;
  }
  ctx.setTokenSequences(seqs.data(), n);
  cpu::kvCacheWrite(ctx, 1, latent.data(), ldl, krope.data(), ldk, pos.data(),
                    n);
}

/// Absorbed attention over cache layer 1 for the tokens in one call;
/// [n, heads*vdim] packed.
std::vector<float> absorbedFor(Context &ctx,
                               const std::vector<SeqToken> &tokens) {
  const MlaInputs &in0 = *tokens[0].in;
  const MlaCase &c = in0.c;
  const int64_t n = int64_t(tokens.size()), ldq = in0.ldq;
  const int64_t width = c.heads * c.vdim, ldo = width + 2;
  std::vector<float> q(n * ldq), out(n * ldo, kSentinel);
  std::vector<int32_t> seqs(n), pos(n);
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(tokens[t].in->q.begin() + tokens[t].pos * ldq, ldq,
                q.begin() + t * ldq);
    seqs[t] = tokens[t].seq;
    pos[t] = tokens[t].pos;
  }
  ctx.setTokenSequences(seqs.data(), n);
  cpu::mlaAttentionAbsorbed(ctx, 1, q.data(), ldq, in0.kvB.data(), pos.data(),
                            n, c.heads, c.nope, c.rope, c.vdim, c.scale,
                            out.data(), ldo);
  std::vector<float> packed;
  for (int64_t t = 0; t < n; ++t) {
    EXPECT_EQ(out[t * ldo + width], kSentinel);
    packed.insert(packed.end(), out.begin() + t * ldo,
                  out.begin() + t * ldo + width);
  }
  return packed;
}

TEST(MLA, AbsorbedInterleavedSequences) {
  // Two sequences with different data over several blocks each, their
  // blocks interleaved in the pool; one decode call mixes their tokens.
  const MlaCase ca{150, 3, 8, 4, 8, 16, 0.3}, cb{70, 3, 8, 4, 8, 16, 0.3};
  MlaInputs a(ca, 0), b(cb, 100);
  const std::vector<double> wantA = mlaReference(a), wantB = mlaReference(b);
  TestSpec ts({}, 2, ca.lora, ca.rope, 160);
  const int64_t width = ca.heads * ca.vdim;

  std::vector<SeqToken> query;
  std::vector<std::vector<float>> results;
  for (int threads : {1, 3}) {
    Context ctx(ts.spec, threads, /*maxSequences=*/2);
    KVCache &cache = ctx.cache();
    EXPECT_EQ(cache.totalBlocks(), 2 * 3);
    std::string error;
    const int32_t sa = cache.startSequence(&error);
    const int32_t sb = cache.startSequence(&error);
    ASSERT_EQ(sa, 0);
    ASSERT_EQ(sb, 1);
    // Growing alternately interleaves the block tables.
    ASSERT_TRUE(cache.reserve(sa, 64, &error)) << error;
    ASSERT_TRUE(cache.reserve(sb, 64, &error)) << error;
    ASSERT_TRUE(cache.reserve(sa, 150, &error)) << error;
    ASSERT_TRUE(cache.reserve(sb, 70, &error)) << error;
    EXPECT_EQ(cache.capacity(sa), 192);
    EXPECT_EQ(cache.capacity(sb), 128);
    EXPECT_EQ(cache.freeBlocks(), 1);

    // Positions 0..63 of both in one interleaved call, the rest per sequence.
    std::vector<SeqToken> mixed, restA, restB;
    for (int32_t p = 0; p < 64; ++p) {
      mixed.push_back({sa, p, &a});
      mixed.push_back({sb, p, &b});
    }
    for (int32_t p = 64; p < 150; ++p)
      restA.push_back({sa, p, &a});
    for (int32_t p = 64; p < 70; ++p)
      restB.push_back({sb, p, &b});
    writeTokens(ctx, mixed);
    writeTokens(ctx, restA);
    writeTokens(ctx, restB);
    for (int32_t p : {0, 63, 64, 69}) {
      EXPECT_EQ(ctx.cacheRow(1, sa, p)[0], a.latent[p * a.ldl]);
      EXPECT_EQ(ctx.cacheRow(1, sb, p)[0], b.latent[p * b.ldl]);
      EXPECT_EQ(ctx.cacheRow(1, sb, p)[ca.lora], b.krope[p * b.ldk]);
    }
    EXPECT_EQ(ctx.cacheRow(1, sa, 149)[ca.lora], a.krope[149 * a.ldk]);

    query = {{sa, 149, &a}, {sb, 69, &b}, {sa, 64, &a},
             {sb, 0, &b},   {sa, 63, &a}, {sb, 65, &b}};
    std::vector<float> together = absorbedFor(ctx, query);
    // Each token alone (slot and position as in the mixed call).
    for (size_t t = 0; t < query.size(); ++t) {
      std::vector<float> alone = absorbedFor(ctx, {query[t]});
      std::vector<float> row(together.begin() + t * width,
                             together.begin() + (t + 1) * width);
      EXPECT_LT(relError(row, alone), kTol) << "token " << t;
      const std::vector<double> &want = query[t].in == &a ? wantA : wantB;
      EXPECT_LT(relError(row.data(), want.data() + query[t].pos * width,
                         size_t(width)),
                kTol)
          << "token " << t;
    }
    results.push_back(together);
  }
  EXPECT_EQ(results[0], results[1]); // bit-identical for 1 and 3 threads
}

TEST(MLA, AbsorbedTwoTokensOfOneSequence) {
  // Speculative verification: positions p and p+1 of one sequence in one
  // call; both rows are written first, and p+1 must see p's fresh row.
  const MlaCase c{100, 2, 8, 4, 8, 16, 0.3};
  MlaInputs in(c);
  const std::vector<double> want = mlaReference(in);
  TestSpec ts = in.spec();
  const int64_t width = c.heads * c.vdim;
  for (int threads : {1, 2}) {
    Context ctx(ts.spec, threads);
    std::string error;
    const int32_t seq = ctx.cache().startSequence(&error);
    ASSERT_EQ(seq, 0) << error;
    ASSERT_TRUE(ctx.cache().reserve(seq, 98, &error)) << error;
    std::vector<SeqToken> prompt;
    for (int32_t p = 0; p < 98; ++p)
      prompt.push_back({seq, p, &in});
    writeTokens(ctx, prompt);
    ASSERT_TRUE(ctx.cache().reserve(seq, 100, &error)) << error;
    std::vector<SeqToken> step = {{seq, 98, &in}, {seq, 99, &in}};
    writeTokens(ctx, step);
    std::vector<float> got = absorbedFor(ctx, step);
    EXPECT_LT(relError(got.data(), want.data() + 98 * width, size_t(width)),
              kTol);
    EXPECT_LT(relError(got.data() + width, want.data() + 99 * width,
                       size_t(width)),
              kTol);
  }
}

//===----------------------------------------------------------------------===//
// MoE
//===----------------------------------------------------------------------===//

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

MoERouting routing(int64_t experts, int64_t topK, int64_t nGroup,
                   int64_t topkGroup, MoERouting::Scoring scoring,
                   MoERouting::Method method, bool norm, double scale) {
  MoERouting r;
  r.experts = experts;
  r.topK = topK;
  r.nGroup = nGroup;
  r.topkGroup = topkGroup;
  r.scoring = scoring;
  r.method = method;
  r.normTopk = norm;
  r.scale = scale;
  return r;
}

struct Routed {
  std::vector<int32_t> idx;
  std::vector<float> w;
};

Routed route(const std::vector<float> &logits, const float *bias,
             const MoERouting &r, int64_t n = 1) {
  TestSpec ts;
  Context ctx(ts.spec, 2);
  Routed out{std::vector<int32_t>(n * r.topK, -7),
             std::vector<float>(n * r.topK, kSentinel)};
  cpu::moeRoute(ctx, logits.data(), r.experts, n, bias, r, out.idx.data(),
                out.w.data());
  return out;
}

TEST(MoE, V3NoauxTCBiasSteersChoiceNotWeights) {
  // 8 experts in 4 groups of 2, keep 2 groups, pick 2.
  // sigmoid: e0 .881 e1 .731 | e2 .818 e3 .269 | e4 .622 e5 .599 |
  //          e6 .119 e7 .953. Group top-2 sums: 1.61, 1.09, 1.22, 1.07.
  const std::vector<float> logits = {2.0, 1.0, 1.5, -1.0, 0.5, 0.4, -2.0, 3.0};
  MoERouting r =
      routing(8, 2, 4, 2, MoERouting::Sigmoid, MoERouting::NoauxTC, true, 2.5);
  // Without bias: groups 0 and 2 survive, so e7 (the best score) is masked
  // out by its group; picks e0, e1.
  Routed a = route(logits, nullptr, r);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{0, 1}));
  double s0 = sigmoid(2.0), s1 = sigmoid(1.0), s5 = sigmoid(0.4);
  EXPECT_NEAR(a.w[0], s0 / (s0 + s1) * 2.5, 1e-6);
  EXPECT_NEAR(a.w[1], s1 / (s0 + s1) * 2.5, 1e-6);

  // A bias of 0.5 on e5 makes group 2 the best (0.62 + 1.10) and e5 the
  // first choice; its weight is still its unbiased score.
  std::vector<float> bias(8, 0.0f);
  bias[5] = 0.5f;
  Routed b = route(logits, bias.data(), r);
  EXPECT_EQ(b.idx, (std::vector<int32_t>{5, 0}));
  EXPECT_NEAR(b.w[0], s5 / (s5 + s0) * 2.5, 1e-6);
  EXPECT_NEAR(b.w[1], s0 / (s5 + s0) * 2.5, 1e-6);

  // Without renormalization: the scores times the scale.
  r.normTopk = false;
  Routed c = route(logits, bias.data(), r);
  EXPECT_EQ(c.idx, (std::vector<int32_t>{5, 0}));
  EXPECT_NEAR(c.w[0], s5 * 2.5, 1e-6);
  EXPECT_NEAR(c.w[1], s0 * 2.5, 1e-6);

  // Greedy (no groups) sigmoid: plain top-2 = e7, e0.
  Routed d = route(
      logits, nullptr,
      routing(8, 2, 4, 2, MoERouting::Sigmoid, MoERouting::Greedy, true, 1.0));
  EXPECT_EQ(d.idx, (std::vector<int32_t>{7, 0}));
  double s7 = sigmoid(3.0);
  EXPECT_NEAR(d.w[0], s7 / (s7 + s0), 1e-6);
}

std::vector<double> softmax(const std::vector<float> &l) {
  double mx = *std::max_element(l.begin(), l.end()), sum = 0;
  std::vector<double> p(l.size());
  for (size_t i = 0; i < l.size(); ++i)
    sum += p[i] = std::exp(l[i] - mx);
  for (double &v : p)
    v /= sum;
  return p;
}

TEST(MoE, V2SoftmaxGreedy) {
  // e1 and e5 tie: the lower index comes first. No renormalization.
  const std::vector<float> logits = {0.1, 2.0, -1.0, 1.5, 0.3, 2.0};
  MoERouting r =
      routing(6, 3, 1, 1, MoERouting::Softmax, MoERouting::Greedy, false, 16.0);
  Routed a = route(logits, nullptr, r);
  EXPECT_EQ(a.idx, (std::vector<int32_t>{1, 5, 3}));
  std::vector<double> p = softmax(logits);
  EXPECT_NEAR(a.w[0], p[1] * 16, 1e-5);
  EXPECT_NEAR(a.w[1], p[5] * 16, 1e-5);
  EXPECT_NEAR(a.w[2], p[3] * 16, 1e-5);

  r.normTopk = true;
  r.scale = 1.0;
  Routed b = route(logits, nullptr, r);
  double sum = p[1] + p[5] + p[3];
  EXPECT_NEAR(b.w[0], p[1] / sum, 1e-6);
  EXPECT_NEAR(b.w[2], p[3] / sum, 1e-6);
}

TEST(MoE, V2GroupLimitedGreedyUsesGroupMax) {
  // Groups of 2: maxes 3.0, 2.5, 2.8, 1.0 -> keep groups 0 and 2. (By top-2
  // sums group 1 would win: e^2.5 + e^2.4 > e^3 + e^-5.)
  const std::vector<float> logits = {3.0, -5.0, 2.5, 2.4, 2.8, -5.0, 1.0, 1.0};
  MoERouting r = routing(8, 3, 4, 2, MoERouting::Softmax,
                         MoERouting::GroupLimitedGreedy, false, 1.0);
  Routed a = route(logits, nullptr, r);
  // e0, e4, then the tie e1 = e5 = -5 goes to e1.
  EXPECT_EQ(a.idx, (std::vector<int32_t>{0, 4, 1}));
  std::vector<double> p = softmax(logits);
  EXPECT_NEAR(a.w[0], p[0], 1e-6);
  EXPECT_NEAR(a.w[1], p[4], 1e-6);
  EXPECT_NEAR(a.w[2], p[1], 1e-6);
}

TEST(MoE, RouteManyTokensMatchesOneByOne) {
  const int64_t n = 200, experts = 16;
  auto logits = randomVector(n * experts, 15, -4, 4);
  auto bias = randomVector(experts, 16, -0.1f, 0.1f);
  MoERouting r = routing(experts, 4, 4, 2, MoERouting::Sigmoid,
                         MoERouting::NoauxTC, true, 2.5);
  Routed all = route(logits, bias.data(), r, n);
  for (int64_t i = 0; i < n; i += 37) {
    std::vector<float> row(logits.begin() + i * experts,
                           logits.begin() + (i + 1) * experts);
    Routed one = route(row, bias.data(), r);
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(all.idx[i * 4 + k], one.idx[k]);
      EXPECT_EQ(all.w[i * 4 + k], one.w[k]);
    }
    float sum = 0;
    for (int k = 0; k < 4; ++k)
      sum += all.w[i * 4 + k];
    EXPECT_NEAR(sum, 2.5f, 1e-5);
  }
}

struct ExpertSet {
  int64_t experts, hidden, inter;
  std::vector<std::vector<float>> gate, up, down;
  std::vector<const float *> g, u, d;

  ExpertSet(int64_t experts, int64_t hidden, int64_t inter)
      : experts(experts), hidden(hidden), inter(inter) {
    for (int64_t e = 0; e < experts; ++e) {
      gate.push_back(randomVector(inter * hidden, 100 + e, -0.5, 0.5));
      up.push_back(randomVector(inter * hidden, 200 + e, -0.5, 0.5));
      down.push_back(randomVector(hidden * inter, 300 + e, -0.5, 0.5));
      g.push_back(gate.back().data());
      u.push_back(up.back().data());
      d.push_back(down.back().data());
    }
  }
};

/// sum_k w * down(silu(gate x) * up x), token by token, in double.
std::vector<double> expertsReference(const ExpertSet &s, const float *x,
                                     int64_t ldx, int64_t n,
                                     const std::vector<int32_t> &idx,
                                     const std::vector<float> &w,
                                     int64_t topK) {
  std::vector<double> y(n * s.hidden, 0.0), h(s.inter);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < topK; ++k) {
      int32_t e = idx[i * topK + k];
      if (e < 0 || !s.g[e])
        continue;
      for (int64_t j = 0; j < s.inter; ++j) {
        double a = 0, b = 0;
        for (int64_t c = 0; c < s.hidden; ++c) {
          a += double(s.g[e][j * s.hidden + c]) * x[i * ldx + c];
          b += double(s.u[e][j * s.hidden + c]) * x[i * ldx + c];
        }
        h[j] = a / (1 + std::exp(-a)) * b;
      }
      for (int64_t c = 0; c < s.hidden; ++c) {
        double o = 0;
        for (int64_t j = 0; j < s.inter; ++j)
          o += double(s.d[e][c * s.inter + j]) * h[j];
        y[i * s.hidden + c] += w[i * topK + k] * o;
      }
    }
  return y;
}

struct MoEProblem {
  int64_t n, topK, ldx, ldy;
  std::vector<float> x;
  std::vector<int32_t> idx;
  std::vector<float> w;
};

MoEProblem moeProblem(const ExpertSet &s, int64_t n, int64_t topK,
                      uint32_t seed) {
  MoEProblem p{n, topK, s.hidden + 3, s.hidden + 5, {}, {}, {}};
  p.x = randomVector(n * p.ldx, seed);
  p.w = randomVector(n * topK, seed + 1, 0.1f, 1.0f);
  std::mt19937 gen(seed + 2);
  for (int64_t i = 0; i < n; ++i) { // distinct experts per token
    std::vector<int32_t> e(s.experts);
    for (int64_t j = 0; j < s.experts; ++j)
      e[j] = static_cast<int32_t>(j);
    std::shuffle(e.begin(), e.end(), gen);
    p.idx.insert(p.idx.end(), e.begin(), e.begin() + topK);
  }
  return p;
}

std::vector<float> runExperts(const ExpertSet &s, const MoEProblem &p,
                              int threads) {
  TestSpec ts;
  Context ctx(ts.spec, threads);
  std::vector<float> y(p.n * p.ldy, kSentinel); // overwritten, not added to
  cpu::moeExperts(ctx, p.x.data(), p.ldx, p.n, s.hidden, s.inter, p.idx.data(),
                  p.w.data(), p.topK, s.g.data(), s.u.data(), s.d.data(),
                  s.experts, y.data(), p.ldy);
  std::vector<float> packed;
  for (int64_t i = 0; i < p.n; ++i) {
    EXPECT_EQ(y[i * p.ldy + s.hidden], kSentinel);
    packed.insert(packed.end(), y.begin() + i * p.ldy,
                  y.begin() + i * p.ldy + s.hidden);
  }
  return packed;
}

TEST(MoE, ExpertsMatchPerTokenReference) {
  ExpertSet s(6, 24, 16);
  for (int64_t n : {1, 13}) {
    MoEProblem p = moeProblem(s, n, 3, 17);
    std::vector<float> y = runExperts(s, p, 2);
    std::vector<double> want =
        expertsReference(s, p.x.data(), p.ldx, n, p.idx, p.w, 3);
    EXPECT_LT(relError(y.data(), want.data(), want.size()), kTol) << n;
  }
}

TEST(MoE, ExpertsSkipMissingExperts) {
  // Under expert parallelism a rank has null pointers for other ranks'
  // experts; those contribute nothing.
  ExpertSet s(4, 8, 6);
  MoEProblem p = moeProblem(s, 5, 2, 18);
  s.g[1] = s.u[1] = s.d[1] = nullptr;
  std::vector<float> y = runExperts(s, p, 1);
  std::vector<double> want =
      expertsReference(s, p.x.data(), p.ldx, 5, p.idx, p.w, 2);
  EXPECT_LT(relError(y.data(), want.data(), want.size()), kTol);
}

TEST(MoE, ThreadCountDoesNotChangeResults) {
  // Many rows per expert (GEMMs split) and few (experts spread).
  ExpertSet s(8, 256, 128);
  MoEProblem p = moeProblem(s, 150, 4, 19);
  EXPECT_EQ(runExperts(s, p, 1), runExperts(s, p, 2));
  MoEProblem q = moeProblem(s, 2, 4, 24);
  EXPECT_EQ(runExperts(s, q, 1), runExperts(s, q, 2));

  auto logits = randomVector(500 * 64, 20, -4, 4);
  MoERouting r =
      routing(64, 6, 8, 3, MoERouting::Sigmoid, MoERouting::NoauxTC, true, 2.5);
  auto routeWith = [&](int threads) {
    TestSpec ts;
    Context ctx(ts.spec, threads);
    Routed out{std::vector<int32_t>(500 * 6), std::vector<float>(500 * 6)};
    cpu::moeRoute(ctx, logits.data(), 64, 500, nullptr, r, out.idx.data(),
                  out.w.data());
    return out;
  };
  Routed a = routeWith(1), b = routeWith(2);
  EXPECT_EQ(a.idx, b.idx);
  EXPECT_EQ(a.w, b.w);
}

TEST(Kernels, ThreadCountDoesNotChangeResults) {
  const int64_t n = 256, in = 512, out = 384;
  auto x = randomVector(n * in, 21);
  auto w = randomVector(out * in, 22);
  auto g = randomVector(n * in, 23);
  auto run = [&](int threads) {
    TestSpec ts;
    Context ctx(ts.spec, threads);
    std::vector<float> y(n * out), z(n * in), s(n * in);
    cpu::linear(ctx, x.data(), in, n, in, w.data(), out, y.data(), out);
    cpu::rmsNorm(ctx, x.data(), in, w.data(), n, in, 1e-6, z.data(), in);
    cpu::swiglu(ctx, g.data(), in, x.data(), in, n, in, s.data(), in);
    y.insert(y.end(), z.begin(), z.end());
    y.insert(y.end(), s.begin(), s.end());
    return y;
  };
  EXPECT_EQ(run(1), run(2));
}

} // namespace
