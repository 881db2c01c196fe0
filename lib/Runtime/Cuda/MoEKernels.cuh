//===- MoEKernels.cuh - routed-expert kernels -------------------*- CUDA -*-===//
//
// The kernels of MoE.cu (which launches them; see there for the scheme),
// in a header so that test/Unit/CudaEmuTest.cpp runs them on the CPU too.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_MOEKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_MOEKERNELS_CUH

#include "GemvKernels.cuh"

namespace dsrt {
namespace cuda {
namespace moe {

/// Up to this many tokens the experts run as GEMVs (each active expert's
/// weights streamed once per 8 of its rows), above as tiled GEMMs.
constexpr int64_t kGemvTokens = 64;
/// Tokens up to which the combine + norm after the down GEMV runs in that
/// launch's last block (row after row, on one multiprocessor) rather than
/// as a launch of a block per token (DS_CUDA_MOE_COMBINE).
constexpr int64_t kCombineInGemvTokens = 2;
/// SIMT grouped GEMM tile (float32 weights).
constexpr int kBM = 32, kBN = 64, kBK = 32;
/// Tensor-core grouped GEMM tile (bf16 weights): 8 warps as 2 x 4, each a
/// 32 x 16 output; rows of shared tiles padded by 8 elements (16 bytes, so
/// WMMA pointers stay 256-bit aligned and rows fall on different banks).
constexpr int kTcBM = 64, kTcBN = 64, kTcBK = 32, kTcPad = 8;

/// Upper bound of sum_e ceil(count_e / tileRows) over `experts` experts
/// holding `pairs` rows: the grid size of a grouped GEMM, known from n alone.
inline int64_t tileBound(int64_t pairs, int64_t experts, int64_t tileRows) {
  return (pairs + tileRows - 1) / tileRows + experts;
}

/// Exclusive sums over the block of three counters (blockDim.x a multiple
/// of 32); every thread gets the block's totals as well.
__device__ inline void blockScan3(int32_t v[3], int32_t total[3]) {
  __shared__ int32_t warpSum[32][3];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32),
            warps = int(blockDim.x / 32);
  auto warpInclusive = [&](int32_t s[3]) {
    for (int d = 1; d < 32; d <<= 1)
      for (int c = 0; c < 3; ++c) {
        const int32_t o =
            __shfl_sync(0xffffffffu, s[c], lane >= d ? lane - d : lane);
        if (lane >= d)
          s[c] += o;
      }
  };
  int32_t inc[3] = {v[0], v[1], v[2]};
  warpInclusive(inc);
  if (lane == 31)
    for (int c = 0; c < 3; ++c)
      warpSum[warp][c] = inc[c];
  __syncthreads();
  if (warp == 0) {
    int32_t s[3];
    for (int c = 0; c < 3; ++c)
      s[c] = lane < warps ? warpSum[lane][c] : 0;
    warpInclusive(s);
    if (lane < warps)
      for (int c = 0; c < 3; ++c)
        warpSum[lane][c] = s[c];
  }
  __syncthreads();
  for (int c = 0; c < 3; ++c) {
    v[c] = (warp > 0 ? warpSum[warp - 1][c] : 0) + inc[c] - v[c];
    total[c] = warpSum[warps - 1][c];
  }
  __syncthreads(); // warpSum is rewritten by the next call
}

/// Shared memory of sortPairsKernel: a count and a cursor per expert.
constexpr int64_t kSortMaxExperts = 4096;
inline size_t sortSharedBytes(int64_t experts) {
  return size_t(2 * experts) * sizeof(int32_t);
}

/// offsets (exclusive scan of the counts), tile offsets (tiles of tileRows
/// rows), the experts with rows in order (active [experts], -1 after the
/// last), and the scatter: rowOf[slot] = pair, slotOf[pair] = slot. Only
/// experts [lo, lo + experts) are here (expert parallelism): other pairs get
/// slot -1. One block; counts and cursors in shared memory and the scans
/// block-wide, since a serial pass over the experts (dependent loads of
/// counts made by atomics in L2) costs microseconds per MoE layer.
__global__ void __launch_bounds__(1024)
    sortPairsKernel(const int32_t *idx, int64_t pairs, int64_t lo,
                    int64_t experts, int64_t tileRows, int32_t *offsets,
                    int32_t *tileOffsets, int32_t *active, int32_t *rowOf,
                    int32_t *slotOf) {
  pdlEnter();
  DS_DYNAMIC_SHARED(int32_t, sortShared);
  int32_t *count = sortShared, *cursor = sortShared + experts;
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
    count[e] = 0;
  __syncthreads();
  auto local = [&](int64_t p) -> int64_t {
    const int64_t e = int64_t(idx[p]) - lo;
    return e >= 0 && e < experts ? e : -1;
  };
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x)
    if (local(p) >= 0)
      atomicAdd(&count[local(p)], 1);
  __syncthreads();
  int32_t carry[3] = {0, 0, 0}; // rows, tiles, active experts so far
  for (int64_t base = 0; base < experts; base += blockDim.x) {
    const int64_t e = base + threadIdx.x;
    const int32_t c = e < experts ? count[e] : 0;
    int32_t v[3] = {c, int32_t((c + tileRows - 1) / tileRows), c > 0 ? 1 : 0},
            total[3];
    blockScan3(v, total);
    if (e < experts) {
      offsets[e] = cursor[e] = carry[0] + v[0];
      tileOffsets[e] = carry[1] + v[1];
      if (c > 0)
        active[carry[2] + v[2]] = int32_t(e);
    }
    for (int k = 0; k < 3; ++k)
      carry[k] += total[k];
  }
  for (int64_t i = carry[2] + threadIdx.x; i < experts; i += blockDim.x)
    active[i] = -1;
  if (threadIdx.x == 0) {
    offsets[experts] = carry[0];
    tileOffsets[experts] = carry[1];
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

/// A dense GEMV in a grouped GEMV's launch (the shared expert beside the
/// routed ones, so that its weights stream in the same wave): blocks
/// x >= firstBlock compute out = rows [0, n) * wa^T (GATED: the SwiGLU with
/// wb), block (x, y) the columns of chunk (x - firstBlock) * gridDim.y + y.
struct DenseGemv {
  Rows rows;
  const void *wa, *wb;
  int64_t n, K, N;
  float *out;
  int64_t ldo;
  bool vec;
  unsigned firstBlock; // past the grid: none
};

/// combineKernel for the whole row of token t, with the block, then, as
/// addRmsNormKernel (same order of sums), sum = residual + y and normed =
/// rmsNorm(sum). A thread reads and writes the same elements of y, sum and
/// the residual only, so sum may alias the residual (in-place residual
/// streams). yp and shared go past L1: in the down GEMV's last block
/// (GemvCombine) other blocks of the launch wrote them.
__device__ inline void combineNormRow(int64_t t, const float *yp,
                                      int64_t hidden, const int32_t *slotOf,
                                      const float *w, int64_t topK,
                                      const float *shared, int64_t lds,
                                      float *y, int64_t ldy,
                                      const NormEpilogue &e, float *red) {
  float *sum = e.sum + t * e.lds;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      const int32_t slot = slotOf[t * topK + k];
      if (slot >= 0)
        acc += w[t * topK + k] * __ldcg(yp + int64_t(slot) * hidden + c);
    }
    if (shared)
      acc += __ldcg(shared + t * lds + c);
    y[t * ldy + c] = acc;
    const float v = e.residual[t * e.ldr + c] + acc;
    sum[c] = v;
    ss += v * v;
  }
  ss = blockSum(ss, red);
  const float r = 1.0f / sqrtf(ss / float(hidden) + e.eps);
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x)
    e.normed[t * e.ldn + c] = sum[c] * r * e.weight[c];
}

