//===- Kernels.cpp - CPU kernels: embedding, norms, GEMM, elementwise ----===//
//
// All in float32. Row-parallel kernels split rows, and gemm splits tiles,
// over the context's thread pool. Every output element is computed the same
// way whatever the thread count, so results do not depend on --threads.
//
//===----------------------------------------------------------------------===//

#include "CpuCommon.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace dsrt {
namespace cpu {

void embedding(Context &ctx, const float *table, int64_t vocab, int64_t hidden,
               const int32_t *ids, int64_t n, float *out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      fatal("embedding", "token id out of range", ids[i]);
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          std::memcpy(out + i * ldo, table + ids[i] * hidden,
                      sizeof(float) * hidden);
      },
      rowsPerChunk(hidden));
}

// Sum of squares with 8 independent partial sums: vectorizable without
// reassociation, and a fixed order, so deterministic.
static float sumSquares(const float *x, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8)
    for (int k = 0; k < 8; ++k)
      acc[k] += x[j + k] * x[j + k];
  float tail = 0;
  for (; j < d; ++j)
    tail += x[j] * x[j];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
         ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

void rmsNorm(Context &ctx, const float *x, int64_t ldx, const float *w,
             int64_t n, int64_t d, double eps, float *y, int64_t ldy) {
  const float epsf = static_cast<float>(eps);
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *xi = x + i * ldx;
          float *yi = y + i * ldy;
          float r = 1.0f / std::sqrt(sumSquares(xi, d) / d + epsf);
          for (int64_t j = 0; j < d; ++j)
            yi[j] = xi[j] * r * w[j];
        }
      },
      rowsPerChunk(d));
}

void gemm(Context &ctx, bool transB, int64_t m, int64_t n, int64_t k,
          float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
          float beta, float *c, int64_t ldc, GemmPath path) {
  if (m <= 0 || n <= 0)
    return;
  if (k <= 0) { // an empty sum; BLAS may leave C alone when k = 0
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  if (transB && useGemv(path, m)) {
    gemvF32(ctx, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t tm = gemmRowTile(m), tn = gemmColTile(m, n);
  const int64_t rowTiles = (m + tm - 1) / tm, colTiles = (n + tn - 1) / tn;
  // Work per tile decides whether waking the pool pays off.
  const int64_t tileWork = tm * std::min(tn, n) * k;
  pool(ctx).parallelFor(
      rowTiles * colTiles,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t r0 = t / colTiles * tm, c0 = t % colTiles * tn;
          const int64_t rows = std::min(tm, m - r0),
                        cols = std::min(tn, n - c0);
          cblas_sgemm(CblasRowMajor, CblasNoTrans,
                      transB ? CblasTrans : CblasNoTrans, rows, cols, k, alpha,
                      a + r0 * lda, lda, transB ? b + c0 * ldb : b + c0, ldb,
                      beta, c + r0 * ldc + c0, ldc);
        }
      },
      gemmMinChunk(tileWork));
}

void linear(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
            const float *w, int64_t out, float *y, int64_t ldy) {
  gemm(ctx, true, n, out, in, 1.0f, x, ldx, w, in, 0.0f, y, ldy);
}

void add(Context &ctx, const float *a, int64_t lda, const float *b, int64_t ldb,
         int64_t n, int64_t d, float *y, int64_t ldy) {
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *ai = a + i * lda, *bi = b + i * ldb;
          float *yi = y + i * ldy;
          for (int64_t j = 0; j < d; ++j)
            yi[j] = ai[j] + bi[j];
        }
      },
      rowsPerChunk(d));
}

void swiglu(Context &ctx, const float *gate, int64_t ldg, const float *up,
            int64_t ldu, int64_t n, int64_t d, float *y, int64_t ldy) {
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *g = gate + i * ldg, *u = up + i * ldu;
          float *yi = y + i * ldy;
          for (int64_t j = 0; j < d; ++j)
            yi[j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
        }
      },
      rowsPerChunk(4 * d)); // exp is worth a few adds
}

void rope(Context &ctx, float *x, int64_t ldx, int64_t n, int64_t heads,
          int64_t headStride, int64_t offset, const int32_t *pos,
          int64_t ropeIndex) {
  const RopeTable &t = ctx.impl().ropes[ropeIndex];
  const int64_t half = t.dim / 2;
  for (int64_t i = 0; i < n; ++i)
    if (pos[i] < 0 || pos[i] >= t.positions)
      fatal("rope", "position outside the table", pos[i]);
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *c = t.cos.data() + pos[i] * half;
          const float *s = t.sin.data() + pos[i] * half;
          for (int64_t h = 0; h < heads; ++h) {
            float *v = x + i * ldx + h * headStride + offset;
            // (a + ib)(cos + i sin) on the interleaved pair (2j, 2j+1).
            for (int64_t j = 0; j < half; ++j) {
              float a = v[2 * j], b = v[2 * j + 1];
              v[2 * j] = a * c[j] - b * s[j];
              v[2 * j + 1] = a * s[j] + b * c[j];
            }
          }
        }
      },
      rowsPerChunk(heads * t.dim));
}

