//===- CudaEmu.h - run CUDA kernels on the CPU, for unit tests --*- C++ -*-===//
//
// CI machines have nvcc but no GPU, so the CUDA backend's kernels would only
// ever be compiled there. This header lets the host compiler build a kernel
// header (lib/Runtime/Cuda/*.cuh) and run its kernels on the CPU, so that
// their indexing, tiling and synchronisation are checked against the CPU
// backend everywhere:
//  - blocks run one after another; a block's threads are fibers (ucontext)
//    of one OS thread, switched only at barriers, so `__shared__` (made
//    `static`) is the block's shared memory and atomics need no locks;
//  - __syncthreads waits for every live thread of the block (exited threads
//    drop out, as on the hardware); warp-synchronous ops (shuffles, WMMA)
//    wait for the 32 lanes of the warp and fail if a lane has exited;
//  - nvcuda::wmma holds whole 16x16 tiles in every lane: loads check the
//    alignment rules of the real API (256-bit pointers, ldm a multiple of
//    16 bytes), stores check that every lane holds the same tile;
//  - mma.sync m16n8k16 (bf16, KernelCommon.cuh's mmaBf16) reads the other
//    lanes' fragment registers by the PTX ISA's layout, so a kernel that
//    puts a value in the wrong register or lane gets a wrong product.
// A barrier no thread can pass (divergent __syncthreads, a warp op
// reached by part of a warp) is reported, not waited on forever.
// Blocks, and ready threads between barriers, run first to last, or last
// to first with DS_CUDA_EMU_ORDER=reverse (reverseOrder()): the tests run
// both, so that an unsynchronized read of another thread's or block's
// writes shows in one of them.
//
// Dynamic shared memory (DS_DYNAMIC_SHARED in KernelCommon.cuh) is one
// 128-byte aligned buffer of the size given to launchShared, filled with
// 0xff bytes (NaN as float or bf16) before every block, so a read of
// shared memory the block did not write shows in the results.
//
// Not emulated: the memory model between blocks (fences, coherence),
// timing. Kernels using an unsupported intrinsic fail to compile here.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_UNIT_CUDAEMU_H
#define DS_TEST_UNIT_CUDAEMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include <setjmp.h>
#include <ucontext.h>

// Fibers start with makecontext and then switch with _setjmp/_longjmp,
// which skip swapcontext's signal-mask system call (most of the time of a
// barrier-heavy kernel). Fortified builds check that a longjmp stays on
// one stack: there, every switch is a swapcontext.
#if defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0
#define DS_CUDA_EMU_SWAPCONTEXT 1
#endif

#define DS_CUDA_EMU 1

// Kernel-side keywords as host C++. __shared__ variables are function-local
// statics: one copy, used by the one block that runs at a time.
#undef __global__
#undef __device__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __global__
#define __device__
#define __shared__ static
#define __forceinline__ inline

