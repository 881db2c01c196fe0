//===- GemvKernels.cuh - GEMVs of a few rows ------------------*- CUDA -*-===//
//
// One warp per output column streams the column's weight row with 16-byte
// loads and multiplies it with up to kGemvRows float32 input rows: the
// decode-time product, bound by weight bytes. Used by the grouped expert
// GEMV (MoEKernels.cuh) and, for a few rows, by the dense GEMMs (Gemm.cu),
// which then need no bf16 copy of their input.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_GEMVKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_GEMVKERNELS_CUH

#include "KernelCommon.cuh"

#include <type_traits>

namespace dsrt {
namespace cuda {

/// Input rows one warp multiplies per pass over the weight row.
constexpr int kGemvRows = 8;

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
template <>
__device__ inline void unpack<__nv_bfloat16>(const Pack8 &p, float *out) {
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

/// Row `slot` of a GEMV's input: x of the pair's token gathered through
/// rowOf (experts), or row `slot` of a dense buffer (rowOf null).
struct Rows {
  const float *x;
  int64_t ldx;
  const int32_t *rowOf; // null: dense by slot
  int64_t topK;
  __device__ const float *row(int64_t slot) const {
    return rowOf ? x + int64_t(rowOf[slot] / topK) * ldx : x + slot * ldx;
  }
};

/// The LANES value of the tensor-core GEMV (gemvColumnsMma): 16 columns per
/// warp, bf16 weights only.
constexpr int kMmaLanes = 2;
/// The K step of gemvColumnsMma: K must be a multiple of it.
constexpr int64_t kMmaK = 64;

/// Lanes per output column: 32 (a warp per column) or 8 (four columns per
/// warp whose lanes load the same input addresses: a quarter of the input
/// traffic through L1 per weight byte, which is what limits several rows);
/// kMmaLanes: 16 columns per warp on tensor cores.
template <int LANES> __host__ __device__ constexpr int gemvColumnsPerWarp() {
  static_assert(LANES == 32 || LANES == 8 || LANES == kMmaLanes,
                "8 or 32 lanes per column, or kMmaLanes");
  return LANES == kMmaLanes ? 16 : 32 / LANES;
}

/// gemvColumns on tensor cores (mma.sync m16n8k16): one warp, columns
/// [col0, col0 + 16) as the A operand's 16 rows, 8 input rows (rounded to
/// bf16) as B's 8 columns, float32 accumulation; 16 input rows per pass
/// over the weights. Per 64 of K each lane loads 8 consecutive weights of
/// each of its two columns from each half of the 64 (two 16-byte loads, at
/// 8 t and 32 + 8 t: a row's 4 lanes read 64 whole bytes a load) and the
/// same 16 positions of its input row: k is permuted within each 64
/// (position 32 (j / 2) + 8 t + 4 (j % 2) + s of lane t is slot s of its k
/// pairs in the j-th mma), the same for A and B, so the sum is the dot
/// product. Where the CUDA-core GEMV spends 2 to 3 instructions a lane per
/// weight and row, this spends about one per 16 weights and 8 rows, which
/// keeps several rows per expert (batched decode) on the weight stream. Needs K
/// % kMmaK == 0 and 16-byte aligned rows of weights and inputs (the caller
/// checks); the rest as gemvColumns.
template <bool GATED>
__device__ inline void gemvColumnsMma(const Rows &rows, const __nv_bfloat16 *wa,
                                      const __nv_bfloat16 *wb, int64_t first,
                                      int64_t count, int64_t K, int64_t N,
                                      int64_t col0, float *out, int64_t ldo,
                                      bool accumulate, bool deferWait) {
  bool waited = !deferWait;
  auto wait = [&] {
    if (!waited)
      pdlEnter();
    waited = true;
  };
  constexpr int kTiles = 2; // 8-row B tiles per pass: 16 input rows
  // 64-wide K steps with their loads in flight: 128 bytes a lane either way
  // (gated: two matrices), which keeps two blocks of 256 threads on a
  // multiprocessor (128 registers, no spills).
  constexpr int kUnroll = GATED ? 1 : 2;
  const int lane = int(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  const int64_t c[2] = {col0 + g, col0 + g + 8};
  const bool has[2] = {c[0] < N, c[1] < N};
  const __nv_bfloat16 *w1[2], *w2[2];
  for (int h = 0; h < 2; ++h) {
    w1[h] = wa + (has[h] ? c[h] : 0) * K + 8 * t;
    w2[h] = GATED ? wb + (has[h] ? c[h] : 0) * K + 8 * t : nullptr;
  }
  // Word w (2 bf16) of a lane's 16 weights of a column in one K step.
  auto word = [](const uint4(&p)[2], int w) {
    const uint4 &v = p[w / 4];
    const int i = w % 4;
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
  };
  if (rows.rowOf) // another kernel's output
    wait();
  for (int64_t r0 = first; r0 < first + count; r0 += 8 * kTiles) {
    const int64_t here = imin(8 * kTiles, first + count - r0);
    const float *xr[kTiles]; // lane's input row of each B tile
#pragma unroll
    for (int n = 0; n < kTiles; ++n)
      xr[n] = 8 * n + g < here ? rows.row(r0 + 8 * n + g) + 8 * t : nullptr;
    float d1[kTiles][4], d2[kTiles][4];
#pragma unroll
    for (int n = 0; n < kTiles; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        d1[n][i] = d2[n][i] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kMmaK * kUnroll) {
      // [step][column half][16-byte half]: 8 words of 2 bf16 per column.
      uint4 p1[kUnroll][2][2], p2[kUnroll][2][2];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + kMmaK * u;
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            p1[u][h][q] = p2[u][h][q] = make_uint4(0, 0, 0, 0);
            if (k < K && has[h]) {
              p1[u][h][q] =
                  __ldg(reinterpret_cast<const uint4 *>(w1[h] + k + 32 * q));
              if (GATED)
                p2[u][h][q] =
                    __ldg(reinterpret_cast<const uint4 *>(w2[h] + k + 32 * q));
            }
          }
      }
      wait(); // first pass: the loads above are in flight meanwhile
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + kMmaK * u;
        if (k >= K)
          break;
#pragma unroll
        for (int n = 0; n < kTiles; ++n) {
          if (8 * n >= here) // the same for the whole warp
            break;
          uint32_t xb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          if (xr[n]) {
#pragma unroll
            for (int v = 0; v < 4; ++v) {
              const float4 f = *reinterpret_cast<const float4 *>(
                  xr[n] + k + 32 * (v / 2) + 4 * (v % 2));
              xb[2 * v] = packBf16x2(f.x, f.y);
              xb[2 * v + 1] = packBf16x2(f.z, f.w);
            }
          }
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            // Words 2j, 2j + 1 of a lane's 16 positions: k slots 2t, 2t+1
            // and 2t+8, 2t+9 of the j-th mma.
            const uint32_t b[2] = {xb[2 * j], xb[2 * j + 1]};
            const uint32_t a1[4] = {
                word(p1[u][0], 2 * j), word(p1[u][1], 2 * j),
                word(p1[u][0], 2 * j + 1), word(p1[u][1], 2 * j + 1)};
            mmaBf16(d1[n], a1, b);
            if (GATED) {
              const uint32_t a2[4] = {
                  word(p2[u][0], 2 * j), word(p2[u][1], 2 * j),
                  word(p2[u][0], 2 * j + 1), word(p2[u][1], 2 * j + 1)};
              mmaBf16(d2[n], a2, b);
            }
          }
        }
      }
    }
    wait(); // no K: nothing was loaded
            // d[n][i]: column c[i / 2], input row 8 n + 2 t + i % 2.
#pragma unroll
    for (int n = 0; n < kTiles; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t r = 8 * n + 2 * t + i % 2;
        if (r < here && has[i / 2]) {
          float *o = out + (r0 + r) * ldo + c[i / 2];
          const float s1 = d1[n][i], s2 = d2[n][i];
          const float v = GATED ? s1 / (1.0f + expf(-s1)) * s2 : s1;
          *o = accumulate ? *o + v : v;
        }
      }
  }
  // No rows: still wait (gemvColumns says why).
  wait();
}

