//===- Device.cu - CUDA backend: device state, program calls, main -------===//
//
// prepare() mirrors the Context on the GPU once the weights are loaded;
// runProgram() moves a program's inputs and outputs and runs its body,
// capturing decode bodies as CUDA graphs (one per token count: the kernels'
// grids depend on n only, never on positions, so a graph replays for any
// step with the same n).
//
//===----------------------------------------------------------------------===//

#include "ArgmaxKernel.cuh"
#include "CudaCommon.h"

#include "../Comm/CommEnv.h"
#include "../Convert.h"
#include "../Trace.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <thread>

namespace dsrt {
namespace cuda {

void fatal(const char *where, const char *what) {
  std::fprintf(stderr, "error: CUDA backend: %s: %s\n", where, what);
  std::fflush(stderr);
  std::_Exit(1);
}

CaptureAttempt &captureAttempt() {
  static thread_local CaptureAttempt attempt;
  return attempt;
}

bool keepCaptureError(const char *where, const char *what) {
  CaptureAttempt &a = captureAttempt();
  if (!a.tolerate)
    return false;
  if (a.error.empty())
    a.error = std::string(where) + ": " + what;
  return true;
}

void check(cublasStatus_t s, const char *where) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::string what = "cuBLAS status " + std::to_string(int(s));
    if (!keepCaptureError(where, what.c_str()))
      fatal(where, what.c_str());
  }
}

static double nowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ProfileScope::ProfileScope(Context &ctx, const char *name)
    : st(state(ctx)), name(name) {
  if (st.profile && st.profileDepth++ == 0) {
    check(cudaStreamSynchronize(st.stream), name);
    start = nowMs();
  }
}

ProfileScope::~ProfileScope() {
  if (st.profile && --st.profileDepth == 0) {
    check(cudaStreamSynchronize(st.stream), name);
    const double end = nowMs();
    auto &e = st.profileMs[{st.profileProgram, name}];
    e.first += end - start;
    ++e.second;
    if (trace::enabled())
      trace::record(name, "kernel", start * 1000.0, end * 1000.0);
  }
}

DeviceState::~DeviceState() {
  // NCCL first: its communicators use the stream below.
  for (auto &c : comms)
    c.reset();
  if (profileStepsCount > 0 &&
      decodeRuns < profileStepsFirst + profileStepsCount - 1)
    std::fprintf(stderr,
                 "cuda: DS_CUDA_PROFILE_STEPS asked for decode steps %lld to "
                 "%lld; the run had %lld\n",
                 (long long)profileStepsFirst,
                 (long long)(profileStepsFirst + profileStepsCount - 1),
                 (long long)decodeRuns);
  if (profile && !profileMs.empty()) {
    std::fprintf(stderr, "cuda profile (kernel calls timed alone, stream "
                         "synchronized around each; no graphs):\n");
    std::set<std::string> programs;
    for (auto &e : profileMs)
      programs.insert(e.first.first);
    for (const std::string &program : programs) {
      const int64_t runs = profileRuns[program];
      std::vector<std::pair<double, std::string>> rows;
      double total = 0;
      for (auto &e : profileMs)
        if (e.first.first == program) {
          rows.push_back({e.second.first, e.first.second});
          total += e.second.first;
        }
      std::sort(rows.rbegin(), rows.rend());
      if (runs > 0)
        std::fprintf(
            stderr, "  %s: %lld runs, %.1f ms in kernels, %.3f ms per run\n",
            program.c_str(), (long long)runs, total, total / double(runs));
      else
        std::fprintf(stderr, "  %s: %.1f ms in kernels\n", program.c_str(),
                     total);
      for (auto &r : rows) {
        const int64_t calls = profileMs[{program, r.second}].second;
        std::fprintf(stderr,
                     "    %-20s %10.3f ms %5.1f%% %7lld calls %9.1f us/call\n",
                     r.second.c_str(), r.first,
                     total > 0 ? 100.0 * r.first / total : 0.0,
                     (long long)calls, 1000.0 * r.first / double(calls));
      }
    }
  }
  // The process may be exiting with the device in an error state: ignore
  // the results (the CUDA driver frees everything at exit anyway).
  for (auto &g : graphs)
    cudaGraphExecDestroy(g.second);
  for (auto &p : plans) {
    cublasLtMatmulDescDestroy(p.second.op);
    cublasLtMatrixLayoutDestroy(p.second.a);
    cublasLtMatrixLayoutDestroy(p.second.b);
    cublasLtMatrixLayoutDestroy(p.second.c);
  }
  for (auto &t : expertTables)
    cudaFree(t.second);
  for (auto &k : twins)
    cudaFree(k.second);
  if (lt)
    cublasLtDestroy(lt);
  if (blas)
    cublasDestroy(blas);
  for (void *p : allocations)
    cudaFree(p);
  cudaFree(scratch);
  if (hostIn)
    cudaFreeHost(hostIn);
  if (hostArgmax)
    cudaFreeHost(hostArgmax);
  if (stream)
    cudaStreamDestroy(stream);
}

