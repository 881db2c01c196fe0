//===- MoE.cu - routed experts on the GPU, no host synchronisation -------===//
//
// (token, k) pairs are sorted by expert on the device (one block counts,
// scans and scatters; at decode, every block of the first GEMV sorts for
// itself instead: one launch fewer), then:
//  - few tokens (decode, n <= kGemvTokens): a grouped GEMV, a warp (or a
//    quarter warp, with several rows per expert) per output column of one
//    active expert (blocks only for experts with rows), streaming the
//    weight row with 16-byte loads for 8 of the expert's rows at a time;
//  - else (prefill): a grouped tiled GEMM over (expert, row tile, 64-col
//    tile), with the tile list computed on the device so the grid is sized
//    from n alone: on tensor cores (WMMA, 64-row tiles) for bf16 weights,
//    in float32 FMAs (32-row tiles) for float32 weights (--compute-dtype=f32,
//    which must match the CPU backend to 1e-4); or, where padding the tiles
//    at most doubles the rows (DS_CUDA_MOE_GEMM), the same tiles as cuBLAS
//    pointer-array batches (a GEMM per tile; the batch is sized from n
//    alone, so its entries past the last tile compute into a trash tile).
// gate/up are one pass with the SwiGLU epilogue; down writes one row per
// pair; the combine sums each token's pairs in top-k order from zero (the
// CPU backend's order). Each output element is a fixed-order sum, so results
// do not depend on how the pairs were scattered.
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"
#include "MoEKernels.cuh"

#include <algorithm>
#include <cstdio>
#include <type_traits>