/// One warp: columns [col0, col0 + 32 / LANES) (those below N) of rows
/// [first, first + count) of `rows`: out[r, c] = x_r . wa[c] (GATED:
/// silu(x_r . wa[c]) * (x_r . wb[c])), wa and wb [N, K]. kGemvRows rows at
/// a time (the weight rows are re-read from cache for each further group).
/// With `accumulate`, out[r, c] += the product instead (one lane owns each
/// output element, so reading it back races with nothing).
/// With `deferWait` the caller has not yet waited for the previous kernel
/// (pdlEnter): the first weight loads are issued before the wait, so that
/// they overlap that kernel's tail (weights are never written; the inputs
/// and outputs are touched only after the wait; with a rowOf, or without
/// 16-byte loads, it waits first).
template <class WT, bool GATED, int LANES>
__device__ inline void
gemvColumns(const Rows &rows, const WT *wa, const WT *wb, int64_t first,
            int64_t count, int64_t K, int64_t N, int64_t col0, float *out,
            int64_t ldo, bool vec, bool accumulate = false,
            bool deferWait = false) {
  if constexpr (LANES == kMmaLanes) {
    static_assert(std::is_same<WT, __nv_bfloat16>::value,
                  "tensor-core GEMV of bf16 weights only");
    (void)vec; // the caller checked it
    gemvColumnsMma<GATED>(rows, wa, wb, first, count, K, N, col0, out, ldo,
                          accumulate, deferWait);
    return;
  }
  bool waited = !deferWait;
  auto wait = [&] {
    if (!waited)
      pdlEnter();
    waited = true;
  };
  const int lane = threadIdx.x % 32, sub = lane % LANES;
  const int64_t col = col0 + lane / LANES;
  // A column past N still takes part in the shuffles, over no K.
  const int64_t kEnd = col < N ? K : 0;
  const WT *w1 = wa + (col < N ? col : 0) * K;
  const WT *w2 = GATED ? wb + (col < N ? col : 0) * K : nullptr;
  constexpr int kSpan = LANES * 8; // elements the lanes of a column cover
  if (!vec || rows.rowOf)          // rowOf is another kernel's output
    wait();
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
      for (int64_t k0 = int64_t(sub) * 8; k0 < kEnd; k0 += kSpan * kUnroll) {
        Pack8 p1[kUnroll], p2[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + kSpan * u;
          if (k < kEnd) {
            loadRaw(w1 + k, p1[u]);
            if (GATED)
              loadRaw(w2 + k, p2[u]);
          }
        }
        wait(); // first pass: the loads above are in flight meanwhile
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t k = k0 + kSpan * u;
          if (k >= kEnd)
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
      for (int64_t k = sub; k < kEnd; k += LANES) {
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
    wait(); // a column with no K (past N) loaded nothing
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      float s1 = a1[r], s2 = a2[r];
      for (int o = LANES / 2; o > 0; o >>= 1) {
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
        if (GATED)
          s2 += __shfl_xor_sync(0xffffffffu, s2, o);
      }
      if (sub == 0 && r < here && col < N) {
        float *o = out + (r0 + r) * ldo + col;
        const float v = GATED ? s1 / (1.0f + expf(-s1)) * s2 : s1;
        *o = accumulate ? *o + v : v;
      }
    }
  }
  // No rows: still wait, or this grid could finish before the one it
  // depends on, and the launch after it (which waits for this grid only)
  // would overlap that one.
  wait();
}

