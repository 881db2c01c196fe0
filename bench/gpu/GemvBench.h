//===- GemvBench.h - the decode GEMVs, form by form -----------------------===//
//
// ds-gemv-bench: times groupedGemvKernel (lib/Runtime/Cuda/MoEKernels.cuh)
// in each of its forms (a warp per column, four columns a warp, 16 columns
// a warp on tensor cores) over the benchmark model's expert shapes at the
// rows per expert that decode batches give (1 at batch 1, about 3 at batch
// 32, 6 at 64), then the dense decode GEMV (Gemm.cu's, up to 32 rows) the
// same way, and checks that the forms agree. The runtime picks a form
// by rows per expert (MoE.cu); this measures what each form reaches at
// each, against the device's copy bandwidth, so the choice can follow the
// numbers. Weight sets rotate between timed launches, so that each launch
// reads its experts from DRAM, not L2.
//
// One source, two builds: gemv_bench.cu (nvcc, a GPU) and
// gemv_bench_emu.cpp (the host compiler over test/Unit/CudaEmu.h: the
// kernels on the CPU, at --quick sizes, for the agreement check only).
//
//===----------------------------------------------------------------------===//

#ifndef DS_BENCH_GPU_GEMVBENCH_H
#define DS_BENCH_GPU_GEMVBENCH_H

#include "Cuda/MoEKernels.cuh"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace gemvbench {

using dsrt::cuda::kMmaLanes;
using dsrt::cuda::Rows;
using namespace dsrt::cuda::moe;
using bf16 = __nv_bfloat16;

[[noreturn]] inline void fail(const std::string &what) {
  std::fprintf(stderr, "ds-gemv-bench: %s\n", what.c_str());
  std::exit(1);
}

#ifdef DS_CUDA_EMU
// Device memory is host memory; a launch runs to completion in the emulator.
inline void *devAlloc(size_t bytes) {
  void *p = std::malloc(std::max<size_t>(bytes, 16));
  if (!p)
    fail("out of memory");
  return p;
}
inline void devFree(void *p) { std::free(p); }
inline void toDevice(void *d, const void *h, size_t b) { std::memcpy(d, h, b); }
inline void toHost(void *h, const void *d, size_t b) { std::memcpy(h, d, b); }
template <class... K, class... A>
void launch(dim3 grid, dim3 block, size_t shared, void (*k)(K...), A... a) {
  emu::launchShared(grid, block, shared, k, a...);
}
inline void sync() {}
/// Seconds per call of f over `iters` calls.
template <class F> double timeCalls(int iters, F f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i)
    f(i);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
             .count() /
         iters;
}
inline double copyGBps() { return 0.0; } // not measured on the CPU
#else
inline void cudaOk(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    fail(std::string(what) + ": " + cudaGetErrorString(e));
}
inline void *devAlloc(size_t bytes) {
  void *p = nullptr;
  cudaOk(cudaMalloc(&p, std::max<size_t>(bytes, 16)), "cudaMalloc");
  return p;
}
inline void devFree(void *p) { cudaFree(p); }
inline cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t made = nullptr;
    cudaOk(cudaStreamCreateWithFlags(&made, cudaStreamNonBlocking),
           "cudaStreamCreate");
    return made;
  }();
  return s;
}
// Copies in the kernels' stream order, complete on return (a legacy-stream
// cudaMemcpy would not wait for the non-blocking stream's kernels, nor
// they for its DMA).
inline void toDevice(void *d, const void *h, size_t b) {
  cudaOk(cudaMemcpyAsync(d, h, b, cudaMemcpyHostToDevice, stream()),
         "cudaMemcpy");
  cudaOk(cudaStreamSynchronize(stream()), "cudaMemcpy");
}
inline void toHost(void *h, const void *d, size_t b) {
  cudaOk(cudaMemcpyAsync(h, d, b, cudaMemcpyDeviceToHost, stream()),
         "cudaMemcpy");
  cudaOk(cudaStreamSynchronize(stream()), "cudaMemcpy");
}
template <class... K, class... A>
void launch(dim3 grid, dim3 block, size_t shared, void (*k)(K...), A... a) {
  k<<<grid, block, shared, stream()>>>(a...);
  cudaOk(cudaGetLastError(), "kernel launch");
}
inline void sync() { cudaOk(cudaStreamSynchronize(stream()), "kernel"); }
/// Seconds per call of f over `iters` calls, replayed as one CUDA graph
/// (as the runtime replays a decode step), so that host launch overhead
/// does not count; after a warm-up replay.
template <class F> double timeCalls(int iters, F f) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaOk(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal),
         "cudaStreamBeginCapture");
  for (int i = 0; i < iters; ++i)
    f(i + 1);
  cudaOk(cudaStreamEndCapture(stream(), &graph), "cudaStreamEndCapture");
  cudaOk(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cudaEvent_t a, b;
  cudaOk(cudaEventCreate(&a), "cudaEventCreate");
  cudaOk(cudaEventCreate(&b), "cudaEventCreate");
  cudaOk(cudaGraphLaunch(exec, stream()), "cudaGraphLaunch"); // warm-up
  cudaOk(cudaEventRecord(a, stream()), "cudaEventRecord");
  cudaOk(cudaGraphLaunch(exec, stream()), "cudaGraphLaunch");
  cudaOk(cudaEventRecord(b, stream()), "cudaEventRecord");
  cudaOk(cudaEventSynchronize(b), "cudaEventSynchronize");
  float ms = 0;
  cudaOk(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return double(ms) * 1e-3 / iters;
}
/// Device-to-device cudaMemcpy of 1 GiB: bytes read plus written per
/// second, the rate the GEMVs' weight streams are held against.
inline double copyGBps() {
  const size_t bytes = size_t(1) << 30;
  void *a = devAlloc(bytes), *b = devAlloc(bytes);
  const double s = timeCalls(5, [&](int) {
    cudaOk(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream()),
           "copy");
  });
  devFree(a);
  devFree(b);
  return 2.0 * double(bytes) / s * 1e-9;
}
#endif

