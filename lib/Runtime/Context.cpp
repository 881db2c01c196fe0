//===- Context.cpp - per-run state and the thread pool -------------------===//
//
// Weights loading (loadWeights, randomWeights) lives in Weights.cpp.
//
//===----------------------------------------------------------------------===//

#include "ContextImpl.h"
#include "ThreadPool.h"

#include <cblas.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>

namespace dsrt {

//===----------------------------------------------------------------------===//
// ThreadPool
//===----------------------------------------------------------------------===//

// Set while a thread runs a chunk: a nested parallelFor then runs inline
// instead of waiting on workers that are busy with the outer job.
static thread_local bool insideParallelRegion = false;

static int64_t chunkBegin(int64_t n, int chunks, int c) {
  return n * c / chunks;
}

ThreadPool::ThreadPool(int threads) : threads_(std::max(threads, 1)) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i)
    workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread &t : workers_)
    t.join();
}

void ThreadPool::run(int64_t n, int64_t minChunk, ChunkFn fn, void *state) {
  if (n <= 0)
    return;
  minChunk = std::max<int64_t>(minChunk, 1);
  int64_t wanted = (n + minChunk - 1) / minChunk;
  int chunks = static_cast<int>(std::min<int64_t>(threads_, wanted));
  if (chunks <= 1 || insideParallelRegion) {
    fn(state, 0, n);
    return;
  }

  std::lock_guard<std::mutex> submit(submit_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = fn;
    state_ = state;
    n_ = n;
    chunks_ = chunks;
    pending_ = chunks - 1;
    ++generation_;
  }
  start_.notify_all();

  insideParallelRegion = true;
  fn(state, 0, chunkBegin(n, chunks, 1));
  insideParallelRegion = false;

  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_ == 0; });
}

void ThreadPool::workerLoop(int index) {
  insideParallelRegion = true;
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    start_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_)
      return;
    seen = generation_;
    // A job is only submitted once every worker of the previous one is done,
    // so a worker never misses a job it takes part in.
    if (index >= chunks_)
      continue;
    ChunkFn fn = fn_;
    void *state = state_;
    int64_t begin = chunkBegin(n_, chunks_, index);
    int64_t end = chunkBegin(n_, chunks_, index + 1);
    lock.unlock();
    fn(state, begin, end);
    lock.lock();
    if (--pending_ == 0)
      done_.notify_one();
  }
}

void parallelFor(Context &ctx, int64_t n,
                 void (*fn)(void *state, int64_t begin, int64_t end),
                 void *state) {
  ctx.impl().pool->run(n, 1, fn, state);
}

//===----------------------------------------------------------------------===//
// Context
//===----------------------------------------------------------------------===//

/// DS_KV_BLOCKS: the number of cache blocks, overriding the default of
/// enough for every slot at maxSeqLen (a smaller pool lets many slots share
/// memory sized for the typical, not the worst, sequence). 0 when unset. A
/// malformed value is the user's mistake, reported without a core dump.
static int64_t kvBlocksFromEnvironment() {
  const char *text = std::getenv("DS_KV_BLOCKS");
  if (!text || !*text)
    return 0;
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > INT32_MAX) {
    std::fprintf(stderr,
                 "dsrt: DS_KV_BLOCKS must be a positive integer, got '%s'\n",
                 text);
    std::exit(2);
  }
  return v;
}

Context::Context(const ModelSpec &spec, int threads, int64_t maxSequences)
    : impl_(std::make_unique<Impl>(spec)) {
  Impl &im = *impl_;
  im.threads = std::max(threads, 1);
  im.pool = std::make_unique<ThreadPool>(im.threads);
  // Our pool threads the GEMMs (cpu::gemm) in shape-fixed tiles; OpenBLAS's
  // own threads would make results depend on the thread count.
  openblas_set_num_threads(1);

  // 64-byte alignment keeps every plan offset (multiples of 64) aligned for
  // vector loads; aligned_alloc wants a size that is a multiple of it.
  int64_t bytes = std::max<int64_t>(spec.arenaBytes, 64);
  bytes = (bytes + 63) / 64 * 64;
  im.arena = static_cast<char *>(std::aligned_alloc(64, bytes));
  if (!im.arena) {
    std::fprintf(stderr, "dsrt: cannot allocate the %lld-byte arena\n",
                 static_cast<long long>(bytes));
    std::abort();
  }

  if (maxSequences < 1) {
    std::fprintf(stderr, "dsrt: Context: maxSequences must be >= 1 (%lld)\n",
                 static_cast<long long>(maxSequences));
    std::abort();
  }
  if (spec.cacheLayers > 0) {
    const int64_t kBlock = KVCache::kBlockTokens;
    int64_t blocks = kvBlocksFromEnvironment();
    if (blocks == 0)
      blocks = maxSequences * ((spec.maxSeqLen + kBlock - 1) / kBlock);
    im.cache = std::make_unique<KVCache>(
        spec.cacheLayers, spec.kvLoraRank + spec.qkRopeDim, blocks,
        maxSequences, spec.maxSeqLen);
  }

  im.ropes.reserve(spec.numRopes);
  for (int64_t i = 0; i < spec.numRopes; ++i)
    im.ropes.push_back(buildRopeTable(spec.ropes[i], spec.maxSeqLen));
}

Context::~Context() { std::free(impl_->arena); }

const ModelSpec &Context::spec() const { return impl_->spec; }

int Context::threads() const { return impl_->threads; }

const float *Context::weight(int64_t index) const {
  return impl_->weights[index];
}

