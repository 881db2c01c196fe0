//===- ArgmaxKernel.cuh - greedy token choice on the device -----*- CUDA -*-===//
//
// Each logits row's argmax with runMain's rule (Main.cpp): the lowest index
// of the largest value, a NaN never wins, and a row whose first value is
// NaN gives 0 (the host loop compares everything against it). So only n
// token ids, not n x vocab floats, cross PCIe per step.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_ARGMAXKERNEL_CUH
#define DS_LIB_RUNTIME_CUDA_ARGMAXKERNEL_CUH

#include "KernelCommon.cuh"

namespace dsrt {
namespace cuda {

constexpr int kArgmaxThreads = 1024;

/// (v, i) beats (bv, bi): larger, or equal with a lower index. NaN v never
/// beats; a NaN best is beaten by nothing either, which only the first
/// element can be (handled by the caller).
__device__ inline bool argmaxBetter(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

/// out[r] = argmax of row r of logits [rows, ld] over its first `vocab`
/// values; one block of kArgmaxThreads per row.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmaxKernel(const float *logits, int64_t ld, int64_t vocab, int32_t *out) {
  pdlEnter();
  const float *row = logits + int64_t(blockIdx.x) * ld;
  // Start from a candidate every value beats or ties at a lower index.
  float best = -INFINITY;
  int32_t bestIdx = INT32_MAX;
  auto consider = [&](float v, int64_t i) {
    if (argmaxBetter(v, int32_t(i), best, bestIdx))
      best = v, bestIdx = int32_t(i);
  };
  // kLoads loads in flight per thread before any comparison, of 16 bytes
  // where the rows are 16-byte aligned: a row of a 100k vocabulary is then
  // 4 round trips to L2 (13 with single floats), on the one
  // multiprocessor that takes the row. The winner does not depend on the
  // order of visits (argmaxBetter is a total order).
  constexpr int kLoads = 8;
  int64_t done = 0;
  if (ld % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) {
    const float4 *quad = reinterpret_cast<const float4 *>(row);
    const int64_t quads = vocab / 4;
    for (int64_t q0 = threadIdx.x; q0 < quads; q0 += kLoads * kArgmaxThreads) {
      float4 v[kLoads];
#pragma unroll
      for (int j = 0; j < kLoads; ++j) {
        const int64_t q = q0 + int64_t(j) * kArgmaxThreads;
        if (q < quads)
          v[j] = quad[q];
      }
#pragma unroll
      for (int j = 0; j < kLoads; ++j) {
        const int64_t q = q0 + int64_t(j) * kArgmaxThreads;
        if (q < quads) {
          consider(v[j].x, 4 * q);
          consider(v[j].y, 4 * q + 1);
          consider(v[j].z, 4 * q + 2);
          consider(v[j].w, 4 * q + 3);
        }
      }
    }
    done = 4 * quads; // the tail (vocab % 4) below
  }
  for (int64_t i0 = done + threadIdx.x; i0 < vocab;
       i0 += kLoads * kArgmaxThreads) {
    float v[kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int64_t i = i0 + int64_t(j) * kArgmaxThreads;
      v[j] = i < vocab ? row[i] : -INFINITY;
    }
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int64_t i = i0 + int64_t(j) * kArgmaxThreads;
      if (i < vocab)
        consider(v[j], i);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t i = __shfl_xor_sync(0xffffffffu, bestIdx, o);
    if (argmaxBetter(v, i, best, bestIdx))
      best = v, bestIdx = i;
  }
  __shared__ float warpBest[kArgmaxThreads / 32];
  __shared__ int32_t warpIdx[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0)
    warpBest[warp] = best, warpIdx[warp] = bestIdx;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w)
      if (argmaxBetter(warpBest[w], warpIdx[w], best, bestIdx))
        best = warpBest[w], bestIdx = warpIdx[w];
    // Every value NaN or -inf ties at -inf with index INT32_MAX: 0, as on
    // the host; a NaN first value is the host's answer too.
    out[blockIdx.x] = bestIdx == INT32_MAX || row[0] != row[0] ? 0 : bestIdx;
  }
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_ARGMAXKERNEL_CUH