/// One shape: `experts` active experts of `rows` rows each, weights [N, K]
/// (two of them when gated); `dense`: one weight, denseGemvKernel (the
/// decode-time dense GEMMs of up to DS_CUDA_GEMV_ROWS rows), experts 1.
struct Shape {
  const char *name;
  int64_t experts, rows, K, N;
  bool gated, dense = false;
};

/// The grouped GEMV of one form over `sets` rotating weight sets.
struct Problem {
  Shape s;
  int64_t sets;
  bf16 *w = nullptr;            // [sets * experts * (gated ? 2 : 1)][N, K]
  const void **table = nullptr; // per set: [wa[experts], wb[experts]]
  std::vector<const void *> hostTable; // the same on the host
  float *x = nullptr, *y = nullptr;
  int32_t *offsets = nullptr, *active = nullptr, *rowOf = nullptr;

  Problem(const Shape &shape, int64_t setCount, uint32_t seed)
      : s(shape), sets(setCount) {
    const int64_t mats = s.gated ? 2 : 1, per = s.N * s.K;
    const int64_t weights = sets * s.experts * mats * per;
    const int64_t pairs = s.experts * s.rows;
    w = static_cast<bf16 *>(devAlloc(size_t(weights) * sizeof(bf16)));
    // Random weights, a 1 MiB pattern repeated (filling GBs from the host
    // would take longer than the timing; the values only need to be
    // varied for the agreement check).
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    std::vector<bf16> pattern(size_t(1) << 19);
    for (bf16 &v : pattern)
      v = __float2bfloat16(u(rng));
    for (int64_t b = 0; b < weights; b += int64_t(pattern.size())) {
      const int64_t n = std::min<int64_t>(int64_t(pattern.size()), weights - b);
      toDevice(w + b, pattern.data(), size_t(n) * sizeof(bf16));
    }
    std::vector<const void *> t(size_t(sets * 2 * s.experts), nullptr);
    for (int64_t set = 0; set < sets; ++set)
      for (int64_t e = 0; e < s.experts; ++e) {
        const bf16 *base = w + ((set * s.experts + e) * mats) * per;
        t[size_t(set * 2 * s.experts + e)] = base;
        t[size_t(set * 2 * s.experts + s.experts + e)] =
            s.gated ? base + per : nullptr;
      }
    table = static_cast<const void **>(devAlloc(t.size() * sizeof(void *)));
    toDevice(table, t.data(), t.size() * sizeof(void *));
    hostTable = t;
    std::vector<float> xs(size_t(pairs * s.K));
    for (float &v : xs)
      v = 4.0f * u(rng);
    x = static_cast<float *>(devAlloc(xs.size() * sizeof(float)));
    toDevice(x, xs.data(), xs.size() * sizeof(float));
    y = static_cast<float *>(devAlloc(size_t(pairs * s.N) * sizeof(float)));
    std::vector<int32_t> off(size_t(s.experts + 1)), act(size_t(s.experts)),
        row(static_cast<size_t>(pairs));
    for (int64_t e = 0; e <= s.experts; ++e)
      off[size_t(e)] = int32_t(e * s.rows);
    for (int64_t e = 0; e < s.experts; ++e)
      act[size_t(e)] = int32_t(e);
    for (int64_t p = 0; p < pairs; ++p)
      row[size_t(p)] = int32_t(p);
    offsets = static_cast<int32_t *>(devAlloc(off.size() * 4));
    active = static_cast<int32_t *>(devAlloc(act.size() * 4));
    rowOf = static_cast<int32_t *>(devAlloc(row.size() * 4));
    toDevice(offsets, off.data(), off.size() * 4);
    toDevice(active, act.data(), act.size() * 4);
    toDevice(rowOf, row.data(), row.size() * 4);
  }
  ~Problem() {
    for (void *p : {static_cast<void *>(w), static_cast<void *>(table),
                    static_cast<void *>(x), static_cast<void *>(y),
                    static_cast<void *>(offsets), static_cast<void *>(active),
                    static_cast<void *>(rowOf)})
      devFree(p);
  }
  Problem(const Problem &) = delete;
  Problem &operator=(const Problem &) = delete;

