//===- Gemv.cpp - few-row GEMMs on float32 or bf16 weights ----------------===//
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
// The loops use 8-float vectors (GCC/Clang vector extensions); on x86 an
// AVX2 copy of them is chosen at run time where the CPU has it. The file is
// built with -ffp-contract=off (CMakeLists.txt): every multiply and add
// rounds on its own, so both copies, and float32 and bf16 weights, give the
// same bits (left to itself the compiler fuses some products into FMAs and
// not others, differently per instance).
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "CpuCommon.h"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DS_GEMV_AVX2 1
#include <immintrin.h>
#endif

namespace dsrt {
namespace cpu {

namespace {

constexpr int kLanes = 16;
constexpr int kRowGroup = 4;

// GCC/Clang vector extensions: 8 floats, lowered to one AVX register in the
// AVX2 copy and two SSE registers in the baseline one. (The compiler's own
// vectorization of the scalar loops fell apart past one row: 3-4x slower.)
typedef float V8 __attribute__((vector_size(32)));
typedef uint16_t V8Bits __attribute__((vector_size(16)));
typedef uint32_t V8Wide __attribute__((vector_size(32)));

// Loads of 8 weights as floats. Vectors pass through pointers: by value
// they would change the ABI between the two copies (GCC's -Wpsabi). bf16
// bits widen exactly; the AVX2 copy does it in two instructions, where the
// compiler lowers the portable form to five.
struct PortableLoad {
  __attribute__((always_inline)) static void load8(V8 *v, const float *p) {
    std::memcpy(v, p, sizeof *v);
  }
  __attribute__((always_inline)) static void load8(V8 *v, const uint16_t *p) {
    V8Bits h;
    std::memcpy(&h, p, sizeof h);
    const V8Wide u = __builtin_convertvector(h, V8Wide) << 16;
    std::memcpy(v, &u, sizeof *v);
  }
};

#ifdef DS_GEMV_AVX2
struct Avx2Load {
  __attribute__((always_inline)) static void load8(V8 *v, const float *p) {
    std::memcpy(v, p, sizeof *v);
  }
  // Not always_inline: its callers are generic until they are inlined into
  // columnsAvx2, which flattens them all.
  __attribute__((target("avx2"))) static void load8(V8 *v, const uint16_t *p) {
    const __m256i u =
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(
                              reinterpret_cast<const __m128i *>(p))),
                          16);
    std::memcpy(v, &u, sizeof *v);
  }
};
#endif

inline float widen(float v) { return v; }
inline float widen(uint16_t h) { return bf16ToFloat(h); }

/// Lanes 0-7 in lo, 8-15 in hi: lane j + lane j + 8, then a fixed tree,
/// then the tail.
__attribute__((always_inline)) inline float reduce(const V8 *lo, const V8 *hi,
                                                   float tail) {
  const V8 s = *lo + *hi;
  return (((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))) +
         tail;
}

/// out[r] = dot(x row r, w) for R rows of x (ldx apart), k elements.
template <int R, class L, class W>
__attribute__((always_inline)) inline void
dots(const float *x, int64_t ldx, const W *w, int64_t k, float *out) {
  V8 lo[R], hi[R];
  for (int r = 0; r < R; ++r)
    lo[r] = hi[r] = V8{};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    V8 w0, w1;
    L::load8(&w0, w + i);
    L::load8(&w1, w + i + 8);
    for (int r = 0; r < R; ++r) {
      V8 x0, x1;
      L::load8(&x0, x + r * ldx + i);
      L::load8(&x1, x + r * ldx + i + 8);
      lo[r] += x0 * w0;
      hi[r] += x1 * w1;
    }
  }
  for (int r = 0; r < R; ++r) {
    float tail = 0.0f;
    for (int64_t t = i; t < k; ++t)
      tail += x[r * ldx + t] * widen(w[t]);
    out[r] = reduce(&lo[r], &hi[r], tail);
  }
}

/// Columns [c0, c1) of C = alpha * A W^T + beta * C for A [m, k].
template <class L, class W>
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
        dots<1, L>(ar, lda, wj, k, d);
        break;
      case 2:
        dots<2, L>(ar, lda, wj, k, d);
        break;
      case 3:
        dots<3, L>(ar, lda, wj, k, d);
        break;
      default:
        dots<4, L>(ar, lda, wj, k, d);
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
  columns<PortableLoad>(c0, c1, m, k, alpha, a, lda, w, ldw, beta, c, ldc);
}

#ifdef DS_GEMV_AVX2
template <class W>
__attribute__((target("avx2"), flatten)) void
columnsAvx2(int64_t c0, int64_t c1, int64_t m, int64_t k, float alpha,
            const float *a, int64_t lda, const W *w, int64_t ldw, float beta,
            float *c, int64_t ldc) {
  columns<Avx2Load>(c0, c1, m, k, alpha, a, lda, w, ldw, beta, c, ldc);
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
#ifdef DS_GEMV_AVX2
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
