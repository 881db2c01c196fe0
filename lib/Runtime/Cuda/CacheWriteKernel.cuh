//===- CacheWriteKernel.cuh - the latent-cache write ----------*- CUDA -*-===//
//
// The cache write of Kernels.cu's cacheWrite (RowKernels.cuh) and of the
// rope prologue's blocks in MLA.cu's fused launch (MLAKernels.cuh): only
// templates here, so that both translation units may include it.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_CACHEWRITEKERNEL_CUH
#define DS_LIB_RUNTIME_CUDA_CACHEWRITEKERNEL_CUH

#include "KernelCommon.cuh"

namespace dsrt {
namespace cuda {
namespace rowk {

/// The query rotation a cache write may carry (q null: none): columns
/// [h * headStride + offset, + rope dim) of each of `heads` heads.
struct QRope {
  float *q;
  int64_t ldq, heads, headStride, offset;
};

/// A cache write's arguments (cacheWriteKernel's, or the blocks of a fused
/// launch that do one: mla::absorbQRopeKernel).
template <class CT> struct CacheWrite {
  const float *latent;
  int64_t ldl;
  float *krope;
  int64_t ldk;
  const int32_t *pos, *tokenSeq, *blockTable;
  int64_t maxBlocks;
  CT *cache;
  int64_t layers, layer, lora, ropeDim;
  const float *cosT, *sinT; // null: no rotation
  QRope qr;                 // qr.q null: no query rotation
  const float *normW;       // null: the latent as it is
  float eps;
};

/// Stores latent and (optionally rotated in place) krope of token i in its
/// cache row (CT: float, or bf16 in bf16 mode), with every thread of the
/// block (256: kNormThreads); the rotation is done by the threads of the
/// block before the store, so the stored krope is the rotated one. With
/// normW, the stored latent is rmsNorm(latent) as addRmsNormKernel computes
/// it (launched with as many threads); with qr.q, the query's rope columns
/// are rotated too. After pdlEnter.
template <class CT>
__device__ inline void cacheWriteRow(const CacheWrite<CT> &a, int64_t i) {
  __shared__ float shared[32];
  const int64_t p = a.pos[i];
  const int32_t block =
      a.blockTable[int64_t(a.tokenSeq[i]) * a.maxBlocks + p / 64];
  const int64_t rowFloats = a.lora + a.ropeDim;
  CT *row = a.cache +
            ((int64_t(block) * a.layers + a.layer) * 64 + p % 64) * rowFloats;
  float *kr = a.krope + i * a.ldk;
  const int64_t half = a.ropeDim / 2;
  const QRope &qr = a.qr;
  if (qr.q) { // the query first, then the key: the unfused order
    for (int64_t e = threadIdx.x; e < qr.heads * half; e += blockDim.x) {
      const int64_t h = e / half, j = e % half;
      const float c = a.cosT[p * half + j], s = a.sinT[p * half + j];
      float *v = qr.q + i * qr.ldq + h * qr.headStride + qr.offset + 2 * j;
      const float x = v[0], y = v[1];
      v[0] = x * c - y * s;
      v[1] = x * s + y * c;
    }
    __syncthreads();
  }
  if (a.cosT) {
    for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
      const float c = a.cosT[p * half + j], s = a.sinT[p * half + j];
      const float x = kr[2 * j], y = kr[2 * j + 1];
      kr[2 * j] = x * c - y * s;
      kr[2 * j + 1] = x * s + y * c;
    }
    __syncthreads();
  }
  const float *li = a.latent + i * a.ldl;
  if (a.normW) {
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < a.lora; j += blockDim.x)
      ss += li[j] * li[j];
    ss = blockSum(ss, shared);
    const float r = 1.0f / sqrtf(ss / float(a.lora) + a.eps);
    for (int64_t j = threadIdx.x; j < a.lora; j += blockDim.x)
      storeAs(row + j, li[j] * r * a.normW[j]);
  } else {
    for (int64_t j = threadIdx.x; j < a.lora; j += blockDim.x)
      storeAs(row + j, li[j]);
  }
  for (int64_t j = threadIdx.x; j < a.ropeDim; j += blockDim.x)
    storeAs(row + a.lora + j, kr[j]);
}

/// cacheWriteRow for token blockIdx.x.
template <class CT> __global__ void cacheWriteKernel(CacheWrite<CT> a) {
  pdlEnter();
  cacheWriteRow(a, blockIdx.x);
}

} // namespace rowk
} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_CACHEWRITEKERNEL_CUH