namespace dsrt {
namespace cuda {

namespace {

using namespace moe;

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
  // On the compute stream: a pageable cudaMemcpy may return before its DMA
  // lands, and the non-blocking stream would not wait for it. (Pageable
  // memory is staged before the call returns, so `host` may go.)
  check(cudaMemcpyAsync(table, host.data(), host.size() * sizeof(void *),
                        cudaMemcpyHostToDevice, st.stream),
        "moeExpertsW");
  st.expertTables[gate] = table;
  return table;
}

/// The sort's arrays (sortPairsKernel's outputs, but for tileOffsets), and
/// the sort to do in the launch's own blocks (sort.idx set) or not.
struct SortArrays {
  int32_t *offsets, *active, *rowOf, *slotOf;
  GemvSort sort;
};

/// groupedGemvKernel with LANES lanes per column, over `blocks` active
/// experts x N columns, and `dense` (if its N > 0) in blocks beside them.
template <class WT, bool GATED, int LANES>
void groupedGemv(DeviceState &st, const char *where, unsigned blocks,
                 const Rows &rows, const void *const *wa, const void *const *wb,
                 const SortArrays &s, int64_t K, int64_t N, float *out,
                 int64_t ldo, bool vec, DenseGemv dense,
                 const GemvCombine &combine) {
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  const unsigned gridY = unsigned((N + perBlock - 1) / perBlock);
  dense.firstBlock = blocks;
  const unsigned extra =
      dense.N > 0 && dense.n > 0 ? denseGemvBlocks<LANES>(dense.N, gridY) : 0;
  // Only the first (gated) GEMV sorts.
  if constexpr (GATED) {
    if (s.sort.idx) {
      launchKernel(st, where, groupedGemvFor<WT, GATED, LANES, true>(),
                   dim3(blocks + extra, gridY), 256,
                   gemvSortSharedBytes(s.sort.experts, s.sort.pairs), rows, wa,
                   wb, s.offsets, s.active, K, N, out, ldo, vec, dense, s.sort,
                   s.rowOf, s.slotOf, combine);
      return;
    }
  }
  if (s.sort.idx)
    fatal(where, "a sort in a launch that does not sort");
  if constexpr (!GATED) {
    if (combine.counter) {
      launchKernel(st, where, groupedGemvFor<WT, false, LANES, false, true>(),
                   dim3(blocks + extra, gridY), 256, 0, rows, wa, wb, s.offsets,
                   s.active, K, N, out, ldo, vec, dense, s.sort, s.rowOf,
                   s.slotOf, combine);
      return;
    }
  }
  launchKernel(st, where, groupedGemvFor<WT, GATED, LANES, false>(),
               dim3(blocks + extra, gridY), 256, 0, rows, wa, wb, s.offsets,
               s.active, K, N, out, ldo, vec, dense, s.sort, s.rowOf, s.slotOf,
               combine);
}

/// groupedGemv with `lanes` lanes per column (gemvColumnsPerWarp): 32, 8,
/// or kMmaLanes (bf16 weights only).
template <class WT, bool GATED>
void groupedGemv(DeviceState &st, const char *where, int lanes, unsigned blocks,
                 const Rows &rows, const void *const *wa, const void *const *wb,
                 const SortArrays &s, int64_t K, int64_t N, float *out,
                 int64_t ldo, bool vec, const DenseGemv &dense,
                 const GemvCombine &combine = {}) {
  if constexpr (std::is_same<WT, __nv_bfloat16>::value) {
    if (lanes == kMmaLanes) {
      groupedGemv<WT, GATED, kMmaLanes>(st, where, blocks, rows, wa, wb, s, K,
                                        N, out, ldo, vec, dense, combine);
      return;
    }
  }
  if (lanes == 8)
    groupedGemv<WT, GATED, 8>(st, where, blocks, rows, wa, wb, s, K, N, out,
                              ldo, vec, dense, combine);
  else if (lanes == 32)
    groupedGemv<WT, GATED, 32>(st, where, blocks, rows, wa, wb, s, K, N, out,
                               ldo, vec, dense, combine);
  else
    fatal(where, "no grouped GEMV of that many lanes per column");
}

/// The shared expert's part of runExperts' GEMV launches: its weights (of
/// the routed experts' storage), its intermediate and its output.
struct SharedPart {
  const void *gate, *up, *down;
  int64_t inter;
  float *h;
  int64_t ldh;
  float *y; // [n, hidden]
};

/// Whether `pairs` rows of experts (`experts` of `allExperts` here) run
/// as a cuBLAS batch of tiles (TileBatch) rather than the tiled kernels:
/// not with FP8 activations (their h is quantized in float32 between the
/// GEMMs); by DS_CUDA_MOE_GEMM; auto: where the batch's fixed entry count
/// (tileBound, from pairs alone) at most doubles the rows it multiplies,
/// this rank's expected share of the pairs under expert parallelism.
bool useBatch(const DeviceState &st, int64_t pairs, int64_t experts,
              int64_t allExperts, int64_t tileRows, bool fp8Act) {
  using M = DeviceState::MoeGemm;
  if (fp8Act || st.moeGemm == M::Tiled || st.moeBatchedFailed)
    return false;
  return st.moeGemm == M::Batched ||
         double(tileBound(pairs, experts, tileRows) * tileRows) <=
             2.0 * double(pairs) * double(experts) / double(allExperts);
}

/// The experts as two cuBLAS pointer-array batches (MoEKernels.cuh's
/// TileBatch): gather, gate and up in one batch, the SwiGLU, down. Returns
/// the padded y for the combine (with padOf), or null where cuBLAS refuses
/// a batch (nothing is then computed that the caller reads): the caller
/// runs the tiled kernels over the same sort.
template <class WT>
float *runBatch(DeviceState &st, const Rows &xRows, int64_t hidden,
                int64_t inter, const int32_t *offsets,
                const int32_t *tileOffsets, int64_t experts, int64_t pairs,
                int64_t tileRows, const void *const *table, int32_t *padOf) {
  const char *where = "moeExpertsW (batched)";
  const int64_t bound = tileBound(pairs, experts, tileRows),
                rows = bound * tileRows;
  TileBatch b;
  b.xs = scratch(st, size_t(rows * hidden) * sizeof(WT), where);
  b.g = static_cast<float *>(
      scratch(st, size_t(2 * rows * inter) * sizeof(float), where));
  b.u = b.g + rows * inter;
  b.h = scratch(st, size_t(rows * inter) * sizeof(WT), where);
  b.y = static_cast<float *>(
      scratch(st, size_t(rows * hidden) * sizeof(float), where));
  b.trash = static_cast<float *>(scratch(
      st, size_t(tileRows * std::max(hidden, inter)) * sizeof(float), where));
  b.hidden = hidden, b.inter = inter, b.bound = bound, b.tileRows = tileRows;
  b.ptr = static_cast<const void **>(
      scratch(st, size_t(9 * bound) * sizeof(void *), where));
  const bool vec = hidden % 4 == 0 &&
                   (xRows.ldx * int64_t(sizeof(float))) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(xRows.x) % 16 == 0;
  launchKernel(st, "moeExpertsW (gather)", tileGatherKernel<WT>,
               unsigned(bound), 256, 0, xRows, offsets, tileOffsets, experts,
               table, b, padOf, vec);
  // Row-major [tileRows, k] tiles times [N, k] weights: column-major
  // C [N, tileRows] = op T of the weight (k x N, ld k) times the tile.
  const cudaDataType_t type =
      std::is_same<WT, float>::value ? CUDA_R_32F : CUDA_R_16BF;
  const float one = 1.0f, zero = 0.0f;
  const void *const *p = b.ptr;
  // A refusal (cuBLAS checks its arguments before launching anything) is
  // remembered for the whole run: the tiled kernels from then on. Other
  // failures (a launch or execution error) are errors.
  auto refused = [&](cublasStatus_t s) {
    if (s == CUBLAS_STATUS_SUCCESS)
      return false;
    if (s != CUBLAS_STATUS_NOT_SUPPORTED && s != CUBLAS_STATUS_INVALID_VALUE &&
        s != CUBLAS_STATUS_ARCH_MISMATCH) {
      std::fprintf(stderr, "cuda: cublasGemmBatchedEx: cuBLAS status %d\n",
                   int(s));
      fatal("moeExpertsW", "cublasGemmBatchedEx failed");
    }
    std::fprintf(stderr,
                 "cuda: cublasGemmBatchedEx refused the routed experts' "
                 "batch (cuBLAS status %d); the tiled kernels run them from "
                 "now on\n",
                 int(s));
    st.moeBatchedFailed = true;
    return true;
  };
  if (refused(cublasGemmBatchedEx(
          st.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(inter), int(tileRows),
          int(hidden), &one, p, type, int(hidden), p + 2 * bound, type,
          int(hidden), &zero, const_cast<void *const *>(p + 4 * bound),
          CUDA_R_32F, int(inter), int(2 * bound), CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT)))
    return nullptr;
  launchKernel(st, "moeExpertsW (swiglu)", tileSwigluKernel<WT>,
               unsigned(imin(blocksFor(rows * inter, 256), 4096)), 256, 0, b.g,
               b.u, tileOffsets + experts, tileRows * inter,
               static_cast<WT *>(b.h));
  if (refused(cublasGemmBatchedEx(
          st.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(hidden), int(tileRows),
          int(inter), &one, p + 6 * bound, type, int(inter), p + 7 * bound,
          type, int(inter), &zero, const_cast<void *const *>(p + 8 * bound),
          CUDA_R_32F, int(hidden), int(bound), CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT)))
    return nullptr;
  return b.y;
}

template <class WT>
void runExperts(DeviceState &st, const float *x, int64_t ldx, int64_t n,
                int64_t hidden, int64_t inter, const int32_t *idx,
                const float *weights, int64_t topK, const void **table,
                int64_t lo, int64_t experts, int64_t allExperts, float *y,
                int64_t ldy, bool fp8Act, const SharedPart *shared = nullptr,
                const NormEpilogue *norm = nullptr) {
  const int64_t pairs = n * topK;
  auto *ints = static_cast<int32_t *>(
      scratch(st, size_t(3 * (experts + 1) + 2 * pairs) * sizeof(int32_t),
              "moeExpertsW"));
  int32_t *offsets = ints, *tileOffsets = offsets + experts + 1,
          *active = tileOffsets + experts + 1, *rowOf = active + experts + 1,
          *slotOf = rowOf + pairs;
  constexpr bool tensorCores = std::is_same<WT, __nv_bfloat16>::value;
  const int64_t tileRows = tensorCores ? kTcBM : kBM;
  // The GEMV path sorts in its first launch's blocks where the counts and
  // rows fit the static 48 KB of shared memory.
  const bool gemvPath = n <= kGemvTokens;
  GemvSort fused{nullptr, pairs, lo, experts};
  if (gemvPath && st.moeFusedSort &&
      gemvSortSharedBytes(experts, pairs) <= 48 * 1024)
    fused.idx = idx;
  else
    launchKernel(st, "moeExpertsW (sort)", sortPairsKernel, 1, 1024,
                 sortSharedBytes(experts), idx, pairs, lo, experts, tileRows,
                 offsets, tileOffsets, active, rowOf, slotOf);
  if (fp8Act) { // every token's row once, before the gather
    x = fakeQuantE4M3(st, x, ldx, n, hidden);
    ldx = hidden;
  }
  const void *const *gate = table, *const *up = table + experts,
                    *const *down = table + 2 * experts;
  const Rows xRows{x, ldx, rowOf, topK};
  // Prefill may run as a cuBLAS batch: its y has padded rows, which padOf
  // maps the slots to.
  float *yb = nullptr;
  int32_t *padOf = nullptr;
  // (The shared expert rides only in the GEMV launches.)
  if (n > kGemvTokens && !shared &&
      useBatch(st, pairs, experts, allExperts, tileRows, fp8Act)) {
    padOf = static_cast<int32_t *>(
        scratch(st, size_t(pairs) * sizeof(int32_t), "moeExpertsW"));
    yb = runBatch<WT>(st, xRows, hidden, inter, offsets, tileOffsets, experts,
                      pairs, tileRows, table, padOf);
  }
  float *h = nullptr, *yp = yb;
  if (!yb) {
    h = static_cast<float *>(
        scratch(st, size_t(pairs * inter) * sizeof(float), "moeExpertsW"));
    yp = static_cast<float *>(
        scratch(st, size_t(pairs * hidden) * sizeof(float), "moeExpertsW"));
  }
  Rows hRows{h, inter, nullptr, 1};
  // 16-byte loads: 8-element rows of weights and inputs, 16-byte aligned
  // (the expert weights are whole allocations, rows of k % 8 == 0).
  auto vec = [](const float *p, int64_t ld, int64_t k) {
    return vecRows(p, ld, k, sizeof(float));
  };
  // The shared expert (decode only: runExperts' caller keeps it apart
  // otherwise) as dense blocks of the same launches, with no FP8 here.
  DenseGemv sharedUp{}, sharedDown{};
  if (shared) {
    sharedUp = {Rows{x, ldx, nullptr, 1},
                shared->gate,
                shared->up,
                n,
                hidden,
                shared->inter,
                shared->h,
                shared->ldh,
                vec(x, ldx, hidden) &&
                    vecRows(shared->gate, hidden, hidden, sizeof(WT)) &&
                    vecRows(shared->up, hidden, hidden, sizeof(WT)),
                0};
    sharedDown = {
        Rows{shared->h, shared->ldh, nullptr, 1},
        shared->down,
        nullptr,
        n,
        shared->inter,
        hidden,
        shared->y,
        hidden,
        vec(shared->h, shared->ldh, shared->inter) &&
            vecRows(shared->down, shared->inter, shared->inter, sizeof(WT)),
        0};
  }
  if (yb) {
    // Done above.
  } else if (gemvPath) {
    // Blocks for the active experts only (at most one per pair): at batch 1
    // 6 of 64 experts, not 64 mostly empty ones.
    const unsigned blocks = unsigned(imin(experts, pairs));
    // Experts of one row (batch 1): a warp per column, the most warps in
    // flight. Two rows each or more on average: bf16 weights on tensor
    // cores (16 columns a warp), where every input-row FMA of the CUDA-core
    // GEMV would cost more than the weight bytes' time; else four columns a
    // warp sharing each input load (float32 weights, widths off kMmaK).
    const bool severalRows = pairs >= 2 * int64_t(blocks);
    const bool vecUp = vec(xRows.x, xRows.ldx, hidden);
    const bool mma =
        tensorCores && st.moeGemvTc && !fp8Act && vecUp &&
        vec(h, inter, inter) && hidden % kMmaK == 0 && inter % kMmaK == 0 &&
        (!shared ||
         (shared->inter % kMmaK == 0 && sharedUp.vec && sharedDown.vec));
    const int lanes = !severalRows ? 32 : mma ? kMmaLanes : 8;
    const SortArrays sortUp{offsets, active, rowOf, slotOf, fused};
    SortArrays sorted = sortUp;
    sorted.sort.idx = nullptr;
    groupedGemv<WT, true>(st, "moeExpertsW (gate/up)", lanes, blocks, xRows,
                          gate, up, sortUp, hidden, inter, h, inter, vecUp,
                          sharedUp);
    if (fp8Act)
      hRows.x = fakeQuantE4M3(st, h, inter, pairs, inter);
    // At batch 1 or 2, the combine + norm in the down launch's last block.
    GemvCombine combine{};
    if (norm && st.moeFusedCombine && n <= kCombineInGemvTokens)
      combine = {yp,
                 hidden,
                 slotOf,
                 weights,
                 topK,
                 n,
                 shared ? shared->y : nullptr,
                 hidden,
                 y,
                 ldy,
                 *norm,
                 st.combineCounter};
    groupedGemv<WT, false>(
        st,
        combine.counter ? "moeExpertsW (down + combine)" : "moeExpertsW (down)",
        lanes, blocks, hRows, down, nullptr, sorted, inter, hidden, yp, hidden,
        vec(hRows.x, hRows.ldx, inter), sharedDown, combine);
    if (combine.counter)
      return;
  } else if (tensorCores) {
    const unsigned tiles = unsigned(tileBound(pairs, experts, kTcBM));
    launchKernel(st, "moeExpertsW (gate/up)", groupedGemmTcKernel<true>,
                 dim3(unsigned((inter + kTcBN - 1) / kTcBN), tiles), 256, 0,
                 xRows, gate, up, offsets, tileOffsets, experts, hidden, inter,
                 h, inter, vec(xRows.x, xRows.ldx, hidden));
    if (fp8Act)
      hRows.x = fakeQuantE4M3(st, h, inter, pairs, inter);
    launchKernel(st, "moeExpertsW (down)", groupedGemmTcKernel<false>,
                 dim3(unsigned((hidden + kTcBN - 1) / kTcBN), tiles), 256, 0,
                 hRows, down, nullptr, offsets, tileOffsets, experts, inter,
                 hidden, yp, hidden, vec(hRows.x, hRows.ldx, inter));
  } else {
    const unsigned tiles = unsigned(tileBound(pairs, experts, kBM));
    launchKernel(st, "moeExpertsW (gate/up)", groupedGemmKernel<WT, true>,
                 dim3(unsigned((inter + kBN - 1) / kBN), tiles), 256, 0, xRows,
                 gate, up, offsets, tileOffsets, experts, hidden, inter, h,
                 inter);
    if (fp8Act)
      hRows.x = fakeQuantE4M3(st, h, inter, pairs, inter);
    launchKernel(st, "moeExpertsW (down)", groupedGemmKernel<WT, false>,
                 dim3(unsigned((hidden + kBN - 1) / kBN), tiles), 256, 0, hRows,
                 down, nullptr, offsets, tileOffsets, experts, inter, hidden,
                 yp, hidden);
  }
  const float *sharedY = shared ? shared->y : nullptr;
  if (norm) { // with the residual add + RMSNorm that follows: a block a row
    if (yb)
      fatal("moeExpertsW", "the norm epilogue on the batched form");
    launchKernel(st, "moeExpertsW (combine + norm)", combineNormKernel,
                 unsigned(n), 256, 0, yp, hidden, slotOf, weights, topK,
                 sharedY, hidden, y, ldy, *norm);
    return;
  }
  dim3 grid(unsigned(n), unsigned(imin(blocksFor(hidden, 256), 16)));
  launchKernel(st, "moeExpertsW (combine)", combineKernel, grid, 256, 0, yp,
               hidden, slotOf, yb ? padOf : nullptr, weights, topK, sharedY,
               hidden, y, ldy);
}

} // namespace

void moeExpertsW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t hidden, int64_t inter, const int32_t *idx,
                 const float *weights, int64_t topK, const int64_t *gate,
                 const int64_t *up, const int64_t *down, int64_t experts,
                 float *y, int64_t ldy, ActQuant act) {
  moeExpertsRange(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up,
                  down, 0, experts, experts, y, ldy, act);
}