  /// Bytes a launch must move: weights, input rows, output rows.
  double bytes() const {
    const double pairs = double(s.experts * s.rows);
    return double(s.experts) * double(s.N * s.K) * 2.0 * (s.gated ? 2 : 1) +
           pairs * double(s.K) * 4.0 + pairs * double(s.N) * 4.0;
  }

  /// One launch of the form with LANES lanes per column over weight set
  /// `set`, as MoE.cu's groupedGemv launches it (no sort, no shared
  /// expert, no combine), or as Gemm.cu's denseGemv does.
  template <int LANES> void run(int64_t set) {
    const int64_t perBlock = 8 * dsrt::cuda::gemvColumnsPerWarp<LANES>();
    const unsigned gridY = unsigned((s.N + perBlock - 1) / perBlock);
    if (s.dense) {
      const size_t at = size_t((set % sets) * 2 * s.experts);
      const auto *wa = static_cast<const bf16 *>(hostTable[at]);
      const auto *wb = static_cast<const bf16 *>(hostTable[at + 1]);
      const Rows rows{x, s.K, nullptr, 1};
      if (s.gated)
        launch(dim3(gridY), dim3(256), 0,
               dsrt::cuda::denseGemvKernel<bf16, true, LANES>, rows, wa, wb,
               s.rows, s.K, s.N, y, s.N, true, false);
      else
        launch(dim3(gridY), dim3(256), 0,
               dsrt::cuda::denseGemvKernel<bf16, false, LANES>, rows, wa,
               static_cast<const bf16 *>(nullptr), s.rows, s.K, s.N, y, s.N,
               true, false);
      return;
    }
    const void *const *wa = table + (set % sets) * 2 * s.experts;
    DenseGemv dense{};
    dense.firstBlock = unsigned(s.experts);
    const GemvSort none{nullptr, s.experts * s.rows, 0, s.experts};
    const Rows rows{x, s.K, rowOf, 1};
    if (s.gated)
      launch(dim3(unsigned(s.experts), gridY), dim3(256), 0,
             groupedGemvFor<bf16, true, LANES, false>(), rows, wa,
             wa + s.experts, offsets, active, s.K, s.N, y, s.N, true, dense,
             none, static_cast<int32_t *>(nullptr),
             static_cast<int32_t *>(nullptr), GemvCombine{});
    else
      launch(dim3(unsigned(s.experts), gridY), dim3(256), 0,
             groupedGemvFor<bf16, false, LANES, false>(), rows, wa,
             wa + s.experts, offsets, active, s.K, s.N, y, s.N, true, dense,
             none, static_cast<int32_t *>(nullptr),
             static_cast<int32_t *>(nullptr), GemvCombine{});
  }

