//===- Gemm.cu - dense GEMMs through cuBLASLt ----------------------------===//
//
// Row-major y [n, out] = x [n, in] W^T with W [out, in] is, column-major,
// Y^T [out, n] = W^T(op T of W stored [in, out]) * X^T, so cuBLASLt gets
// A = W (k x m, transposed), B = X (k x n), D = Y (m x n), no copies.
// bf16 weights take bf16 inputs (x converted into scratch first) with a
// float32 result and float32 accumulation (CUBLAS_COMPUTE_32F); float32
// weights multiply in true float32 (no TF32), the mode that is checked
// against the CPU backend; in bf16 mode a float32 weight whose values are
// all bf16 (bf16Twin) multiplies as its bf16 copy. Plans (layouts + the
// heuristic's algorithm) are cached per shape, stride, dtype and pointer
// alignment.
//
// Up to DeviceState::gemvMaxRows rows (decode) the product is instead a GEMV
// kernel (GemvKernels.cuh) that reads the float32 input as it is: one launch
// instead of a conversion and a GEMM, and for gate/up one launch with the
// SwiGLU instead of five.
//
//===----------------------------------------------------------------------===//

#include "ConvertKernels.cuh"
#include "CudaCommon.h"

#include <cstring>

namespace dsrt {
namespace cuda {

namespace {

int alignmentOf(const void *p, int64_t ld, size_t elt) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p) | uintptr_t(ld * int64_t(elt));
  int a = 16;
  while (a > int(elt) && (v % uintptr_t(a)))
    a /= 2;
  return a;
}

DeviceState::Plan &planFor(DeviceState &st, int64_t m, int64_t n, int64_t k,
                           int64_t ldb, int64_t ldc, bool bf16, int alignA,
                           int alignB, int alignC, const char *where) {
  auto key = std::make_tuple(m, n, k, ldb, ldc,
                             int64_t(alignA * 100 + alignB * 10 + alignC / 4),
                             int(bf16));
  auto it = st.plans.find(key);
  if (it != st.plans.end())
    return it->second;
  if (st.capturing)
    fatal(where, "a GEMM plan was created during graph capture");
  DeviceState::Plan p;
  const cudaDataType_t in = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  check(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), where);
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                       sizeof(ta)), where);
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                       sizeof(tb)), where);
  check(cublasLtMatrixLayoutCreate(&p.a, in, uint64_t(k), uint64_t(m), k), where);
  check(cublasLtMatrixLayoutCreate(&p.b, in, uint64_t(k), uint64_t(n), ldb), where);
  check(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(m), uint64_t(n), ldc),
        where);
  cublasLtMatmulPreference_t pref;
  check(cublasLtMatmulPreferenceCreate(&pref), where);
  uint64_t ws = st.ltWorkspaceBytes;
  uint32_t aa = uint32_t(alignA), ab = uint32_t(alignB), ac = uint32_t(alignC);
  check(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), where);
  check(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)), where);
  check(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)), where);
  check(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)), where);
  check(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)), where);
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(st.lt, p.op, p.a, p.b, p.c,
                                                    p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS || found == 0)
    fatal(where, "cuBLASLt has no algorithm for this GEMM");
  p.algo = result.algo;
  p.hasAlgo = true;
  return st.plans.emplace(key, p).first->second;
}

template <class WT, bool GATED, int LANES>
void denseGemv(DeviceState &st, const char *where, const Rows &rows,
               const DeviceWeight &wa, const DeviceWeight *wb, int64_t n,
               int64_t in, float *y, int64_t ldy, bool vec, bool accumulate) {
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  launchKernel(st, where, denseGemvKernel<WT, GATED, LANES>,
               unsigned((wa.rows + perBlock - 1) / perBlock), 256, 0, rows,
               static_cast<const WT *>(wa.ptr),
               GATED ? static_cast<const WT *>(wb->ptr) : nullptr, n, in,
               wa.rows, y, ldy, vec, accumulate);
}

/// Whether a dense GEMV of n rows and `columns` outputs gives each warp
/// four columns (LANES 8) that share each input load: for several rows,
/// when that still leaves 4 warps per multiprocessor (else, and for one
/// row, a warp per column).
bool shareColumns(const DeviceState &st, int64_t n, int64_t columns) {
  return n >= 2 && columns / gemvColumnsPerWarp<8>() >= 4 * st.multiprocessors;
}

