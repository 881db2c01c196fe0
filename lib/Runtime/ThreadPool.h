//===- ThreadPool.h - libdsrt's persistent worker threads -------*- C++ -*-===//
//
// A fixed set of threads that run one parallelFor at a time. The workers live
// as long as the Context, so a kernel pays a wake-up, not a thread start.
// The calling thread takes the first chunk itself; with one thread, or when
// called from inside a parallel region (nested), everything runs inline, so a
// kernel may call parallelFor without knowing who called it.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_THREADPOOL_H
#define DS_LIB_RUNTIME_THREADPOOL_H

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace dsrt {

class ThreadPool {
public:
  using ChunkFn = void (*)(void *state, int64_t begin, int64_t end);

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int threads() const { return threads_; }

  /// Splits [0, n) into at most threads() contiguous chunks of at least
  /// `minChunk` items (fewer chunks when n is small) and calls fn(begin, end)
  /// once per chunk; returns when all chunks are done.
  template <class F> void parallelFor(int64_t n, F &&fn, int64_t minChunk = 1) {
    using Fn = std::remove_reference_t<F>;
    run(
        n, minChunk,
        [](void *state, int64_t begin, int64_t end) {
          (*static_cast<Fn *>(state))(begin, end);
        },
        const_cast<void *>(static_cast<const void *>(&fn)));
  }

  /// The untyped form behind parallelFor (and dsrt::parallelFor).
  void run(int64_t n, int64_t minChunk, ChunkFn fn, void *state);

private:
  void workerLoop(int index);

  int threads_;
  std::vector<std::thread> workers_;

  std::mutex submit_; // one job at a time when several threads submit
  std::mutex mutex_;  // guards everything below
  std::condition_variable start_, done_;
  uint64_t generation_ = 0; // bumped per job; workers wait for a change
  bool stop_ = false;
  ChunkFn fn_ = nullptr;
  void *state_ = nullptr;
  int64_t n_ = 0;
  int chunks_ = 0;
  int pending_ = 0; // worker chunks of the current job not yet finished
};

} // namespace dsrt

#endif // DS_LIB_RUNTIME_THREADPOOL_H