DeviceState &state(Context &ctx) {
  auto *st = static_cast<DeviceState *>(ctx.impl().device.get());
  if (!st)
    fatal("runProgram", "the device state is missing (ModelSpec::prepare "
                        "was not called)");
  return *st;
}

void *scratch(DeviceState &st, size_t bytes, const char *where) {
  bytes = (bytes + 255) & ~size_t(255);
  if (st.scratchUsed + bytes > st.scratchBytes) {
    if (st.capturing)
      fatal(where, "scratch grew during graph capture");
    size_t want = std::max(st.scratchBytes * 2, st.scratchUsed + bytes);
    if (st.scratchUsed > 0) {
      // Kernels of this call already point into the old buffer: it lives
      // until exit (growth doubles, so this happens a few times at most).
      st.allocations.push_back(st.scratch);
    } else {
      // Nothing of this call uses it; earlier calls' kernels may still run.
      check(cudaStreamSynchronize(st.stream), where);
      cudaFree(st.scratch);
    }
    st.scratch = nullptr;
    check(cudaMalloc(&st.scratch, want), "scratch");
    st.scratchBytes = want;
    st.scratchUsed = 0;
    // Graphs recorded the old scratch addresses.
    for (auto &g : st.graphs)
      cudaGraphExecDestroy(g.second);
    st.graphs.clear();
    st.seen.clear();
  }
  void *p = st.scratch + st.scratchUsed;
  st.scratchUsed += bytes;
  st.scratchPeak = std::max(st.scratchPeak, st.scratchUsed);
  return p;
}

const float *weight(Context &ctx, int64_t index) {
  DeviceState &st = state(ctx);
  const DeviceWeight &w = st.weights[size_t(index)];
  if (w.bf16)
    fatal("weight", "a bf16 weight read as float32");
  return static_cast<const float *>(w.ptr);
}

const __nv_bfloat16 *bf16Twin(Context &ctx, const void *ptr,
                              const char *where) {
  DeviceState &st = state(ctx);
  if (st.dtype != ComputeDtype::BF16 || !st.bf16Twins || !ptr)
    return nullptr;
  auto it = st.twins.find(ptr);
  if (it != st.twins.end())
    return it->second;
  // An allocation and a copy on the stream would join the graph: the f32
  // reads, and the next eager call makes the copy (decode steps run eagerly
  // before their graph is captured, so theirs exist by then).
  if (st.capturing)
    return nullptr;
  __nv_bfloat16 *copy = nullptr;
  for (size_t i = 0; i < st.weights.size(); ++i) {
    const DeviceWeight &w = st.weights[i];
    const float *host = ctx.weight(int64_t(i));
    if (w.ptr != ptr || w.bf16 || !host)
      continue;
    const size_t numel = size_t(w.rows * w.cols);
    std::vector<uint16_t> bits(numel);
    bool exact = true;
    for (size_t j = 0; j < numel && exact; ++j) {
      uint32_t u;
      std::memcpy(&u, &host[j], sizeof(u));
      exact = (u & 0xffffu) == 0;
      bits[j] = uint16_t(u >> 16);
    }
    if (!exact)
      break;
    // An optimization: without the memory for it, the float32 reads.
    if (cudaMalloc(&copy, numel * sizeof(uint16_t)) != cudaSuccess) {
      (void)cudaGetLastError();
      std::fprintf(stderr,
                   "cuda: no device memory for a bf16 copy of %s (%.1f MB); "
                   "%s reads it in float32\n",
                   ctx.spec().weights[i].name, double(numel) * 2e-6, where);
      copy = nullptr;
      break;
    }
    // On the compute stream (MoE.cu's expertTables say why); pageable
    // memory is staged before the call returns, so `bits` may go.
    check(cudaMemcpyAsync(copy, bits.data(), numel * sizeof(uint16_t),
                          cudaMemcpyHostToDevice, st.stream),
          where);
    break;
  }
  st.twins[ptr] = copy;
  return copy;
}

