//===- KVCacheTest.cpp - the paged latent KV cache -----------------------===//
//
// Block accounting (allocation, growth, release, exhaustion, limits), data
// isolation between sequences, the layout the absorbed attention relies on,
// and how Context sizes the cache (DS_KV_BLOCKS).
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Runtime.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace dsrt;

namespace {

constexpr int64_t kB = KVCache::kBlockTokens;

/// A value unique to (layer, seq, position, j), so that a row read from the
/// wrong place is noticed.
float tag(int64_t layer, int32_t seq, int64_t pos, int64_t j) {
  return float(layer * 1000000 + seq * 100000 + pos * 10 + j + 1);
}

void fill(KVCache &c, int64_t layers, int64_t rowFloats, int32_t seq,
          int64_t from, int64_t to) {
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t p = from; p < to; ++p)
      for (int64_t j = 0; j < rowFloats; ++j)
        c.row(l, seq, p)[j] = tag(l, seq, p, j);
}

/// Number of (layer, position, j) in [from, to) whose value is not the tag.
int64_t mismatches(KVCache &c, int64_t layers, int64_t rowFloats, int32_t seq,
                   int64_t from, int64_t to) {
  int64_t bad = 0;
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t p = from; p < to; ++p)
      for (int64_t j = 0; j < rowFloats; ++j)
        bad += c.row(l, seq, p)[j] != tag(l, seq, p, j);
  return bad;
}

TEST(KVCache, AllocationAndLayout) {
  KVCache c(/*layers=*/3, /*rowFloats=*/5, /*numBlocks=*/4,
            /*maxSequences=*/2, /*maxSeqLen=*/300);
  EXPECT_EQ(c.totalBlocks(), 4);
  EXPECT_EQ(c.freeBlocks(), 4);
  EXPECT_FALSE(c.live(0));
  EXPECT_FALSE(c.live(-1));
  EXPECT_FALSE(c.live(2));
  EXPECT_EQ(c.capacity(0), 0);

  std::string error;
  int32_t s = c.startSequence(&error);
  ASSERT_EQ(s, 0) << error;
  EXPECT_TRUE(c.live(s));
  EXPECT_EQ(c.capacity(s), 0); // no blocks until reserved
  EXPECT_TRUE(c.reserve(s, 0, &error)) << error;
  EXPECT_EQ(c.freeBlocks(), 4);
  ASSERT_TRUE(c.reserve(s, 1, &error)) << error;
  EXPECT_EQ(c.capacity(s), kB);
  EXPECT_EQ(c.freeBlocks(), 3);

  // Within a block: one layer's 64 rows contiguous, then the next layer's.
  EXPECT_EQ(c.row(0, s, 1) - c.row(0, s, 0), 5);
  EXPECT_EQ(c.row(0, s, 63) - c.row(0, s, 0), 63 * 5);
  EXPECT_EQ(c.row(1, s, 0) - c.row(0, s, 0), kB * 5);
  EXPECT_EQ(c.row(2, s, 0) - c.row(0, s, 0), 2 * kB * 5);
  // Zero-initialized.
  for (int64_t l = 0; l < 3; ++l)
    for (int64_t p = 0; p < kB; ++p)
      for (int j = 0; j < 5; ++j)
        ASSERT_EQ(c.row(l, s, p)[j], 0.0f);
}

TEST(KVCache, GrowthAcrossBlockBoundaries) {
  KVCache c(2, 3, 8, 2, 500);
  std::string error;
  int32_t s = c.startSequence(&error);
  ASSERT_TRUE(c.reserve(s, 64, &error)) << error;
  EXPECT_EQ(c.capacity(s), 64);
  EXPECT_EQ(c.freeBlocks(), 7);
  fill(c, 2, 3, s, 0, 64);
  // One more position: one more block; what was written stays.
  ASSERT_TRUE(c.reserve(s, 65, &error)) << error;
  EXPECT_EQ(c.capacity(s), 128);
  EXPECT_EQ(c.freeBlocks(), 6);
  fill(c, 2, 3, s, 64, 65);
  // Within the reserved capacity: nothing taken.
  ASSERT_TRUE(c.reserve(s, 128, &error)) << error;
  EXPECT_EQ(c.freeBlocks(), 6);
  // Several blocks at once.
  ASSERT_TRUE(c.reserve(s, 300, &error)) << error;
  EXPECT_EQ(c.capacity(s), 320);
  EXPECT_EQ(c.freeBlocks(), 3);
  fill(c, 2, 3, s, 65, 300);
  EXPECT_EQ(mismatches(c, 2, 3, s, 0, 300), 0);
  // Never shrinks.
  ASSERT_TRUE(c.reserve(s, 10, &error)) << error;
  EXPECT_EQ(c.capacity(s), 320);
  EXPECT_EQ(c.freeBlocks(), 3);
  // Positions 63 and 64 are in different blocks.
  EXPECT_NE(c.row(0, s, 64) - c.row(0, s, 63), 3);
}

