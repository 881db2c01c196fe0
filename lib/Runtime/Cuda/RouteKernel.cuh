//===- RouteKernel.cuh - MoE router on the device ---------------*- CUDA -*-===//
//
// moeRoute's kernel (Kernels.cu launches it), in a header so that
// test/Unit/CudaEmuTest.cpp checks it against the CPU backend's routing.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH
#define DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH

#include "KernelCommon.cuh"

#include "ds/Runtime/Runtime.h"

#include <cfloat>

namespace dsrt {
namespace cuda {

/// One thread per token: the CPU's routing, serially (experts are few).
__global__ void routeKernel(const float *logits, int64_t ldl, int64_t n,
                            const float *bias, MoERouting r, int32_t *idx,
                            float *weights, float *work) {
  pdlEnter();
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n)
    return;
  const int64_t E = r.experts, K = r.topK;
  const bool grouped = r.method != MoERouting::Greedy && r.nGroup > 1;
  const int64_t G = grouped ? r.nGroup : 1, gs = E / G;
  float *score = work + i * 2 * E, *choice = score + E;
  const float *l = logits + i * ldl;
  if (r.scoring == MoERouting::Sigmoid) {
    for (int64_t e = 0; e < E; ++e)
      score[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    float mx = l[0], sum = 0.0f;
    for (int64_t e = 1; e < E; ++e)
      mx = fmaxf(mx, l[e]);
    for (int64_t e = 0; e < E; ++e)
      sum += score[e] = expf(l[e] - mx);
    for (int64_t e = 0; e < E; ++e)
      score[e] /= sum;
  }
  for (int64_t e = 0; e < E; ++e)
    choice[e] = score[e] + (bias ? bias[e] : 0.0f);
  if (grouped) {
    // Keep the topkGroup best groups (ties: lower group), mask the rest.
    const int64_t keep = r.topkGroup < G ? r.topkGroup : G;
    uint64_t kept[4] = {0, 0, 0, 0}; // up to 256 groups
    for (int64_t k = 0; k < keep; ++k) {
      int64_t best = -1;
      float bestScore = -FLT_MAX;
      for (int64_t g = 0; g < G; ++g) {
        if (kept[g / 64] >> (g % 64) & 1)
          continue;
        const float *c = choice + g * gs;
        float first = -INFINITY, second = -INFINITY;
        for (int64_t e = 0; e < gs; ++e) {
          if (c[e] > first) {
            second = first;
            first = c[e];
          } else if (c[e] > second) {
            second = c[e];
          }
        }
        float s = r.method == MoERouting::NoauxTC
                      ? first + (gs > 1 ? second : 0.0f)
                      : first;
        if (best < 0 || s > bestScore) {
          best = g;
          bestScore = s;
        }
      }
      kept[best / 64] |= uint64_t(1) << (best % 64);
    }
    for (int64_t g = 0; g < G; ++g)
      if (!(kept[g / 64] >> (g % 64) & 1))
        for (int64_t e = 0; e < gs; ++e)
          choice[g * gs + e] = -INFINITY;
  }
  // Top-k by (choice descending, index ascending), as the CPU's
  // partial_sort; a taken expert becomes NaN and is skipped.
  float sum = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      if (isnan(choice[e]))
        continue;
      if (best < 0 || choice[e] > choice[best])
        best = e;
    }
    idx[i * K + k] = int32_t(best);
    weights[i * K + k] = score[best]; // the unbiased score
    sum += score[best];
    choice[best] = NAN;
  }
  const float scale = float(r.scale);
  for (int64_t k = 0; k < K; ++k) {
    float w = weights[i * K + k];
    weights[i * K + k] = (r.normTopk ? w / sum : w) * scale;
  }
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH
