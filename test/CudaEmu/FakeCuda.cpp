//===- FakeCuda.cpp - the CUDA calls of libdsrt-cuda, on the CPU ---------===//
//
// What the CUDA backend (lib/Runtime/Cuda) asks of the CUDA runtime, cuBLAS
// and cuBLASLt, implemented on host memory for the emulated build
// (EmuPrelude.h): "device" memory is host memory, a stream runs each
// operation when it is issued, and a stream being captured records the
// operations into a graph that cudaGraphLaunch replays, as CUDA graphs do
// (kernel arguments fixed at capture). GEMMs are plain loops in double
// precision over the element types cuBLAS would read. Only the calls and
// modes the backend makes are supported; anything else fails loudly.
//
//===----------------------------------------------------------------------===//

#include "EmuPrelude.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <vector>

namespace {

[[noreturn]] void unsupported(const char *what) {
  std::fprintf(stderr, "cuda-emu: unsupported: %s\n", what);
  std::abort();
}

void *alignedAlloc(size_t bytes) {
  void *p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0)
    return nullptr;
  return p;
}

struct Graph {
  std::vector<std::function<void()>> ops;
};

/// The stream being captured (one at a time, as the backend does) and the
/// graph it records into.
cudaStream_t capturing = nullptr;
std::unique_ptr<Graph> recording;
bool invalidated = false; // a refused launch: EndCapture fails

struct Layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

struct MatmulDesc {
  cublasOperation_t transA = CUBLAS_OP_N, transB = CUBLAS_OP_N;
};

double load(const void *p, cudaDataType_t type, size_t i) {
  if (type == CUDA_R_32F)
    return static_cast<const float *>(p)[i];
  if (type == CUDA_R_16BF)
    return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  unsupported("cuBLASLt matrix type");
}

/// Element (r, c) of op(X), X column-major with leading dimension ld.
double at(const void *p, cudaDataType_t type, int64_t ld, bool trans, int64_t r,
          int64_t c) {
  return trans ? load(p, type, size_t(c + r * ld))
               : load(p, type, size_t(r + c * ld));
}

/// A column-major operand of a GEMM.
struct Operand {
  const void *p;
  cudaDataType_t type;
  int64_t ld;
  bool trans;
};

/// C [m, n] (float32, column-major, ldc) = alpha op(A) op(B) + beta C, the
/// sums in double.
void gemm(int64_t m, int64_t n, int64_t k, float alpha, Operand a, Operand b,
          float beta, float *c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l)
        s += at(a.p, a.type, a.ld, a.trans, i, l) *
             at(b.p, b.type, b.ld, b.trans, l, j);
      float &o = c[i + j * ldc];
      o = float(alpha * s + (beta != 0.0f ? beta * double(o) : 0.0));
    }
}

// Dynamic shared memory each kernel may ask past the default 48 KB.
std::map<const void *, int> &maxDynamicShared() {
  static std::map<const void *, int> m;
  return m;
}

} // namespace

namespace emu {
bool refuseEarlyLaunch(cudaStream_t stream) {
  const char *r = std::getenv("DS_CUDA_EMU_REFUSE");
  if (!r || std::strcmp(r, "pdl-capture") != 0 || !recording ||
      stream != capturing)
    return false;
  invalidated = true;
  return true;
}

void enqueue(cudaStream_t stream, std::function<void()> op) {
  if (recording && stream == capturing)
    recording->ops.push_back(std::move(op));
  else
    op();
}

cudaError_t checkLaunch(const void *kernel, dim3 grid, dim3 block,
                        size_t shared) {
  auto fail = [](const char *why) {
    std::fprintf(stderr, "cuda-emu: a GPU would refuse this launch: %s\n", why);
    return cudaErrorInvalidConfiguration;
  };
  if (!grid.x || !grid.y || !grid.z)
    return fail("empty grid");
  if (!block.x || !block.y || !block.z)
    return fail("empty block");
  if (uint64_t(block.x) * block.y * block.z > 1024 || block.z > 64)
    return fail("more than 1024 threads a block");
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
    return fail("grid too large");
  if (shared > 48 * 1024) {
    auto it = maxDynamicShared().find(kernel);
    if (it == maxDynamicShared().end() || size_t(it->second) < shared)
      return fail("dynamic shared memory past 48 KB that "
                  "cudaFuncSetAttribute did not allow this kernel");
  }
  return cudaSuccess;
}

bool failLaunch(const char *where) {
  const char *f = std::getenv("DS_CUDA_EMU_FAIL");
  return f && std::strcmp(f, where) == 0;
}

void traceLaunch(const char *where, dim3 grid, dim3 block, size_t shared,
                 bool early) {
  const char *on = std::getenv("DS_CUDA_EMU_TRACE");
  if (on && std::strcmp(on, "1") == 0)
    std::fprintf(stderr,
                 "cuda-emu: launch %s grid %ux%ux%u block %u smem %zu%s\n",
                 where, grid.x, grid.y, grid.z, block.x * block.y * block.z,
                 shared, early ? " early" : "");
}
} // namespace emu

