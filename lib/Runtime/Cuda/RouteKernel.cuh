//===- RouteKernel.cuh - MoE router on the device ---------------*- CUDA -*-===//
//
// moeRoute's kernel (Kernels.cu launches it), in a header so that
// test/Unit/CudaEmuTest.cpp checks it against the CPU backend's routing.
//
// A warp per token: every step is a few shuffles instead of a serial loop
// over the experts (a thread per token took E * (K + 4) dependent steps,
// tens of microseconds per layer at DeepSeek-V3's 256 experts top-8, on
// the critical path of every decode step). Selection is the CPU's exactly:
// descending value, ties to the lower index, for groups and experts alike;
// the routing weights are summed in top-k order as there. Only a softmax's
// normalizing sum is a tree, not a serial, sum (scores within an ulp).
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH
#define DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH

#include "GemvKernels.cuh"

#include "ds/Runtime/Runtime.h"

namespace dsrt {
namespace cuda {

constexpr int kRouteWarps = 4;           // tokens per block
constexpr int64_t kRouteMaxGroups = 256; // 8 per lane (gScore below)
constexpr int64_t kRouteMaxExperts = 1024;

/// Shared memory of a routeKernel block: scores and choices per warp.
inline size_t routeSharedBytes(int64_t experts) {
  return size_t(kRouteWarps) * size_t(2 * experts) * sizeof(float);
}

/// (v, i) beats (bv, bi) in the CPU's order: larger, or equal at a lower
/// index; i < 0 is no candidate (loses to any, beats none).
__device__ inline bool routeBetter(float v, int32_t i, float bv, int32_t bi) {
  return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

/// The warp's best (value, index) candidate; every lane gets it.
__device__ inline void routeWarpBest(float &v, int32_t &i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (routeBetter(ov, oi, v, i))
      v = ov, i = oi;
  }
}

/// One warp routes token i (whole warps only): lane l owns experts l,
/// l + 32, ... (and groups likewise); `score` is the warp's 2 * E floats of
/// shared memory. Logits are read past L1 (__ldcg): gateRouteKernel's last
/// block reads what other blocks wrote in the same launch.
__device__ inline void routeToken(const float *l, int64_t i, const float *bias,
                                  const MoERouting &r, int32_t *idx,
                                  float *weights, float *score) {
  const int lane = int(threadIdx.x % 32);
  const int64_t E = r.experts, K = r.topK;
  const bool grouped = r.method != MoERouting::Greedy && r.nGroup > 1;
  const int64_t G = grouped ? r.nGroup : 1, gs = E / G;
  float *choice = score + E;
  if (r.scoring == MoERouting::Sigmoid) {
    for (int64_t e = lane; e < E; e += 32)
      score[e] = 1.0f / (1.0f + expf(-__ldcg(l + e)));
  } else {
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t e = lane; e < E; e += 32)
      mx = fmaxf(mx, __ldcg(l + e));
    for (int o = 16; o > 0; o >>= 1)
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int64_t e = lane; e < E; e += 32)
      sum += score[e] = expf(__ldcg(l + e) - mx);
    for (int o = 16; o > 0; o >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int64_t e = lane; e < E; e += 32)
      score[e] /= sum;
  }
  // The bias (noaux_tc) steers the selection only.
  for (int64_t e = lane; e < E; e += 32)
    choice[e] = score[e] + (bias ? bias[e] : 0.0f);
  __syncwarp();

  if (grouped) {
    // Group scores, lane-strided (a lane's groups in registers), then the
    // topkGroup best groups one warp-wide argmax at a time.
    constexpr int kPerLane = int(kRouteMaxGroups / 32);
    float gScore[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t g = lane + 32 * j;
      gScore[j] = -INFINITY;
      if (g >= G)
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
      gScore[j] = r.method == MoERouting::NoauxTC
                      ? first + (gs > 1 ? second : 0.0f)
                      : first;
    }
    const int64_t keep = r.topkGroup < G ? r.topkGroup : G;
    unsigned mine = 0; // bit j: group lane + 32 j kept
    for (int64_t k = 0; k < keep; ++k) {
      float bv = 0.0f;
      int32_t bi = -1;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int32_t g = int32_t(lane + 32 * j);
        if (g < G && !(mine >> j & 1) && routeBetter(gScore[j], g, bv, bi))
          bv = gScore[j], bi = g;
      }
      routeWarpBest(bv, bi);
      if (bi < 0)
        break;
      if (bi % 32 == lane)
        mine |= 1u << (bi / 32);
    }
    __syncwarp(); // every lane read its groups' choices before masking
    for (int64_t base = 0; base < E; base += 32) { // whole warps: shuffles
      const int64_t e = base + lane, g = e < E ? e / gs : 0;
      const unsigned owner = __shfl_sync(0xffffffffu, mine, int(g % 32));
      if (e < E && !(owner >> (g / 32) & 1))
        choice[e] = -INFINITY;
    }
  }

  // Top-k, a warp-wide argmax per pick over each lane's own experts; a
  // taken expert becomes NaN (its owner marks it) and is skipped.
  float sum = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    float bv = 0.0f;
    int32_t bi = -1;
    for (int64_t e = lane; e < E; e += 32)
      if (!isnan(choice[e]) && routeBetter(choice[e], int32_t(e), bv, bi))
        bv = choice[e], bi = int32_t(e);
    routeWarpBest(bv, bi);
    if (bi < 0) // fewer than K experts left (NaN logits): expert 0
      bi = 0;
    if (lane == 0) {
      idx[i * K + k] = bi;
      weights[i * K + k] = score[bi]; // the unbiased score
      sum += score[bi];
    }
    if (bi % 32 == lane)
      choice[bi] = NAN;
  }
  if (lane == 0) {
    const float scale = float(r.scale);
    for (int64_t k = 0; k < K; ++k) {
      const float w = weights[i * K + k];
      weights[i * K + k] = (r.normTopk ? w / sum : w) * scale;
    }
  }
  __syncwarp(); // the warp's shared memory is free again
}

/// Warp w of block b routes token b * kRouteWarps + w.
__global__ void __launch_bounds__(32 * kRouteWarps)
    routeKernel(const float *logits, int64_t ldl, int64_t n, const float *bias,
                MoERouting r, int32_t *idx, float *weights) {
  pdlEnter();
  DS_DYNAMIC_SHARED(float, routeShared);
  const int warp = int(threadIdx.x / 32);
  const int64_t i = int64_t(blockIdx.x) * kRouteWarps + warp;
  if (i >= n) // whole warps only
    return;
  routeToken(logits + i * ldl, i, bias, r, idx, weights,
             routeShared + int64_t(warp) * 2 * r.experts);
}

/// The router's GEMV and the routing in one launch (decode): every block
/// computes 8 warps' logits columns as denseGemvKernel does; the last block
/// to finish (a counter in global memory, reset by that block for the next
/// launch) routes all n tokens, a warp per token. Dynamic shared memory:
/// gateRouteSharedBytes. The counter is the device's one: these launches
/// must stay ordered on one stream (they are: DeviceState::stream).
constexpr int64_t kGateRouteMaxExperts = 256;
inline size_t gateRouteSharedBytes(int64_t experts) {
  return size_t(8 * 2 * experts) * sizeof(float);
}
template <class WT, int LANES>
__global__ void __launch_bounds__(256)
    gateRouteKernel(Rows rows, const WT *w, int64_t n, int64_t K, float *logits,
                    bool vec, const float *bias, MoERouting r, int32_t *idx,
                    float *weights, unsigned *counter) {
  DS_DYNAMIC_SHARED(float, gateShared);
  __shared__ bool last;
  if (n <= 0) // every thread below meets the wait before the counter
    return;
  const int64_t E = r.experts;
  const int warp = int(threadIdx.x / 32);
  const int64_t col0 =
      (int64_t(blockIdx.x) * 8 + warp) * gemvColumnsPerWarp<LANES>();
  // No early return: every thread meets the barriers below. Each waits
  // for the previous kernel once: in gemvColumns, after its first weight
  // loads, or here.
  if (col0 < E)
    gemvColumns<WT, false, LANES>(rows, w, nullptr, 0, n, K, E, col0, logits, E,
                                  vec, false, /*deferWait=*/true);
  else
    pdlEnter();
  if (!lastBlockDone(counter, last))
    return;
  for (int64_t i = warp; i < n; i += 8)
    routeToken(logits + i * E, i, bias, r, idx, weights,
               gateShared + int64_t(warp) * 2 * E);
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_ROUTEKERNEL_CUH