template <class WT, bool GATED>
void denseGemv(DeviceState &st, const char *where, const Rows &rows,
               const DeviceWeight &wa, const DeviceWeight *wb, int64_t n,
               int64_t in, float *y, int64_t ldy, bool vec, bool accumulate) {
  if (shareColumns(st, n, wa.rows))
    denseGemv<WT, GATED, 8>(st, where, rows, wa, wb, n, in, y, ldy, vec,
                            accumulate);
  else
    denseGemv<WT, GATED, 32>(st, where, rows, wa, wb, n, in, y, ldy, vec,
                             accumulate);
}

/// y = x W^T (GATED: silu(x Wa^T) * (x Wb^T); accumulate: y += that) as a
/// GEMV, or false when the rows are too many for one.
template <bool GATED>
bool tryGemv(DeviceState &st, const float *x, int64_t ldx, int64_t n,
             int64_t in, const DeviceWeight &wa, const DeviceWeight *wb,
             float *y, int64_t ldy, const char *where,
             bool accumulate = false) {
  if (n > st.gemvMaxRows)
    return false;
  if (n <= 0 || wa.rows <= 0)
    return true; // nothing to compute (an empty grid is no launch)
  const Rows rows{x, ldx, nullptr, 1};
  const size_t elt = wa.bf16 ? 2 : 4;
  const bool vec = vecRows(x, ldx, in, 4) && vecRows(wa.ptr, in, in, elt) &&
                   (!GATED || vecRows(wb->ptr, in, in, elt));
  if (wa.bf16)
    denseGemv<__nv_bfloat16, GATED>(st, where, rows, wa, wb, n, in, y, ldy, vec,
                                    accumulate);
  else
    denseGemv<float, GATED>(st, where, rows, wa, wb, n, in, y, ldy, vec,
                            accumulate);
  return true;
}

/// The B operand of a cuBLASLt GEMM on x: x itself for float32 weights,
/// else a bf16 copy in scratch (*ldb set accordingly).
const void *gemmInput(DeviceState &st, const float *x, int64_t ldx, int64_t n,
                      int64_t in, bool bf16, int64_t *ldb, const char *where) {
  *ldb = ldx;
  if (!bf16)
    return x;
  auto *xb = static_cast<__nv_bfloat16 *>(
      scratch(st, size_t(n * in) * sizeof(__nv_bfloat16), where));
  dim3 grid(unsigned(n), unsigned(std::min<int64_t>(blocksFor(in, 256), 64)));
  launchKernel(st, where, toBf16Kernel, grid, 256, 0, x, ldx, in, xb);
  *ldb = in;
  return xb;
}

/// y (+)= b W^T through cuBLASLt, b as gemmInput made it.
void ltMatmul(DeviceState &st, const void *b, int64_t ldb, int64_t n,
              int64_t in, const DeviceWeight &w, float *y, int64_t ldy,
              const char *where, bool accumulate) {
  const size_t elt = w.bf16 ? 2 : 4;
  DeviceState::Plan &p =
      planFor(st, w.rows, n, in, ldb, ldy, w.bf16, alignmentOf(w.ptr, in, elt),
              alignmentOf(b, ldb, elt), alignmentOf(y, ldy, 4), where);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check(cublasLtMatmul(st.lt, p.op, &alpha, w.ptr, p.a, b, p.b, &beta, y, p.c,
                       y, p.c, &p.algo, st.ltWorkspace, st.ltWorkspaceBytes,
                       st.stream),
        where);
}