namespace emu {

[[noreturn]] inline void die(const char *what) {
  std::fprintf(stderr, "cuda-emu: %s\n", what);
  std::abort();
}

/// DS_CUDA_EMU_ORDER=reverse runs a grid's blocks, and a block's ready
/// threads between barriers, last to first. The hardware promises neither
/// order, and a kernel that reads another thread's or block's writes
/// without synchronizing gets what the order gives it: in the forward order
/// a thread sees what lower threads wrote before it (and misses what higher
/// ones write), in reverse the other way round. A kernel's results must not
/// change with it.
inline bool &reverseOrder() {
  static bool reverse = [] {
    const char *v = std::getenv("DS_CUDA_EMU_ORDER");
    if (v && std::strcmp(v, "reverse") != 0 && std::strcmp(v, "forward") != 0)
      die("DS_CUDA_EMU_ORDER must be forward or reverse");
    return v && std::strcmp(v, "reverse") == 0;
  }();
  return reverse;
}

/// pdlEnter()'s calls so far (KernelCommon.cuh counts them here in an
/// emulated build). The backend's launches (launchKernelOn) check that some
/// thread of each grid waited: on a GPU a grid launched early (programmatic
/// dependent launch) that never waits runs, and may finish, alongside the
/// kernel before it, and the kernel after it then waits for it only.
inline uint64_t &gridWaits() {
  static uint64_t n = 0;
  return n;
}

/// Per thread: kernels keep a few KB of locals (emulated WMMA fragments
/// hold whole tiles).
constexpr size_t kStackBytes = 128 * 1024;

struct Fiber {
  ucontext_t ctx;
  jmp_buf jump;
  bool started = false;
  std::unique_ptr<char[]> stack;
  enum State { Ready, AtBlockBarrier, AtWarpBarrier, Done } state = Ready;
  uint3 tid;
};

/// The block being run and its threads.
struct Runner {
  dim3 grid, block;
  uint3 blockIdx;
  std::vector<Fiber> fibers;
  std::vector<uint64_t> exchange; // one word per thread (shuffles, checks)
  std::vector<const void *> tiles; // per thread: the tile a WMMA store holds
  std::unique_ptr<unsigned char, void (*)(void *)> shared{nullptr, std::free};
  size_t sharedBytes = 0;
  ucontext_t scheduler;
  jmp_buf schedulerJump;
  Fiber *current = nullptr;
  const std::function<void()> *body = nullptr;
};

inline Runner *&runner() {
  static Runner *r = nullptr;
  return r;
}

inline unsigned linearThread() {
  const Runner &r = *runner();
  const uint3 t = r.current->tid;
  return t.x + r.block.x * (t.y + r.block.y * t.z);
}

/// Back to the scheduler; returns when the fiber runs again.
inline void park(Fiber::State s) {
  Runner &r = *runner();
  Fiber *f = r.current;
  f->state = s;
#ifdef DS_CUDA_EMU_SWAPCONTEXT
  swapcontext(&f->ctx, &r.scheduler);
#else
  if (_setjmp(f->jump) == 0)
    _longjmp(r.schedulerJump, 1);
#endif
}

/// Runs fiber f until it parks or finishes.
inline void resume(Runner &r, Fiber &f) {
  r.current = &f;
#ifdef DS_CUDA_EMU_SWAPCONTEXT
  swapcontext(&r.scheduler, &f.ctx);
#else
  if (_setjmp(r.schedulerJump) == 0) {
    if (!f.started) {
      f.started = true;
      setcontext(&f.ctx);
    }
    _longjmp(f.jump, 1);
  }
#endif
}

inline void blockSync() { park(Fiber::AtBlockBarrier); }

/// Every lane of the calling warp reaches this point before any goes on.
inline void warpSync() { park(Fiber::AtWarpBarrier); }

inline void fiberEntry() {
  (*runner()->body)();
  runner()->current->state = Fiber::Done;
#ifndef DS_CUDA_EMU_SWAPCONTEXT
  _longjmp(runner()->schedulerJump, 1);
#endif
  // else uc_link returns to the scheduler.
}

/// Runs one block to completion; reports a barrier nobody can pass.
inline void runBlock(Runner &r) {
  const size_t threads = r.fibers.size();
  for (size_t i = 0; i < threads; ++i) {
    Fiber &f = r.fibers[i];
    f.state = Fiber::Ready;
    f.started = false;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &r.scheduler;
    makecontext(&f.ctx, fiberEntry, 0);
  }
  const bool reverse = reverseOrder();
  for (;;) {
    for (size_t i = 0; i < threads; ++i) {
      Fiber &f = r.fibers[reverse ? threads - 1 - i : i];
      if (f.state == Fiber::Ready)
        resume(r, f);
    }
    r.current = nullptr;
    // Nobody is ready: release whole warps waiting at a warp barrier, else
    // the block barrier once every live thread waits there.
    bool released = false, allDone = true, allAtBlock = true;
    for (size_t w = 0; w < threads; w += 32) {
      const size_t end = std::min(threads, w + 32);
      bool atWarp = true, anyAtWarp = false, anyDone = false;
      for (size_t i = w; i < end; ++i) {
        const Fiber::State s = r.fibers[i].state;
        atWarp &= s == Fiber::AtWarpBarrier;
        anyAtWarp |= s == Fiber::AtWarpBarrier;
        anyDone |= s == Fiber::Done;
      }
      if (anyAtWarp && anyDone)
        die("a warp-synchronous op (shuffle, WMMA, __syncwarp) in a warp "
            "whose other lanes have exited");
      if (atWarp) {
        for (size_t i = w; i < end; ++i)
          r.fibers[i].state = Fiber::Ready;
        released = true;
      }
    }
    if (released)
      continue;
    for (const Fiber &f : r.fibers) {
      allDone &= f.state == Fiber::Done;
      allAtBlock &= f.state == Fiber::Done || f.state == Fiber::AtBlockBarrier;
    }
    if (allDone)
      return;
    if (!allAtBlock)
      die("deadlock: threads wait at different barriers (a __syncthreads or "
          "warp op not reached by every thread)");
    for (Fiber &f : r.fibers)
      if (f.state == Fiber::AtBlockBarrier)
        f.state = Fiber::Ready;
  }
}

/// kernel<<<grid, block, sharedBytes>>>(args...), run to completion.
template <class... KArgs, class... Args>
void launchShared(dim3 grid, dim3 block, size_t sharedBytes,
                  void (*kernel)(KArgs...), Args &&...args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "argument count");
  std::tuple<std::decay_t<KArgs>...> a(std::forward<Args>(args)...);
  const std::function<void()> body = [&] { std::apply(kernel, a); };
  Runner r;
  r.grid = grid;
  r.block = block;
  r.body = &body;
  const size_t threads = size_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024)
    die("block size out of range");
  if (sharedBytes) {
    r.sharedBytes = sharedBytes;
    r.shared.reset(static_cast<unsigned char *>(
        std::aligned_alloc(128, (sharedBytes + 127) / 128 * 128)));
  }
  r.fibers.resize(threads);
  r.exchange.resize(threads);
  r.tiles.resize(threads);
  for (size_t i = 0; i < threads; ++i) {
    r.fibers[i].stack.reset(new char[kStackBytes]);
    r.fibers[i].tid = uint3{unsigned(i % block.x),
                            unsigned(i / block.x % block.y),
                            unsigned(i / (size_t(block.x) * block.y))};
  }
  Runner *outer = runner();
  runner() = &r;
  const bool reverse = reverseOrder();
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        r.blockIdx = reverse
                         ? uint3{grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z}
                         : uint3{x, y, z};
        if (r.sharedBytes)
          std::memset(r.shared.get(), 0xff, r.sharedBytes);
        runBlock(r);
      }
  runner() = outer;
}