  /// NaN in every output, so that a form leaving some unwritten cannot
  /// pass for another's results.
  void clearOutput() {
    const std::vector<float> nan(size_t(s.experts * s.rows * s.N), NAN);
    toDevice(y, nan.data(), nan.size() * sizeof(float));
  }

  std::vector<float> output() const {
    std::vector<float> out(size_t(s.experts * s.rows * s.N));
    toHost(out.data(), y, out.size() * sizeof(float));
    return out;
  }
};

/// max |a - b| / max |b|.
inline double relDiff(const std::vector<float> &a,
                      const std::vector<float> &b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
      return INFINITY; // an output left unwritten (NaN), or overflow
    err = std::max(err, double(std::fabs(a[i] - b[i])));
    ref = std::max(ref, double(std::fabs(b[i])));
  }
  return ref > 0 ? err / ref : err;
}

inline int benchMain(int argc, char **argv) {
  bool quick = false;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a.rfind("--iters=", 0) == 0)
      iters = std::max(1, std::atoi(a.c_str() + 8));
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: ds-gemv-bench [--quick] [--iters=N]\n"
          "Times the routed experts' grouped GEMV (gate/up gated, down) in "
          "each form\n(a warp per column, four columns a warp, 16 columns a "
          "warp on tensor cores)\nat the benchmark model's expert shapes "
          "(hidden 2048, expert width 1408)\nfor 1 to 16 rows per expert, "
          "then the dense decode GEMV the same way (q_proj,\no_proj, the "
          "shared experts) for 1 to 32 rows, and checks that the forms "
          "agree\n(within 2e-2 of the largest output: the tensor cores "
          "round inputs to bf16).\n--quick: small shapes and one launch "
          "each (the agreement check only).\n");
      return 0;
    } else
      fail("unknown argument '" + a + "' (--help lists them)");
  }
#ifdef DS_CUDA_EMU
  quick = true; // the CPU emulates every thread: small shapes only
  iters = 1;
