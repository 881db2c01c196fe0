//===- Kernels.cu - CUDA kernels: embedding, norms, RoPE, cache, routing -===//
//
// Launches of the row kernels (RowKernels.cuh) and the router
// (RouteKernel.cuh), whose tie-breaking to the lower expert index is the
// CPU backend's.
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"
#include "RouteKernel.cuh"
#include "RowKernels.cuh"

namespace dsrt {
namespace cuda {

using namespace rowk;

void embedding(Context &ctx, const float *table, int64_t vocab, int64_t hidden,
               const int32_t *ids, int64_t n, float *out, int64_t ldo) {
  ProfileScope profile(ctx, "embedding");
  if (n <= 0)
    return;
  launchKernel(state(ctx), "embedding", embeddingKernel, unsigned(n), 256, 0,
               table, hidden, ids, out, ldo);
}

void rmsNorm(Context &ctx, const float *x, int64_t ldx, const float *w,
             int64_t n, int64_t d, double eps, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "rmsNorm");
  if (n <= 0)
    return;
  launchKernel(state(ctx), "rmsNorm", addRmsNormKernel, unsigned(n), 256, 0,
               nullptr, 0, x, ldx, d, w, float(eps), nullptr, 0, y, ldy);
}

void addRmsNorm(Context &ctx, const float *a, int64_t lda, const float *b,
                int64_t ldb, int64_t n, int64_t d, const float *w, double eps,
                float *sum, int64_t lds, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "addRmsNorm");
  if (n <= 0)
    return;
  launchKernel(state(ctx), "addRmsNorm", addRmsNormKernel, unsigned(n), 256, 0,
               a, lda, b, ldb, d, w, float(eps), sum, lds, y, ldy);
}

void add(Context &ctx, const float *a, int64_t lda, const float *b,
         int64_t ldb, int64_t n, int64_t d, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "add");
  if (n <= 0 || d <= 0)
    return;
  dim3 grid(unsigned(n), unsigned(std::min<int64_t>(blocksFor(d, 256), 64)));
  launchKernel(state(ctx), "add", addKernel, grid, 256, 0, a, lda, b, ldb, d, y,
               ldy);
}

void swiglu(Context &ctx, const float *gate, int64_t ldg, const float *up,
            int64_t ldu, int64_t n, int64_t d, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "swiglu");
  if (n <= 0 || d <= 0)
    return;
  dim3 grid(unsigned(n), unsigned(std::min<int64_t>(blocksFor(d, 256), 64)));
  launchKernel(state(ctx), "swiglu", swigluKernel, grid, 256, 0, gate, ldg, up,
               ldu, d, y, ldy);
}

void rope(Context &ctx, float *x, int64_t ldx, int64_t n, int64_t heads,
          int64_t headStride, int64_t offset, const int32_t *pos,
          int64_t ropeIndex) {
  ProfileScope profile(ctx, "rope");
  DeviceState &st = state(ctx);
  const DeviceState::Rope &t = st.ropes[size_t(ropeIndex)];
  const int64_t half = t.dim / 2, total = n * heads * half;
  if (total <= 0)
    return;
  launchKernel(st, "rope", ropeKernel, blocksFor(total, 256), 256, 0, x, ldx,
               heads, headStride, offset, pos, t.cos, t.sin, half, total);
}

/// The cache kernels address rows through Io's positions (st.pos), which
/// are the `pos` argument of every emitted call.
template <class CT>
CacheWrite<CT> cacheWriteArgs(Context &ctx, int64_t layer, const float *latent,
                              int64_t ldl, float *krope, int64_t ldk,
                              const int32_t *pos, const DeviceState::Rope *t,
                              const QRope &qr, const float *normW, double eps,
                              const char *where) {
  DeviceState &st = state(ctx);
  const ModelSpec &s = ctx.spec();
  if (pos != st.pos)
    fatal(where, "positions are not the program's");
  if (layer < 0 || layer >= s.cacheLayers || !st.cache)
    fatal(where, "layer outside the cache");
  if (t && s.qkRopeDim != t->dim)
    fatal(where, "rope table width differs from the cache's");
  return {latent,
          ldl,
          krope,
          ldk,
          st.pos,
          st.tokenSeq,
          st.blockTable,
          st.maxBlocks,
          static_cast<CT *>(st.cache),
          st.layers,
          layer,
          s.kvLoraRank,
          s.qkRopeDim,
          t ? t->cos : nullptr,
          t ? t->sin : nullptr,
          qr,
          normW,
          float(eps)};
}
template CacheWrite<float>
cacheWriteArgs<float>(Context &, int64_t, const float *, int64_t, float *,
                      int64_t, const int32_t *, const DeviceState::Rope *,
                      const QRope &, const float *, double, const char *);
template CacheWrite<__nv_bfloat16>
cacheWriteArgs<__nv_bfloat16>(Context &, int64_t, const float *, int64_t,
                              float *, int64_t, const int32_t *,
                              const DeviceState::Rope *, const QRope &,
                              const float *, double, const char *);