extern "C" {

//===--- Runtime ----------------------------------------------------------===//

cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }

cudaError_t cudaGetDeviceCount(int *count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int) {
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulator (CPU)");
  prop->major = 9;
  prop->minor = 0;
  // DS_CUDA_EMU_SMS: a GPU's count, for the grids it would get (an H100
  // SXM has 132); 4 by default, so that tests split work as small GPUs do.
  prop->multiProcessorCount = 4;
  if (const char *s = std::getenv("DS_CUDA_EMU_SMS"))
    prop->multiProcessorCount = std::max(1, std::atoi(s));
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->totalGlobalMem = size_t(8) << 30;
  prop->warpSize = 32;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
  *p = alignedAlloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) {
  return cudaMalloc(p, bytes);
}
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int) {
  return cudaMalloc(p, bytes);
}
cudaError_t cudaFree(void *p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes,
                       cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes,
                            cudaMemcpyKind, cudaStream_t stream) {
  emu::enqueue(stream, [=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int) {
  static char streams[16];
  static int next = 0;
  if (next == 16)
    unsupported("more than 16 streams");
  *stream = reinterpret_cast<cudaStream_t>(&streams[next++]);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

// The profiler's window (DS_CUDA_PROFILE_STEPS) is said on stderr, so that a
// test sees where it opens and closes; a window opened twice or closed
// unopened is the backend's bug.
static bool profilerOn = false;
cudaError_t cudaProfilerStart(void) {
  if (profilerOn)
    unsupported("cudaProfilerStart while the profiler is on");
  profilerOn = true;
  std::fprintf(stderr, "cuda-emu: cudaProfilerStart\n");
  return cudaSuccess;
}
cudaError_t cudaProfilerStop(void) {
  if (!profilerOn)
    unsupported("cudaProfilerStop while the profiler is off");
  profilerOn = false;
  std::fprintf(stderr, "cuda-emu: cudaProfilerStop\n");
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (recording)
    return cudaErrorStreamCaptureUnsupported;
  capturing = stream;
  recording = std::make_unique<Graph>();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
  if (!recording || stream != capturing)
    return cudaErrorStreamCaptureInvalidated;
  capturing = nullptr;
  if (invalidated) {
    invalidated = false;
    recording.reset();
    *graph = nullptr;
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = reinterpret_cast<cudaGraph_t>(recording.release());
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(
      new Graph(*reinterpret_cast<Graph *>(graph)));
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  const Graph &g = *reinterpret_cast<Graph *>(exec);
  emu::enqueue(stream, [&g] {
    for (const auto &op : g.ops)
      op();
  });
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete reinterpret_cast<Graph *>(exec);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete reinterpret_cast<Graph *>(graph);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr,
                                 int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    unsupported("cudaFuncSetAttribute: an attribute other than "
                "MaxDynamicSharedMemorySize");
  if (value < 0 || value > 227 * 1024)
    return cudaErrorInvalidValue;
  maxDynamicShared()[func] = value;
  return cudaSuccess;
}

//===--- cuBLAS -----------------------------------------------------------===//

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
  static char h;
  *handle = reinterpret_cast<cublasHandle_t>(&h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t) {
  return CUBLAS_STATUS_SUCCESS;
}
// One stream in the backend: cuBLAS calls enqueue on the last one set.
static cudaStream_t blasStream = nullptr;
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t stream) {
  blasStream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t transa,
                          cublasOperation_t transb, int m, int n, int k,
                          const float *alpha, const float *A, int lda,
                          long long int strideA, const float *B, int ldb,
                          long long int strideB, const float *beta, float *C,
                          int ldc, long long int strideC, int batchCount) {
  const float a = *alpha, b = *beta;
  emu::enqueue(blasStream, [=] {
    for (int batch = 0; batch < batchCount; ++batch)
      gemm(m, n, k, a,
           Operand{A + batch * strideA, CUDA_R_32F, lda, transa != CUBLAS_OP_N},
           Operand{B + batch * strideB, CUDA_R_32F, ldb, transb != CUBLAS_OP_N},
           b, C + batch * strideC, ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

/// The pointer arrays are device memory, read when the stream runs the
/// call (a kernel before it writes them): here, inside the enqueued op.
cublasStatus_t cublasGemmBatchedEx(
    cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m,
    int n, int k, const void *alpha, const void *const Aarray[],
    cudaDataType Atype, int lda, const void *const Barray[], cudaDataType Btype,
    int ldb, const void *beta, void *const Carray[], cudaDataType Ctype,
    int ldc, int batchCount, cublasComputeType_t computeType,
    cublasGemmAlgo_t) {
  if (computeType != CUBLAS_COMPUTE_32F || Ctype != CUDA_R_32F)
    unsupported("cublasGemmBatchedEx other than float32 compute and output");
  if (m < 0 || n < 0 || k < 0 || batchCount < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  // DS_CUDA_EMU_REFUSE=batched: refuse, as cuBLAS does a combination it
  // does not support (the backend's fallback path).
  if (const char *r = std::getenv("DS_CUDA_EMU_REFUSE"))
    if (std::strcmp(r, "batched") == 0)
      return CUBLAS_STATUS_NOT_SUPPORTED;
  const float a = *static_cast<const float *>(alpha),
              b = *static_cast<const float *>(beta);
  emu::enqueue(blasStream, [=] {
    for (int batch = 0; batch < batchCount; ++batch)
      gemm(m, n, k, a,
           Operand{Aarray[batch], Atype, lda, transa != CUBLAS_OP_N},
           Operand{Barray[batch], Btype, ldb, transb != CUBLAS_OP_N}, b,
           static_cast<float *>(Carray[batch]), ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

//===--- cuBLASLt ---------------------------------------------------------===//

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
  static char h;
  *handle = reinterpret_cast<cublasLtHandle_t>(&h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) {
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc,
                                        cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
    unsupported("cuBLASLt compute type other than float32");
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(new MatmulDesc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete reinterpret_cast<MatmulDesc *>(desc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t
cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                               cublasLtMatmulDescAttributes_t attr,
                               const void *buf, size_t size) {
  auto *d = reinterpret_cast<MatmulDesc *>(desc);
  if (size != sizeof(cublasOperation_t))
    unsupported("cuBLASLt descriptor attribute");
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA)
    std::memcpy(&d->transA, buf, size);
  else if (attr == CUBLASLT_MATMUL_DESC_TRANSB)
    std::memcpy(&d->transB, buf, size);
  else
    unsupported("cuBLASLt descriptor attribute");
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout,
                                          cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(
      new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete reinterpret_cast<Layout *>(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
  static char p;
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(&p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t
cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                     cublasLtMatmulPreferenceAttributes_t,
                                     const void *, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
    cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
    cublasLtMatmulPreference_t, int requested,
    cublasLtMatmulHeuristicResult_t results[], int *returned) {
  if (requested < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(&results[0], 0, sizeof(results[0]));
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

/// D = alpha op(A) op(B) + beta C, column-major, float32 accumulation (here
/// double), D float32.
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc,
                              const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Adesc, const void *B,
                              cublasLtMatrixLayout_t Bdesc, const void *beta,
                              const void *C, cublasLtMatrixLayout_t Cdesc,
                              void *D, cublasLtMatrixLayout_t Ddesc,
                              const cublasLtMatmulAlgo_t *, void *, size_t,
                              cudaStream_t stream) {
  const MatmulDesc d = *reinterpret_cast<MatmulDesc *>(desc);
  const Layout a = *reinterpret_cast<Layout *>(Adesc),
               b = *reinterpret_cast<Layout *>(Bdesc),
               c = *reinterpret_cast<Layout *>(Cdesc),
               dl = *reinterpret_cast<Layout *>(Ddesc);
  if (c.type != CUDA_R_32F || dl.type != CUDA_R_32F || C != D)
    unsupported("cuBLASLt output other than float32 in place");
  const bool ta = d.transA != CUBLAS_OP_N, tb = d.transB != CUBLAS_OP_N;
  const int64_t m = int64_t(dl.rows), n = int64_t(dl.cols),
                k = int64_t(ta ? a.rows : a.cols);
  if (int64_t(ta ? a.cols : a.rows) != m ||
      int64_t(tb ? b.cols : b.rows) != k || int64_t(tb ? b.rows : b.cols) != n)
    unsupported("cuBLASLt shapes that do not agree");
  const float al = *static_cast<const float *>(alpha),
              be = *static_cast<const float *>(beta);
  emu::enqueue(stream, [=] {
    gemm(m, n, k, al, Operand{A, a.type, a.ld, ta},
         Operand{B, b.type, b.ld, tb}, be, static_cast<float *>(D), dl.ld);
  });
  return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