/// kernel<<<grid, block>>>(args...), run to completion.
template <class... KArgs, class... Args>
void launch(dim3 grid, dim3 block, void (*kernel)(KArgs...), Args &&...args) {
  launchShared(grid, block, 0, kernel, std::forward<Args>(args)...);
}

/// The block's dynamic shared memory (DS_DYNAMIC_SHARED).
template <class T> T *dynamicShared() {
  Runner &r = *runner();
  if (!r.sharedBytes)
    die("dynamic shared memory used by a kernel launched without any");
  return reinterpret_cast<T *>(r.shared.get());
}

inline unsigned lane() { return linearThread() % 32; }

/// The value of lane `src` of this warp (every lane calls it).
template <class T> T exchange(T v, unsigned src) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a large type");
  Runner &r = *runner();
  const unsigned me = linearThread(), base = me - me % 32;
  std::memcpy(&r.exchange[me], &v, sizeof(T));
  warpSync();
  if (base + src >= r.fibers.size())
    die("shuffle from a lane outside the block");
  T out;
  std::memcpy(&out, &r.exchange[base + src], sizeof(T));
  warpSync(); // nobody overwrites a slot before every lane read it
  return out;
}

/// The bits of `pred` over the warp's lanes (every lane calls it).
inline unsigned ballot(bool pred) {
  Runner &r = *runner();
  const unsigned me = linearThread(), base = me - me % 32;
  r.exchange[me] = pred ? 1 : 0;
  warpSync();
  unsigned bits = 0;
  for (unsigned l = 0; l < 32 && base + l < r.fibers.size(); ++l)
    bits |= unsigned(r.exchange[base + l] != 0) << l;
  warpSync(); // nobody overwrites a slot before every lane read it
  return bits;
}

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for the calling
/// warp (KernelCommon.cuh's mmaBf16 documents the fragments): each lane
/// reads the A rows and B columns of its four outputs from the lanes that
/// hold them, and adds their products to d in k order.
inline void mmaM16N8K16Bf16(float d[4], const uint32_t a[4],
                            const uint32_t b[2]) {
  Runner &r = *runner();
  const unsigned me = linearThread(), base = me - me % 32;
  if (base + 32 > r.fibers.size())
    die("mma.sync in a warp of fewer than 32 threads");
  const uint32_t *mine[2] = {a, b};
  r.tiles[me] = mine; // this fiber's stack stays put while it is parked
  warpSync();
  auto half = [](uint32_t word, int k) {
    const uint16_t bits = uint16_t(k % 2 ? word >> 16 : word & 0xffffu);
    uint32_t f = uint32_t(bits) << 16;
    float v;
    std::memcpy(&v, &f, sizeof(v));
    return v;
  };
  auto operands = [&](unsigned lane) {
    return static_cast<const uint32_t *const *>(r.tiles[base + lane]);
  };
  auto aAt = [&](int row, int k) { // lane (row % 8, (k % 8) / 2)
    const uint32_t *la =
        operands(unsigned(row % 8) * 4 + unsigned(k % 8) / 2)[0];
    return half(la[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k);
  };
  auto bAt = [&](int k, int col) { // lane (col, (k % 8) / 2)
    const uint32_t *lb = operands(unsigned(col) * 4 + unsigned(k % 8) / 2)[1];
    return half(lb[k >= 8 ? 1 : 0], k);
  };
  const int g = int(me % 32) / 4, t = int(me % 4);
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + i % 2;
    float acc = d[i];
    for (int k = 0; k < 16; ++k)
      acc += aAt(row, k) * bAt(k, col);
    out[i] = acc;
  }
  warpSync(); // nobody leaves (and reuses its stack) before all have read
  std::memcpy(d, out, sizeof(out));
}

} // namespace emu