/// 256 threads: the norm's sum is then addRmsNormKernel's, bit for bit.
static void cacheWrite(Context &ctx, int64_t layer, const float *latent,
                       int64_t ldl, float *krope, int64_t ldk,
                       const int32_t *pos, int64_t n,
                       const DeviceState::Rope *t, QRope qr, const float *normW,
                       double eps, const char *where) {
  DeviceState &st = state(ctx);
  if (st.cacheBf16) {
    const CacheWrite<__nv_bfloat16> a = cacheWriteArgs<__nv_bfloat16>(
        ctx, layer, latent, ldl, krope, ldk, pos, t, qr, normW, eps, where);
    if (n > 0)
      launchKernel(st, where, cacheWriteKernel<__nv_bfloat16>, unsigned(n),
                   kNormThreads, 0, a);
  } else {
    const CacheWrite<float> a = cacheWriteArgs<float>(
        ctx, layer, latent, ldl, krope, ldk, pos, t, qr, normW, eps, where);
    if (n > 0)
      launchKernel(st, where, cacheWriteKernel<float>, unsigned(n),
                   kNormThreads, 0, a);
  }
}

void kvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                  int64_t ldl, const float *krope, int64_t ldk,
                  const int32_t *pos, int64_t n) {
  ProfileScope profile(ctx, "kvCacheWrite");
  cacheWrite(ctx, layer, latent, ldl, const_cast<float *>(krope), ldk, pos, n,
             nullptr, QRope{}, nullptr, 0.0, "kvCacheWrite");
}

void ropeKvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                      int64_t ldl, float *krope, int64_t ldk,
                      const int32_t *pos, int64_t n, int64_t ropeIndex) {
  ProfileScope profile(ctx, "ropeKvCacheWrite");
  cacheWrite(ctx, layer, latent, ldl, krope, ldk, pos, n,
             &state(ctx).ropes[size_t(ropeIndex)], QRope{}, nullptr, 0.0,
             "ropeKvCacheWrite");
}

void qkRopeCacheWrite(Context &ctx, int64_t layer, float *q, int64_t ldq,
                      int64_t heads, int64_t headStride, int64_t offset,
                      const float *latent, int64_t ldl, float *krope,
                      int64_t ldk, const int32_t *pos, int64_t n,
                      int64_t ropeIndex, const float *normW, double eps) {
  ProfileScope profile(ctx, "qkRopeCacheWrite");
  cacheWrite(ctx, layer, latent, ldl, krope, ldk, pos, n,
             &state(ctx).ropes[size_t(ropeIndex)],
             QRope{q, ldq, heads, headStride, offset}, normW, eps,
             "qkRopeCacheWrite");
}

void moeRoute(Context &ctx, const float *logits, int64_t ldl, int64_t n,
              const float *bias, const MoERouting &routing, int32_t *idx,
              float *weights) {
  ProfileScope profile(ctx, "moeRoute");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  if (routing.nGroup > kRouteMaxGroups)
    fatal("moeRoute", "more than 256 expert groups");
  if (routing.experts > kRouteMaxExperts)
    fatal("moeRoute", "more than 1024 routed experts");
  launchKernel(st, "moeRoute", routeKernel, blocksFor(n, kRouteWarps),
               32 * kRouteWarps, routeSharedBytes(routing.experts), logits, ldl,
               n, bias, routing, idx, weights);
}

void moeGate(Context &ctx, const float *x, int64_t ldx, int64_t n,
             int64_t hidden, int64_t weight, const float *bias,
             const MoERouting &routing, int32_t *idx, float *weights) {
  ProfileScope profile(ctx, "moeGate");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  const int64_t E = routing.experts;
  float *logits = static_cast<float *>(
      scratch(st, size_t(n * E) * sizeof(float), "moeGate"));
  const DeviceWeight &w = st.weights[size_t(weight)];
  // Decode: the GEMV and the routing in one launch (gateRouteKernel), a
  // launch and a kernel boundary fewer on every MoE layer's critical path.
  if (n <= st.gemvMaxRows && E <= kGateRouteMaxExperts &&
      routing.nGroup <= kRouteMaxGroups && w.rows == E && w.cols == hidden) {
    const Rows rows{x, ldx, nullptr, 1};
    const bool vec = vecRows(x, ldx, hidden, 4) &&
                     vecRows(w.ptr, hidden, hidden, w.bf16 ? 2 : 4);
    const unsigned blocks = unsigned((E + 7) / 8);
    if (w.bf16)
      launchKernel(st, "moeGate", gateRouteKernel<__nv_bfloat16, 32>, blocks,
                   256, gateRouteSharedBytes(E), rows,
                   static_cast<const __nv_bfloat16 *>(w.ptr), n, hidden, logits,
                   vec, bias, routing, idx, weights, st.gateCounter);
    else
      launchKernel(st, "moeGate", gateRouteKernel<float, 32>, blocks, 256,
                   gateRouteSharedBytes(E), rows,
                   static_cast<const float *>(w.ptr), n, hidden, logits, vec,
                   bias, routing, idx, weights, st.gateCounter);
    return;
  }
  gemmWeight(ctx, x, ldx, n, hidden, w, logits, E, "moeGate");
  moeRoute(ctx, logits, E, n, bias, routing, idx, weights);
}

} // namespace cuda
} // namespace dsrt