/// The combine + residual add + RMSNorm of the MoE output (combineNormRow)
/// done by the down GEMV's last block to finish (`counter`, zero between
/// launches; null: not in this launch): one launch and one kernel
/// boundary fewer on every MoE layer's decode path at batch 1.
struct GemvCombine {
  const float *yp; // the routed experts' rows [pairs, hidden] (the launch's)
  int64_t hidden;
  const int32_t *slotOf;
  const float *w; // [n, topK] routing weights
  int64_t topK, n;
  const float *shared; // the shared expert's output [n, lds], or null
  int64_t lds;
  float *y;
  int64_t ldy;
  NormEpilogue norm;
  unsigned *counter;
};

/// The x-blocks a DenseGemv of N columns needs beside a grid of `gridY`.
template <int LANES>
inline unsigned denseGemvBlocks(int64_t N, unsigned gridY) {
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  const int64_t chunks = (N + perBlock - 1) / perBlock;
  return unsigned((chunks + gridY - 1) / gridY);
}

/// The sort of a grouped GEMV's pairs done by its own expert blocks (the
/// first GEMV of a MoE layer at decode), instead of a sortPairsKernel
/// launch before it: one launch and one kernel boundary fewer on every MoE
/// layer's critical path. idx null: sorted already (offsets and active are
/// the launch's inputs).
struct GemvSort {
  const int32_t *idx;
  int64_t pairs, lo, experts;
};