const Fp8Weight *Context::fp8Weight(int64_t index) const {
  return index >= 0 && size_t(index) < impl_->fp8Weights.size()
             ? impl_->fp8Weights[size_t(index)]
             : nullptr;
}

const uint16_t *Context::bf16Weight(int64_t index) const {
  return index >= 0 && size_t(index) < impl_->bf16Weights.size()
             ? impl_->bf16Weights[size_t(index)]
             : nullptr;
}

int64_t Context::weightBytes() const {
  int64_t bytes = 0;
  for (const std::vector<float> &v : impl_->storage)
    bytes += int64_t(v.size() * sizeof(float));
  for (const std::vector<uint16_t> &v : impl_->bf16)
    bytes += int64_t(v.size() * sizeof(uint16_t));
  for (const Impl::Fp8Storage &q : impl_->fp8)
    bytes += int64_t(q.codes.size() + q.scales.size() * sizeof(float));
  return bytes;
}

char *Context::arena() { return impl_->arena; }

KVCache &Context::cache() {
  if (!impl_->cache) {
    std::fprintf(stderr, "dsrt: the model has no KV cache (cacheLayers 0)\n");
    std::abort();
  }
  return *impl_->cache;
}

float *Context::cacheRow(int64_t layer, int32_t seq, int64_t position) {
  return cache().row(layer, seq, position);
}

void Context::setTokenSequences(const int32_t *seq, int64_t n) {
  impl_->tokenSequences.assign(seq, seq + std::max<int64_t>(n, 0));
}

int32_t Context::tokenSequence(int64_t i) const {
  const std::vector<int32_t> &t = impl_->tokenSequences;
  return i >= 0 && i < int64_t(t.size()) ? t[size_t(i)] : 0;
}

void Context::setOutputs(const Outputs &outputs) {
  impl_->outputs = outputs;
  impl_->argmaxDone = false;
}

const Context::Outputs &Context::outputs() const { return impl_->outputs; }

void Context::setArgmaxDone() { impl_->argmaxDone = true; }

bool Context::argmaxDone() const { return impl_->argmaxDone; }

int64_t Context::logitsRowsFrom(int64_t n) const {
  const Outputs &o = impl_->outputs;
  if (o.logits || !o.argmax)
    return 0;
  return std::max<int64_t>(0, std::min(n, o.argmaxFrom));
}

//===----------------------------------------------------------------------===//
// The device mesh
//===----------------------------------------------------------------------===//

namespace {
int meshRanks(const ModelSpec &spec) {
  return spec.mesh[0] * spec.mesh[1] * spec.mesh[2] * spec.mesh[3];
}
} // namespace

bool Context::setComm(Comm *world, std::string *error) {
  Impl &impl = *impl_;
  const ModelSpec &spec = impl.spec;
  const int ranks = meshRanks(spec);
  if (!world || world->size() != ranks) {
    *error = "the model was compiled for " + std::to_string(ranks) +
             " ranks (tp " + std::to_string(spec.mesh[0]) + " x ep " +
             std::to_string(spec.mesh[1]) + " x pp " +
             std::to_string(spec.mesh[2]) + " x dp " +
             std::to_string(spec.mesh[3]) + ") but runs on " +
             std::to_string(world ? world->size() : 1) +
             " (mpirun -np " + std::to_string(ranks) + ")";
    return false;
  }
  impl.world = world;
  // Coordinates: tp fastest, then ep, dp, pp (Runtime.h MeshAxis).
  static constexpr int kOrder[4] = {int(MeshAxis::TP), int(MeshAxis::EP),
                                    int(MeshAxis::DP), int(MeshAxis::PP)};
  int rest = world->rank();
  for (int a : kOrder) {
    impl.coord[a] = rest % spec.mesh[a];
    rest /= spec.mesh[a];
  }
  // One communicator per axis: the ranks equal in every other coordinate
  // (color), ordered by their coordinate on the axis (key). Every rank
  // makes the same four calls in the same order.
  for (int a = 0; a < 4; ++a) {
    int color = 0;
    for (int b : kOrder)
      if (b != a)
        color = color * spec.mesh[b] + impl.coord[b];
    impl.axisComms[a] = world->split(color, impl.coord[a], error);
    if (!impl.axisComms[a])
      return false;
  }
  // The expert group: ranks equal in tp and pp.
  const int dp = spec.mesh[int(MeshAxis::DP)];
  if (dp > 1) {
    int color = impl.coord[int(MeshAxis::PP)] * spec.mesh[int(MeshAxis::TP)] +
                impl.coord[int(MeshAxis::TP)];
    int key = impl.coord[int(MeshAxis::EP)] * dp + impl.coord[int(MeshAxis::DP)];
    impl.expertGroup = world->split(color, key, error);
    if (!impl.expertGroup)
      return false;
  }
  return true;
}

Comm *Context::expertComm() {
  return impl_->expertGroup ? impl_->expertGroup.get()
                            : impl_->axisComms[int(MeshAxis::EP)].get();
}

int Context::meshCoord(MeshAxis axis) const {
  return impl_->coord[int(axis)];
}

int Context::meshSize(MeshAxis axis) const {
  return impl_->spec.mesh[int(axis)];
}

int Context::rank() const {
  return impl_->world ? impl_->world->rank() : 0;
}

Comm *Context::comm(MeshAxis axis) { return impl_->axisComms[int(axis)].get(); }

bool Context::holdsWeight(int64_t index) const {
  const WeightSpec &w = impl_->spec.weights[index];
  for (int32_t s = 0; s < w.numShards; ++s)
    if (w.shards[s].owner >= 0 &&
        w.shards[s].owner != impl_->coord[int(w.shards[s].axis)])
      return false;
  return true;
}

} // namespace dsrt
