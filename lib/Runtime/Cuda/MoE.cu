//===- MoE.cu - routed experts on the GPU, no host synchronisation -------===//
//
// (token, k) pairs are sorted by expert on the device (one block counts,
// scans and scatters), then:
//  - few tokens (decode, n <= kGemvTokens): a grouped GEMV, one warp per
//    output column of one active expert, streaming the weight row with
//    16-byte loads for 8 of the expert's rows at a time;
//  - else (prefill): a grouped tiled GEMM over (expert, 32-row tile, 64-col
//    tile), with the tile list computed on the device so the grid is sized
//    from n alone.
// gate/up are one pass with the SwiGLU epilogue; down writes one row per
// pair; the combine sums each token's pairs in top-k order from zero (the
// CPU backend's order). Each output element is a fixed-order sum, so results
// do not depend on how the pairs were scattered.
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"

namespace dsrt {
namespace cuda {

namespace {

constexpr int kGemvRows = 8;
/// Up to this many tokens the experts run as GEMVs (each active expert's
/// weights streamed once per 8 of its rows), above as tiled GEMMs.
constexpr int64_t kGemvTokens = 64;
constexpr int kBM = 32, kBN = 64, kBK = 32;

/// counts, offsets (exclusive scan), tile offsets (tiles of kBM rows), and
/// the scatter: rowOf[slot] = pair, slotOf[pair] = slot. Only experts
/// [lo, lo + experts) are here (expert parallelism): other pairs get slot -1.
__global__ void sortPairsKernel(const int32_t *idx, int64_t pairs, int64_t lo,
                                int64_t experts, int32_t *counts,
                                int32_t *offsets, int32_t *tileOffsets,
                                int32_t *cursor, int32_t *rowOf,
                                int32_t *slotOf) {
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
    counts[e] = 0;
  __syncthreads();
  auto local = [&](int64_t p) -> int64_t {
    const int64_t e = int64_t(idx[p]) - lo;
    return e >= 0 && e < experts ? e : -1;
  };
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x)
    if (local(p) >= 0)
      atomicAdd(&counts[local(p)], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t off = 0, tiles = 0;
    for (int64_t e = 0; e < experts; ++e) {
      offsets[e] = off;
      tileOffsets[e] = tiles;
      cursor[e] = off;
      off += counts[e];
      tiles += (counts[e] + kBM - 1) / kBM;
    }
    offsets[experts] = off;
    tileOffsets[experts] = tiles;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int64_t e = local(p);
    const int32_t slot = e >= 0 ? atomicAdd(&cursor[e], 1) : -1;
    if (slot >= 0)
      rowOf[slot] = int32_t(p);
    slotOf[p] = slot;
  }
}

__device__ inline float toFloat(float v) { return v; }
__device__ inline float toFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

/// 8 consecutive weights as raw bits: one uint4 of bf16, two of float.
struct Pack8 {
  uint4 a, b;
};
__device__ inline void loadRaw(const __nv_bfloat16 *w, Pack8 &p) {
  p.a = __ldg(reinterpret_cast<const uint4 *>(w));
}
__device__ inline void loadRaw(const float *w, Pack8 &p) {
  p.a = __ldg(reinterpret_cast<const uint4 *>(w));
  p.b = __ldg(reinterpret_cast<const uint4 *>(w + 4));
}
template <class WT> __device__ inline void unpack(const Pack8 &p, float *out);
template <> __device__ inline void unpack<__nv_bfloat16>(const Pack8 &p, float *out) {
  const __nv_bfloat16 *b = reinterpret_cast<const __nv_bfloat16 *>(&p.a);
#pragma unroll
  for (int j = 0; j < 8; ++j)
    out[j] = __bfloat162float(b[j]);
}
template <> __device__ inline void unpack<float>(const Pack8 &p, float *out) {
  const float *a = reinterpret_cast<const float *>(&p.a);
  const float *b = reinterpret_cast<const float *>(&p.b);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[j] = a[j];
    out[4 + j] = b[j];
  }
}

/// Row r (slot) of the expert's input: x of the pair's token (gathered),
/// or row slot of a dense [pairs, K] buffer.
struct Rows {
  const float *x;
  int64_t ldx;
  const int32_t *rowOf; // null: dense by slot
  int64_t topK;
  __device__ const float *row(int64_t slot) const {
    return rowOf ? x + int64_t(rowOf[slot] / topK) * ldx : x + slot * ldx;
  }
};

/// Grouped GEMV: block (expert, 8 columns), one warp per column; the
/// expert's rows kGemvRows at a time (the weight row is re-read from cache
/// for each further group). GATED: out = silu(x Wg^T) * (x Wu^T).
template <class WT, bool GATED>
__global__ void groupedGemvKernel(Rows rows, const void *const *wa,
                                  const void *const *wb, const int32_t *offsets,
                                  int64_t K, int64_t N, float *out,
                                  int64_t ldo, bool vec) {
  const int64_t e = blockIdx.x;
  const int64_t first = offsets[e], count = offsets[e + 1] - first;
  if (count == 0)
    return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t col = int64_t(blockIdx.y) * (blockDim.x / 32) + warp;
  if (col >= N)
    return;
  const WT *w1 = static_cast<const WT *>(wa[e]) + col * K;
  const WT *w2 = GATED ? static_cast<const WT *>(wb[e]) + col * K : nullptr;
  for (int64_t r0 = first; r0 < first + count; r0 += kGemvRows) {
    const int64_t here = imin(kGemvRows, first + count - r0);
    const float *xr[kGemvRows];
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r)
      xr[r] = r < here ? rows.row(r0 + r) : nullptr;
    float a1[kGemvRows], a2[kGemvRows];
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r)
      a1[r] = a2[r] = 0.0f;
    if (vec) {
      // kUnroll 16-byte weight loads per matrix in flight before any use:
      // enough bytes in flight per warp to approach the memory bandwidth.
      constexpr int kUnroll = 4;
      for (int64_t k0 = int64_t(lane) * 8; k0 < K; k0 += 256 * kUnroll) {
        Pack8 p1[kUnroll], p2[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + 256 * u;
          if (k < K) {
            loadRaw(w1 + k, p1[u]);
            if (GATED)
              loadRaw(w2 + k, p2[u]);
          }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + 256 * u;
          if (k >= K)
            break;
          float v1[8], v2[8];
          unpack<WT>(p1[u], v1);
          if (GATED)
            unpack<WT>(p2[u], v2);
#pragma unroll
          for (int r = 0; r < kGemvRows; ++r) {
            if (r >= here)
              break;
            const float4 xa = *reinterpret_cast<const float4 *>(xr[r] + k);
            const float4 xb = *reinterpret_cast<const float4 *>(xr[r] + k + 4);
            const float x[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
              a1[r] += v1[j] * x[j];
              if (GATED)
                a2[r] += v2[j] * x[j];
            }
          }
        }
      }
    } else {
      for (int64_t k = lane; k < K; k += 32) {
        const float v1 = toFloat(w1[k]);
        const float v2 = GATED ? toFloat(w2[k]) : 0.0f;
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r) {
          if (r >= here)
            break;
          a1[r] += v1 * xr[r][k];
          if (GATED)
            a2[r] += v2 * xr[r][k];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      float s1 = a1[r], s2 = a2[r];
      for (int o = 16; o > 0; o >>= 1) {
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
        if (GATED)
          s2 += __shfl_xor_sync(0xffffffffu, s2, o);
      }
      if (lane == 0 && r < here)
        out[(r0 + r) * ldo + col] = GATED ? s1 / (1.0f + expf(-s1)) * s2 : s1;
    }
  }
}