/// Dynamic shared memory of a groupedGemvKernel launch with a GemvSort: a
/// count per expert, then the block's rows (at most every pair).
inline size_t gemvSortSharedBytes(int64_t experts, int64_t pairs) {
  return size_t(experts + pairs) * sizeof(int32_t);
}

/// What sortPairsKernel computes (but tileOffsets), for the expert block
/// blockIdx.x of a grouped GEMV launch: its expert (the blockIdx.x-th with
/// rows; -1: none), its first slot and row count, and its rows (pair
/// indices) in `rowsOut`. Every block computes the same slots without
/// exchanging anything: the counts by shared atomics (order-free), the
/// offsets by a block scan, an expert's rows in pair order by one warp's
/// ballots. (sortPairsKernel orders an expert's rows by atomic cursor; no
/// result depends on that order.) For the launches after this one, block
/// (0, 0) writes offsets, active and the slots of other ranks' pairs (-1),
/// and block (x, 0) its expert's rowOf and slotOf entries. After
/// pdlEnter, with every thread of the block.
__device__ inline int32_t sortInBlock(const GemvSort &s, int32_t *offsets,
                                      int32_t *active, int32_t *rowOf,
                                      int32_t *slotOf, int32_t *count,
                                      int32_t *rowsOut, int64_t *firstOut,
                                      int64_t *countOut) {
  __shared__ int32_t mine[3]; // expert, first slot, rows
  const bool writer = blockIdx.x == 0 && blockIdx.y == 0;
  for (int64_t e = threadIdx.x; e < s.experts; e += blockDim.x)
    count[e] = 0;
  if (threadIdx.x == 0)
    mine[0] = -1;
  __syncthreads();
  auto local = [&](int64_t p) -> int64_t {
    const int64_t e = int64_t(s.idx[p]) - s.lo;
    return e >= 0 && e < s.experts ? e : -1;
  };
  for (int64_t p = threadIdx.x; p < s.pairs; p += blockDim.x) {
    const int64_t e = local(p);
    if (e >= 0)
      atomicAdd(&count[e], 1);
    else if (writer)
      slotOf[p] = -1;
  }
  __syncthreads();
  int32_t carry[3] = {0, 0, 0}; // rows, (unused), active experts so far
  for (int64_t base = 0; base < s.experts; base += blockDim.x) {
    const int64_t e = base + threadIdx.x;
    const int32_t c = e < s.experts ? count[e] : 0;
    int32_t v[3] = {c, 0, c > 0 ? 1 : 0}, total[3];
    blockScan3(v, total);
    if (c > 0 && carry[2] + v[2] == int32_t(blockIdx.x)) {
      mine[0] = int32_t(e);
      mine[1] = carry[0] + v[0];
      mine[2] = c;
    }
    if (writer && e < s.experts) {
      offsets[e] = carry[0] + v[0];
      if (c > 0)
        active[carry[2] + v[2]] = int32_t(e);
    }
    for (int k = 0; k < 3; ++k)
      carry[k] += total[k];
  }
  if (writer) {
    for (int64_t i = carry[2] + threadIdx.x; i < s.experts; i += blockDim.x)
      active[i] = -1;
    if (threadIdx.x == 0)
      offsets[s.experts] = carry[0];
  }
  __syncthreads();
  const int32_t e = mine[0];
  if (e < 0)
    return -1;
  const int32_t first = mine[1];
  if (threadIdx.x < 32) {
    const unsigned lane = threadIdx.x;
    int32_t rank = 0;
    for (int64_t p0 = 0; p0 < s.pairs; p0 += 32) {
      const int64_t p = p0 + lane;
      const bool hit = p < s.pairs && local(p) == e;
      const unsigned mask = __ballot_sync(0xffffffffu, hit);
      if (hit) {
        const int32_t r = rank + __popc(mask & ((1u << lane) - 1u));
        rowsOut[r] = int32_t(p);
        if (blockIdx.y == 0) {
          rowOf[first + r] = int32_t(p);
          slotOf[p] = first + r;
        }
      }
      rank += __popc(mask);
    }
  }
  __syncthreads();
  *firstOut = first;
  *countOut = mine[2];
  return e;
}

