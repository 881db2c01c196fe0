//===- CudaCommon.h - libdsrt-cuda's private state and helpers --*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_CUDA_CUDACOMMON_H
#define DS_LIB_RUNTIME_CUDA_CUDACOMMON_H

#include "ds/Runtime/Cuda.h"

#include "../ContextImpl.h"
#include "GemvKernels.cuh"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace dsrt {
namespace cuda {

/// A CUDA error inside a kernel call is a broken device (or a bug), not bad
/// input: report where and stop, like the CPU backend's fatal().
[[noreturn]] void fatal(const char *where, const char *what);

/// A decode step being captured with programmatic launches
/// (captureDecode): a driver that refuses such a capture may say so at any
/// launch or cuBLAS call of it, so there the first error is kept (and the
/// step captured again without PDL) instead of ending the run. Per thread;
/// elsewhere `tolerate` is false and every error is fatal.
struct CaptureAttempt {
  bool tolerate = false;
  std::string error; ///< the first one, with where it happened
};
CaptureAttempt &captureAttempt();

/// Keeps the first error of a tolerant capture attempt; true if it did.
bool keepCaptureError(const char *where, const char *what);

inline void check(cudaError_t e, const char *where) {
  if (e != cudaSuccess && !keepCaptureError(where, cudaGetErrorString(e)))
    fatal(where, cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char *where);

/// One weight on the device.
struct DeviceWeight {
  void *ptr = nullptr;
  bool bf16 = false; ///< else float32
  int64_t rows = 0, cols = 0;
};

struct DeviceState {
  ~DeviceState();

  ComputeDtype dtype = ComputeDtype::BF16;
  int multiprocessors = 1;
  size_t sharedOptin = 48 * 1024; ///< dynamic shared memory a block may ask
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void *ltWorkspace = nullptr;
  size_t ltWorkspaceBytes = 0;

  std::vector<DeviceWeight> weights;
  std::vector<void *> allocations; // everything cudaMalloc'd, freed at exit

  char *arena = nullptr;
  int64_t maxTokens = 0;
  int32_t *ids = nullptr, *pos = nullptr, *tokenSeq = nullptr;
  float *logits = nullptr, *hidden = nullptr, *hiddenIn = nullptr;
  /// Pinned staging of the inputs: ids, pos, tokenSeq, block table.
  int32_t *hostIn = nullptr;
  /// Each logits row's argmax (Context::Outputs), on the device and pinned.
  int32_t *argmax = nullptr, *hostArgmax = nullptr;
  /// Counts of finished blocks (0 between launches) of the kernels whose
  /// last block finishes the work: gateRouteKernel's, denseGemvNormKernel's
  /// and the down GEMV's with GemvCombine. Kernels of the one stream that touch
  /// a counter only after their programmatic-launch wait, so after the previous
  /// launch completed (and its last block reset the count).
  unsigned *gateCounter = nullptr, *normCounter = nullptr,
           *combineCounter = nullptr;

  /// The latent cache: pool[block][layer][64][rowFloats] like KVCache's
  /// (rows of rowFloats elements: bf16 in bf16 mode, which halves the bytes
  /// decode attention reads, else float32), and the block table
  /// [maxSequences][maxBlocks] (-1: none).
  void *cache = nullptr;
  bool cacheBf16 = false;
  int32_t *blockTable = nullptr;
  int64_t maxSequences = 0, maxBlocks = 0, rowFloats = 0, layers = 0;

  struct Rope {
    float *cos = nullptr, *sin = nullptr;
    int64_t dim = 0, positions = 0;
  };
  std::vector<Rope> ropes;

  /// Scratch for kernels (GEMM inputs in bf16, MoE row buffers, split
  /// attention partials): a bump allocator reset at every program call. It
  /// only grows outside graph capture (an eager run always precedes a
  /// capture with the same token count); growing drops every graph.
  char *scratch = nullptr;
  size_t scratchBytes = 0, scratchUsed = 0, scratchPeak = 0;
  bool capturing = false;

  /// Device tables of expert weight pointers, keyed by the emitted static
  /// index arrays (stable addresses): [gate[E], up[E], down[E]].
  std::map<const int64_t *, const void **> expertTables;

  /// bf16Twin's copies, keyed by the float32 weight's device address (null:
  /// some value is not exact in bf16, or no memory for it); none made with
  /// DS_CUDA_WEIGHT_COPIES=none.
  bool bf16Twins = true;
  std::map<const void *, __nv_bfloat16 *> twins;

  /// DS_CUDA_PROFILE=1: each top-level kernel call is timed alone (stream
  /// synchronized around it, graphs off); a table per program (prefill,
  /// decode, mtp) goes to stderr at exit.
  bool profile = false;
  int profileDepth = 0;
  const char *profileProgram = "other";
  /// (program, kernel) -> (ms, calls); program -> runs.
  std::map<std::pair<std::string, std::string>, std::pair<double, int64_t>>
      profileMs;
  std::map<std::string, int64_t> profileRuns;

  /// DS_CUDA_PROFILE_STEPS=FIRST:COUNT: cudaProfilerStart before decode
  /// step FIRST (from 1) and cudaProfilerStop after step FIRST + COUNT - 1,
  /// so that `ncu --profile-from-start off` sees those steps' kernels only
  /// (graph replays from step 3). decodeRuns counts the decode programs.
  int64_t profileStepsFirst = 0, profileStepsCount = 0, decodeRuns = 0;

  /// Decode graphs by token count, and the counts seen once (eager run).
  std::map<int64_t, cudaGraphExec_t> graphs;
  std::map<int64_t, int> seen;
  bool useGraphs = true;

  /// Launch kernels with programmatic dependent launch (pdlEnter): on
  /// devices of compute capability 9.0+, unless DS_CUDA_PDL=0.
  bool pdl = false;

  /// Dense GEMMs of at most this many rows run as GEMV kernels, the rest
  /// through cuBLASLt (DS_CUDA_GEMV_ROWS; 0: always cuBLASLt).
  int64_t gemvMaxRows = kGemvRows;

  /// Routed experts above the GEMV's token count (prefill): a cuBLAS
  /// pointer-array batch of per-tile GEMMs, or our tiled kernels
  /// (DS_CUDA_MOE_GEMM=auto|batched|tiled; auto: batched where the batch's
  /// padding at most doubles the rows). moeBatchedFailed: cuBLAS refused
  /// the batch once (its message on stderr); the tiled kernels from then on.
  enum class MoeGemm { Auto, Batched, Tiled } moeGemm = MoeGemm::Auto;
  bool moeBatchedFailed = false;

  /// At decode (the routed experts' GEMVs), the pairs' sort in the first
  /// GEMV's own blocks (moe::sortInBlock) rather than a sortPairsKernel
  /// launch before it (DS_CUDA_MOE_SORT=fused|kernel).
  bool moeFusedSort = true;

  /// The routed experts' GEMVs at two rows per expert or more (batched
  /// decode), bf16 weights: on tensor cores (gemvColumnsMma), or four
  /// columns a warp on CUDA cores (DS_CUDA_MOE_GEMV=tc|simt).
  bool moeGemvTc = true;

  /// At batch 1 or 2 (moe::kCombineInGemvTokens), the experts' combine and
  /// the add + RMSNorm after them in the down GEMV's last block, or a
  /// launch of their own (DS_CUDA_MOE_COMBINE=fused|kernel).
  bool moeFusedCombine = true;

  /// Decode attention over a bf16 latent cache on tensor cores (16 heads a
  /// block) where its shared memory fits, or the SIMT kernel (8 heads a
  /// block) always (DS_CUDA_MLA_DECODE=auto|simt).
  bool mlaDecodeTc = true;
  /// DS_CUDA_MLA_PREFILL: bf16 prefill attention with scores and output in
  /// registers (mma.sync; else the WMMA kernel's shared-memory tiles).
  bool mlaPrefillMma = true;

  /// Decode attention at batch 1 (few split rows): the splits' combine in
  /// the W_UV product's launch, or a launch of its own
  /// (DS_CUDA_MLA_COMBINE=fused|kernel).
  bool mlaFusedCombine = true;

  /// Multi-rank (prepareNccl): one NCCL communicator per MeshAxis, and the
  /// DS_COMM_TIMEOUT bound of waits on the stream (0: plain synchronize).
  std::unique_ptr<Comm> comms[4];
  double waitTimeoutS = 0;

  /// cuBLASLt plans by shape.
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
    bool hasAlgo = false;
  };
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>,
           Plan>
      plans;
};

DeviceState &state(Context &ctx);

/// prepare on GPU `device` (any mesh): the device state without
/// communicators.
bool prepareOnDevice(Context &ctx, ComputeDtype dtype, int device,
                     std::string *error);

/// Waits for the stream (bounded by waitTimeoutS when set).
void waitStream(DeviceState &st, const char *where);

/// runMainCuda's check: false (after "no CUDA device") when there is none
/// and the command line is not --help.
bool haveDevice(int argc, char **argv);

/// moeExpertsW over the experts [lo, lo + count) of the index arrays'
/// allExperts only: pairs routed elsewhere contribute nothing (y is this
/// rank's partial sum).
void moeExpertsRange(Context &ctx, const float *x, int64_t ldx, int64_t n,
                     int64_t hidden, int64_t inter, const int32_t *idx,
                     const float *weights, int64_t topK, const int64_t *gate,
                     const int64_t *up, const int64_t *down, int64_t lo,
                     int64_t count, int64_t allExperts, float *y, int64_t ldy,
                     ActQuant act);

/// Times one kernel call under DS_CUDA_PROFILE (nested calls count once,
/// in the outermost).
class ProfileScope {
public:
  ProfileScope(Context &ctx, const char *name);
  ~ProfileScope();

private:
  DeviceState &st;
  const char *name;
  double start = 0;
};

/// `bytes` of scratch (256-aligned) valid until the program call ends.
void *scratch(DeviceState &st, size_t bytes, const char *where);

#ifdef DS_CUDA_EMU
} // namespace cuda
} // namespace dsrt
namespace emu {
/// test/CudaEmu/FakeCuda.cpp: runs `op` now, or records it into the graph
/// being captured on `stream`.
void enqueue(cudaStream_t stream, std::function<void()> op);
/// Whether the emulated driver refuses an early (PDL) launch on `stream`
/// (DS_CUDA_EMU_REFUSE=pdl-capture while it is captured); a refusal
/// invalidates the capture, as on a GPU.
bool refuseEarlyLaunch(cudaStream_t stream);
/// The launch rules a GPU enforces and the CPU would not: a non-empty grid
/// and block, at most 1024 threads a block, grid.y and grid.z at most
/// 65535, dynamic shared memory past 48 KB only up to what
/// cudaFuncSetAttribute allowed that kernel.
cudaError_t checkLaunch(const void *kernel, dim3 grid, dim3 block,
                        size_t shared);
/// DS_CUDA_EMU_TRACE=1: one stderr line per kernel run (graph replays
/// included), its name, grid, block and dynamic shared memory, to read a
/// program's launches at a GPU's sizes (DS_CUDA_EMU_SMS) without one.
void traceLaunch(const char *where, dim3 grid, dim3 block, size_t shared,
                 bool early);
/// DS_CUDA_EMU_FAIL=NAME: the launches named NAME fail as a faulting
/// kernel's would, for the scripts' handling of a kernel gone wrong.
bool failLaunch(const char *where);
} // namespace emu
namespace dsrt {
namespace cuda {
#endif

/// kernel<<<grid, block, shared, stream>>>(args...), allowed to start early
/// (programmatic dependent launch) when `early`: every kernel of ours
/// begins with pdlEnter(), which waits for its predecessors' results.
template <class... Params, class... Args>
void launchKernelOn(cudaStream_t stream, bool early, const char *where,
                    void (*kernel)(Params...), dim3 grid, dim3 block,
                    size_t shared, Args &&...args) {
#ifdef DS_CUDA_EMU
  // On the CPU (test/CudaEmu): the kernel runs in the emulator, with the
  // arguments converted to the kernel's parameter types as a launch does.
  // DS_CUDA_EMU_REFUSE=pdl-capture: a driver refusing programmatic
  // launches in a graph capture, at the launch (FakeCuda.cpp).
  if (early && emu::refuseEarlyLaunch(stream)) {
    check(cudaErrorStreamCaptureUnsupported, where);
    return;
  }
  check(emu::checkLaunch(reinterpret_cast<const void *>(kernel), grid, block,
                         shared),
        where);
  if (emu::failLaunch(where))
    check(cudaErrorLaunchFailure, where);
  std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
  emu::enqueue(stream, [=] {
    emu::traceLaunch(where, grid, block, shared, early);
    const uint64_t waits = emu::gridWaits();
    std::apply(
        [&](const auto &...v) {
          emu::launchShared(grid, block, shared, kernel, v...);
        },
        values);
    // Every kernel may be launched early on a GPU (launchKernel): one that
    // never waits (pdlEnter) would race with the kernel before it.
    if (emu::gridWaits() == waits) {
      std::fprintf(stderr,
                   "cuda-emu: %s: no thread of the grid waited for the "
                   "kernels before it (pdlEnter)\n",
                   where);
      std::abort();
    }
  });
#else
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = early ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...),
        where);
#endif
}