/// Grouped tiled GEMM: block (64-col tile, tile index); the tile index maps
/// to (expert, 32-row tile) through tileOffsets. 256 threads, each 2 rows x
/// 4 columns (x2 when GATED).
template <class WT, bool GATED>
__global__ void groupedGemmKernel(Rows rows, const void *const *wa,
                                  const void *const *wb, const int32_t *offsets,
                                  const int32_t *tileOffsets, int64_t experts,
                                  int64_t K, int64_t N, float *out,
                                  int64_t ldo) {
  __shared__ float as[kBK][kBM + 1];
  __shared__ float ws1[kBK][kBN + 1];
  __shared__ float ws2[GATED ? kBK : 1][kBN + 1];
  const int64_t tile = blockIdx.y;
  if (tile >= tileOffsets[experts])
    return;
  int64_t lo = 0, hi = experts; // the expert whose tiles hold `tile`
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (tileOffsets[mid] <= tile)
      lo = mid;
    else
      hi = mid;
  }
  const int64_t e = lo;
  const int64_t r0 = offsets[e] + (tile - tileOffsets[e]) * kBM;
  const int64_t rowsHere = imin(kBM, offsets[e + 1] - r0);
  const int64_t c0 = int64_t(blockIdx.x) * kBN;
  const WT *w1 = static_cast<const WT *>(wa[e]);
  const WT *w2 = GATED ? static_cast<const WT *>(wb[e]) : nullptr;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  float acc1[2][4] = {}, acc2[2][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    for (int i = tid; i < kBM * kBK; i += 256) {
      const int r = i / kBK, k = i % kBK;
      as[k][r] = (r < rowsHere && k0 + k < K) ? rows.row(r0 + r)[k0 + k] : 0.0f;
    }
    for (int i = tid; i < kBN * kBK; i += 256) {
      const int c = i / kBK, k = i % kBK;
      const bool in = c0 + c < N && k0 + k < K;
      ws1[k][c] = in ? toFloat(w1[(c0 + c) * K + k0 + k]) : 0.0f;
      if (GATED)
        ws2[k][c] = in ? toFloat(w2[(c0 + c) * K + k0 + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kBK; ++k) {
      const float a0 = as[k][ty * 2], a1 = as[k][ty * 2 + 1];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float b1 = ws1[k][tx * 4 + j];
        acc1[0][j] += a0 * b1;
        acc1[1][j] += a1 * b1;
        if (GATED) {
          const float b2 = ws2[k][tx * 4 + j];
          acc2[0][j] += a0 * b2;
          acc2[1][j] += a1 * b2;
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = ty * 2 + i;
    if (r >= rowsHere)
      continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t c = c0 + tx * 4 + j;
      if (c < N) {
        const float g = acc1[i][j];
        out[(r0 + r) * ldo + c] = GATED ? g / (1.0f + expf(-g)) * acc2[i][j] : g;
      }
    }
  }
}

/// y[t] = sum_k w[t, k] * yp[slotOf[t * K + k]], in k order from zero.
__global__ void combineKernel(const float *yp, int64_t hidden,
                              const int32_t *slotOf, const float *w,
                              int64_t topK, float *y, int64_t ldy) {
  const int64_t t = blockIdx.y;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < hidden;
       c += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      const int32_t slot = slotOf[t * topK + k];
      if (slot >= 0)
        acc += w[t * topK + k] * yp[int64_t(slot) * hidden + c];
    }
    y[t * ldy + c] = acc;
  }
}

