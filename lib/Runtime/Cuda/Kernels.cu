//===- Kernels.cu - CUDA kernels: embedding, norms, RoPE, cache, routing -===//
//
// Row kernels use one block per row; float32 throughout, with the CPU
// backend's formulas (rsqrt of mean square + eps, interleaved RoPE pairs,
// the routing's tie-breaking to the lower expert index).
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"
#include "RouteKernel.cuh"

#include <cfloat>

namespace dsrt {
namespace cuda {

namespace {

__global__ void embeddingKernel(const float *table, int64_t hidden,
                                const int32_t *ids, float *out, int64_t ldo) {
  const int64_t i = blockIdx.x;
  const float *src = table + int64_t(ids[i]) * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x)
    out[i * ldo + j] = src[j];
}

__device__ float blockSum(float v, float *shared) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? shared[lane] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0)
    shared[0] = v;
  __syncthreads();
  v = shared[0];
  __syncthreads();
  return v;
}

/// sum = a + b (when a is non-null), y = rmsNorm(sum or x, w).
__global__ void addRmsNormKernel(const float *a, int64_t lda, const float *b,
                                 int64_t ldb, int64_t d, const float *w,
                                 float eps, float *sum, int64_t lds, float *y,
                                 int64_t ldy) {
  __shared__ float shared[32];
  const int64_t i = blockIdx.x;
  const float *bi = b + i * ldb;
  float *si = sum + i * lds;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float v = a ? a[i * lda + j] + bi[j] : bi[j];
    if (a)
      si[j] = v;
    ss += v * v;
  }
  ss = blockSum(ss, shared);
  const float r = 1.0f / sqrtf(ss / float(d) + eps);
  const float *src = a ? si : bi;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    y[i * ldy + j] = src[j] * r * w[j];
}

__global__ void addKernel(const float *a, int64_t lda, const float *b,
                          int64_t ldb, int64_t d, float *y, int64_t ldy) {
  const int64_t i = blockIdx.y;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < d;
       j += int64_t(gridDim.x) * blockDim.x)
    y[i * ldy + j] = a[i * lda + j] + b[i * ldb + j];
}

__global__ void swigluKernel(const float *g, int64_t ldg, const float *u,
                             int64_t ldu, int64_t d, float *y, int64_t ldy) {
  const int64_t i = blockIdx.y;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < d;
       j += int64_t(gridDim.x) * blockDim.x) {
    float gv = g[i * ldg + j];
    y[i * ldy + j] = gv / (1.0f + expf(-gv)) * u[i * ldu + j];
  }
}

/// One thread per (token, head, pair).
__global__ void ropeKernel(float *x, int64_t ldx, int64_t heads,
                           int64_t headStride, int64_t offset,
                           const int32_t *pos, const float *cosT,
                           const float *sinT, int64_t half, int64_t total) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= total)
    return;
  const int64_t j = t % half, h = (t / half) % heads, i = t / (half * heads);
  const float c = cosT[pos[i] * half + j], s = sinT[pos[i] * half + j];
  float *v = x + i * ldx + h * headStride + offset + 2 * j;
  const float a = v[0], b = v[1];
  v[0] = a * c - b * s;
  v[1] = a * s + b * c;
}

/// Stores latent and (optionally rotated in place) krope of token i in its
/// cache row. One block per token; the rotation is done by the threads of
/// the block before the store, so the stored krope is the rotated one.
__global__ void cacheWriteKernel(const float *latent, int64_t ldl,
                                 float *krope, int64_t ldk, const int32_t *pos,
                                 const int32_t *tokenSeq,
                                 const int32_t *blockTable, int64_t maxBlocks,
                                 float *cache, int64_t layers, int64_t layer,
                                 int64_t lora, int64_t ropeDim,
                                 const float *cosT, const float *sinT) {
  const int64_t i = blockIdx.x;
  const int64_t p = pos[i];
  const int32_t block = blockTable[int64_t(tokenSeq[i]) * maxBlocks + p / 64];
  const int64_t rowFloats = lora + ropeDim;
  float *row = cache + ((int64_t(block) * layers + layer) * 64 + p % 64) * rowFloats;
  float *kr = krope + i * ldk;
  if (cosT) {
    const int64_t half = ropeDim / 2;
    for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
      const float c = cosT[p * half + j], s = sinT[p * half + j];
      const float a = kr[2 * j], b = kr[2 * j + 1];
      kr[2 * j] = a * c - b * s;
      kr[2 * j + 1] = a * s + b * c;
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < lora; j += blockDim.x)
    row[j] = latent[i * ldl + j];
  for (int64_t j = threadIdx.x; j < ropeDim; j += blockDim.x)
    row[lora + j] = kr[j];
}

} // namespace

void embedding(Context &ctx, const float *table, int64_t vocab, int64_t hidden,
               const int32_t *ids, int64_t n, float *out, int64_t ldo) {
  ProfileScope profile(ctx, "embedding");
  if (n <= 0)
    return;
  embeddingKernel<<<unsigned(n), 256, 0, state(ctx).stream>>>(table, hidden,
                                                              ids, out, ldo);
  checkLaunch("embedding");
}