/// moeExpertsRange, and the shared expert (weights by index) in the same
/// GEMV launches where it can: n within the dense GEMV's rows (the shared
/// expert is a dense MLP: DS_CUDA_GEMV_ROWS decides for it as for the
/// others), no FP8 activations, and its weights stored as the routed
/// experts' are. Else false, with nothing launched.
static bool expertsWithShared(Context &ctx, const float *x, int64_t ldx,
                              int64_t n, int64_t hidden, int64_t inter,
                              const int32_t *idx, const float *weights,
                              int64_t topK, const int64_t *gate,
                              const int64_t *up, const int64_t *down,
                              int64_t experts, const SharedExpert &shared,
                              float *y, int64_t ldy, ActQuant act,
                              const AddNorm *norm = nullptr) {
  DeviceState &st = state(ctx);
  const ModelSpec &spec = ctx.spec();
  if (n > st.gemvMaxRows || n > moe::kGemvTokens || experts > kSortMaxExperts)
    return false;
  const bool fp8 = [&] {
    for (int64_t w : {gate[0], shared.gate, shared.up, shared.down})
      if (spec.weights[w].dtype == DType::F8E4M3)
        return true;
    return false;
  }();
  if (fp8 && act == ActQuant::Fp8)
    return false;
  bool bf16 = false;
  const void **table = expertTable(st, gate, up, down, experts, &bf16);
  const DeviceWeight &g = st.weights[size_t(shared.gate)],
                     &u = st.weights[size_t(shared.up)],
                     &d = st.weights[size_t(shared.down)];
  const int64_t si = shared.inter;
  if (g.bf16 != bf16 || u.bf16 != bf16 || d.bf16 != bf16 || g.rows != si ||
      u.rows != si || d.cols != si || g.cols != hidden || u.cols != hidden ||
      d.rows != hidden)
    return false;
  float *ys = static_cast<float *>(
      scratch(st, size_t(n * hidden) * sizeof(float), "moeExpertsW"));
  const SharedPart part{g.ptr, u.ptr, d.ptr, si, shared.hidden, shared.ldh, ys};
  NormEpilogue epilogue{};
  if (norm)
    epilogue = {norm->residual, norm->ldr, norm->weight, float(norm->eps),
                norm->sum,      norm->lds, norm->normed, norm->ldn};
  if (bf16)
    runExperts<__nv_bfloat16>(st, x, ldx, n, hidden, inter, idx, weights, topK,
                              table, 0, experts, experts, y, ldy, false, &part,
                              norm ? &epilogue : nullptr);
  else
    runExperts<float>(st, x, ldx, n, hidden, inter, idx, weights, topK, table,
                      0, experts, experts, y, ldy, false, &part,
                      norm ? &epilogue : nullptr);
  return true;
}