#endif
  // (experts, rows): batch 1 (6 of 64 experts), 4, 16, 32 (about 61
  // experts of 3 rows), 64 (6 rows), and 16 rows of 16 experts.
  const int64_t er[][2] = {{6, 1},  {24, 1}, {48, 2},
                           {64, 3}, {64, 6}, {16, 16}};
  const int64_t H = quick ? 192 : 2048, I = quick ? 128 : 1408;
  const double copy = copyGBps();
  if (copy > 0)
    std::printf("gemv-bench: copy %.0f GB/s (device-to-device cudaMemcpy, "
                "bytes read + written)\n",
                copy);
  bool agree = true;
  // One shape: every form once (agreement), then timed.
  auto measure = [&](const Shape &s, uint32_t seed) {
    // Enough rotating sets that a launch's weights left L2 before they
    // come round again (50 MB of L2 on an H100): 256 MB between reuses.
    const double setBytes =
        double(s.experts) * double(s.N * s.K) * 2.0 * (s.gated ? 2 : 1);
    const int64_t sets =
        quick ? 1 : std::max<int64_t>(1, int64_t(std::ceil(256e6 / setBytes)));
    Problem p(s, sets, seed);
    p.clearOutput();
    p.run<32>(0);
    sync();
    const std::vector<float> ref = p.output();
    p.clearOutput();
    p.run<8>(0);
    sync();
    const double d8 = relDiff(p.output(), ref);
    p.clearOutput();
    p.run<kMmaLanes>(0);
    sync();
    const double dtc = relDiff(p.output(), ref);
    agree = agree && d8 <= 1e-5 && dtc <= 2e-2;
    std::printf(
        "%s%s experts %lld rows %lld K %lld N %lld:", s.dense ? "dense " : "",
        s.name, static_cast<long long>(s.experts),
        static_cast<long long>(s.rows), static_cast<long long>(s.K),
        static_cast<long long>(s.N));
    auto report = [&](const char *form, double sec) {
      const double gbps = p.bytes() / sec * 1e-9;
      if (copy > 0)
        std::printf(" %s %.1f us %.0f GB/s (%.0f%%);", form, sec * 1e6, gbps,
                    100.0 * gbps / copy);
      else
        std::printf(" %s ran;", form);
    };
    report("lanes32", timeCalls(iters, [&](int i) { p.run<32>(i); }));
    report("lanes8", timeCalls(iters, [&](int i) { p.run<8>(i); }));
    report("tc", timeCalls(iters, [&](int i) { p.run<kMmaLanes>(i); }));
    std::printf(" max rel diff vs lanes32: lanes8 %.1e, tc %.1e\n", d8, dtc);
    std::fflush(stdout);
  };
  int64_t last[2] = {0, 0};
  for (const auto &c : er) {
    const int64_t experts = quick ? std::min<int64_t>(c[0], 4) : c[0];
    if (experts == last[0] && c[1] == last[1])
      continue; // --quick's cap made it the point before
    last[0] = experts, last[1] = c[1];
    for (int gated = 1; gated >= 0; --gated)
      measure(Shape{gated ? "gate/up" : "down", experts, c[1], gated ? H : I,
                    gated ? I : H, gated != 0},
              uint32_t(c[0] * 100 + c[1] * 2 + gated));
  }
  // The dense decode GEMMs at the benchmark's dims (q and the output
  // projection, the shared experts' gate/up and down) for 1 to 32 rows:
  // where the GEMV forms stand as rows grow (DS_CUDA_GEMV_ROWS; above it
  // cuBLASLt runs them, after a bf16 copy of the input).
  struct DenseShape {
    const char *name;
    int64_t K, N;
    bool gated;
  };
  const DenseShape dense[] = {{"q_proj", 2048, 3072, false},
                              {"o_proj", 2048, 2048, false},
                              {"shared gate/up", 2048, 2816, true},
                              {"shared down", 2816, 2048, false}};
  for (const DenseShape &d : dense) {
    if (quick && !d.gated)
      continue; // one shape, at small dims
    for (int64_t r : {1, 2, 4, 8, 16, 32}) {
      if (quick && r != 1 && r != 8 && r != 32)
        continue;
      Shape s{d.name, 1, r, quick ? 192 : d.K, quick ? 72 : d.N, d.gated};
      s.dense = true;
      measure(s, uint32_t(7000 + r));
    }
  }
  if (!agree) {
    std::printf("gemv-bench: FAIL: the forms disagree past their bounds "
                "(lanes8 1e-5, tc 2e-2)\n");
    return 1;
  }
  std::printf("gemv-bench: the forms agree\n");
  return 0;
}

} // namespace gemvbench

#endif // DS_BENCH_GPU_GEMVBENCH_H