#define threadIdx (emu::runner()->current->tid)
#define blockIdx (emu::runner()->blockIdx)
#define blockDim (emu::runner()->block)
#define gridDim (emu::runner()->grid)

inline void __syncthreads() { emu::blockSync(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warpSync(); }

template <class T> T __shfl_xor_sync(unsigned, T v, int laneMask, int width = 32) {
  const unsigned l = emu::lane();
  const unsigned src = (l & ~unsigned(width - 1)) | ((l ^ unsigned(laneMask)) & unsigned(width - 1));
  return emu::exchange(v, src);
}
template <class T> T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const unsigned l = emu::lane(), seg = l % unsigned(width);
  return emu::exchange(v, seg + delta < unsigned(width) ? l + delta : l);
}
template <class T> T __shfl_sync(unsigned, T v, int srcLane, int width = 32) {
  const unsigned l = emu::lane();
  return emu::exchange(v, (l & ~unsigned(width - 1)) + unsigned(srcLane % width));
}

inline unsigned __ballot_sync(unsigned, int pred) {
  return emu::ballot(pred != 0);
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }

// Fibers switch only at barriers: read-modify-write is atomic.
template <class T> T atomicAdd(T *p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T> T atomicMax(T *p, T v) {
  const T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <class T> T __ldg(const T *p) { return *p; }
template <class T> T __ldcg(const T *p) { return *p; }
// Blocks run one after another: every write is visible to later blocks.
inline void __threadfence() {}
// CUDA's math functions are global; the host's are in std.
using std::isinf;
using std::isnan;

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct Shape;
template <int M, int N, int K> struct Shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K> struct Shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K> struct Shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

/// The whole tile, row-major, in every lane (the hardware spreads it).
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = Shape<Use, M, N, K>::rows;
  static constexpr int cols = Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  T x[num_elements];
};

inline float toF(float v) { return v; }
inline float toF(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float toF(__half v) { return __half2float(v); }

template <class T> void checkPointer(const T *p, unsigned ldm, const char *op) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    std::fprintf(stderr, "cuda-emu: %s: pointer %p not 256-bit aligned\n", op,
                 static_cast<const void *>(p));
    std::abort();
  }
  if (ldm % (16 / sizeof(T)) != 0) {
    std::fprintf(stderr, "cuda-emu: %s: ldm %u not a multiple of 16 bytes\n",
                 op, ldm);
    std::abort();
  }
}