/// Dense GEMV for a few rows (decode): y [n, N] = x W^T (GATED: the SwiGLU
/// of the two products); 8 warps per block, 32 / LANES columns per warp; x
/// read in float32 as it is (no conversion pass before the product);
/// `accumulate`: y += the product. (kMmaLanes: ds-gemv-bench only, so far;
/// without the grouped GEMV's launch bounds, which would cost the other
/// forms registers.)
template <class WT, bool GATED, int LANES>
__global__ void denseGemvKernel(Rows rows, const WT *wa, const WT *wb,
                                int64_t n, int64_t K, int64_t N, float *out,
                                int64_t ldo, bool vec, bool accumulate) {
  // No pdlEnter here: gemvColumns waits after its first weight loads.
  const int64_t col0 =
      (int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32) *
      gemvColumnsPerWarp<LANES>();
  if (col0 >= N)
    return;
  gemvColumns<WT, GATED, LANES>(rows, wa, wb, 0, n, K, N, col0, out, ldo, vec,
                                accumulate, /*deferWait=*/true);
}

/// denseGemvKernel, then, in the block that finishes last (`counter`, zero
/// between launches), the residual add + RMSNorm of every row of y, bit for
/// bit as addRmsNormKernel computes it (addRmsNormRowWarp; a warp per row):
/// a launch and a kernel boundary fewer after the attention's output
/// projection, and after the dense MLP's down projection, at decode.
template <class WT, int LANES>
__global__ void __launch_bounds__(256)
    denseGemvNormKernel(Rows rows, const WT *w, int64_t n, int64_t K, int64_t N,
                        float *out, int64_t ldo, bool vec, NormEpilogue e,
                        unsigned *counter) {
  __shared__ bool last;
  if (n <= 0) // every thread below meets the wait before the counter
    return;
  const int warp = int(threadIdx.x / 32);
  const int64_t col0 = (int64_t(blockIdx.x) * (blockDim.x / 32) + warp) *
                       gemvColumnsPerWarp<LANES>();
  // No early return: every thread meets the barriers below. Each waits for
  // the previous kernel once: in gemvColumns, after its first weight loads,
  // or here.
  if (col0 < N)
    gemvColumns<WT, false, LANES>(rows, w, nullptr, 0, n, K, N, col0, out, ldo,
                                  vec, false, /*deferWait=*/true);
  else
    pdlEnter();
  if (!lastBlockDone(counter, last))
    return;
  for (int64_t i = warp; i < n; i += blockDim.x / 32)
    addRmsNormRowWarp(e.residual + i * e.ldr, out + i * ldo, N, e.weight, e.eps,
                      e.sum + i * e.lds, e.normed + i * e.ldn);
}

/// Two dense GEMVs of one input in one launch: blocks [0, blocksA) compute
/// outA = x Wa^T [n, Na], the rest outB = x Wb^T [n, Nb].
template <class WT, int LANES>
__global__ void denseGemvPairKernel(Rows rows, const WT *wa, int64_t Na,
                                    float *outA, int64_t ldoA, const WT *wb,
                                    int64_t Nb, float *outB, int64_t ldoB,
                                    unsigned blocksA, int64_t n, int64_t K,
                                    bool vec) {
  // No pdlEnter here: gemvColumns waits after its first weight loads.
  const bool second = blockIdx.x >= blocksA;
  const int64_t block = second ? blockIdx.x - blocksA : blockIdx.x;
  const int64_t N = second ? Nb : Na;
  const int64_t col0 = (block * (blockDim.x / 32) + threadIdx.x / 32) *
                       gemvColumnsPerWarp<LANES>();
  if (col0 >= N)
    return;
  gemvColumns<WT, false, LANES>(rows, second ? wb : wa, nullptr, 0, n, K, N,
                                col0, second ? outB : outA,
                                second ? ldoB : ldoA, vec, false,
                                /*deferWait=*/true);
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_GEMVKERNELS_CUH
