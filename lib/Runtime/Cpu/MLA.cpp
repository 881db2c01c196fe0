//===- MLA.cpp - multi-head latent attention, naive and absorbed ---------===//
//
// Both forms are per-head GEMMs on strided views of the inputs plus a float32
// softmax per score row. The naive form is for prefill, where up-projecting
// the latent once per token is cheaper than attending in the latent space;
// the absorbed form is for decode, where it reads only the latent cache,
// block by block of each token's own sequence (KVCache).
// Heads (and tokens) are independent: with enough of them they go to the
// pool whole, else each GEMM is split (forEachItem).
//
//===----------------------------------------------------------------------===//

#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsrt {
namespace cpu {

// In-place softmax of row[0, valid) in float32 with max subtraction; entries
// [valid, width) become 0 so a following P*V GEMM may use the full width.
static void softmaxRow(float *row, int64_t valid, int64_t width) {
  float mx = row[0];
  for (int64_t j = 1; j < valid; ++j)
    mx = std::max(mx, row[j]);
  float sum = 0;
  for (int64_t j = 0; j < valid; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  float inv = 1.0f / sum;
  for (int64_t j = 0; j < valid; ++j)
    row[j] *= inv;
  for (int64_t j = valid; j < width; ++j)
    row[j] = 0.0f;
}

void mlaAttentionNaive(Context &ctx, const float *q, int64_t ldq,
                       const float *kv, int64_t ldkv, const float *krope,
                       int64_t ldk, int64_t n, int64_t heads, int64_t nope,
                       int64_t rope, int64_t vdim, double scale, float *out,
                       int64_t ldo) {
  if (n <= 0)
    return;
  const float alpha = static_cast<float>(scale);
  const int64_t qHead = nope + rope, kvHead = nope + vdim;
  // Query rows in blocks: the score scratch is [block, n] instead of [n, n],
  // and a block only multiplies the keys it can see (causal).
  const int64_t block = std::min<int64_t>(n, 256);

  forEachItem(ctx, heads, [&](int64_t h) {
    std::vector<float> scores(static_cast<size_t>(block * n));
    const float *qh = q + h * qHead;
    const float *kh = kv + h * kvHead;
    const float *vh = kh + nope;
    for (int64_t i0 = 0; i0 < n; i0 += block) {
      const int64_t rows = std::min(block, n - i0);
      const int64_t keys = i0 + rows; // row i0 + r sees keys [0, i0 + r]
      float *s = scores.data();
      // S = scale * (Qnope Knope^T + Qrope Krope^T), ld = keys.
      gemm(ctx, true, rows, keys, nope, alpha, qh + i0 * ldq, ldq, kh, ldkv,
           0.0f, s, keys);
      gemm(ctx, true, rows, keys, rope, alpha, qh + i0 * ldq + nope, ldq, krope,
           ldk, 1.0f, s, keys);
      pool(ctx).parallelFor(
          rows,
          [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r)
              softmaxRow(s + r * keys, i0 + r + 1, keys);
          },
          rowsPerChunk(keys * 4));
      // O = P V.
      gemm(ctx, false, rows, vdim, keys, 1.0f, s, keys, vh, ldkv, 0.0f,
           out + i0 * ldo + h * vdim, ldo);
    }
  });
}

void mlaAttentionAbsorbed(Context &ctx, int64_t layer, const float *q,
                          int64_t ldq, const float *kvB, const int32_t *pos,
                          int64_t n, int64_t heads, int64_t nope, int64_t rope,
                          int64_t vdim, double scale, float *out, int64_t ldo) {
  if (n <= 0)
    return;
  const ModelSpec &spec = ctx.spec();
  const int64_t lora = spec.kvLoraRank;
  if (rope != spec.qkRopeDim)
    fatal("mlaAttentionAbsorbed", "rope dim differs from the cache's", rope);
  if (layer < 0 || layer >= spec.cacheLayers)
    fatal("mlaAttentionAbsorbed", "layer outside the cache", layer);
  KVCache &cache = ctx.cache();
  for (int64_t i = 0; i < n; ++i) {
    if (pos[i] < 0 || pos[i] >= spec.maxSeqLen)
      fatal("mlaAttentionAbsorbed", "position outside the cache", pos[i]);
    // Every key position [0, pos[i]] must be addressable: checked here, once,
    // instead of per block inside the parallel loop.
    const int32_t seq = ctx.tokenSequence(i);
    if (!cache.live(seq))
      fatal("mlaAttentionAbsorbed", "token of a sequence slot not live", seq);
    if (pos[i] >= cache.capacity(seq))
      fatal("mlaAttentionAbsorbed", "position not reserved in its sequence",
            pos[i]);
  }

  const float alpha = static_cast<float>(scale);
  const int64_t qHead = nope + rope, kvHead = nope + vdim;
  const int64_t ldCache = lora + rope;
  const int64_t kBlock = KVCache::kBlockTokens;

  // Latent queries and outputs, [n][heads][lora].
  std::vector<float> qLat(static_cast<size_t>(n * heads * lora));
  std::vector<float> oLat(static_cast<size_t>(n * heads * lora));

  // q_lat[h] = q_nope[h] W_UK[h], W_UK[h] = kvB rows [h*kvHead, +nope).
  forEachItem(ctx, heads, [&](int64_t h) {
    gemm(ctx, false, n, lora, nope, 1.0f, q + h * qHead, ldq,
         kvB + h * kvHead * lora, lora, 0.0f, qLat.data() + h * lora,
         heads * lora);
  });

  // Token i attends to positions [0, pos[i]] of its own sequence. The cache
  // is paged: positions [64 b, 64 b + 64) of one (layer, sequence) are one
  // contiguous [64, ldCache] matrix (KVCache.cpp's layout), so each block is
  // one GEMM. Scores are computed block by block into one [heads, keys] row
  // set, so the softmax is exact over all keys; the P*Latent product sums
  // the blocks in position order. The split depends on positions only, never
  // on the thread count or on the other tokens of the call.
  forEachItem(ctx, n, [&](int64_t i) {
    const int32_t seq = ctx.tokenSequence(i);
    const int64_t keys = pos[i] + 1;
    std::vector<float> scores(static_cast<size_t>(heads * keys));
    float *s = scores.data();
    const float *qi = qLat.data() + i * heads * lora;
    // S[heads, keys] = scale * (Qlat Latent^T + Qrope Krope^T).
    for (int64_t b0 = 0; b0 < keys; b0 += kBlock) {
      const int64_t rows = std::min(kBlock, keys - b0);
      const float *latent = ctx.cacheRow(layer, seq, b0);
      gemm(ctx, true, heads, rows, lora, alpha, qi, lora, latent, ldCache,
           0.0f, s + b0, keys);
      gemm(ctx, true, heads, rows, rope, alpha, q + i * ldq + nope, qHead,
           latent + lora, ldCache, 1.0f, s + b0, keys);
    }
    pool(ctx).parallelFor(
        heads,
        [&](int64_t begin, int64_t end) {
          for (int64_t h = begin; h < end; ++h)
            softmaxRow(s + h * keys, keys, keys);
        },
        rowsPerChunk(keys * 4));
    // o_lat[heads, lora] = P Latent, accumulated over the blocks.
    float *oi = oLat.data() + i * heads * lora;
    for (int64_t b0 = 0; b0 < keys; b0 += kBlock) {
      const int64_t rows = std::min(kBlock, keys - b0);
      const float *latent = ctx.cacheRow(layer, seq, b0);
      gemm(ctx, false, heads, lora, rows, 1.0f, s + b0, keys, latent, ldCache,
           b0 == 0 ? 0.0f : 1.0f, oi, lora);
    }
  });

  // out[h] = o_lat[h] W_UV[h]^T, W_UV[h] = kvB rows [h*kvHead + nope, +vdim).
  forEachItem(ctx, heads, [&](int64_t h) {
    gemm(ctx, true, n, vdim, lora, 1.0f, oLat.data() + h * lora, heads * lora,
         kvB + (h * kvHead + nope) * lora, lora, 0.0f, out + h * vdim, ldo);
  });
}

void mlaAttentionAbsorbedRope(Context &ctx, int64_t layer, float *q,
                              int64_t ldq, const float *kvB, const int32_t *pos,
                              int64_t n, int64_t heads, int64_t nope,
                              int64_t rope, int64_t vdim, double scale,
                              float *out, int64_t ldo, const float *latent,
                              int64_t ldl, float *krope, int64_t ldk,
                              int64_t ropeIndex, const float *normW,
                              double eps) {
  qkRopeCacheWrite(ctx, layer, q, ldq, heads, nope + rope, nope, latent, ldl,
                   krope, ldk, pos, n, ropeIndex, normW, eps);
  mlaAttentionAbsorbed(ctx, layer, q, ldq, kvB, pos, n, heads, nope, rope, vdim,
                       scale, out, ldo);
}

} // namespace cpu
} // namespace dsrt