/// Grouped GEMV: block (i-th active expert, 8 warps of 32 / LANES
/// columns). active[i] is the i-th expert with rows (sortPairsKernel, or
/// the launch's own sortInBlock when sort.idx is set), -1 past the last:
/// the grid needs only min(experts, pairs) expert blocks. Blocks from
/// dense.firstBlock on compute `dense` instead. SORT: the kernel with
/// sortInBlock (its code costs the launches that do not sort up to 30
/// registers a thread). COMBINE (not GATED): the down GEMV whose last block
/// runs `combine` (the others take no GemvCombine; a template apart, as its
/// code costs the down GEMV's usual launches 8 to 24 registers). LANES
/// kMmaLanes: 16 columns a warp on tensor cores (bf16 weights; launched as
/// groupedGemvMmaKernel). The body of groupedGemvKernel, one block.
template <class WT, bool GATED, int LANES, bool SORT, bool COMBINE>
__device__ inline void
groupedGemvBlock(Rows rows, const void *const *wa, const void *const *wb,
                 int32_t *offsets, int32_t *active, int64_t K, int64_t N,
                 float *out, int64_t ldo, bool vec, DenseGemv dense,
                 GemvSort sort, int32_t *rowOf, int32_t *slotOf,
                 GemvCombine combine) {
  // One call of gemvColumns for both kinds of block (two inlined copies
  // cost ~20 registers, and with them blocks per multiprocessor). Expert
  // blocks wait for the sort (or the routing) first; dense blocks issue
  // their first weight loads before they wait (gemvColumns' deferWait).
  static_assert(!(GATED && COMBINE), "the combine follows the down GEMV");
  const bool isDense = blockIdx.x >= dense.firstBlock;
  if (!isDense)
    pdlEnter();
  int64_t chunk = blockIdx.y, first = 0, count = dense.n;
  const void *w1 = dense.wa, *w2 = dense.wb;
  if (isDense) {
    chunk += int64_t(blockIdx.x - dense.firstBlock) * gridDim.y;
    rows = dense.rows, K = dense.K, N = dense.N, out = dense.out;
    ldo = dense.ldo, vec = dense.vec;
  } else if (SORT) {
    DS_DYNAMIC_SHARED(int32_t, gemvSortShared);
    int32_t *blockRows = gemvSortShared + sort.experts;
    const int32_t e = sortInBlock(sort, offsets, active, rowOf, slotOf,
                                  gemvSortShared, blockRows, &first, &count);
    if (e < 0)
      return;
    w1 = wa[e], w2 = GATED ? wb[e] : nullptr;
    // The block's rows from its own list (slot - first), its output from
    // its first slot on.
    rows.rowOf = blockRows;
    out += first * ldo;
    first = 0;
  } else {
    const int32_t e = active[blockIdx.x];
    if (e < 0) {
      count = 0; // no expert: nothing to compute (still counted by a combine)
      w1 = w2 = nullptr;
    } else {
      first = offsets[e], count = offsets[e + 1] - first;
      w1 = wa[e], w2 = GATED ? wb[e] : nullptr;
    }
  }
  const int64_t col0 = (chunk * (blockDim.x / 32) + threadIdx.x / 32) *
                       gemvColumnsPerWarp<LANES>();
  // With a combine, every thread reaches the barriers of lastBlockDone,
  // having waited for the kernels before (in gemvColumns, or here).
  const bool work = (isDense || count > 0) && col0 < N;
  if (!COMBINE && !work)
    return;
  if (work)
    gemvColumns<WT, GATED, LANES>(rows, static_cast<const WT *>(w1),
                                  static_cast<const WT *>(w2), first, count, K,
                                  N, col0, out, ldo, vec, false,
                                  /*deferWait=*/isDense);
  if constexpr (COMBINE) {
    if (!work)
      pdlEnter();
    __shared__ bool last;
    __shared__ float red[32];
    if (!lastBlockDone(combine.counter, last))
      return;
    for (int64_t t = 0; t < combine.n; ++t)
      combineNormRow(t, combine.yp, combine.hidden, combine.slotOf, combine.w,
                     combine.topK, combine.shared, combine.lds, combine.y,
                     combine.ldy, combine.norm, red);
  }
}