/// Device table [gate[E], up[E], down[E]] of the experts' weight pointers,
/// built once per emitted index array (outside graph capture).
const void **expertTable(DeviceState &st, const int64_t *gate,
                         const int64_t *up, const int64_t *down,
                         int64_t experts, bool *bf16) {
  const DeviceWeight &first = st.weights[size_t(gate[0])];
  *bf16 = first.bf16;
  auto it = st.expertTables.find(gate);
  if (it != st.expertTables.end())
    return it->second;
  if (st.capturing)
    fatal("moeExpertsW", "expert table built during graph capture");
  std::vector<const void *> host(size_t(3 * experts));
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t ids[3] = {gate[e], up[e], down[e]};
    for (int p = 0; p < 3; ++p) {
      const DeviceWeight &w = st.weights[size_t(ids[p])];
      if (w.bf16 != first.bf16)
        fatal("moeExpertsW", "experts with different weight dtypes");
      host[size_t(p * experts + e)] = w.ptr;
    }
  }
  const void **table = nullptr;
  check(cudaMalloc(&table, host.size() * sizeof(void *)), "moeExpertsW");
  check(cudaMemcpy(table, host.data(), host.size() * sizeof(void *),
                   cudaMemcpyHostToDevice),
        "moeExpertsW");
  st.expertTables[gate] = table;
  return table;
}