TEST(KVCache, ReleaseAndReuse) {
  KVCache c(2, 4, 4, 3, 256);
  std::string error;
  int32_t a = c.startSequence(&error), b = c.startSequence(&error);
  ASSERT_EQ(a, 0);
  ASSERT_EQ(b, 1);
  ASSERT_TRUE(c.reserve(a, 130, &error)) << error;
  ASSERT_TRUE(c.reserve(b, 10, &error)) << error;
  EXPECT_EQ(c.freeBlocks(), 0);
  fill(c, 2, 4, a, 0, 130);
  fill(c, 2, 4, b, 0, 10);

  c.endSequence(a);
  EXPECT_FALSE(c.live(a));
  EXPECT_EQ(c.capacity(a), 0);
  EXPECT_EQ(c.freeBlocks(), 3);
  // Ending a slot that is not live (again, never started, out of range)
  // changes nothing.
  c.endSequence(a);
  c.endSequence(2);
  c.endSequence(-1);
  c.endSequence(7);
  EXPECT_EQ(c.freeBlocks(), 3);
  EXPECT_TRUE(c.live(b));

  // The lowest free slot again, with a's blocks, cleared.
  int32_t d = c.startSequence(&error);
  EXPECT_EQ(d, 0);
  EXPECT_EQ(c.capacity(d), 0);
  ASSERT_TRUE(c.reserve(d, 192, &error)) << error;
  EXPECT_EQ(c.freeBlocks(), 0);
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t p = 0; p < 192; ++p)
      for (int j = 0; j < 4; ++j)
        ASSERT_EQ(c.row(l, d, p)[j], 0.0f) << l << "," << p;
  EXPECT_EQ(mismatches(c, 2, 4, b, 0, 10), 0);

  c.endSequence(d);
  c.endSequence(b);
  EXPECT_EQ(c.freeBlocks(), 4);
}

TEST(KVCache, ExhaustionIsAllOrNothing) {
  KVCache c(2, 3, 4, 2, 400);
  std::string error;
  int32_t a = c.startSequence(&error), b = c.startSequence(&error);
  ASSERT_TRUE(c.reserve(a, 150, &error)) << error; // 3 blocks
  ASSERT_TRUE(c.reserve(b, 64, &error)) << error;  // 1 block
  fill(c, 2, 3, a, 0, 150);
  fill(c, 2, 3, b, 0, 64);
  EXPECT_EQ(c.freeBlocks(), 0);

  error.clear();
  EXPECT_FALSE(c.reserve(b, 65, &error));
  EXPECT_EQ(error, "KV cache exhausted: sequence 1 needs 1 more block of 64 "
                   "tokens, 0 free of 4");
  EXPECT_EQ(c.capacity(b), 64);
  EXPECT_EQ(c.freeBlocks(), 0);

  // 3 free, 4 wanted: none taken.
  c.endSequence(a);
  EXPECT_EQ(c.freeBlocks(), 3);
  EXPECT_FALSE(c.reserve(b, 300, &error));
  EXPECT_EQ(error, "KV cache exhausted: sequence 1 needs 4 more blocks of 64 "
                   "tokens, 3 free of 4");
  EXPECT_EQ(c.capacity(b), 64);
  EXPECT_EQ(c.freeBlocks(), 3);
  EXPECT_EQ(mismatches(c, 2, 3, b, 0, 64), 0);

  // What does fit still works after a failure.
  ASSERT_TRUE(c.reserve(b, 256, &error)) << error;
  EXPECT_EQ(c.freeBlocks(), 0);
  EXPECT_EQ(mismatches(c, 2, 3, b, 0, 64), 0);
}

TEST(KVCache, SlotExhaustion) {
  KVCache c(1, 2, 10, 2, 64);
  std::string error;
  EXPECT_EQ(c.startSequence(&error), 0);
  EXPECT_EQ(c.startSequence(&error), 1);
  error.clear();
  EXPECT_EQ(c.startSequence(&error), -1);
  EXPECT_NE(error.find("all 2 sequence slots are live"), std::string::npos)
      << error;
  EXPECT_EQ(c.startSequence(nullptr), -1); // error is optional
  c.endSequence(0);
  EXPECT_EQ(c.startSequence(&error), 0);
  EXPECT_EQ(c.freeBlocks(), 10);
}

