//===- KVCache.cpp - the paged latent KV cache ----------------------------===//
//
// One pool of fixed-size blocks, a LIFO free list and a block table per
// sequence slot (the vLLM scheme, without copy-on-write or sharing).
//
// Layout: block-major, then layer, then position within the block:
//
//   pool[block][layer][kBlockTokens][rowFloats]
//
// so one block is one contiguous span (a sequence's memory is whole blocks)
// and, inside a block, the 64 rows of one layer are contiguous with stride
// rowFloats. The absorbed attention relies on the latter: it reads a block of
// one layer as a single [64, rowFloats] matrix and runs one GEMM per block.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace dsrt {

struct KVCache::Impl {
  int64_t layers = 0, rowFloats = 0, numBlocks = 0, maxSequences = 0,
          maxSeqLen = 0;
  /// Floats in one block: layers * kBlockTokens * rowFloats.
  int64_t blockFloats = 0;
  /// calloc'd, so blocks never handed out cost no memory until first written.
  float *pool = nullptr;
  /// Block ids ready to hand out; the back is the next one taken (LIFO:
  /// a just-freed block, still in cache, is reused first).
  std::vector<int32_t> freeList;
  /// Set once a block has been handed out: it may hold an old sequence's
  /// rows and is zeroed before it is handed out again (see take()).
  std::vector<bool> used;
  /// Per slot: the blocks of positions [64 b, 64 b + 64) in order.
  std::vector<std::vector<int32_t>> tables;
  std::vector<bool> isLive;

  bool validSlot(int32_t seq) const {
    return seq >= 0 && seq < maxSequences;
  }

  /// Pops a free block, zeroed. A reused block is cleared so that a row read
  /// before it is written (a bug upstream) gives the same zeros as in a fresh
  /// run, never another sequence's data: results cannot depend on history.
  int32_t take() {
    int32_t b = freeList.back();
    freeList.pop_back();
    if (used[size_t(b)])
      std::memset(pool + b * blockFloats, 0,
                  sizeof(float) * size_t(blockFloats));
    used[size_t(b)] = true;
    return b;
  }
};

/// A broken contract (a bug in the caller, not bad input): report and stop.
[[noreturn]] static void kvFatal(const char *what, long long a, long long b,
                                 long long c) {
  std::fprintf(stderr, "dsrt: KVCache: %s (%lld, %lld, %lld)\n", what, a, b,
               c);
  std::abort();
}

KVCache::KVCache(int64_t layers, int64_t rowFloats, int64_t numBlocks,
                 int64_t maxSequences, int64_t maxSeqLen)
    : impl_(std::make_unique<Impl>()) {
  if (layers < 1 || rowFloats < 1 || maxSequences < 1 || maxSeqLen < 1)
    kvFatal("layers, rowFloats, maxSequences and maxSeqLen must be positive",
            layers, rowFloats, maxSequences);
  // Block ids and slots are int32_t.
  if (numBlocks < 0 || numBlocks > INT32_MAX || maxSequences > INT32_MAX)
    kvFatal("bad block or slot count", numBlocks, maxSequences, 0);
  Impl &im = *impl_;
  im.layers = layers;
  im.rowFloats = rowFloats;
  im.numBlocks = numBlocks;
  im.maxSequences = maxSequences;
  im.maxSeqLen = maxSeqLen;
  im.blockFloats = layers * kBlockTokens * rowFloats;
  if (numBlocks > 0) {
    // One allocation for the pool, zero-initialized.
    im.pool = static_cast<float *>(
        std::calloc(size_t(numBlocks) * size_t(im.blockFloats), sizeof(float)));
    if (!im.pool) {
      std::fprintf(stderr,
                   "dsrt: cannot allocate the KV cache: %lld blocks of %lld "
                   "bytes (set DS_KV_BLOCKS to use fewer)\n",
                   static_cast<long long>(numBlocks),
                   static_cast<long long>(im.blockFloats * 4));
      std::abort();
    }
  }
  im.freeList.reserve(size_t(numBlocks));
  // Pushed in reverse so that block 0 is taken first: a fresh cache hands out
  // blocks in address order.
  for (int64_t b = numBlocks - 1; b >= 0; --b)
    im.freeList.push_back(static_cast<int32_t>(b));
  im.used.assign(size_t(numBlocks), false);
  im.tables.resize(size_t(maxSequences));
  im.isLive.assign(size_t(maxSequences), false);
}