/// ya = x Wa^T and yb = x Wb^T through cuBLASLt (more rows than the GEMV
/// takes), one bf16 copy of x for both where both weights are bf16.
void gemmPair(DeviceState &st, const float *x, int64_t ldx, int64_t n,
              int64_t in, const DeviceWeight &a, float *ya, int64_t ldya,
              const DeviceWeight &b, float *yb, int64_t ldyb,
              const char *where) {
  if (a.cols != in || b.cols != in)
    fatal(where, "weight width differs from the input's");
  int64_t ldq = 0;
  const void *q = gemmInput(st, x, ldx, n, in, a.bf16, &ldq, where);
  if (a.rows > 0)
    ltMatmul(st, q, ldq, n, in, a, ya, ldya, where, false);
  if (b.bf16 != a.bf16)
    q = gemmInput(st, x, ldx, n, in, b.bf16, &ldq, where);
  if (b.rows > 0)
    ltMatmul(st, q, ldq, n, in, b, yb, ldyb, where, false);
}

} // namespace

void gemmWeight(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, const DeviceWeight &w, float *y, int64_t ldy,
                const char *where, bool accumulate, int64_t pathRows) {
  if (n <= 0 || w.rows <= 0)
    return;
  if (w.cols != in)
    fatal(where, "weight width differs from the input's");
  DeviceState &st = state(ctx);
  if (std::max(n, pathRows) <= st.gemvMaxRows &&
      tryGemv<false>(st, x, ldx, n, in, w, nullptr, y, ldy, where, accumulate))
    return;
  int64_t ldb = 0;
  const void *b = gemmInput(st, x, ldx, n, in, w.bf16, &ldb, where);
  ltMatmul(st, b, ldb, n, in, w, y, ldy, where, accumulate);
}

float *fakeQuantE4M3(DeviceState &st, const float *x, int64_t ldx, int64_t n,
                     int64_t cols) {
  float *q = static_cast<float *>(
      scratch(st, size_t(n * cols) * sizeof(float), "fp8 activations"));
  const int64_t tiles = (cols + 127) / 128;
  dim3 grid(unsigned(n), unsigned((tiles + 7) / 8));
  launchKernel(st, "fp8 activations", fakeQuantE4M3Kernel, grid, 256, 0, x, ldx,
               cols, q);
  return q;
}

/// The GEMM input for `act`: x itself, or its FP8 activation quantization
/// when the weight is an FP8 one (ActQuant applies to FP8 weights only).
static const float *actInput(Context &ctx, const float *x, int64_t *ldx,
                             int64_t n, int64_t in, int64_t weight,
                             ActQuant act) {
  if (act != ActQuant::Fp8 ||
      ctx.spec().weights[weight].dtype != DType::F8E4M3 || n <= 0)
    return x;
  const float *q = fakeQuantE4M3(state(ctx), x, *ldx, n, in);
  *ldx = in;
  return q;
}

static void linear(Context &ctx, const float *x, int64_t ldx, int64_t n,
                   int64_t in, int64_t weight, int64_t out, float *y,
                   int64_t ldy, ActQuant act, bool accumulate,
                   int64_t pathRows = -1) {
  DeviceState &st = state(ctx);
  // The profile shows lm_head (the largest single weight) on its own row.
  ProfileScope profile(
      ctx, st.profile && std::strstr(ctx.spec().weights[weight].name, "lm_head")
               ? "linearW lm_head"
               : "linearW");
  DeviceWeight w = st.weights[size_t(weight)];
  if (w.rows != out)
    fatal("linearW", "weight height differs from the output's");
  x = actInput(ctx, x, &ldx, n, in, weight, act);
  // A float32 weight whose values are bf16 (a bf16 checkpoint's kv_b, which
  // the absorbed products read too) multiplies as a bf16 one in bf16 mode's
  // GEMMs: its exact copy at half the bytes, on bf16 tensor cores (the
  // prefill's kv_b product, 9 GFLOP a layer at 2048 tokens, not in float32).
  // The GEMV reads the float32 weight as it is.
  if (!w.bf16 && std::max(n, pathRows) > st.gemvMaxRows && n > 0)
    if (const __nv_bfloat16 *twin = bf16Twin(ctx, w.ptr, "linearW")) {
      w.ptr = const_cast<__nv_bfloat16 *>(twin);
      w.bf16 = true;
    }
  gemmWeight(ctx, x, ldx, n, in, w, y, ldy, "linearW", accumulate, pathRows);
}

void linearW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act) {
  linear(ctx, x, ldx, n, in, weight, out, y, ldy, act, false);
}

void logitsW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act) {
  // A captured graph replays for every later call: all rows there (decode
  // steps want all of them anyway). The rows computed take the kernel the
  // whole call would (GEMV or bf16-input GEMM), so --dump-logits does not
  // change them.
  const int64_t from = state(ctx).capturing ? 0 : ctx.logitsRowsFrom(n);
  linear(ctx, x + from * ldx, ldx, n - from, in, weight, out, y + from * ldy,
         ldy, act, false, n);
}

template <class WT, int LANES>
static void denseGemvPair(DeviceState &st, const Rows &rows,
                          const DeviceWeight &a, float *ya, int64_t ldya,
                          const DeviceWeight &b, float *yb, int64_t ldyb,
                          int64_t n, int64_t in, bool vec) {
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  const unsigned blocksA = unsigned((a.rows + perBlock - 1) / perBlock),
                 blocksB = unsigned((b.rows + perBlock - 1) / perBlock);
  launchKernel(st, "linearPairW", denseGemvPairKernel<WT, LANES>,
               blocksA + blocksB, 256, 0, rows, static_cast<const WT *>(a.ptr),
               a.rows, ya, ldya, static_cast<const WT *>(b.ptr), b.rows, yb,
               ldyb, blocksA, n, in, vec);
}

void linearPairW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t wa, int64_t outA, float *ya, int64_t ldya,
                 int64_t wb, int64_t outB, float *yb, int64_t ldyb,
                 ActQuant act) {
  ProfileScope profile(ctx, "linearPairW");
  DeviceState &st = state(ctx);
  const DeviceWeight &a = st.weights[size_t(wa)], &b = st.weights[size_t(wb)];
  if (a.rows != outA || b.rows != outB)
    fatal("linearPairW", "weight height differs from the output's");
  if (a.cols != in || b.cols != in)
    fatal("linearPairW", "weight width differs from the input's");
  const ModelSpec &spec = ctx.spec();
  // One GEMV launch over both weights' columns when one input serves both
  // (same storage, so the same activation quantization); else two GEMMs.
  if (n > 0 && n <= st.gemvMaxRows && outA > 0 && outB > 0 &&
      a.bf16 == b.bf16 && spec.weights[wa].dtype == spec.weights[wb].dtype) {
    int64_t ldq = ldx;
    const float *q = actInput(ctx, x, &ldq, n, in, wa, act);
    const Rows rows{q, ldq, nullptr, 1};
    const size_t elt = a.bf16 ? 2 : 4;
    const bool vec = vecRows(q, ldq, in, 4) && vecRows(a.ptr, in, in, elt) &&
                     vecRows(b.ptr, in, in, elt);
    const bool share = shareColumns(st, n, outA + outB);
    if (a.bf16 && share)
      denseGemvPair<__nv_bfloat16, 8>(st, rows, a, ya, ldya, b, yb, ldyb, n, in,
                                      vec);
    else if (a.bf16)
      denseGemvPair<__nv_bfloat16, 32>(st, rows, a, ya, ldya, b, yb, ldyb, n,
                                       in, vec);
    else if (share)
      denseGemvPair<float, 8>(st, rows, a, ya, ldya, b, yb, ldyb, n, in, vec);
    else
      denseGemvPair<float, 32>(st, rows, a, ya, ldya, b, yb, ldyb, n, in, vec);
    return;
  }
  // Prefill: two GEMMs of one bf16 copy (one quantization) of x.
  if (n > st.gemvMaxRows && spec.weights[wa].dtype == spec.weights[wb].dtype) {
    int64_t ldq = ldx;
    const float *q = actInput(ctx, x, &ldq, n, in, wa, act);
    gemmPair(st, q, ldq, n, in, a, ya, ldya, b, yb, ldyb, "linearPairW");
    return;
  }
  linearW(ctx, x, ldx, n, in, wa, outA, ya, ldya, act);
  linearW(ctx, x, ldx, n, in, wb, outB, yb, ldyb, act);
}

void linearAddW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                ActQuant act) {
  linear(ctx, x, ldx, n, in, weight, out, y, ldy, act, true);
}