void kvCacheWrite(Context &ctx, int64_t layer, const float *latent, int64_t ldl,
                  const float *krope, int64_t ldk, const int32_t *pos,
                  int64_t n) {
  const ModelSpec &s = ctx.spec();
  if (layer < 0 || layer >= s.cacheLayers)
    fatal("kvCacheWrite", "layer outside the cache", layer);
  for (int64_t i = 0; i < n; ++i) {
    if (pos[i] < 0 || pos[i] >= s.maxSeqLen)
      fatal("kvCacheWrite", "position outside the cache", pos[i]);
    // Token i belongs to sequence slot tokenSequence(i); the row aborts if
    // that slot has not reserved pos[i].
    float *row = ctx.cacheRow(layer, ctx.tokenSequence(i), pos[i]);
    std::memcpy(row, latent + i * ldl, sizeof(float) * s.kvLoraRank);
    std::memcpy(row + s.kvLoraRank, krope + i * ldk,
                sizeof(float) * s.qkRopeDim);
  }
}

//===----------------------------------------------------------------------===//
// Fused kernels: the same arithmetic as the unfused sequence, bit for bit.
//===----------------------------------------------------------------------===//

void addRmsNorm(Context &ctx, const float *a, int64_t lda, const float *b,
                int64_t ldb, int64_t n, int64_t d, const float *w, double eps,
                float *sum, int64_t lds, float *y, int64_t ldy) {
  const float epsf = static_cast<float>(eps);
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          // add, then rmsNorm of the stored sum row (sum may alias a or b).
          const float *ai = a + i * lda, *bi = b + i * ldb;
          float *si = sum + i * lds;
          for (int64_t j = 0; j < d; ++j)
            si[j] = ai[j] + bi[j];
          float *yi = y + i * ldy;
          float r = 1.0f / std::sqrt(sumSquares(si, d) / d + epsf);
          for (int64_t j = 0; j < d; ++j)
            yi[j] = si[j] * r * w[j];
        }
      },
      rowsPerChunk(2 * d));
}

void ropeKvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                      int64_t ldl, float *krope, int64_t ldk,
                      const int32_t *pos, int64_t n, int64_t ropeIndex) {
  const ModelSpec &s = ctx.spec();
  const RopeTable &t = ctx.impl().ropes[ropeIndex];
  const int64_t half = t.dim / 2;
  for (int64_t i = 0; i < n; ++i)
    if (pos[i] < 0 || pos[i] >= t.positions)
      fatal("ropeKvCacheWrite", "position outside the table", pos[i]);
  if (layer < 0 || layer >= s.cacheLayers)
    fatal("ropeKvCacheWrite", "layer outside the cache", layer);
  for (int64_t i = 0; i < n; ++i)
    if (pos[i] >= s.maxSeqLen)
      fatal("ropeKvCacheWrite", "position outside the cache", pos[i]);
  // Rotate (rope with one head at offset 0) in parallel, then store in token
  // order like kvCacheWrite (a repeated position: the last token wins).
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *c = t.cos.data() + pos[i] * half;
          const float *sn = t.sin.data() + pos[i] * half;
          float *v = krope + i * ldk;
          for (int64_t j = 0; j < half; ++j) {
            float a = v[2 * j], b = v[2 * j + 1];
            v[2 * j] = a * c[j] - b * sn[j];
            v[2 * j + 1] = a * sn[j] + b * c[j];
          }
        }
      },
      rowsPerChunk(t.dim));
  for (int64_t i = 0; i < n; ++i) {
    float *row = ctx.cacheRow(layer, ctx.tokenSequence(i), pos[i]);
    std::memcpy(row, latent + i * ldl, sizeof(float) * s.kvLoraRank);
    std::memcpy(row + s.kvLoraRank, krope + i * ldk,
                sizeof(float) * s.qkRopeDim);
  }
}

void qkRopeCacheWrite(Context &ctx, int64_t layer, float *q, int64_t ldq,
                      int64_t heads, int64_t headStride, int64_t offset,
                      const float *latent, int64_t ldl, float *krope,
                      int64_t ldk, const int32_t *pos, int64_t n,
                      int64_t ropeIndex, const float *normW, double eps) {
  rope(ctx, q, ldq, n, heads, headStride, offset, pos, ropeIndex);
  if (!normW) {
    ropeKvCacheWrite(ctx, layer, latent, ldl, krope, ldk, pos, n, ropeIndex);
    return;
  }
  // The normalized rows exist only on their way to the cache.
  const int64_t lora = ctx.spec().kvLoraRank;
  std::vector<float> normed(
      static_cast<size_t>(std::max<int64_t>(n, 1) * lora));
  rmsNorm(ctx, latent, ldl, normW, n, lora, eps, normed.data(), lora);
  ropeKvCacheWrite(ctx, layer, normed.data(), lora, krope, ldk, pos, n,
                   ropeIndex);
}

} // namespace cpu
} // namespace dsrt