KVCache::~KVCache() { std::free(impl_->pool); }

int32_t KVCache::startSequence(std::string *error) {
  Impl &im = *impl_;
  for (int64_t s = 0; s < im.maxSequences; ++s)
    if (!im.isLive[size_t(s)]) {
      im.isLive[size_t(s)] = true;
      im.tables[size_t(s)].clear();
      return static_cast<int32_t>(s);
    }
  if (error)
    *error = "KV cache: all " + std::to_string(im.maxSequences) +
             " sequence slots are live";
  return -1;
}

bool KVCache::reserve(int32_t seq, int64_t tokens, std::string *error) {
  Impl &im = *impl_;
  auto fail = [&](const std::string &why) {
    if (error)
      *error = why;
    return false;
  };
  if (!live(seq))
    return fail("KV cache: sequence " + std::to_string(seq) + " is not live");
  if (tokens < 0)
    return fail("KV cache: negative token count " + std::to_string(tokens));
  if (tokens > im.maxSeqLen)
    return fail(std::to_string(tokens) +
                " tokens exceed the maximum sequence length " +
                std::to_string(im.maxSeqLen));
  std::vector<int32_t> &table = im.tables[size_t(seq)];
  const int64_t want = (tokens + kBlockTokens - 1) / kBlockTokens;
  const int64_t more = want - int64_t(table.size());
  if (more <= 0)
    return true;
  // All or nothing: check before taking anything.
  if (more > int64_t(im.freeList.size()))
    return fail("KV cache exhausted: sequence " + std::to_string(seq) +
                " needs " + std::to_string(more) + " more block" +
                (more == 1 ? "" : "s") + " of " +
                std::to_string(kBlockTokens) + " tokens, " +
                std::to_string(im.freeList.size()) + " free of " +
                std::to_string(im.numBlocks));
  for (int64_t i = 0; i < more; ++i)
    table.push_back(im.take());
  return true;
}

void KVCache::endSequence(int32_t seq) {
  Impl &im = *impl_;
  if (!live(seq))
    return;
  std::vector<int32_t> &table = im.tables[size_t(seq)];
  // Last block pushed last, so the next reserve reuses the sequence's
  // blocks in its original order.
  for (auto it = table.rbegin(); it != table.rend(); ++it)
    im.freeList.push_back(*it);
  table.clear();
  im.isLive[size_t(seq)] = false;
}

float *KVCache::row(int64_t layer, int32_t seq, int64_t position) {
  Impl &im = *impl_;
  if (layer < 0 || layer >= im.layers)
    kvFatal("row: layer outside the cache (layer, seq, position)", layer, seq,
            position);
  if (!live(seq))
    kvFatal("row: sequence slot is not live (layer, seq, position)", layer,
            seq, position);
  const std::vector<int32_t> &table = im.tables[size_t(seq)];
  if (position < 0 || position >= int64_t(table.size()) * kBlockTokens)
    kvFatal("row: position not reserved (layer, seq, position)", layer, seq,
            position);
  const int64_t block = table[size_t(position / kBlockTokens)];
  return im.pool + block * im.blockFloats +
         (layer * kBlockTokens + position % kBlockTokens) * im.rowFloats;
}

int64_t KVCache::capacity(int32_t seq) const {
  return live(seq) ? int64_t(impl_->tables[size_t(seq)].size()) * kBlockTokens
                   : 0;
}

int32_t KVCache::blockId(int32_t seq, int64_t b) const {
  if (!live(seq) || b < 0 || b >= int64_t(impl_->tables[size_t(seq)].size()))
    return -1;
  return impl_->tables[size_t(seq)][size_t(b)];
}

int64_t KVCache::freeBlocks() const { return int64_t(impl_->freeList.size()); }

int64_t KVCache::totalBlocks() const { return impl_->numBlocks; }

int64_t KVCache::maxSequences() const { return impl_->maxSequences; }

bool KVCache::live(int32_t seq) const {
  return impl_->validSlot(seq) && impl_->isLive[size_t(seq)];
}

} // namespace dsrt
