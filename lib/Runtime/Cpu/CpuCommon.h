//===- CpuCommon.h - helpers shared by the CPU kernels ----------*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_CPU_CPUCOMMON_H
#define DS_LIB_RUNTIME_CPU_CPUCOMMON_H

#include "ContextImpl.h"
#include "ThreadPool.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace dsrt {
namespace cpu {

inline ThreadPool &pool(Context &ctx) { return *ctx.impl().pool; }

/// A broken contract between emitted code and the runtime (the compiler
/// checked the model, so this is a bug, not bad input): report and stop.
[[noreturn]] inline void fatal(const char *kernel, const char *what,
                               long long value) {
  std::fprintf(stderr, "dsrt: %s: %s (%lld)\n", kernel, what, value);
  std::abort();
}

/// A collective failed (a peer died, timed out): report it with this
/// rank and the kernel, and exit non-zero so that mpirun ends the job
/// instead of computing on garbage.
[[noreturn]] void commFailed(Context &ctx, const char *kernel,
                             const std::string &error);

/// Rows per parallel chunk so that a chunk has about `grain` elements of
/// work: small kernels stay on one thread instead of paying a wake-up.
inline int64_t rowsPerChunk(int64_t rowWork, int64_t grain = 16384) {
  if (rowWork < 1)
    rowWork = 1;
  return rowWork >= grain ? 1 : (grain + rowWork - 1) / rowWork;
}

/// Runs fn(i) for every i in [0, n): spread over the pool when there are at
/// least as many items as threads (GEMMs inside fn then run inline), else one
/// after another so that the GEMMs inside use the pool. Same arithmetic
/// either way, so the same results.
template <class F> void forEachItem(Context &ctx, int64_t n, F &&fn) {
  ThreadPool &p = pool(ctx);
  if (n >= p.threads() && n > 1) {
    p.parallelFor(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        fn(i);
    });
  } else {
    for (int64_t i = 0; i < n; ++i)
      fn(i);
  }
}

/// GEMMs of at most this many rows of A times a transposed B (every decode
/// projection, an expert's few tokens) go to gemvF32 / gemvBf16: memory-
/// bound, they stream each weight row once instead of through sgemm's
/// packing.
constexpr int64_t kGemvMaxRows = 8;

/// Which way a GEMM's rows are computed: Auto takes the GEMV for at most
/// kGemvMaxRows rows, Tiled always sgemm's tiles. The two round
/// differently, so rows of a GEMM computed apart from the rest (logitsW's
/// last row of a prefill) must take the whole GEMM's path to get its bits.
enum class GemmPath { Auto, Tiled };

inline bool useGemv(GemmPath path, int64_t m) {
  return path == GemmPath::Auto && m <= kGemvMaxRows;
}

/// C [m, n] (ldc) = alpha * A [m, k] (lda) * W^T + beta * C (beta 0: C is
/// not read) for W [n, k] (ldw) in float32 or bf16 bits. Each output is one
/// dot product in a fixed order (Gemv.cpp), whatever m, the columns' split
/// over threads or the weight's storage.
void gemvF32(Context &ctx, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *w, int64_t ldw,
             float beta, float *c, int64_t ldc);
void gemvBf16(Context &ctx, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const uint16_t *w, int64_t ldw,
              float beta, float *c, int64_t ldc);

/// C[m, n] (ldc) = alpha * A[m, k] (lda) * op(B) + beta * C, row-major, with
/// op(B) = B^T for B [n, k] when transB, else B [k, n] (ldb).
///
/// Every GEMM of the CPU backend goes through here. OpenBLAS runs single-
/// threaded and we split C into tiles over the thread pool: OpenBLAS's own
/// threading rounds differently for different thread counts (its results
/// depend on how C is partitioned), while our tiles depend on the shape
/// only, so the output is bit-identical for any --threads. (It is also
/// faster for the few-row GEMMs of decode, which OpenBLAS barely threads.)
///
/// At most kGemvMaxRows rows of A times a transposed B go to gemvF32 instead
/// (GemmPath::Auto), unless `path` says Tiled.
void gemm(Context &ctx, bool transB, int64_t m, int64_t n, int64_t k,
          float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
          float beta, float *c, int64_t ldc, GemmPath path = GemmPath::Auto);

// gemm's tiling of C [m, n], from the shape alone (never from the thread
// count), so results do not depend on it. Few rows (decode, memory-bound):
// 64-column tiles for balance. Otherwise 128..256 columns (narrower tiles
// cost OpenBLAS ~10%) and 128-row tiles past 192 rows, enough tiles for 16
// threads at 256x1024. Fused kernels that must match gemm bit for bit use
// the same tiles.
inline int64_t gemmColTile(int64_t m, int64_t n) {
  if (m <= 16)
    return 64;
  int64_t t = ((n + 15) / 16 + 15) / 16 * 16;
  return t < 128 ? 128 : t > 256 ? 256 : t;
}
inline int64_t gemmRowTile(int64_t m) { return m <= 192 ? m : 128; }
/// Tiles per parallel chunk for tiles of `tileWork` multiply-adds: waking
/// the pool must pay off.
inline int64_t gemmMinChunk(int64_t tileWork) {
  return tileWork >= 32768 ? 1 : (32768 + tileWork - 1) / tileWork;
}

/// A linear weight [out, in] in any storage: exactly one of f (float32),
/// h (bf16 bits, [out, in]) and q (FP8) is set.
struct WeightRef {
  const float *f = nullptr;
  const uint16_t *h = nullptr;
  const Fp8Weight *q = nullptr;
};

/// Weight `index` of ctx, checked to be loaded and of shape [out, in]
/// (fatal otherwise, naming `kernel`).
WeightRef weightRef(Context &ctx, int64_t index, const char *kernel,
                    int64_t out, int64_t in);

/// linearW on a WeightRef: float -> gemm (as linear); bf16 -> gemm's tiles
/// and calls on converted panels (bit for bit the float result); FP8 -> see
/// Fp8.cpp.
void linearRef(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
               const WeightRef &w, int64_t out, float *y, int64_t ldy,
               ActQuant act, GemmPath path = GemmPath::Auto);

} // namespace cpu
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CPU_CPUCOMMON_H