TEST(KVCache, MaxSeqLenAndBadRequests) {
  KVCache c(1, 2, 10, 2, 100);
  std::string error;
  int32_t s = c.startSequence(&error);
  EXPECT_FALSE(c.reserve(s, 101, &error));
  EXPECT_EQ(error, "101 tokens exceed the maximum sequence length 100");
  EXPECT_EQ(c.capacity(s), 0);
  EXPECT_EQ(c.freeBlocks(), 10);
  // maxSeqLen itself is fine; capacity rounds up to whole blocks.
  ASSERT_TRUE(c.reserve(s, 100, &error)) << error;
  EXPECT_EQ(c.capacity(s), 128);

  error.clear();
  EXPECT_FALSE(c.reserve(1, 10, &error)); // slot 1 not started
  EXPECT_NE(error.find("not live"), std::string::npos) << error;
  EXPECT_FALSE(c.reserve(5, 10, &error));
  EXPECT_FALSE(c.reserve(s, -1, &error));
  EXPECT_EQ(c.freeBlocks(), 8);
}

TEST(KVCache, DataIsolationBetweenSequences) {
  const int64_t layers = 3, row = 7;
  KVCache c(layers, row, 12, 3, 256);
  std::string error;
  int32_t s[3];
  for (int i = 0; i < 3; ++i)
    s[i] = c.startSequence(&error);
  // Grow alternately so that block tables interleave.
  for (int64_t t : {64, 128, 200})
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(c.reserve(s[i], std::min<int64_t>(t, 100 + 50 * i), &error))
          << error;
  for (int i = 0; i < 3; ++i)
    fill(c, layers, row, s[i], 0, 100 + 50 * i);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(mismatches(c, layers, row, s[i], 0, 100 + 50 * i), 0) << i;

  // Ending one and reusing its blocks for a new sequence leaves the others.
  c.endSequence(s[1]);
  int32_t n = c.startSequence(&error);
  EXPECT_EQ(n, s[1]);
  ASSERT_TRUE(c.reserve(n, 256, &error)) << error;
  fill(c, layers, row, n, 0, 256);
  EXPECT_EQ(mismatches(c, layers, row, s[0], 0, 100), 0);
  EXPECT_EQ(mismatches(c, layers, row, s[2], 0, 200), 0);
  EXPECT_EQ(mismatches(c, layers, row, n, 0, 256), 0);
}

TEST(KVCache, RandomOperationsKeepInvariants) {
  // Random start/reserve/write/end against a model of who owns what.
  const int64_t layers = 2, row = 3, blocks = 20, slots = 4, maxLen = 400;
  KVCache c(layers, row, blocks, slots, maxLen);
  std::map<int32_t, int64_t> written; // live slot -> positions written
  std::mt19937 gen(7);
  std::string error;
  for (int step = 0; step < 2000; ++step) {
    int op = int(gen() % 4);
    if (op == 0) {
      int32_t s = c.startSequence(&error);
      if (written.size() < size_t(slots)) {
        ASSERT_GE(s, 0);
        ASSERT_EQ(written.count(s), 0u);
        written[s] = 0;
      } else {
        ASSERT_EQ(s, -1);
      }
    } else if (op == 1 && !written.empty()) {
      auto it = written.begin();
      std::advance(it, gen() % written.size());
      c.endSequence(it->first);
      written.erase(it);
    } else if (!written.empty()) {
      auto it = written.begin();
      std::advance(it, gen() % written.size());
      int64_t want = it->second + int64_t(gen() % 100);
      int64_t freeBefore = c.freeBlocks(), capBefore = c.capacity(it->first);
      if (c.reserve(it->first, want, &error)) {
        ASSERT_GE(c.capacity(it->first), want);
        fill(c, layers, row, it->first, it->second, want);
        it->second = std::max(it->second, want);
      } else {
        ASSERT_EQ(c.freeBlocks(), freeBefore);
        ASSERT_EQ(c.capacity(it->first), capBefore);
      }
    }
    int64_t used = 0;
    for (auto &w : written)
      used += c.capacity(w.first) / kB;
    ASSERT_EQ(used + c.freeBlocks(), blocks) << "step " << step;
  }
  for (auto &w : written)
    EXPECT_EQ(mismatches(c, layers, row, w.first, 0, w.second), 0);
}

using KVCacheDeathTest = ::testing::Test;

// blockId is what a device mirror of the pool (the CUDA backend's block
// table) addresses rows by: it must name the block row() uses.
TEST(KVCache, BlockIdsMatchRows) {
  const int64_t layers = 2, rowFloats = 3;
  KVCache c(layers, rowFloats, 8, 3, 4 * kB);
  EXPECT_EQ(c.maxSequences(), 3);
  std::string why;
  const int32_t a = c.startSequence(&why), b = c.startSequence(&why);
  ASSERT_TRUE(c.reserve(a, 2 * kB + 1, &why)) << why;
  ASSERT_TRUE(c.reserve(b, kB, &why)) << why;
  const float *base = c.row(0, a, 0) - c.blockId(a, 0) * layers * kB * rowFloats;
  for (int32_t seq : {a, b})
    for (int64_t blk = 0; blk * kB < c.capacity(seq); ++blk) {
      const int32_t id = c.blockId(seq, blk);
      ASSERT_GE(id, 0);
      for (int64_t l = 0; l < layers; ++l)
        EXPECT_EQ(c.row(l, seq, blk * kB + 5),
                  base + ((id * layers + l) * kB + 5) * rowFloats);
    }
  EXPECT_EQ(c.blockId(a, 3), -1); // not reserved
  EXPECT_EQ(c.blockId(b, -1), -1);
  EXPECT_EQ(c.blockId(2, 0), -1); // slot not live
  c.endSequence(b);
  EXPECT_EQ(c.blockId(b, 0), -1);
}