namespace {

/// The runtime's switch `name` (an environment variable): *index is the
/// position of its value in `choices` (untouched when unset); false, with
/// the error naming the variable and what it takes, for any other value.
bool envChoice(const char *name, std::initializer_list<const char *> choices,
               int *index, std::string *error) {
  const char *v = std::getenv(name);
  if (!v)
    return true;
  int i = 0;
  std::string expected;
  for (const char *c : choices) {
    if (std::strcmp(v, c) == 0) {
      *index = i;
      return true;
    }
    expected += i == 0 ? "" : i + 1 == int(choices.size()) ? " or " : ", ";
    expected += c;
    ++i;
  }
  *error = std::string(name) + ": expected " + expected + ", got '" + v + "'";
  return false;
}

/// Whether kernels may start early (programmatic dependent launch): only
/// where the loaded kernel image has pdlEnter's wait (sm_90 code; a JIT of
/// older code would not, and starting early would then race), unless
/// DS_CUDA_PDL=0, and only where the driver captures such launches into a
/// graph, which a two-kernel capture checks (some GPUs refuse; PDL is
/// then off and the decode graphs are captured without it).
bool pdlUsable(DeviceState &st) {
#ifdef DS_CUDA_EMU
  // The emulator (test/CudaEmu) runs launches in order; DS_CUDA_EMU_PDL=1
  // still takes the host's PDL paths (captureDecode's retry).
  const char *v = std::getenv("DS_CUDA_EMU_PDL");
  return v && std::strcmp(v, "1") == 0;
#else
  if (const char *v = std::getenv("DS_CUDA_PDL"))
    if (std::strcmp(v, "0") == 0)
      return false;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(
          &attr, reinterpret_cast<const void *>(argmaxKernel)) != cudaSuccess ||
      attr.binaryVersion < 90 || attr.ptxVersion < 90)
    return cudaGetLastError(), false;
  cudaLaunchAttribute pdl;
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(1);
  config.blockDim = dim3(kArgmaxThreads);
  config.stream = st.stream;
  config.attrs = &pdl;
  config.numAttrs = 1;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool ok = cudaStreamBeginCapture(
                st.stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (ok) {
    for (int i = 0; i < 2; ++i)
      ok = cudaLaunchKernelEx(&config, argmaxKernel,
                              static_cast<const float *>(st.logits), int64_t(1),
                              int64_t(1), st.argmax) == cudaSuccess &&
           ok;
    ok = cudaStreamEndCapture(st.stream, &graph) == cudaSuccess && ok;
  }
  ok = ok && graph && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess &&
       cudaGraphLaunch(exec, st.stream) == cudaSuccess &&
       cudaStreamSynchronize(st.stream) == cudaSuccess;
  if (exec)
    cudaGraphExecDestroy(exec);
  if (graph)
    cudaGraphDestroy(graph);
  cudaGetLastError(); // a refused capture leaves a (non-sticky) error
  return ok;
#endif
}

template <class T> T *deviceAlloc(DeviceState &st, size_t count, std::string *error,
                                  const char *what) {
  void *p = nullptr;
  if (count == 0)
    count = 1;
  cudaError_t e = cudaMalloc(&p, count * sizeof(T));
  if (e != cudaSuccess) {
    *error = std::string("CUDA: cannot allocate ") + what + " (" +
             std::to_string(count * sizeof(T)) + " bytes): " + cudaGetErrorString(e);
    return nullptr;
  }
  st.allocations.push_back(p);
  return static_cast<T *>(p);
}

/// Copies weight `i` to the device in its device dtype, converting through
/// a pinned staging buffer a slice at a time.
bool uploadWeight(Context &ctx, DeviceState &st, int64_t i, char *stage,
                  size_t stageBytes, std::string *error) {
  const WeightSpec &spec = ctx.spec().weights[i];
  DeviceWeight &w = st.weights[size_t(i)];
  w.rows = spec.shape[0];
  w.cols = spec.rank == 2 ? spec.shape[1] : 1;
  if (!ctx.holdsWeight(i)) { // another rank's expert or stage
    w.rows = w.cols = 0;
    return true;
  }
  const int64_t numel = w.rows * w.cols;
  w.bf16 = st.dtype == ComputeDtype::BF16 && spec.rank == 2 &&
           (spec.flags & WeightSpec::kGemmOnly);
  const size_t elt = w.bf16 ? 2 : 4;
  void *dst = deviceAlloc<char>(st, size_t(numel) * elt, error, spec.name);
  if (!dst)
    return false;
  w.ptr = dst;
  const float *f = ctx.weight(i);
  const uint16_t *h = ctx.bf16Weight(i);
  const Fp8Weight *q = ctx.fp8Weight(i);
  if (!f && !h && !q) {
    *error = std::string("weight ") + spec.name + " is not loaded on this rank";
    return false;
  }
  const int64_t chunk = int64_t(stageBytes / elt);
  for (int64_t b = 0; b < numel; b += chunk) {
    const int64_t e = std::min(numel, b + chunk);
    for (int64_t j = b; j < e; ++j) {
      float v;
      if (f)
        v = f[j];
      else if (h) {
        if (w.bf16) { // bf16 -> bf16: copy the bits
          reinterpret_cast<uint16_t *>(stage)[j - b] = h[j];
          continue;
        }
        v = bf16ToFloat(h[j]);
      } else { // FP8: dequantized (codes * block scale)
        const int64_t r = j / q->cols, c = j % q->cols;
        const int64_t sb = (q->cols + kFp8Block - 1) / kFp8Block;
        v = e4m3ToFloat(q->codes[j]) *
            q->scaleInv[(r / kFp8Block) * sb + c / kFp8Block];
      }
      if (w.bf16)
        reinterpret_cast<uint16_t *>(stage)[j - b] = floatToBf16(v);
      else
        reinterpret_cast<float *>(stage)[j - b] = v;
    }
    cudaError_t err = cudaMemcpy(static_cast<char *>(dst) + b * elt, stage,
                                 size_t(e - b) * elt, cudaMemcpyHostToDevice);
    if (err != cudaSuccess) {
      *error = std::string("CUDA: copying weight ") + spec.name + ": " +
               cudaGetErrorString(err);
      return false;
    }
  }
  return true;
}

} // namespace