template <class WT, int LANES>
static void denseGemvNorm(DeviceState &st, const Rows &rows,
                          const DeviceWeight &w, int64_t n, int64_t in,
                          float *y, int64_t ldy, bool vec,
                          const NormEpilogue &e) {
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  launchKernel(st, "linearNormW", denseGemvNormKernel<WT, LANES>,
               unsigned((w.rows + perBlock - 1) / perBlock), 256, 0, rows,
               static_cast<const WT *>(w.ptr), n, in, w.rows, y, ldy, vec, e,
               st.normCounter);
}

void linearNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                 const AddNorm &norm, ActQuant act) {
  DeviceState &st = state(ctx);
  const DeviceWeight &w = st.weights[size_t(weight)];
  // Decode: the GEMV, whose last block adds and normalizes every row.
  if (n > 0 && n <= st.gemvMaxRows && out > 0 && w.rows == out &&
      w.cols == in) {
    ProfileScope profile(ctx, "linearNormW");
    int64_t ldq = ldx;
    const float *q = actInput(ctx, x, &ldq, n, in, weight, act);
    const Rows rows{q, ldq, nullptr, 1};
    const bool vec =
        vecRows(q, ldq, in, 4) && vecRows(w.ptr, in, in, w.bf16 ? 2 : 4);
    const NormEpilogue e{norm.residual, norm.ldr, norm.weight, float(norm.eps),
                         norm.sum,      norm.lds, norm.normed, norm.ldn};
    const bool share = shareColumns(st, n, out);
    if (w.bf16 && share)
      denseGemvNorm<__nv_bfloat16, 8>(st, rows, w, n, in, y, ldy, vec, e);
    else if (w.bf16)
      denseGemvNorm<__nv_bfloat16, 32>(st, rows, w, n, in, y, ldy, vec, e);
    else if (share)
      denseGemvNorm<float, 8>(st, rows, w, n, in, y, ldy, vec, e);
    else
      denseGemvNorm<float, 32>(st, rows, w, n, in, y, ldy, vec, e);
    return;
  }
  linearW(ctx, x, ldx, n, in, weight, out, y, ldy, act);
  addRmsNorm(ctx, norm.residual, norm.ldr, y, ldy, n, out, norm.weight,
             norm.eps, norm.sum, norm.lds, norm.normed, norm.ldn);
}

void gatedUp(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t gate, int64_t up, int64_t inter, float *y, int64_t ldy,
             ActQuant act) {
  ProfileScope profile(ctx, "gatedUp");
  if (n <= 0)
    return;
  DeviceState &st = state(ctx);
  const DeviceWeight &wg = st.weights[size_t(gate)],
                     &wu = st.weights[size_t(up)];
  // One GEMV kernel with the SwiGLU when gate and up are alike (the same
  // shape and storage, so one activation quantization serves both).
  if (n <= st.gemvMaxRows && inter > 0 && wg.rows == inter &&
      wu.rows == inter && wg.cols == in && wu.cols == in &&
      wg.bf16 == wu.bf16 &&
      ctx.spec().weights[gate].dtype == ctx.spec().weights[up].dtype) {
    int64_t ldq = ldx;
    const float *q = actInput(ctx, x, &ldq, n, in, gate, act);
    tryGemv<true>(st, q, ldq, n, in, wg, &wu, y, ldy, "gatedUp");
    return;
  }
  float *g = static_cast<float *>(
      scratch(st, size_t(2 * n * inter) * sizeof(float), "gatedUp"));
  float *u = g + n * inter;
  if (n > st.gemvMaxRows && wg.rows == inter && wu.rows == inter &&
      ctx.spec().weights[gate].dtype == ctx.spec().weights[up].dtype) {
    // One bf16 copy (one quantization) of x for both GEMMs.
    int64_t ldq = ldx;
    const float *q = actInput(ctx, x, &ldq, n, in, gate, act);
    gemmPair(st, q, ldq, n, in, wg, g, inter, wu, u, inter, "gatedUp");
  } else {
    linearW(ctx, x, ldx, n, in, gate, inter, g, inter, act);
    linearW(ctx, x, ldx, n, in, up, inter, u, inter, act);
  }
  swiglu(ctx, g, inter, u, inter, n, inter, y, ldy);
}

} // namespace cuda
} // namespace dsrt