TEST(KVCacheDeathTest, RowOutsideTheReservationAborts) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  KVCache c(2, 3, 4, 2, 200);
  std::string error;
  int32_t s = c.startSequence(&error);
  ASSERT_TRUE(c.reserve(s, 10, &error));
  EXPECT_DEATH(c.row(0, s, 64), "position not reserved");
  EXPECT_DEATH(c.row(0, s, -1), "position not reserved");
  EXPECT_DEATH(c.row(0, 1, 0), "not live");
  EXPECT_DEATH(c.row(2, s, 0), "layer outside");
  c.endSequence(s);
  EXPECT_DEATH(c.row(0, s, 0), "not live");
}

//===----------------------------------------------------------------------===//
// Context's cache
//===----------------------------------------------------------------------===//

ModelSpec cacheSpec(int64_t cacheLayers, int64_t maxSeqLen) {
  ModelSpec s{};
  s.name = "kvtest";
  s.vocabSize = 8;
  s.hiddenSize = 4;
  s.cacheLayers = cacheLayers;
  s.kvLoraRank = 6;
  s.qkRopeDim = 2;
  s.maxSeqLen = maxSeqLen;
  s.arenaBytes = 64;
  return s;
}

/// Sets an environment variable for the scope of one test.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = std::getenv(name);
    had_ = old != nullptr;
    if (had_)
      old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

private:
  const char *name_;
  bool had_ = false;
  std::string old_;
};

TEST(ContextCache, DefaultSizeAndGeometry) {
  ScopedEnv env("DS_KV_BLOCKS", nullptr);
  ModelSpec spec = cacheSpec(3, 100);
  Context ctx(spec, 1, 4);
  KVCache &c = ctx.cache();
  EXPECT_EQ(c.totalBlocks(), 4 * 2); // 4 slots x ceil(100 / 64)
  std::string error;
  for (int32_t s = 0; s < 4; ++s) {
    ASSERT_EQ(c.startSequence(&error), s);
    ASSERT_TRUE(c.reserve(s, 100, &error)) << error;
  }
  EXPECT_EQ(c.startSequence(&error), -1);
  EXPECT_EQ(c.freeBlocks(), 0);
  // rowFloats = kvLoraRank + qkRopeDim; cacheLayers layers.
  EXPECT_EQ(ctx.cacheRow(0, 2, 1) - ctx.cacheRow(0, 2, 0), 8);
  EXPECT_EQ(ctx.cacheRow(2, 2, 0) - ctx.cacheRow(0, 2, 0), 2 * kB * 8);
  EXPECT_EQ(ctx.cacheRow(2, 3, 99), c.row(2, 3, 99));

  // The default: one slot.
  Context one(spec, 1);
  EXPECT_EQ(one.cache().totalBlocks(), 2);
}

TEST(ContextCache, DsKvBlocksHonoured) {
  ScopedEnv env("DS_KV_BLOCKS", "3");
  ModelSpec spec = cacheSpec(2, 1000);
  Context ctx(spec, 1, 4);
  EXPECT_EQ(ctx.cache().totalBlocks(), 3);
  std::string error;
  int32_t s = ctx.cache().startSequence(&error);
  EXPECT_TRUE(ctx.cache().reserve(s, 192, &error)) << error;
  EXPECT_FALSE(ctx.cache().reserve(s, 193, &error));
  EXPECT_NE(error.find("KV cache exhausted"), std::string::npos) << error;
}

TEST(ContextCacheDeathTest, BadDsKvBlocksAndNoCache) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  ModelSpec spec = cacheSpec(2, 100);
  for (const char *bad : {"0", "-3", "12x", "lots"}) {
    ScopedEnv env("DS_KV_BLOCKS", bad);
    EXPECT_EXIT(Context(spec, 1), ::testing::ExitedWithCode(2),
                "DS_KV_BLOCKS must be a positive integer")
        << bad;
  }
  // No cache layers: no cache, and asking for it is a bug.
  ScopedEnv env("DS_KV_BLOCKS", nullptr);
  ModelSpec none = cacheSpec(0, 100);
  Context ctx(none, 1, 2);
  EXPECT_DEATH(ctx.cache(), "no KV cache");
}

} // namespace