template <class WT, bool GATED, int LANES, bool SORT, bool COMBINE = false>
__global__ void
groupedGemvKernel(Rows rows, const void *const *wa, const void *const *wb,
                  int32_t *offsets, int32_t *active, int64_t K, int64_t N,
                  float *out, int64_t ldo, bool vec, DenseGemv dense,
                  GemvSort sort, int32_t *rowOf, int32_t *slotOf,
                  GemvCombine combine) {
  groupedGemvBlock<WT, GATED, LANES, SORT, COMBINE>(
      rows, wa, wb, offsets, active, K, N, out, ldo, vec, dense, sort, rowOf,
      slotOf, combine);
}

/// groupedGemvKernel's tensor-core form (LANES kMmaLanes, bf16 weights),
/// held to 128 registers: two blocks of 256 threads a multiprocessor. A
/// kernel apart: launch bounds on the other forms change their register
/// allocation (the bf16 down GEMV's 72 to 96, three blocks to two).
template <bool GATED, bool SORT, bool COMBINE = false>
__global__ void __launch_bounds__(256, 2)
    groupedGemvMmaKernel(Rows rows, const void *const *wa,
                         const void *const *wb, int32_t *offsets,
                         int32_t *active, int64_t K, int64_t N, float *out,
                         int64_t ldo, bool vec, DenseGemv dense, GemvSort sort,
                         int32_t *rowOf, int32_t *slotOf, GemvCombine combine) {
  groupedGemvBlock<__nv_bfloat16, GATED, kMmaLanes, SORT, COMBINE>(
      rows, wa, wb, offsets, active, K, N, out, ldo, vec, dense, sort, rowOf,
      slotOf, combine);
}

/// The grouped GEMV kernel of a form.
template <class WT, bool GATED, int LANES, bool SORT, bool COMBINE = false>
constexpr auto groupedGemvFor() {
  if constexpr (LANES == kMmaLanes)
    return &groupedGemvMmaKernel<GATED, SORT, COMBINE>;
  else
    return &groupedGemvKernel<WT, GATED, LANES, SORT, COMBINE>;
}

/// A grouped GEMM block's output tile: rows [r0, r0 + rows) of `expert`'s
/// slots, columns from c0.
struct GemmTile {
  int64_t expert, r0, rows, c0;
};