template <class WT>
void runExperts(DeviceState &st, const float *x, int64_t ldx, int64_t n,
                int64_t hidden, int64_t inter, const int32_t *idx,
                const float *weights, int64_t topK, const void **table,
                int64_t lo, int64_t experts, float *y, int64_t ldy,
                bool fp8Act) {
  const int64_t pairs = n * topK;
  auto *ints = static_cast<int32_t *>(scratch(
      st, size_t(4 * (experts + 1) + 2 * pairs) * sizeof(int32_t), "moeExpertsW"));
  int32_t *counts = ints, *offsets = counts + experts + 1,
          *tileOffsets = offsets + experts + 1, *cursor = tileOffsets + experts + 1,
          *rowOf = cursor + experts + 1, *slotOf = rowOf + pairs;
  float *h = static_cast<float *>(
      scratch(st, size_t(pairs * inter) * sizeof(float), "moeExpertsW"));
  float *yp = static_cast<float *>(
      scratch(st, size_t(pairs * hidden) * sizeof(float), "moeExpertsW"));
  sortPairsKernel<<<1, 1024, 0, st.stream>>>(idx, pairs, lo, experts, counts,
                                              offsets, tileOffsets, cursor,
                                              rowOf, slotOf);
  checkLaunch("moeExpertsW (sort)");
  if (fp8Act) { // every token's row once, before the gather
    x = fakeQuantE4M3(st, x, ldx, n, hidden);
    ldx = hidden;
  }
  const void *const *gate = table, *const *up = table + experts,
                    *const *down = table + 2 * experts;
  const Rows xRows{x, ldx, rowOf, topK};
  Rows hRows{h, inter, nullptr, 1};
  // 16-byte loads: 8-element rows of weights and inputs, 16-byte aligned.
  auto vec = [](const float *p, int64_t ld, int64_t k) {
    return k % 8 == 0 && ld % 4 == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  };
  if (n <= kGemvTokens) {
    groupedGemvKernel<WT, true>
        <<<dim3(unsigned(experts), unsigned((inter + 7) / 8)), 256, 0, st.stream>>>(
            xRows, gate, up, offsets, hidden, inter, h, inter,
            vec(xRows.x, xRows.ldx, hidden));
    checkLaunch("moeExpertsW (gate/up)");
    if (fp8Act)
      hRows.x = fakeQuantE4M3(st, h, inter, pairs, inter);
    groupedGemvKernel<WT, false>
        <<<dim3(unsigned(experts), unsigned((hidden + 7) / 8)), 256, 0, st.stream>>>(
            hRows, down, nullptr, offsets, inter, hidden, yp, hidden,
            vec(hRows.x, hRows.ldx, inter));
    checkLaunch("moeExpertsW (down)");
  } else {
    // Upper bound of sum_e ceil(count_e / kBM).
    const unsigned tiles = unsigned((pairs + kBM - 1) / kBM + experts);
    groupedGemmKernel<WT, true>
        <<<dim3(unsigned((inter + kBN - 1) / kBN), tiles), 256, 0, st.stream>>>(
            xRows, gate, up, offsets, tileOffsets, experts, hidden, inter, h,
            inter);
    checkLaunch("moeExpertsW (gate/up)");
    if (fp8Act)
      hRows.x = fakeQuantE4M3(st, h, inter, pairs, inter);
    groupedGemmKernel<WT, false>
        <<<dim3(unsigned((hidden + kBN - 1) / kBN), tiles), 256, 0, st.stream>>>(
            hRows, down, nullptr, offsets, tileOffsets, experts, inter, hidden,
            yp, hidden);
    checkLaunch("moeExpertsW (down)");
  }
  dim3 grid(unsigned(imin(blocksFor(hidden, 256), 16)), unsigned(n));
  combineKernel<<<grid, 256, 0, st.stream>>>(yp, hidden, slotOf, weights, topK,
                                             y, ldy);
  checkLaunch("moeExpertsW (combine)");
}

} // namespace

void moeExpertsW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t hidden, int64_t inter, const int32_t *idx,
                 const float *weights, int64_t topK, const int64_t *gate,
                 const int64_t *up, const int64_t *down, int64_t experts,
                 float *y, int64_t ldy, ActQuant act) {
  moeExpertsRange(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up,
                  down, 0, experts, y, ldy, act);
}

void moeExpertsRange(Context &ctx, const float *x, int64_t ldx, int64_t n,
                     int64_t hidden, int64_t inter, const int32_t *idx,
                     const float *weights, int64_t topK, const int64_t *gate,
                     const int64_t *up, const int64_t *down, int64_t lo,
                     int64_t experts, float *y, int64_t ldy, ActQuant act) {
  ProfileScope profile(ctx, "moeExpertsW");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  // FP8 experts are dequantized on the device; ActQuant::Fp8 quantizes
  // their inputs as the CPU backend does.
  const bool fp8Act = act == ActQuant::Fp8 &&
                      ctx.spec().weights[gate[lo]].dtype == DType::F8E4M3;
  bool bf16 = false;
  const void **table =
      expertTable(st, gate + lo, up + lo, down + lo, experts, &bf16);
  if (bf16)
    runExperts<__nv_bfloat16>(st, x, ldx, n, hidden, inter, idx, weights, topK,
                              table, lo, experts, y, ldy, fp8Act);
  else
    runExperts<float>(st, x, ldx, n, hidden, inter, idx, weights, topK, table,
                      lo, experts, y, ldy, fp8Act);
}

} // namespace cuda
} // namespace dsrt
