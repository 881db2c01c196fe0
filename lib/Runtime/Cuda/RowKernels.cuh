//===- RowKernels.cuh - embedding, norms, SwiGLU, RoPE ---------*- CUDA -*-===//
//
// The row kernels of Kernels.cu (which launches them), in a header so that
// test/Unit/CudaEmuTest.cpp runs them on the CPU against the CPU backend.
// One block per row (or one thread per RoPE pair); float32 throughout, with
// the CPU backend's formulas (rsqrt of mean square + eps, interleaved RoPE
// pairs).
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_ROWKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_ROWKERNELS_CUH

#include "CacheWriteKernel.cuh"

namespace dsrt {
namespace cuda {
namespace rowk {

__global__ void embeddingKernel(const float *table, int64_t hidden,
                                const int32_t *ids, float *out, int64_t ldo) {
  pdlEnter();
  const int64_t i = blockIdx.x;
  const float *src = table + int64_t(ids[i]) * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x)
    out[i * ldo + j] = src[j];
}

/// sum = a + b (when a is non-null), y = rmsNorm(sum or x, w).
__global__ void addRmsNormKernel(const float *a, int64_t lda, const float *b,
                                 int64_t ldb, int64_t d, const float *w,
                                 float eps, float *sum, int64_t lds, float *y,
                                 int64_t ldy) {
  pdlEnter();
  __shared__ float shared[32];
  const int64_t i = blockIdx.x;
  addRmsNormRow(a ? a + i * lda : nullptr, b + i * ldb, d, w, eps,
                a ? sum + i * lds : nullptr, y + i * ldy, shared);
}

__global__ void addKernel(const float *a, int64_t lda, const float *b,
                          int64_t ldb, int64_t d, float *y, int64_t ldy) {
  pdlEnter();
  const int64_t i = blockIdx.x;
  for (int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; j < d;
       j += int64_t(gridDim.y) * blockDim.x)
    y[i * ldy + j] = a[i * lda + j] + b[i * ldb + j];
}

__global__ void swigluKernel(const float *g, int64_t ldg, const float *u,
                             int64_t ldu, int64_t d, float *y, int64_t ldy) {
  pdlEnter();
  const int64_t i = blockIdx.x;
  for (int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; j < d;
       j += int64_t(gridDim.y) * blockDim.x) {
    float gv = g[i * ldg + j];
    y[i * ldy + j] = gv / (1.0f + expf(-gv)) * u[i * ldu + j];
  }
}

/// One thread per (token, head, pair).
__global__ void ropeKernel(float *x, int64_t ldx, int64_t heads,
                           int64_t headStride, int64_t offset,
                           const int32_t *pos, const float *cosT,
                           const float *sinT, int64_t half, int64_t total) {
  pdlEnter();
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

} // namespace rowk
} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_ROWKERNELS_CUH