bool prepare(Context &ctx, ComputeDtype dtype, std::string *error) {
  if (ctx.meshSize(MeshAxis::TP) * ctx.meshSize(MeshAxis::EP) *
          ctx.meshSize(MeshAxis::PP) * ctx.meshSize(MeshAxis::DP) > 1) {
    *error = "a multi-rank model's device state is made by prepareNccl "
             "(dsrt-nccl), not prepare";
    return false;
  }
  return prepareOnDevice(ctx, dtype, 0, error);
}

bool prepareOnDevice(Context &ctx, ComputeDtype dtype, int device,
                     std::string *error) {
  const ModelSpec &spec = ctx.spec();
  auto owned = std::make_shared<DeviceState>();
  DeviceState &st = *owned;
  st.dtype = dtype;
  auto cudaFail = [&](cudaError_t e, const char *what) {
    if (e == cudaSuccess)
      return false;
    *error = std::string("CUDA: ") + what + ": " + cudaGetErrorString(e);
    return true;
  };
  if (cudaFail(cudaSetDevice(device), "cudaSetDevice") ||
      cudaFail(cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking),
               "cudaStreamCreate"))
    return false;
  if (cublasLtCreate(&st.lt) != CUBLAS_STATUS_SUCCESS ||
      cublasCreate(&st.blas) != CUBLAS_STATUS_SUCCESS) {
    *error = "cuBLAS: cannot create a handle";
    return false;
  }
  st.ltWorkspaceBytes = size_t(32) << 20;
  if (!(st.ltWorkspace = deviceAlloc<char>(st, st.ltWorkspaceBytes, error,
                                           "the cuBLAS workspace")))
    return false;
  // cuBLAS must not allocate inside a captured graph: give it its own
  // workspace, after the stream (cublasSetStream resets the workspace to
  // cuBLAS's default pool).
  void *blasWs = deviceAlloc<char>(st, size_t(4) << 20, error, "cuBLAS");
  if (!blasWs || cublasSetStream(st.blas, st.stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(st.blas, blasWs, size_t(4) << 20) !=
          CUBLAS_STATUS_SUCCESS) {
    if (error->empty())
      *error = "cuBLAS: cannot set the workspace";
    return false;
  }
  if (const char *g = std::getenv("DS_CUDA_GRAPHS"))
    st.useGraphs = std::strcmp(g, "0") != 0;
  if (const char *p = std::getenv("DS_CUDA_PROFILE"))
    st.profile = std::strcmp(p, "0") != 0;
  if (st.profile)
    st.useGraphs = false;
  if (const char *r = std::getenv("DS_CUDA_GEMV_ROWS")) {
    char *end = nullptr;
    const long v = std::strtol(r, &end, 10);
    if (end == r || *end || v < 0 || v > (1 << 20)) {
      *error = std::string("DS_CUDA_GEMV_ROWS: expected a row count from 0 "
                           "to 1048576, got '") +
               r + "'";
      return false;
    }
    st.gemvMaxRows = v;
  }
  int gemm = int(st.moeGemm); // the choices in MoeGemm's order
  if (!envChoice("DS_CUDA_MOE_GEMM", {"auto", "batched", "tiled"}, &gemm,
                 error))
    return false;
  st.moeGemm = DeviceState::MoeGemm(gemm);
  if (const char *w = std::getenv("DS_CUDA_PROFILE_STEPS")) {
    char *end = nullptr;
    const long long first = std::strtoll(w, &end, 10);
    long long count = 0;
    if (end != w && *end == ':') {
      const char *c = end + 1;
      count = std::strtoll(c, &end, 10);
      if (end == c)
        count = 0;
    }
    if (first < 1 || count < 1 || *end || first > (1LL << 40) ||
        count > (1LL << 40)) {
      *error = std::string("DS_CUDA_PROFILE_STEPS: expected FIRST:COUNT, the "
                           "decode steps (from 1) to profile, got '") +
               w + "'";
      return false;
    }
    st.profileStepsFirst = first;
    st.profileStepsCount = count;
    std::fprintf(stderr,
                 "cuda: profiler window: decode steps %lld to %lld "
                 "(DS_CUDA_PROFILE_STEPS)\n",
                 first, first + count - 1);
  }
  // fused|kernel (auto|simt, tc|simt): index 0 is the default, the fused
  // (tensor-core) path.
  int sort = 0, combine = 0, mlaCombine = 0, decode = 0, moeGemv = 0,
      copies = 0, prefill = 0;
  if (!envChoice("DS_CUDA_MOE_SORT", {"fused", "kernel"}, &sort, error) ||
      !envChoice("DS_CUDA_WEIGHT_COPIES", {"bf16", "none"}, &copies, error) ||
      !envChoice("DS_CUDA_MOE_GEMV", {"tc", "simt"}, &moeGemv, error) ||
      !envChoice("DS_CUDA_MOE_COMBINE", {"fused", "kernel"}, &combine, error) ||
      !envChoice("DS_CUDA_MLA_COMBINE", {"fused", "kernel"}, &mlaCombine,
                 error) ||
      !envChoice("DS_CUDA_MLA_DECODE", {"auto", "simt"}, &decode, error) ||
      !envChoice("DS_CUDA_MLA_PREFILL", {"mma", "wmma"}, &prefill, error))
    return false;
  st.moeFusedSort = sort == 0;
  st.moeGemvTc = moeGemv == 0;
  st.moeFusedCombine = combine == 0;
  st.mlaFusedCombine = mlaCombine == 0;
  st.mlaDecodeTc = decode == 0;
  st.mlaPrefillMma = prefill == 0;
  st.bf16Twins = copies == 0;

  st.maxTokens = std::max<int64_t>(
      {spec.prefillMaxTokens, spec.decodeMaxTokens, spec.mtpMaxTokens, 1});
  if (!(st.arena = deviceAlloc<char>(st, size_t(spec.arenaBytes), error,
                                     "the activation arena")))
    return false;

  // Inputs: ids | pos | tokenSeq | block table, one upload per call.
  if (spec.cacheLayers > 0) {
    KVCache &kc = ctx.cache();
    st.layers = spec.cacheLayers;
    st.rowFloats = spec.kvLoraRank + spec.qkRopeDim;
    st.maxSequences = kc.maxSequences();
    st.maxBlocks = (spec.maxSeqLen + KVCache::kBlockTokens - 1) /
                   KVCache::kBlockTokens;
    // bf16 mode keeps the latent rows in bf16 (attention accumulates in
    // float32); f32 mode, checked against the CPU backend, in float32.
    st.cacheBf16 = dtype == ComputeDtype::BF16;
    const size_t cacheBytes = size_t(kc.totalBlocks()) * size_t(st.layers) *
                              KVCache::kBlockTokens * size_t(st.rowFloats) *
                              (st.cacheBf16 ? 2 : 4);
    if (!(st.cache =
              deviceAlloc<char>(st, cacheBytes, error, "the KV cache")) ||
        cudaFail(cudaMemset(st.cache, 0, cacheBytes), "cudaMemset"))
      return false;
  }
  const size_t inputs = size_t(3 * st.maxTokens + st.maxSequences * st.maxBlocks);
  int32_t *in = deviceAlloc<int32_t>(st, inputs, error, "the program inputs");
  if (!in || cudaFail(cudaMallocHost(&st.hostIn, inputs * sizeof(int32_t)),
                      "cudaMallocHost"))
    return false;
  st.ids = in;
  st.pos = in + st.maxTokens;
  st.tokenSeq = in + 2 * st.maxTokens;
  st.blockTable = in + 3 * st.maxTokens;
  const size_t rows = size_t(st.maxTokens);
  // The last-block counters (DeviceState), one allocation, zeroed once.
  constexpr size_t kCounters = 3;
  unsigned *counters = nullptr;
  if (!(st.logits = deviceAlloc<float>(st, rows * size_t(spec.vocabSize), error,
                                       "logits")) ||
      !(st.hidden = deviceAlloc<float>(st, rows * size_t(spec.hiddenSize),
                                       error, "hidden states")) ||
      !(st.hiddenIn = deviceAlloc<float>(st, rows * size_t(spec.hiddenSize),
                                         error, "MTP inputs")) ||
      !(st.argmax = deviceAlloc<int32_t>(st, rows, error, "argmax")) ||
      !(counters = deviceAlloc<unsigned>(st, kCounters, error, "counters")) ||
      cudaFail(cudaMemset(counters, 0, kCounters * sizeof(unsigned)),
               "cudaMemset") ||
      cudaFail(cudaMallocHost(&st.hostArgmax, rows * sizeof(int32_t)),
               "cudaMallocHost"))
    return false;
  st.gateCounter = counters;
  st.normCounter = counters + 1;
  st.combineCounter = counters + 2;

  for (const RopeTable &t : ctx.impl().ropes) {
    DeviceState::Rope r;
    r.dim = t.dim;
    r.positions = t.positions;
    if (!(r.cos = deviceAlloc<float>(st, t.cos.size(), error, "RoPE table")) ||
        !(r.sin = deviceAlloc<float>(st, t.sin.size(), error, "RoPE table")) ||
        cudaFail(cudaMemcpy(r.cos, t.cos.data(), t.cos.size() * 4,
                            cudaMemcpyHostToDevice), "RoPE upload") ||
        cudaFail(cudaMemcpy(r.sin, t.sin.data(), t.sin.size() * 4,
                            cudaMemcpyHostToDevice), "RoPE upload"))
      return false;
    st.ropes.push_back(r);
  }

  // Weights, through 64 MiB of pinned staging.
  const size_t stageBytes = size_t(64) << 20;
  char *stage = nullptr;
  if (cudaFail(cudaMallocHost(&stage, stageBytes), "cudaMallocHost"))
    return false;
  st.weights.resize(size_t(spec.numWeights));
  int64_t bytes = 0;
  bool ok = true;
  for (int64_t i = 0; i < spec.numWeights && ok; ++i) {
    ok = uploadWeight(ctx, st, i, stage, stageBytes, error);
    const DeviceWeight &w = st.weights[size_t(i)];
    bytes += w.rows * w.cols * (w.bf16 ? 2 : 4);
  }
  cudaFreeHost(stage);
  if (!ok)
    return false;
  cudaDeviceProp prop;
  if (cudaFail(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"))
    return false;
  st.multiprocessors = prop.multiProcessorCount;
  st.sharedOptin = prop.sharedMemPerBlockOptin;
  st.pdl = pdlUsable(st);
  if (ctx.rank() == 0)
    std::fprintf(stderr,
                 "cuda: %s, weights %.2f GB (%s GEMM weights), KV cache %.2f "
                 "GB, arena %.1f MB, PDL %s, GEMV up to %lld rows\n",
                 prop.name, double(bytes) / 1e9,
                 dtype == ComputeDtype::BF16 ? "bf16" : "f32",
                 double(st.cache ? int64_t(ctx.cache().totalBlocks()) *
                                       st.layers * KVCache::kBlockTokens *
                                       st.rowFloats * (st.cacheBf16 ? 2 : 4)
                                 : 0) /
                     1e9,
                 double(spec.arenaBytes) / 1e6, st.pdl ? "on" : "off",
                 (long long)st.gemvMaxRows);
  // The memsets and pageable copies above ran on the legacy stream, which
  // the non-blocking compute stream does not wait for.
  if (cudaFail(cudaDeviceSynchronize(), "cudaDeviceSynchronize"))
    return false;
  ctx.impl().device = owned;
  return true;
}

/// Captures a decode body as a graph. The start-up probe (pdlUsable)
/// captures two of our kernels only; where a whole step (cuBLAS nodes
/// between programmatic launches) does not capture or instantiate with
/// PDL, whether a launch, a cuBLAS call, the end of the capture or the
/// instantiation says so, PDL goes off for the rest of the run and the
/// step is captured again without it.
static cudaGraphExec_t captureDecode(Context &ctx, DeviceState &st, BodyFn body,
                                     const Io &io) {
  const size_t scratchUsed = st.scratchUsed;
  for (;;) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // Each attempt allocates the scratch the eager run did, from the same
    // offset.
    st.scratchUsed = scratchUsed;
    CaptureAttempt &attempt = captureAttempt();
    attempt.tolerate = st.pdl;
    attempt.error.clear();
    st.capturing = true;
    check(cudaStreamBeginCapture(st.stream, cudaStreamCaptureModeThreadLocal),
          "cudaStreamBeginCapture");
    body(ctx, io);
    cudaError_t e = cudaStreamEndCapture(st.stream, &graph);
    st.capturing = false;
    attempt.tolerate = false;
    if (e == cudaSuccess && attempt.error.empty()) {
      e = cudaGraphInstantiate(&exec, graph, 0);
      if (e != cudaSuccess)
        attempt.error =
            std::string("cudaGraphInstantiate: ") + cudaGetErrorString(e);
    } else if (attempt.error.empty()) {
      attempt.error =
          std::string("cudaStreamEndCapture: ") + cudaGetErrorString(e);
    }
    if (graph)
      cudaGraphDestroy(graph);
    if (attempt.error.empty())
      return exec;
    if (exec)
      cudaGraphExecDestroy(exec);
    if (!st.pdl)
      fatal("decode graph capture", attempt.error.c_str());
    (void)cudaGetLastError(); // refusals leave non-sticky errors
    std::fprintf(stderr,
                 "cuda: a decode step with programmatic launches did not "
                 "capture as a graph (%s); PDL is off from now on\n",
                 attempt.error.c_str());
    st.pdl = false;
  }
}

void runProgram(Context &ctx, Program program, BodyFn body,
                const float *hiddenIn, const int32_t *ids, const int32_t *pos,
                int64_t n, float *logits, float *hidden) {
  DeviceState &st = state(ctx);
  const ModelSpec &spec = ctx.spec();
  if (n <= 0)
    return;
  if (n > st.maxTokens)
    fatal("runProgram", "more tokens than the program was compiled for");
  // The contracts the CPU kernels check per kernel, checked once here.
  int32_t *in = st.hostIn;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= spec.vocabSize)
      fatal("runProgram", "token id out of range");
    if (pos[i] < 0 || pos[i] >= spec.maxSeqLen)
      fatal("runProgram", "position outside the cache");
    const int32_t seq = ctx.tokenSequence(i);
    if (st.cache && (!ctx.cache().live(seq) ||
                     pos[i] >= ctx.cache().capacity(seq)))
      fatal("runProgram", "position not reserved in its sequence");
    in[i] = ids[i];
    in[st.maxTokens + i] = pos[i];
    in[2 * st.maxTokens + i] = seq;
  }
  size_t count = size_t(3 * st.maxTokens);
  if (st.cache) {
    int32_t *table = in + 3 * st.maxTokens;
    for (int64_t s = 0; s < st.maxSequences; ++s)
      for (int64_t b = 0; b < st.maxBlocks; ++b)
        table[s * st.maxBlocks + b] = ctx.cache().blockId(int32_t(s), b);
    count += size_t(st.maxSequences * st.maxBlocks);
  }
  check(cudaMemcpyAsync(st.ids, in, count * sizeof(int32_t),
                        cudaMemcpyHostToDevice, st.stream),
        "input upload");
  if (hiddenIn)
    check(cudaMemcpyAsync(st.hiddenIn, hiddenIn,
                          size_t(n * spec.hiddenSize) * sizeof(float),
                          cudaMemcpyHostToDevice, st.stream),
          "input upload");

  const Io io{st.arena, st.ids, st.pos, n, st.logits, st.hidden, st.hiddenIn};
  st.scratchUsed = 0;
  if (st.profile) {
    static const char *const names[] = {"prefill", "decode", "mtp"};
    const int p = int(program);
    st.profileProgram = p >= 0 && p < 3 ? names[p] : "other";
    ++st.profileRuns[st.profileProgram];
  }
  // The profiler's window (DS_CUDA_PROFILE_STEPS) opens before the step's
  // kernels and closes after its argmax and downloads.
  bool closeWindow = false;
  if (program == Program::Decode && st.profileStepsCount > 0) {
    const int64_t step = ++st.decodeRuns;
    if (step == st.profileStepsFirst)
      check(cudaProfilerStart(), "cudaProfilerStart");
    closeWindow = step == st.profileStepsFirst + st.profileStepsCount - 1;
  }
  if (program == Program::Decode && st.useGraphs) {
    auto it = st.graphs.find(n);
    if (it != st.graphs.end()) {
      check(cudaGraphLaunch(it->second, st.stream), "cudaGraphLaunch");
    } else if (st.seen[n]++ == 0) {
      body(ctx, io); // eager: sizes scratch and builds expert tables
    } else {
      cudaGraphExec_t exec = captureDecode(ctx, st, body, io);
      st.graphs[n] = exec;
      check(cudaGraphLaunch(exec, st.stream), "cudaGraphLaunch");
    }
  } else {
    body(ctx, io);
  }
  st.profileProgram = "other";
  // Greedy decoding needs n token ids, not n x vocab floats (400 KB per
  // token for a 100k vocabulary): the argmax runs here, and the logits and
  // hidden states cross PCIe only when the caller wants them.
  const Context::Outputs &want = ctx.outputs();
  const int64_t from = std::max<int64_t>(want.argmaxFrom, 0);
  if (want.argmax && from < n) {
    // After a graph replay: a plain launch (no programmatic edge).
    launchKernelOn(st.stream, false, "argmax", argmaxKernel, unsigned(n - from),
                   kArgmaxThreads, 0, st.logits + from * spec.vocabSize,
                   spec.vocabSize, spec.vocabSize, st.argmax + from);
    check(cudaMemcpyAsync(st.hostArgmax + from, st.argmax + from,
                          size_t(n - from) * sizeof(int32_t),
                          cudaMemcpyDeviceToHost, st.stream),
          "argmax download");
  }
  if (want.logits || !want.argmax)
    check(cudaMemcpyAsync(logits, st.logits,
                          size_t(n * spec.vocabSize) * sizeof(float),
                          cudaMemcpyDeviceToHost, st.stream),
          "logits download");
  if (want.hidden)
    check(cudaMemcpyAsync(hidden, st.hidden,
                          size_t(n * spec.hiddenSize) * sizeof(float),
                          cudaMemcpyDeviceToHost, st.stream),
          "hidden-state download");
  waitStream(st, "program");
  if (closeWindow)
    check(cudaProfilerStop(), "cudaProfilerStop");
  if (want.argmax) {
    std::copy(st.hostArgmax + from, st.hostArgmax + std::max(from, n),
              want.argmax + from);
    ctx.setArgmaxDone();
  }
}