void moeExpertsSharedW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                       int64_t hidden, int64_t inter, const int32_t *idx,
                       const float *weights, int64_t topK, const int64_t *gate,
                       const int64_t *up, const int64_t *down, int64_t experts,
                       const SharedExpert &shared, float *y, int64_t ldy,
                       ActQuant act) {
  {
    ProfileScope profile(ctx, "moeExpertsW");
    if (n <= 0)
      return;
    if (expertsWithShared(ctx, x, ldx, n, hidden, inter, idx, weights, topK,
                          gate, up, down, experts, shared, y, ldy, act))
      return;
  }
  // Prefill (or FP8 activations): the unfused sequence.
  moeExpertsW(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up, down,
              experts, y, ldy, act);
  gatedUp(ctx, x, ldx, n, hidden, shared.gate, shared.up, shared.inter,
          shared.hidden, shared.ldh, act);
  linearAddW(ctx, shared.hidden, shared.ldh, n, shared.inter, shared.down,
             hidden, y, ldy, act);
}

void moeExpertsSharedNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                           int64_t hidden, int64_t inter, const int32_t *idx,
                           const float *weights, int64_t topK,
                           const int64_t *gate, const int64_t *up,
                           const int64_t *down, int64_t experts,
                           const SharedExpert &shared, float *y, int64_t ldy,
                           const AddNorm &norm, ActQuant act) {
  {
    ProfileScope profile(ctx, "moeExpertsW");
    if (n <= 0)
      return;
    // At decode the combine does the add and the norm too.
    if (expertsWithShared(ctx, x, ldx, n, hidden, inter, idx, weights, topK,
                          gate, up, down, experts, shared, y, ldy, act, &norm))
      return;
  }
  moeExpertsSharedW(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up,
                    down, experts, shared, y, ldy, act);
  addRmsNorm(ctx, norm.residual, norm.ldr, y, ldy, n, hidden, norm.weight,
             norm.eps, norm.sum, norm.lds, norm.normed, norm.ldn);
}