template <class Use, int M, int N, int K, class T, class L>
void fill_fragment(fragment<Use, M, N, K, T, L> &f, T v) {
  for (int i = 0; i < f.num_elements; ++i)
    f.x[i] = v;
}

template <class Use, int M, int N, int K, class T, class L>
void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const T *p,
                      unsigned ldm) {
  static_assert(!std::is_void<L>::value, "layout needed");
  checkPointer(p, ldm, "load_matrix_sync");
  emu::warpSync();
  constexpr bool rowMajor = std::is_same<L, row_major>::value;
  for (int r = 0; r < f.rows; ++r)
    for (int c = 0; c < f.cols; ++c)
      f.x[r * f.cols + c] = rowMajor ? p[r * ldm + c] : p[c * ldm + r];
  emu::warpSync();
}

template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T> &f, const T *p,
                      unsigned ldm, layout_t layout) {
  checkPointer(p, ldm, "load_matrix_sync");
  emu::warpSync();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  emu::warpSync();
}

template <int M, int N, int K, class T>
void store_matrix_sync(T *p, const fragment<accumulator, M, N, K, T> &f,
                       unsigned ldm, layout_t layout) {
  checkPointer(p, ldm, "store_matrix_sync");
  emu::Runner &r = *emu::runner();
  const unsigned me = emu::linearThread();
  r.tiles[me] = f.x;
  emu::warpSync();
  if (me % 32 == 0) {
    for (unsigned l = 1; l < 32 && me + l < r.tiles.size(); ++l)
      if (std::memcmp(r.tiles[me + l], f.x, sizeof(f.x)) != 0)
        emu::die("store_matrix_sync: lanes hold different tiles (a "
                 "lane-dependent change to fragment elements)");
    for (int i = 0; i < M; ++i)
      for (int c = 0; c < N; ++c)
        (layout == mem_row_major ? p[i * ldm + c] : p[c * ldm + i]) =
            f.x[i * N + c];
  }
  emu::warpSync();
}

template <int M, int N, int K, class TA, class LA, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC> &d,
              const fragment<matrix_a, M, N, K, TA, LA> &a,
              const fragment<matrix_b, M, N, K, TA, LB> &b,
              const fragment<accumulator, M, N, K, TC> &c) {
  emu::warpSync();
  TC out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k)
        acc += toF(a.x[i * K + k]) * toF(b.x[k * N + j]);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

} // namespace wmma
} // namespace nvcuda

#endif // DS_TEST_UNIT_CUDAEMU_H