/// The expert whose tiles hold `tile` (< tileOffsets[experts]): the last
/// one whose first tile is at or before it (experts without rows share
/// their successor's tile offset and are passed over).
__device__ inline int64_t tileExpert(const int32_t *tileOffsets,
                                     int64_t experts, int64_t tile) {
  int64_t lo = 0, hi = experts;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (tileOffsets[mid] <= tile)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/// The tile of block (blockIdx.x: column tile, blockIdx.y: tile index);
/// false for a block past the last tile (the grid is an upper bound).
__device__ inline bool gemmTile(const int32_t *offsets,
                                const int32_t *tileOffsets, int64_t experts,
                                int64_t tileRows, int64_t tileCols,
                                GemmTile *t) {
  const int64_t tile = blockIdx.y;
  if (tile >= tileOffsets[experts])
    return false;
  const int64_t e = tileExpert(tileOffsets, experts, tile);
  t->expert = e;
  t->r0 = offsets[e] + (tile - tileOffsets[e]) * tileRows;
  t->rows = imin(tileRows, offsets[e + 1] - t->r0);
  t->c0 = int64_t(blockIdx.x) * tileCols;
  return true;
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
  pdlEnter();
  __shared__ float as[kBK][kBM + 1];
  __shared__ float ws1[kBK][kBN + 1];
  __shared__ float ws2[GATED ? kBK : 1][kBN + 1];
  GemmTile t;
  if (!gemmTile(offsets, tileOffsets, experts, kBM, kBN, &t))
    return;
  const int64_t e = t.expert, r0 = t.r0, rowsHere = t.rows, c0 = t.c0;
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

/// Tensor-core grouped GEMM for bf16 weights (WMMA, sm_80+): block
/// (64-col tile, tile index) as groupedGemmKernel, with 64-row tiles. Each
/// 32-deep step stages the rows (rounded to bf16, as the dense GEMMs round
/// their inputs) and the weight columns in shared memory; 8 warps as 2 x 4
/// each multiply a 32 x 16 output (x2 when GATED) in float32. The next
/// step's global loads are issued before this step's multiplies. `vec`:
/// K % 8 == 0 and 16-byte aligned rows (x and W), so 16-byte loads.
template <bool GATED>
__global__ void __launch_bounds__(256)
    groupedGemmTcKernel(Rows rows, const void *const *wa,
                        const void *const *wb, const int32_t *offsets,
                        const int32_t *tileOffsets, int64_t experts, int64_t K,
                        int64_t N, float *out, int64_t ldo, bool vec) {
  pdlEnter();
  namespace wmma = nvcuda::wmma;
  constexpr int LD = kTcBK + kTcPad; // bf16 row stride of the staged tiles
  constexpr int LDC = kTcBN + 4;     // float row stride of the output tile
  __shared__ __align__(128) __nv_bfloat16 as[kTcBM][LD];
  __shared__ __align__(128) __nv_bfloat16 ws1[kTcBN][LD];
  __shared__ __align__(128) __nv_bfloat16 ws2[GATED ? kTcBN : 1][LD];
  __shared__ __align__(128) float cs[kTcBM][LDC];
  GemmTile t;
  if (!gemmTile(offsets, tileOffsets, experts, kTcBM, kTcBN, &t))
    return;
  const int64_t e = t.expert, r0 = t.r0, rowsHere = t.rows, c0 = t.c0;
  const __nv_bfloat16 *w1 = static_cast<const __nv_bfloat16 *>(wa[e]);
  const __nv_bfloat16 *w2 =
      GATED ? static_cast<const __nv_bfloat16 *>(wb[e]) : nullptr;

  // Staging: thread t moves 8 consecutive k of row t / 4 (x) and of
  // column t / 4 (W), at k offset (t % 4) * 8: 64 x 32 of each per step.
  const int tid = threadIdx.x, sr = tid / 4, sk = (tid % 4) * 8;
  const float *xrow = sr < rowsHere ? rows.row(r0 + sr) : nullptr;
  const bool colIn = c0 + sr < N;
  const __nv_bfloat16 *w1row = colIn ? w1 + (c0 + sr) * K : nullptr;
  const __nv_bfloat16 *w2row = GATED && colIn ? w2 + (c0 + sr) * K : nullptr;
  // Staged values: x in float, W as 8 bf16 packed in a uint4 (16-byte
  // aligned, unlike a bf16 array).
  float xa[8];
  uint4 wp1, wp2;
  auto load = [&](int64_t k0) {
    const int64_t k = k0 + sk;
    if (vec && k + 8 <= K) {
      if (xrow) {
        const float4 a = *reinterpret_cast<const float4 *>(xrow + k);
        const float4 b = *reinterpret_cast<const float4 *>(xrow + k + 4);
        xa[0] = a.x, xa[1] = a.y, xa[2] = a.z, xa[3] = a.w;
        xa[4] = b.x, xa[5] = b.y, xa[6] = b.z, xa[7] = b.w;
      } else {
        for (int j = 0; j < 8; ++j)
          xa[j] = 0.0f;
      }
      const uint4 zero = {0, 0, 0, 0};
      wp1 = w1row ? __ldg(reinterpret_cast<const uint4 *>(w1row + k)) : zero;
      if (GATED)
        wp2 = w2row ? __ldg(reinterpret_cast<const uint4 *>(w2row + k)) : zero;
      return;
    }
    __nv_bfloat16 *b1 = reinterpret_cast<__nv_bfloat16 *>(&wp1);
    __nv_bfloat16 *b2 = reinterpret_cast<__nv_bfloat16 *>(&wp2);
    for (int j = 0; j < 8; ++j) {
      const bool in = k + j < K;
      xa[j] = xrow && in ? xrow[k + j] : 0.0f;
      b1[j] = w1row && in ? w1row[k + j] : __float2bfloat16(0.0f);
      if (GATED)
        b2[j] = w2row && in ? w2row[k + j] : __float2bfloat16(0.0f);
    }
  };

  const int warp = tid / 32, wm = warp / 4, wn = warp % 4;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc1[2], acc2[2];
  for (int i = 0; i < 2; ++i) {
    wmma::fill_fragment(acc1[i], 0.0f);
    wmma::fill_fragment(acc2[i], 0.0f);
  }
  load(0);
  for (int64_t k0 = 0; k0 < K; k0 += kTcBK) {
    uint4 xp;
    __nv_bfloat162 *xb = reinterpret_cast<__nv_bfloat162 *>(&xp);
    for (int j = 0; j < 4; ++j)
      xb[j] = __floats2bfloat162_rn(xa[2 * j], xa[2 * j + 1]);
    *reinterpret_cast<uint4 *>(&as[sr][sk]) = xp;
    *reinterpret_cast<uint4 *>(&ws1[sr][sk]) = wp1;
    if (GATED)
      *reinterpret_cast<uint4 *>(&ws2[sr][sk]) = wp2;
    __syncthreads();
    if (k0 + kTcBK < K)
      load(k0 + kTcBK);
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>
          fa[2];
      // W is [N, K] row-major: as the K x N operand it is column-major.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>
          fb;
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], &as[wm * 32 + i * 16][kk], LD);
      wmma::load_matrix_sync(fb, &ws1[wn * 16][kk], LD);
      for (int i = 0; i < 2; ++i)
        wmma::mma_sync(acc1[i], fa[i], fb, acc1[i]);
      if (GATED) {
        wmma::load_matrix_sync(fb, &ws2[wn * 16][kk], LD);
        for (int i = 0; i < 2; ++i)
          wmma::mma_sync(acc2[i], fa[i], fb, acc2[i]);
      }
    }
    __syncthreads();
  }
  // Gate and up fragments share one element layout: SwiGLU elementwise.
  for (int i = 0; i < 2; ++i) {
    if (GATED)
      for (int t = 0; t < acc1[i].num_elements; ++t) {
        const float g = acc1[i].x[t];
        acc1[i].x[t] = g / (1.0f + expf(-g)) * acc2[i].x[t];
      }
    wmma::store_matrix_sync(&cs[wm * 32 + i * 16][wn * 16], acc1[i], LDC,
                            wmma::mem_row_major);
  }
  __syncthreads();
  // Only this tile's rows: the rows after it are the next expert's.
  for (int i = tid; i < kTcBM * kTcBN; i += 256) {
    const int r = i / kTcBN, c = i % kTcBN;
    if (r < rowsHere && c0 + c < N)
      out[(r0 + r) * ldo + c0 + c] = cs[r][c];
  }
}