void rmsNorm(Context &ctx, const float *x, int64_t ldx, const float *w,
             int64_t n, int64_t d, double eps, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "rmsNorm");
  if (n <= 0)
    return;
  addRmsNormKernel<<<unsigned(n), 256, 0, state(ctx).stream>>>(
      nullptr, 0, x, ldx, d, w, float(eps), nullptr, 0, y, ldy);
  checkLaunch("rmsNorm");
}

void addRmsNorm(Context &ctx, const float *a, int64_t lda, const float *b,
                int64_t ldb, int64_t n, int64_t d, const float *w, double eps,
                float *sum, int64_t lds, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "addRmsNorm");
  if (n <= 0)
    return;
  addRmsNormKernel<<<unsigned(n), 256, 0, state(ctx).stream>>>(
      a, lda, b, ldb, d, w, float(eps), sum, lds, y, ldy);
  checkLaunch("addRmsNorm");
}

void add(Context &ctx, const float *a, int64_t lda, const float *b,
         int64_t ldb, int64_t n, int64_t d, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "add");
  if (n <= 0 || d <= 0)
    return;
  dim3 grid(unsigned(std::min<int64_t>(blocksFor(d, 256), 64)), unsigned(n));
  addKernel<<<grid, 256, 0, state(ctx).stream>>>(a, lda, b, ldb, d, y, ldy);
  checkLaunch("add");
}

void swiglu(Context &ctx, const float *gate, int64_t ldg, const float *up,
            int64_t ldu, int64_t n, int64_t d, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "swiglu");
  if (n <= 0 || d <= 0)
    return;
  dim3 grid(unsigned(std::min<int64_t>(blocksFor(d, 256), 64)), unsigned(n));
  swigluKernel<<<grid, 256, 0, state(ctx).stream>>>(gate, ldg, up, ldu, d, y,
                                                     ldy);
  checkLaunch("swiglu");
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
  ropeKernel<<<blocksFor(total, 256), 256, 0, st.stream>>>(
      x, ldx, heads, headStride, offset, pos, t.cos, t.sin, half, total);
  checkLaunch("rope");
}

static void cacheWrite(Context &ctx, int64_t layer, const float *latent,
                       int64_t ldl, float *krope, int64_t ldk, int64_t n,
                       const DeviceState::Rope *t, const char *where) {
  DeviceState &st = state(ctx);
  const ModelSpec &s = ctx.spec();
  if (layer < 0 || layer >= s.cacheLayers || !st.cache)
    fatal(where, "layer outside the cache");
  if (n <= 0)
    return;
  cacheWriteKernel<<<unsigned(n), 128, 0, st.stream>>>(
      latent, ldl, krope, ldk, st.pos, st.tokenSeq, st.blockTable, st.maxBlocks,
      st.cache, st.layers, layer, s.kvLoraRank, s.qkRopeDim,
      t ? t->cos : nullptr, t ? t->sin : nullptr);
  checkLaunch(where);
}

// The cache kernels address rows through Io's positions (st.pos), which are
// the `pos` argument of every emitted call.
void kvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                  int64_t ldl, const float *krope, int64_t ldk,
                  const int32_t *pos, int64_t n) {
  ProfileScope profile(ctx, "kvCacheWrite");
  if (pos != state(ctx).pos)
    fatal("kvCacheWrite", "positions are not the program's");
  cacheWrite(ctx, layer, latent, ldl, const_cast<float *>(krope), ldk, n,
             nullptr, "kvCacheWrite");
}

void ropeKvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                      int64_t ldl, float *krope, int64_t ldk,
                      const int32_t *pos, int64_t n, int64_t ropeIndex) {
  ProfileScope profile(ctx, "ropeKvCacheWrite");
  DeviceState &st = state(ctx);
  if (pos != st.pos)
    fatal("ropeKvCacheWrite", "positions are not the program's");
  if (ctx.spec().qkRopeDim != st.ropes[size_t(ropeIndex)].dim)
    fatal("ropeKvCacheWrite", "rope table width differs from the cache's");
  cacheWrite(ctx, layer, latent, ldl, krope, ldk, n,
             &st.ropes[size_t(ropeIndex)], "ropeKvCacheWrite");
}

void moeRoute(Context &ctx, const float *logits, int64_t ldl, int64_t n,
              const float *bias, const MoERouting &routing, int32_t *idx,
              float *weights) {
  ProfileScope profile(ctx, "moeRoute");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  if (routing.nGroup > 256)
    fatal("moeRoute", "more than 256 expert groups");
  float *work = static_cast<float *>(
      scratch(st, size_t(n * 2 * routing.experts) * sizeof(float), "moeRoute"));
  routeKernel<<<blocksFor(n, 64), 64, 0, st.stream>>>(logits, ldl, n, bias,
                                                       routing, idx, weights,
                                                       work);
  checkLaunch("moeRoute");
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
  gemmWeight(ctx, x, ldx, n, hidden, st.weights[size_t(weight)], logits, E,
             "moeGate");
  moeRoute(ctx, logits, E, n, bias, routing, idx, weights);
}

} // namespace cuda
} // namespace dsrt
