//===- MLAKernels.cuh - multi-head latent attention kernels -----*- CUDA -*-===//
//
// The kernels of MLA.cu (which launches them; see there for the scheme), in
// a header so that test/Unit/CudaEmuTest.cpp runs them on the CPU too.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH

#include "KernelCommon.cuh"

namespace dsrt {
namespace cuda {
namespace mla {

/// One online-softmax step of a score row: `count` new scores (-inf for
/// masked ones) become probabilities relative to the updated running max
/// `m`, `l` (the running sum) is rescaled and extended; returns the factor
/// by which the row's earlier accumulations must be scaled.
__device__ inline float onlineSoftmaxStep(float *s, int count, float &m,
                                          float &l) {
  float mx = m;
  for (int c = 0; c < count; ++c)
    mx = fmaxf(mx, s[c]);
  const float corr = mx == -INFINITY ? 1.0f : expf(m - mx);
  float sum = 0.0f;
  for (int c = 0; c < count; ++c) {
    const float p = mx == -INFINITY ? 0.0f : expf(s[c] - mx);
    s[c] = p;
    sum += p;
  }
  l = l * corr + sum;
  m = mx;
  return corr;
}

constexpr int kQT = 16, kKT = 16; // prefill: queries, keys per tile
constexpr int kVMax = 16;         // prefill: v dims per thread (vdim <= 256)

/// mlaPrefillKernel's dynamic shared memory.
inline size_t prefillSharedBytes(int64_t qHead, int64_t vdim) {
  return sizeof(float) * size_t(kQT * (qHead + 1) + kKT * (qHead + 1) +
                                kKT * (vdim + 1) + kQT * kKT + 3 * kQT);
}

__global__ void mlaPrefillKernel(const float *q, int64_t ldq, const float *kv,
                                 int64_t ldkv, const float *krope, int64_t ldk,
                                 int64_t n, int64_t nope, int64_t rope,
                                 int64_t vdim, int64_t qHead, int64_t kvHead,
                                 float scale, float *out, int64_t ldo) {
  DS_DYNAMIC_SHARED(float, smem);
  const int64_t qStride = qHead + 1; // +1: no bank conflicts across rows
  const int64_t vStride = vdim + 1;
  float *qs = smem;                      // [kQT][qStride]
  float *ks = qs + kQT * qStride;        // [kKT][qStride]
  float *vs = ks + kKT * qStride;        // [kKT][vStride]
  float *sc = vs + kKT * vStride;        // [kQT][kKT]
  float *corr = sc + kQT * kKT;          // [kQT]
  float *lsum = corr + kQT;              // [kQT]
  float *mmax = lsum + kQT;              // [kQT]
  const int tid = threadIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t i0 = int64_t(blockIdx.x) * kQT;
  const int64_t rows = imin(kQT, n - i0);

  for (int64_t e = tid; e < kQT * qHead; e += blockDim.x) {
    const int64_t r = e / qHead, d = e % qHead;
    qs[r * qStride + d] = r < rows ? q[(i0 + r) * ldq + h * qHead + d] : 0.0f;
  }
  if (tid < kQT) {
    lsum[tid] = 0.0f;
    mmax[tid] = -INFINITY;
  }
  const int qi = tid / 16, sub = tid % 16; // accumulate: query, dim lane
  float acc[kVMax];
#pragma unroll
  for (int r = 0; r < kVMax; ++r)
    acc[r] = 0.0f;

  const int64_t keys = i0 + rows; // the last query sees keys [0, keys)
  for (int64_t j0 = 0; j0 < keys; j0 += kKT) {
    __syncthreads();
    for (int64_t e = tid; e < kKT * qHead; e += blockDim.x) {
      const int64_t r = e / qHead, d = e % qHead, j = j0 + r;
      float v = 0.0f;
      if (j < keys)
        v = d < nope ? kv[j * ldkv + h * kvHead + d] : krope[j * ldk + d - nope];
      ks[r * qStride + d] = v;
    }
    for (int64_t e = tid; e < kKT * vdim; e += blockDim.x) {
      const int64_t r = e / vdim, d = e % vdim, j = j0 + r;
      vs[r * vStride + d] = j < keys ? kv[j * ldkv + h * kvHead + nope + d] : 0.0f;
    }
    __syncthreads();
    { // one score per thread: (query tid / 16, key tid % 16)
      const int r = tid / kKT, c = tid % kKT;
      const int64_t i = i0 + r, j = j0 + c;
      float s = 0.0f;
      for (int64_t d = 0; d < qHead; ++d)
        s += qs[r * qStride + d] * ks[c * qStride + d];
      sc[r * kKT + c] = (r < rows && j <= i) ? s * scale : -INFINITY;
    }
    __syncthreads();
    if (tid < kQT)
      corr[tid] = onlineSoftmaxStep(sc + tid * kKT, kKT, mmax[tid], lsum[tid]);
    __syncthreads();
    const float cr = corr[qi];
#pragma unroll
    for (int r = 0; r < kVMax; ++r) {
      const int64_t d = sub + 16 * r;
      if (d < vdim) {
        float a = acc[r] * cr;
        for (int c = 0; c < kKT; ++c)
          a += sc[qi * kKT + c] * vs[c * vStride + d];
        acc[r] = a;
      }
    }
  }
  __syncthreads();
  if (qi < rows) {
    const float inv = 1.0f / lsum[qi];
#pragma unroll
    for (int r = 0; r < kVMax; ++r) {
      const int64_t d = sub + 16 * r;
      if (d < vdim)
        out[(i0 + qi) * ldo + h * vdim + d] = acc[r] * inv;
    }
  }
}

constexpr int kHB = 8;   // decode: heads per block
constexpr int kTP = 8;   // decode: cache positions per tile
constexpr int kLMax = 4; // decode: latent dims per thread / 256 (lora <= 1024)

/// mlaDecodeKernel's dynamic shared memory, for cache rows of `row` floats.
inline size_t decodeSharedBytes(int64_t row) {
  return sizeof(float) *
         size_t(kHB * (row + 1) + kTP * (row + 1) + kHB * kTP + 3 * kHB);
}

/// One (token, head group, split): partial softmax state over the split's
/// cache positions. part[((t * heads + h) * splits + s)] = [acc(lora), m, l].
__global__ void mlaDecodeKernel(const float *qLat, const float *q, int64_t ldq,
                                int64_t qHead, int64_t nope, const float *cache,
                                const int32_t *blockTable, int64_t maxBlocks,
                                const int32_t *tokenSeq, const int32_t *pos,
                                int64_t layers, int64_t layer, int64_t heads,
                                int64_t lora, int64_t rope, float scale,
                                int splits, float *part) {
  DS_DYNAMIC_SHARED(float, smem);
  const int64_t row = lora + rope, stride = row + 1;
  float *qs = smem;                   // [kHB][stride]
  float *tile = qs + kHB * stride;    // [kTP][stride]
  float *sc = tile + kTP * stride;    // [kHB][kTP]
  float *corr = sc + kHB * kTP;       // [kHB]
  float *mS = corr + kHB, *lS = mS + kHB;
  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x, h0 = int64_t(blockIdx.y) * kHB;
  const int s = blockIdx.z;
  const int hb = int(imin(kHB, heads - h0));
  const int64_t keys = int64_t(pos[t]) + 1;
  const int64_t chunk = (keys + splits - 1) / splits;
  const int64_t k0 = int64_t(s) * chunk, k1 = imin(keys, k0 + chunk);
  const int32_t *table = blockTable + int64_t(tokenSeq[t]) * maxBlocks;

  for (int64_t e = tid; e < kHB * row; e += blockDim.x) {
    const int64_t hh = e / row, d = e % row;
    float v = 0.0f;
    if (hh < hb)
      v = d < lora ? qLat[(t * heads + h0 + hh) * lora + d]
                   : q[t * ldq + (h0 + hh) * qHead + nope + (d - lora)];
    qs[hh * stride + d] = v;
  }
  if (tid < kHB) {
    mS[tid] = -INFINITY;
    lS[tid] = 0.0f;
  }
  float acc[kHB][kLMax];
#pragma unroll
  for (int hh = 0; hh < kHB; ++hh)
#pragma unroll
    for (int r = 0; r < kLMax; ++r)
      acc[hh][r] = 0.0f;

  for (int64_t p0 = k0; p0 < k1; p0 += kTP) {
    __syncthreads();
    for (int64_t e = tid; e < kTP * row; e += blockDim.x) {
      const int64_t r = e / row, d = e % row, p = p0 + r;
      float v = 0.0f;
      if (p < k1) {
        const int64_t block = table[p / 64];
        v = cache[((block * layers + layer) * 64 + p % 64) * row + d];
      }
      tile[r * stride + d] = v;
    }
    __syncthreads();
    { // kHB * kTP scores, 4 threads each (256 threads)
      const int pair = tid / 4, lane = tid % 4;
      const int hh = pair / kTP, r = pair % kTP;
      float sum = 0.0f;
      for (int64_t d = lane; d < row; d += 4)
        sum += qs[hh * stride + d] * tile[r * stride + d];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if (lane == 0)
        sc[hh * kTP + r] = (hh < hb && p0 + r < k1) ? sum * scale : -INFINITY;
    }
    __syncthreads();
    if (tid < kHB)
      corr[tid] = onlineSoftmaxStep(sc + tid * kTP, kTP, mS[tid], lS[tid]);
    __syncthreads();
#pragma unroll
    for (int hh = 0; hh < kHB; ++hh) {
      const float cr = corr[hh];
#pragma unroll
      for (int r = 0; r < kLMax; ++r) {
        const int64_t c = tid + 256 * r;
        if (c < lora) {
          float a = acc[hh][r] * cr;
#pragma unroll
          for (int pp = 0; pp < kTP; ++pp)
            a += sc[hh * kTP + pp] * tile[pp * stride + c];
          acc[hh][r] = a;
        }
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int hh = 0; hh < kHB; ++hh) {
    if (hh >= hb)
      break;
    float *dst = part + ((t * heads + h0 + hh) * splits + s) * (lora + 2);
#pragma unroll
    for (int r = 0; r < kLMax; ++r) {
      const int64_t c = tid + 256 * r;
      if (c < lora)
        dst[c] = acc[hh][r];
    }
    if (tid == 0) {
      dst[lora] = mS[hh];
      dst[lora + 1] = lS[hh];
    }
  }
}

/// oLat[t, h] = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
__global__ void mlaCombineKernel(const float *part, int64_t heads,
                                 int64_t lora, int splits, float *oLat) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const float *p = part + (t * heads + h) * splits * (lora + 2);
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s)
    M = fmaxf(M, p[s * (lora + 2) + lora]);
  float L = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = p[s * (lora + 2) + lora];
    if (m != -INFINITY)
      L += p[s * (lora + 2) + lora + 1] * expf(m - M);
  }
  const float inv = 1.0f / L;
  for (int64_t c = threadIdx.x; c < lora; c += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = p[s * (lora + 2) + lora];
      if (m != -INFINITY)
        a += p[s * (lora + 2) + c] * expf(m - M);
    }
    oLat[(t * heads + h) * lora + c] = a * inv;
  }
}

} // namespace mla
} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH
