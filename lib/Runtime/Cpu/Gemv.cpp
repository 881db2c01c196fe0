//===- Gemv.cpp - few-row GEMMs on float32 or bf16 weights
//-----------------===//
//
// Decode multiplies a handful of rows by every weight: the work is reading
// the weight once. OpenBLAS's sgemm packs B for such calls, and reaches about
// half the machine's copy bandwidth there (docs/performance.md); here each
// weight row is streamed once, straight from its storage (bf16 converted in
// registers), against the few input rows held in cache.
//
// Every output is one dot product in a fixed order: 16 interleaved partial
// sums over k (k mod 16 picks the lane), the k % 16 tail in a 17th, then a
// fixed tree. That order does not depend on the number of rows, on which
// columns a thread takes or on --threads, and bf16 weights give bit for bit
// what their float32 values give. Rows go four at a time to bound registers.
//
// The loops are plain C++ that the compiler vectorizes; on x86 an AVX2 copy
// of them is chosen at run time where the CPU has it. The file is built
// with -ffp-contract=off (CMakeLists.txt): every multiply and add rounds on
// its own, so both copies, and float32 and bf16 weights, give the same bits
// (left to itself the compiler fuses some products into FMAs and not
// others, differently per instance).
//
//===----------------------------------------------------------------------===//

#include "CpuCommon.h"

#include <cstring>

namespace dsrt {
namespace cpu {

namespace {

constexpr int kLanes = 16;
constexpr int kRowGroup = 4;

inline float widen(float v) { return v; }
inline float widen(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float reduce(const float *a, float tail) {
  float s8[8];
  for (int j = 0; j < 8; ++j)
    s8[j] = a[j] + a[j + 8];
  return (((s8[0] + s8[4]) + (s8[2] + s8[6])) +
          ((s8[1] + s8[5]) + (s8[3] + s8[7]))) +
         tail;
}

/// out[r] = dot(x row r, w) for R rows of x (ldx apart), k elements.
template <int R, class W>
__attribute__((always_inline)) inline void
dots(const float *x, int64_t ldx, const W *w, int64_t k, float *out) {
  float acc[R][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    float wf[kLanes];
    for (int j = 0; j < kLanes; ++j)
      wf[j] = widen(w[i + j]);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < kLanes; ++j)
        acc[r][j] += x[r * ldx + i + j] * wf[j];
  }
  for (int r = 0; r < R; ++r) {
    float tail = 0.0f;
    for (int64_t t = i; t < k; ++t)
      tail += x[r * ldx + t] * widen(w[t]);
    out[r] = reduce(acc[r], tail);
  }
}

/// Columns [c0, c1) of C = alpha * A W^T + beta * C for A [m, k].
template <class W>
__attribute__((always_inline)) inline void
columns(int64_t c0, int64_t c1, int64_t m, int64_t k, float alpha,
        const float *a, int64_t lda, const W *w, int64_t ldw, float beta,
        float *c, int64_t ldc) {
  float d[kRowGroup];
  for (int64_t j = c0; j < c1; ++j) {
    const W *wj = w + j * ldw;
    for (int64_t r0 = 0; r0 < m; r0 += kRowGroup) {
      const float *ar = a + r0 * lda;
      switch (m - r0) {
      case 1:
        dots<1>(ar, lda, wj, k, d);
        break;
      case 2:
        dots<2>(ar, lda, wj, k, d);
        break;
      case 3:
        dots<3>(ar, lda, wj, k, d);
        break;
      default:
        dots<4>(ar, lda, wj, k, d);
        break;
      }
      const int64_t rows = std::min<int64_t>(kRowGroup, m - r0);
      for (int64_t r = 0; r < rows; ++r) {
        float &o = c[(r0 + r) * ldc + j];
        o = beta == 0.0f ? alpha * d[r] : alpha * d[r] + beta * o;
      }
    }
  }
}

template <class W>
void columnsBaseline(int64_t c0, int64_t c1, int64_t m, int64_t k, float alpha,
                     const float *a, int64_t lda, const W *w, int64_t ldw,
                     float beta, float *c, int64_t ldc) {
  columns(c0, c1, m, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <class W>
__attribute__((target("avx2"))) void
columnsAvx2(int64_t c0, int64_t c1, int64_t m, int64_t k, float alpha,
            const float *a, int64_t lda, const W *w, int64_t ldw, float beta,
            float *c, int64_t ldc) {
  columns(c0, c1, m, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

bool haveAvx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

template <class W>
void gemvImpl(Context &ctx, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const W *w, int64_t ldw, float beta,
              float *c, int64_t ldc) {
  if (m <= 0 || n <= 0)
    return;
  auto *fn = &columnsBaseline<W>;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (haveAvx2())
    fn = &columnsAvx2<W>;
#endif
  // A chunk of columns is at least ~64k multiply-adds: waking the pool
  // must pay off.
  const int64_t perColumn = std::max<int64_t>(1, m * k);
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        fn(begin, end, m, k, alpha, a, lda, w, ldw, beta, c, ldc);
      },
      std::max<int64_t>(1, 65536 / perColumn));
}

} // namespace

void gemvF32(Context &ctx, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *w, int64_t ldw,
             float beta, float *c, int64_t ldc) {
  gemvImpl(ctx, m, n, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

void gemvBf16(Context &ctx, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const uint16_t *w, int64_t ldw,
              float beta, float *c, int64_t ldc) {
  gemvImpl(ctx, m, n, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

} // namespace cpu
} // namespace dsrt