void moeExpertsRange(Context &ctx, const float *x, int64_t ldx, int64_t n,
                     int64_t hidden, int64_t inter, const int32_t *idx,
                     const float *weights, int64_t topK, const int64_t *gate,
                     const int64_t *up, const int64_t *down, int64_t lo,
                     int64_t experts, int64_t allExperts, float *y, int64_t ldy,
                     ActQuant act) {
  ProfileScope profile(ctx, "moeExpertsW");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  if (experts > kSortMaxExperts)
    fatal("moeExpertsW", "more than 4096 experts on one rank");
  // FP8 experts are dequantized on the device; ActQuant::Fp8 quantizes
  // their inputs as the CPU backend does.
  const bool fp8Act = act == ActQuant::Fp8 &&
                      ctx.spec().weights[gate[lo]].dtype == DType::F8E4M3;
  bool bf16 = false;
  const void **table =
      expertTable(st, gate + lo, up + lo, down + lo, experts, &bf16);
  if (bf16)
    runExperts<__nv_bfloat16>(st, x, ldx, n, hidden, inter, idx, weights, topK,
                              table, lo, experts, allExperts, y, ldy, fp8Act);
  else
    runExperts<float>(st, x, ldx, n, hidden, inter, idx, weights, topK, table,
                      lo, experts, allExperts, y, ldy, fp8Act);
}

} // namespace cuda
} // namespace dsrt