void waitStream(DeviceState &st, const char *where) {
  if (st.waitTimeoutS <= 0) {
    check(cudaStreamSynchronize(st.stream), where);
    return;
  }
  // Collectives inside: a peer that died would leave their kernels waiting
  // forever, so poll against DS_COMM_TIMEOUT instead of blocking.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (uint64_t i = 0;; ++i) {
    cudaError_t e = cudaStreamQuery(st.stream);
    if (e != cudaErrorNotReady)
      return check(e, where);
    if (std::chrono::duration<double>(Clock::now() - start).count() >
        st.waitTimeoutS)
      fatal(where, "did not finish within DS_COMM_TIMEOUT seconds: a peer "
                   "rank died or stopped calling its collectives");
    comm::backOff(i, start);
  }
}

bool haveDevice(int argc, char **argv) {
  bool help = false;
  for (int i = 1; i < argc; ++i)
    help |= std::strcmp(argv[i], "--help") == 0;
  if (!help) {
    // Load every kernel at start-up, not inside the first timed program.
    setenv("CUDA_MODULE_LOADING", "EAGER", 0);
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
      // Under mpirun every rank usually fails the same way: one message,
      // from the first rank (before MPI starts, the launcher's variables
      // tell); the launcher kills the job when that rank exits, while the
      // others wait before saying the same.
      const char *rank = nullptr;
      for (const char *var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"})
        if (!rank)
          rank = std::getenv(var);
      std::string who;
      if (rank && std::strcmp(rank, "0") != 0) {
        // Killed here when rank 0 failed too; else this rank alone lacks a
        // GPU and says so.
        std::this_thread::sleep_for(std::chrono::seconds(5));
        who = std::string("rank ") + rank + ": ";
      }
      std::fprintf(stderr,
                   "error: %sno CUDA device (%s); this executable was "
                   "compiled with --target=cuda\n",
                   who.c_str(),
                   e != cudaSuccess ? cudaGetErrorString(e) : "none found");
      return false;
    }
  }
  return true;
}

int runMainCuda(int argc, char **argv, const ModelSpec &spec) {
  return haveDevice(argc, argv) ? runMain(argc, argv, spec) : 1;
}

} // namespace cuda
} // namespace dsrt