/// launchKernelOn the state's stream, early when st.pdl.
template <class... Params, class... Args>
void launchKernel(DeviceState &st, const char *where, void (*kernel)(Params...),
                  dim3 grid, dim3 block, size_t shared, Args &&...args) {
  launchKernelOn(st.stream, st.pdl, where, kernel, grid, block, shared,
                 std::forward<Args>(args)...);
}

/// Whether a GEMV may use 16-byte loads on rows of k elements of `elt`
/// bytes, `ld` apart, from p: k % 8 == 0 and every row 16-byte aligned.
inline bool vecRows(const void *p, int64_t ld, int64_t k, size_t elt) {
  return k % 8 == 0 && (ld * int64_t(elt)) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

inline int blocksFor(int64_t n, int threads) {
  return int((n + threads - 1) / threads);
}

/// An exact bf16 copy of the float32 device weight at `ptr` (bf16 mode
/// only), made from the host's values on first use and kept to the end: a
/// float32 weight whose values are all bf16 (a bf16 checkpoint's kv_b, or a
/// BF16 model's random weights) then gives the same products at half the
/// bytes. Null in f32 mode, where some value is not exact in bf16 (a float32
/// checkpoint's: rounding it would move outputs), without the device memory
/// for it (stderr says so, naming `where`), or when first asked for during
/// graph capture.
const __nv_bfloat16 *bf16Twin(Context &ctx, const void *ptr, const char *where);

/// y [n, out] = x [n, in] W^T for a device weight (float32 x; W f32 or
/// bf16: in bf16 x is converted first); float32 accumulation. accumulate:
/// y += x W^T. pathRows (default n) picks the GEMV or the GEMM: logitsW
/// computes some rows of a call as the whole call would.
void gemmWeight(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, const DeviceWeight &w, float *y, int64_t ldy,
                const char *where, bool accumulate = false,
                int64_t pathRows = -1);

/// DeepSeek-V3's FP8 activation quantization, kept in float: a scratch
/// copy [n, cols] (ld cols) of x with each row's 128-wide tiles as
/// e4m3(x / s) * s, s = amax / 448.
float *fakeQuantE4M3(DeviceState &st, const float *x, int64_t ldx, int64_t n,
                     int64_t cols);

namespace rowk {
struct QRope;
template <class CT> struct CacheWrite;
} // namespace rowk

/// The arguments of a cache write into layer `layer` (RowKernels.cuh's
/// CacheWrite; CT: the cache's type), checked against the program (fatal,
/// naming `where`): t the rope table (null: no rotation).
template <class CT>
rowk::CacheWrite<CT>
cacheWriteArgs(Context &ctx, int64_t layer, const float *latent, int64_t ldl,
               float *krope, int64_t ldk, const int32_t *pos,
               const DeviceState::Rope *t, const rowk::QRope &qr,
               const float *normW, double eps, const char *where);

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_CUDACOMMON_H