/// The batched-GEMM form of the experts (prefill; MoE.cu): each tile of
/// the sort (tileRows rows of one expert) is a GEMM of a cuBLAS pointer-
/// array batch of `bound` entries (tileBound: the count must be known on
/// the host). Rows are padded: tile i holds rows [i * tileRows, (i + 1) *
/// tileRows). Entries past the last tile read tile 0 and expert 0's
/// weights and all write `trash`: their work cannot be skipped, but what
/// they read is in L2 and what they write stays there, and nobody reads it.
/// The pointer arrays, `bound` each: gate/up's A (gate weights, then up
/// weights), B (x tiles, twice) and C (g tiles, then u tiles); down's A,
/// B (h tiles) and C (y tiles).
struct TileBatch {
  void *xs;     // [bound * tileRows, hidden] in the weights' type
  float *g, *u; // [bound * tileRows, inter]
  void *h;      // [bound * tileRows, inter] in the weights' type
  float *y;     // [bound * tileRows, hidden]
  float *trash; // [tileRows, max(hidden, inter)]
  int64_t hidden, inter, bound, tileRows;
  const void **ptr; // [9 * bound]
};

/// Block i: tile i's batch pointers and, for a tile of the sort, its rows
/// of x (gathered through rowOf, rounded to WT, zeros past the expert's
/// rows) and padOf[slot] = the padded row of each of its sorted slots.
/// A warp per row, 16-byte loads where `vec`.
template <class WT>
__global__ void tileGatherKernel(Rows rows, const int32_t *offsets,
                                 const int32_t *tileOffsets, int64_t experts,
                                 const void *const *table, TileBatch b,
                                 int32_t *padOf, bool vec) {
  pdlEnter();
  const int64_t i = blockIdx.x, B = b.bound, R = b.tileRows, K = b.hidden;
  WT *xs = static_cast<WT *>(b.xs) + i * R * K;
  if (i >= tileOffsets[experts]) { // past the last tile
    if (threadIdx.x == 0) {
      b.ptr[i] = table[0];
      b.ptr[B + i] = table[experts];
      b.ptr[2 * B + i] = b.ptr[3 * B + i] = b.xs;
      b.ptr[4 * B + i] = b.ptr[5 * B + i] = b.trash;
      b.ptr[6 * B + i] = table[2 * experts];
      b.ptr[7 * B + i] = b.h;
      b.ptr[8 * B + i] = b.trash;
    }
    return;
  }
  const int64_t e = tileExpert(tileOffsets, experts, i),
                r0 = offsets[e] + (i - tileOffsets[e]) * R,
                rowsHere = imin(R, offsets[e + 1] - r0);
  if (threadIdx.x == 0) {
    b.ptr[i] = table[e];
    b.ptr[B + i] = table[experts + e];
    b.ptr[2 * B + i] = b.ptr[3 * B + i] = xs;
    b.ptr[4 * B + i] = b.g + i * R * b.inter;
    b.ptr[5 * B + i] = b.u + i * R * b.inter;
    b.ptr[6 * B + i] = table[2 * experts + e];
    b.ptr[7 * B + i] = static_cast<WT *>(b.h) + i * R * b.inter;
    b.ptr[8 * B + i] = b.y + i * R * K;
  }
  const int lane = int(threadIdx.x % 32), warps = int(blockDim.x / 32);
  for (int64_t r = threadIdx.x / 32; r < R; r += warps) {
    const float *src = r < rowsHere ? rows.row(r0 + r) : nullptr;
    WT *dst = xs + r * K;
    if (src && lane == 0)
      padOf[r0 + r] = int32_t(i * R + r);
    if (vec) {
      for (int64_t c = 4 * lane; c < K; c += 128) {
        const float4 v = src ? *reinterpret_cast<const float4 *>(src + c)
                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        storeAs(dst + c, v.x), storeAs(dst + c + 1, v.y);
        storeAs(dst + c + 2, v.z), storeAs(dst + c + 3, v.w);
      }
    } else {
      for (int64_t c = lane; c < K; c += 32)
        storeAs(dst + c, src ? src[c] : 0.0f);
    }
  }
}

/// h = silu(g) * u over the rows of the sort's tiles (*tiles of them, of
/// `rowElems` elements each), rounded to WT (the down GEMM's input type;
/// the tiled kernels round h the same way as they stage it).
template <class WT>
__global__ void tileSwigluKernel(const float *g, const float *u,
                                 const int32_t *tiles, int64_t tileElems,
                                 WT *h) {
  pdlEnter();
  const int64_t count = int64_t(*tiles) * tileElems;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gv = g[i];
    storeAs(h + i, gv / (1.0f + expf(-gv)) * u[i]);
  }
}

/// y[t] = sum_k w[t, k] * yp[slotOf[t * K + k]], in k order from zero,
/// then + shared[t] (the shared expert's output) where shared is not null.
/// padOf (not null: the batched form) maps a slot to its padded row of yp.
__global__ void combineKernel(const float *yp, int64_t hidden,
                              const int32_t *slotOf, const int32_t *padOf,
                              const float *w, int64_t topK, const float *shared,
                              int64_t lds, float *y, int64_t ldy) {
  pdlEnter();
  const int64_t t = blockIdx.x;
  for (int64_t c = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; c < hidden;
       c += int64_t(gridDim.y) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      int32_t slot = slotOf[t * topK + k];
      if (slot >= 0 && padOf)
        slot = padOf[slot];
      if (slot >= 0)
        acc += w[t * topK + k] * yp[int64_t(slot) * hidden + c];
    }
    if (shared)
      acc += shared[t * lds + c];
    y[t * ldy + c] = acc;
  }
}

/// combineNormRow of token blockIdx.x: one launch instead of the combine
/// and the add + RMSNorm after a MoE layer at decode.
__global__ void combineNormKernel(const float *yp, int64_t hidden,
                                  const int32_t *slotOf, const float *w,
                                  int64_t topK, const float *shared,
                                  int64_t lds, float *y, int64_t ldy,
                                  NormEpilogue e) {
  pdlEnter();
  __shared__ float red[32];
  combineNormRow(blockIdx.x, yp, hidden, slotOf, w, topK, shared, lds, y, ldy,
                 e, red);
}

} // namespace moe
} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_MOEKERNELS_CUH
