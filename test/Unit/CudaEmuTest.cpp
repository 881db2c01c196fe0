//===- CudaEmuTest.cpp - the CUDA backend's kernels, run on the CPU -------===//
//
// Kernel headers of lib/Runtime/Cuda built by the host compiler over
// CudaEmu.h and run against plain C++ references: the routed-expert
// pipeline (router against the CPU backend's, pair sort, grouped GEMV, SIMT
// and tensor-core grouped GEMMs, combine), the dense GEMV, MLA attention
// (prefill on CUDA and on tensor cores, split decode over a paged latent
// cache and its combine), the row kernels (embedding, norms, SwiGLU, RoPE,
// cache writes) and the GEMM input conversions, both against the CPU
// backend, and the logits argmax. This checks indexing, tails, tiling and barriers
// on every machine; the real GPU runs (bench/gpu/run.sh, the cuda-gpu lit
// tests) check the rest. The first tests check that the emulator itself
// catches the faults it claims to.
//
//===----------------------------------------------------------------------===//

#include "CudaEmu.h"

#include "ContextImpl.h"
#include "Convert.h"
#include "Cuda/ArgmaxKernel.cuh"
#include "Cuda/ConvertKernels.cuh"
#include "Cuda/MLAKernels.cuh"
#include "Cuda/MoEKernels.cuh"
#include "Cuda/RouteKernel.cuh"
#include "Cuda/RowKernels.cuh"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

using namespace dsrt::cuda;
using dsrt::ModelSpec;
using dsrt::MoERouting;

namespace {

//===----------------------------------------------------------------------===//
// The emulator
//===----------------------------------------------------------------------===//

__global__ void warpSumKernel(const float *x, float *out) {
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float partial[4];
  if (threadIdx.x % 32 == 0)
    partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0)
    out[blockIdx.x] = partial[0] + partial[1] + partial[2] + partial[3];
}

TEST(CudaEmu, ShufflesAndSharedMemory) {
  std::vector<float> x(128), out(3);
  for (int i = 0; i < 128; ++i)
    x[size_t(i)] = float(i);
  emu::launch(dim3(3), dim3(128), warpSumKernel, x.data(), out.data());
  for (float v : out)
    EXPECT_EQ(v, 127.0f * 128.0f / 2.0f);
}

__global__ void divergentSyncKernel() {
  if (threadIdx.x < 16)
    __syncthreads();
  else
    __syncwarp();
}

__global__ void exitedLanesShuffleKernel(float *out) {
  if (threadIdx.x % 2)
    return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 2);
}

__global__ void misalignedWmmaKernel(const __nv_bfloat16 *p) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                         nvcuda::wmma::row_major>
      a;
  nvcuda::wmma::load_matrix_sync(a, p + 1, 16);
}

__global__ void laneDependentFragmentKernel(float *out) {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> c;
  nvcuda::wmma::fill_fragment(c, 0.0f);
  c.x[0] = float(threadIdx.x);
  nvcuda::wmma::store_matrix_sync(out, c, 16, nvcuda::wmma::mem_row_major);
}

TEST(CudaEmuDeathTest, ReportsFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu::launch(dim3(1), dim3(32), divergentSyncKernel), "deadlock");
  std::vector<float> out(32);
  EXPECT_DEATH(emu::launch(dim3(1), dim3(32), exitedLanesShuffleKernel,
                           out.data()),
               "lanes have exited");
  alignas(32) __nv_bfloat16 tile[16 * 17];
  EXPECT_DEATH(emu::launch(dim3(1), dim3(32), misalignedWmmaKernel,
                           static_cast<const __nv_bfloat16 *>(tile)),
               "not 256-bit aligned");
  alignas(32) float c[256];
  EXPECT_DEATH(emu::launch(dim3(1), dim3(32), laneDependentFragmentKernel, c),
               "lanes hold different tiles");
}

//===----------------------------------------------------------------------===//
// Router: the device kernel against the CPU backend's moeRoute
//===----------------------------------------------------------------------===//

float bf16Round(float v) { return __bfloat162float(__float2bfloat16(v)); }
std::vector<float> roundedBf16(std::vector<float> v) {
  for (float &x : v)
    x = bf16Round(x);
  return v;
}
float silu(float g) { return g / (1.0f + std::exp(-g)); }

MoERouting makeRouting(int64_t experts, int64_t topK, int64_t nGroup,
                       int64_t topkGroup, MoERouting::Scoring scoring,
                       MoERouting::Method method, bool norm, double scale) {
  MoERouting r;
  r.experts = experts, r.topK = topK, r.nGroup = nGroup;
  r.topkGroup = topkGroup, r.scoring = scoring, r.method = method;
  r.normTopk = norm, r.scale = scale;
  return r;
}

/// The CPU backend's moeRoute, the reference of the device's routing.
void cpuRoute(const float *logits, int64_t ldl, int64_t n, const float *bias,
              const MoERouting &r, int32_t *idx, float *weights) {
  ModelSpec spec{};
  spec.name = "route";
  spec.vocabSize = 16;
  spec.hiddenSize = 8;
  spec.maxSeqLen = 64;
  spec.arenaBytes = 64;
  dsrt::Context ctx(spec, 1);
  dsrt::cpu::moeRoute(ctx, logits, ldl, n, bias, r, idx, weights);
}

void checkRouting(const MoERouting &r, bool withBias, uint32_t seed) {
  const int64_t n = 70, E = r.experts, K = r.topK, ldl = E + 3;
  std::mt19937 rng(seed);
  // Logits on a coarse grid, so scores (and group sums) tie often: the
  // tie-breaking must be the CPU's.
  std::uniform_int_distribution<int> grid(-8, 8);
  std::vector<float> logits(static_cast<size_t>(n * ldl)),
      bias(static_cast<size_t>(E));
  for (float &v : logits)
    v = 0.25f * float(grid(rng));
  for (float &v : bias)
    v = 0.125f * float(grid(rng));
  const float *b = withBias ? bias.data() : nullptr;

  std::vector<int32_t> idx(size_t(n * K), -1), wantIdx(size_t(n * K), -1);
  std::vector<float> w(size_t(n * K), NAN), wantW(size_t(n * K), NAN);
  emu::launchShared(dim3(unsigned((n + kRouteWarps - 1) / kRouteWarps)),
                    dim3(32 * kRouteWarps), routeSharedBytes(E), routeKernel,
                    static_cast<const float *>(logits.data()), ldl, n, b, r,
                    idx.data(), w.data());

  cpuRoute(logits.data(), ldl, n, b, r, wantIdx.data(), wantW.data());
  EXPECT_EQ(idx, wantIdx);
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NEAR(w[i], wantW[i], 1e-6 * std::max(1.0f, std::fabs(wantW[i])))
        << "pair " << i;
}

TEST(CudaEmuRoute, V3SigmoidNoauxTC) {
  // DeepSeek-V3's scheme at 64 experts: 8 groups, keep 4, top 8.
  const MoERouting r = makeRouting(64, 8, 8, 4, MoERouting::Sigmoid,
                                   MoERouting::NoauxTC, true, 2.5);
  checkRouting(r, true, 11);
  checkRouting(r, false, 12);
}

TEST(CudaEmuRoute, FullScale) {
  // DeepSeek-V3 itself (256 experts, 8 groups of 32, keep 4, top 8), V2's
  // 160 experts (8 groups of 20: lanes own unequal counts), and more groups
  // than lanes (64 groups of 2; 128 of 1, the group score its only expert).
  checkRouting(makeRouting(256, 8, 8, 4, MoERouting::Sigmoid,
                           MoERouting::NoauxTC, true, 2.5),
               true, 21);
  checkRouting(makeRouting(160, 6, 8, 3, MoERouting::Softmax,
                           MoERouting::GroupLimitedGreedy, false, 16.0),
               false, 22);
  checkRouting(makeRouting(128, 8, 64, 5, MoERouting::Sigmoid,
                           MoERouting::NoauxTC, true, 1.0),
               true, 23);
  checkRouting(makeRouting(128, 4, 128, 40, MoERouting::Sigmoid,
                           MoERouting::NoauxTC, true, 1.0),
               true, 24);
}

TEST(CudaEmuRoute, V2SoftmaxGreedyAndGroupLimited) {
  checkRouting(makeRouting(16, 6, 1, 1, MoERouting::Softmax,
                           MoERouting::Greedy, false, 1.0),
               false, 13);
  checkRouting(makeRouting(32, 4, 4, 2, MoERouting::Softmax,
                           MoERouting::GroupLimitedGreedy, false, 16.0),
               false, 14);
}

/// gateRouteKernel (moeGate at decode): its logits against a double
/// product, its routing against the CPU's on those logits; twice, so the
/// finished-block counter must have been reset by the first launch.
template <class WT>
void checkGateRoute(const MoERouting &r, int64_t n, int64_t hidden,
                    uint32_t seed) {
  const int64_t E = r.experts, K = r.topK, ldx = hidden + 4;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(size_t(n * ldx)), wf(size_t(E * hidden)),
      bias(static_cast<size_t>(E));
  for (float &v : x)
    v = u(rng);
  for (float &v : wf)
    v = bf16Round(0.2f * u(rng));
  for (float &v : bias)
    v = 0.05f * u(rng);
  std::vector<WT> w(wf.size());
  for (size_t i = 0; i < wf.size(); ++i)
    w[i] = WT(wf[i]);
  unsigned counter = 0;
  const bool vec = hidden % 8 == 0 && ldx % 4 == 0;
  for (int launch = 0; launch < 2; ++launch) {
    SCOPED_TRACE(testing::Message() << "launch " << launch);
    std::vector<float> logits(size_t(n * E), NAN), weights(size_t(n * K), NAN),
        wantW(size_t(n * K), NAN);
    std::vector<int32_t> idx(size_t(n * K), -1), wantIdx(size_t(n * K), -1);
    emu::launchShared(
        dim3(unsigned((E + 7) / 8)), dim3(256), gateRouteSharedBytes(E),
        gateRouteKernel<WT, 32>, Rows{x.data(), ldx, nullptr, 1},
        static_cast<const WT *>(w.data()), n, hidden, logits.data(), vec,
        static_cast<const float *>(bias.data()), r, idx.data(), weights.data(),
        &counter);
    EXPECT_EQ(counter, 0u);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t e = 0; e < E; ++e) {
        double want = 0;
        for (int64_t c = 0; c < hidden; ++c)
          want += double(x[size_t(t * ldx + c)]) * wf[size_t(e * hidden + c)];
        ASSERT_NEAR(logits[size_t(t * E + e)], want, 1e-5)
            << "token " << t << " expert " << e;
      }
    cpuRoute(logits.data(), E, n, bias.data(), r, wantIdx.data(), wantW.data());
    EXPECT_EQ(idx, wantIdx);
    for (size_t i = 0; i < weights.size(); ++i)
      EXPECT_NEAR(weights[i], wantW[i],
                  1e-6 * std::max(1.0f, std::fabs(wantW[i])))
          << "pair " << i;
  }
}

TEST(CudaEmuRoute, GateAndRouteInOneLaunch) {
  // V3's routing at 64 and 256 experts; 12 tokens (more than the last
  // block's 8 warps) and 1; K unaligned (70: the scalar path).
  const MoERouting v3 = makeRouting(64, 6, 8, 4, MoERouting::Sigmoid,
                                    MoERouting::NoauxTC, true, 2.5);
  checkGateRoute<float>(v3, 12, 72, 31);
  checkGateRoute<__nv_bfloat16>(v3, 1, 72, 32);
  checkGateRoute<__nv_bfloat16>(v3, 3, 70, 33);
  checkGateRoute<__nv_bfloat16>(makeRouting(256, 8, 8, 4, MoERouting::Sigmoid,
                                            MoERouting::NoauxTC, true, 2.5),
                                2, 64, 34);
}

//===----------------------------------------------------------------------===//
// Routed experts
//===----------------------------------------------------------------------===//

/// count values drawn uniformly from [-1, 1).
std::vector<float> uniformVector(std::mt19937 &rng, int64_t count) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float &x : v)
    x = u(rng);
  return v;
}

/// One moeExpertsRange call's data: n tokens of x [n, ldx], topK experts
/// each of E, gate/up [N, K], down [K, N] (here K = hidden, N = inter).
struct MoECase {
  int64_t n, topK, experts, lo, count, hidden, inter, ldx;
  bool bf16;      // weights in bf16 (tensor-core GEMM) or float32
  uint32_t seed;

  std::vector<float> x, weights;
  std::vector<int32_t> idx;
  std::vector<std::vector<float>> gate, up, down; // float values of weights
  std::vector<std::vector<__nv_bfloat16>> gateB, upB, downB;
  std::vector<std::vector<float>> gateF, upF, downF;
  std::vector<const void *> table; // [gate[count], up[count], down[count]]

  void make() {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    x.assign(size_t(n * ldx), 0.0f);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < hidden; ++c)
        x[size_t(t * ldx + c)] = u(rng);
    idx.resize(size_t(n * topK));
    weights.resize(size_t(n * topK));
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int32_t> all(static_cast<size_t>(experts));
      for (int64_t e = 0; e < experts; ++e)
        all[size_t(e)] = int32_t(e);
      std::shuffle(all.begin(), all.end(), rng);
      for (int64_t k = 0; k < topK; ++k) {
        idx[size_t(t * topK + k)] = all[size_t(k)];
        weights[size_t(t * topK + k)] = 0.5f + 0.5f * u(rng);
      }
    }
    auto matrix = [&](int64_t rows, int64_t cols, float scale) {
      std::vector<float> m(size_t(rows * cols));
      for (float &v : m)
        v = bf16Round(scale * u(rng)); // exact in either dtype
      return m;
    };
    for (int64_t e = 0; e < experts; ++e) {
      gate.push_back(matrix(inter, hidden, 0.3f));
      up.push_back(matrix(inter, hidden, 0.3f));
      down.push_back(matrix(hidden, inter, 0.3f));
    }
    auto toB = [](const std::vector<float> &m) {
      std::vector<__nv_bfloat16> b(m.size());
      for (size_t i = 0; i < m.size(); ++i)
        b[i] = __float2bfloat16(m[i]);
      return b;
    };
    table.assign(size_t(3 * count), nullptr);
    for (int64_t e = 0; e < count; ++e) {
      const size_t g = size_t(lo + e);
      if (bf16) {
        gateB.push_back(toB(gate[g]));
        upB.push_back(toB(up[g]));
        downB.push_back(toB(down[g]));
      } else {
        gateF.push_back(gate[g]);
        upF.push_back(up[g]);
        downF.push_back(down[g]);
      }
    }
    for (int64_t e = 0; e < count; ++e) {
      table[size_t(e)] = bf16 ? static_cast<const void *>(gateB[size_t(e)].data())
                              : gateF[size_t(e)].data();
      table[size_t(count + e)] = bf16 ? static_cast<const void *>(upB[size_t(e)].data())
                                      : upF[size_t(e)].data();
      table[size_t(2 * count + e)] =
          bf16 ? static_cast<const void *>(downB[size_t(e)].data())
               : downF[size_t(e)].data();
    }
  }

  /// y [n, hidden]: experts [lo, lo + count) only; GEMM inputs rounded to
  /// bf16 where the kernel rounds them (tensor cores).
  std::vector<float> reference(bool roundInputs) const {
    std::vector<float> y(size_t(n * hidden), 0.0f);
    auto in = [&](float v) { return roundInputs ? bf16Round(v) : v; };
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < topK; ++k) {
        const int64_t e = idx[size_t(t * topK + k)];
        if (e < lo || e >= lo + count)
          continue;
        std::vector<float> h(static_cast<size_t>(inter));
        for (int64_t j = 0; j < inter; ++j) {
          double g = 0, v = 0;
          for (int64_t c = 0; c < hidden; ++c) {
            const double xv = in(x[size_t(t * ldx + c)]);
            g += xv * gate[size_t(e)][size_t(j * hidden + c)];
            v += xv * up[size_t(e)][size_t(j * hidden + c)];
          }
          h[size_t(j)] = in(silu(float(g)) * float(v));
        }
        for (int64_t c = 0; c < hidden; ++c) {
          double o = 0;
          for (int64_t j = 0; j < inter; ++j)
            o += double(h[size_t(j)]) * down[size_t(e)][size_t(c * inter + j)];
          y[size_t(t * hidden + c)] += weights[size_t(t * topK + k)] * float(o);
        }
      }
    return y;
  }
};

/// sortPairsKernel over idx (the pairs' experts; [lo, lo + E) are here),
/// checked against a serial count and scan.
void checkSort(const std::vector<int32_t> &idx, int64_t lo, int64_t E,
               int64_t tileRows, std::vector<int32_t> &offsets,
               std::vector<int32_t> &tileOffsets, std::vector<int32_t> &active,
               std::vector<int32_t> &rowOf, std::vector<int32_t> &slotOf) {
  using namespace dsrt::cuda::moe;
  const int64_t pairs = int64_t(idx.size());
  emu::launchShared(dim3(1), dim3(1024), sortSharedBytes(E), sortPairsKernel,
                    idx.data(), pairs, lo, E, tileRows, offsets.data(),
                    tileOffsets.data(), active.data(), rowOf.data(),
                    slotOf.data());
  std::vector<int32_t> count(size_t(E), 0), wantOffsets(1, 0), wantTiles(1, 0),
      wantActive;
  for (int32_t e : idx)
    if (e - lo >= 0 && e - lo < E)
      ++count[size_t(e - lo)];
  for (int64_t e = 0; e < E; ++e) {
    const int32_t c = count[size_t(e)];
    wantOffsets.push_back(wantOffsets.back() + c);
    wantTiles.push_back(wantTiles.back() +
                        int32_t((c + tileRows - 1) / tileRows));
    if (c > 0)
      wantActive.push_back(int32_t(e));
  }
  wantActive.resize(size_t(E), -1);
  EXPECT_EQ(std::vector<int32_t>(offsets.begin(), offsets.begin() + E + 1),
            wantOffsets);
  EXPECT_EQ(
      std::vector<int32_t>(tileOffsets.begin(), tileOffsets.begin() + E + 1),
      wantTiles);
  EXPECT_EQ(std::vector<int32_t>(active.begin(), active.begin() + E),
            wantActive);
  // Every pair in range has a distinct slot, each expert's slots contiguous.
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t e = idx[size_t(p)] - lo;
    if (e < 0 || e >= E) {
      EXPECT_EQ(slotOf[size_t(p)], -1);
      continue;
    }
    EXPECT_GE(slotOf[size_t(p)], offsets[size_t(e)]);
    EXPECT_LT(slotOf[size_t(p)], offsets[size_t(e + 1)]);
    EXPECT_EQ(rowOf[size_t(slotOf[size_t(p)])], p);
  }
}

TEST(CudaEmuMoE, SortPairsManyExperts) {
  // More experts than threads (the scans carry across 1024-expert chunks),
  // a rank's range [lo, lo + E) of them, and empty experts among full ones.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> expert(0, 2999);
  std::vector<int32_t> idx(5000);
  for (int32_t &e : idx)
    e = expert(rng) % 7 == 0 ? 2500 : expert(rng);
  for (int64_t lo : {0, 400}) {
    const int64_t E = 2500;
    std::vector<int32_t> offsets(size_t(E + 1)), tiles(size_t(E + 1)),
        active(size_t(E + 1), 7777), rowOf(idx.size()), slotOf(idx.size());
    checkSort(idx, lo, E, 64, offsets, tiles, active, rowOf, slotOf);
  }
}

/// Gemv: a warp per column; GemvShared: four columns per warp; GemvTc: 16
/// columns per warp on tensor cores (bf16 weights, inputs rounded to bf16).
enum class Path { Gemv, GemvShared, GemvTc, Simt, TensorCores, Batched };

/// What cublasGemmBatchedEx computes for runBatch (MoE.cu), over the
/// pointer arrays at a, b, c: entry i, C_i [rows, N] (row-major) = B_i
/// [rows, K] (row-major, the tile) times A_i [N, K]^T (the weight).
template <class WT>
void hostBatch(const void *const *a, const void *const *b, void *const *c,
               int64_t count, int64_t rows, int64_t N, int64_t K) {
  for (int64_t i = 0; i < count; ++i) {
    const WT *w = static_cast<const WT *>(a[i]);
    const WT *t = static_cast<const WT *>(b[i]);
    float *out = static_cast<float *>(c[i]);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t col = 0; col < N; ++col) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += double(toFloat(t[r * K + k])) * toFloat(w[col * K + k]);
        out[r * N + col] = float(acc);
      }
  }
}

/// A shared expert for runExperts' GEMV paths: gate/up [inter, hidden],
/// down [hidden, inter], in the routed experts' storage.
struct SharedCase {
  int64_t inter;
  std::vector<float> gate, up, down; // float values
  std::vector<__nv_bfloat16> gateB, upB, downB;

  SharedCase(int64_t inter, int64_t hidden, uint32_t seed) : inter(inter) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-0.3f, 0.3f);
    auto matrix = [&](int64_t n) {
      std::vector<float> m(static_cast<size_t>(n));
      for (float &v : m)
        v = bf16Round(u(rng));
      return m;
    };
    gate = matrix(inter * hidden);
    up = matrix(inter * hidden);
    down = matrix(hidden * inter);
    for (const float v : gate)
      gateB.push_back(__float2bfloat16(v));
    for (const float v : up)
      upB.push_back(__float2bfloat16(v));
    for (const float v : down)
      downB.push_back(__float2bfloat16(v));
  }
  const void *ptr(const std::vector<float> &f,
                  const std::vector<__nv_bfloat16> &b, bool bf16) const {
    return bf16 ? static_cast<const void *>(b.data()) : f.data();
  }

  /// y [n, hidden] += the shared expert of x (roundInputs: x and h rounded
  /// to bf16, as the tensor-core GEMV rounds them).
  void addTo(const MoECase &m, std::vector<float> &y,
             bool roundInputs = false) const {
    auto in = [&](float v) { return roundInputs ? bf16Round(v) : v; };
    for (int64_t t = 0; t < m.n; ++t) {
      std::vector<float> h(static_cast<size_t>(inter));
      for (int64_t j = 0; j < inter; ++j) {
        double g = 0, v = 0;
        for (int64_t c = 0; c < m.hidden; ++c) {
          const double xv = in(m.x[size_t(t * m.ldx + c)]);
          g += xv * gate[size_t(j * m.hidden + c)];
          v += xv * up[size_t(j * m.hidden + c)];
        }
        h[size_t(j)] = silu(float(g)) * float(v);
      }
      for (int64_t c = 0; c < m.hidden; ++c) {
        double o = 0;
        for (int64_t j = 0; j < inter; ++j)
          o += double(in(h[size_t(j)])) * down[size_t(c * inter + j)];
        y[size_t(t * m.hidden + c)] += float(o);
      }
    }
  }
};

/// The arrays of a fused sort (the gate/up GEMV's sortInBlock), against
/// sortPairsKernel's: the same offsets and active experts, every pair of
/// this rank in its expert's slots (in pair order), the others at -1.
void expectSortedLike(const MoECase &m, const std::vector<int32_t> &offsets,
                      const std::vector<int32_t> &active,
                      const std::vector<int32_t> &rowOf,
                      const std::vector<int32_t> &slotOf,
                      const std::vector<int32_t> &wantOffsets,
                      const std::vector<int32_t> &wantActive) {
  EXPECT_EQ(offsets, wantOffsets);
  EXPECT_EQ(active, wantActive);
  std::vector<int32_t> next(wantOffsets); // the next slot of each expert
  for (int64_t p = 0; p < int64_t(m.idx.size()); ++p) {
    const int64_t e = m.idx[size_t(p)] - m.lo;
    if (e < 0 || e >= m.count) {
      EXPECT_EQ(slotOf[size_t(p)], -1) << "pair " << p;
      continue;
    }
    EXPECT_EQ(slotOf[size_t(p)], next[size_t(e)]++) << "pair " << p;
    EXPECT_EQ(rowOf[size_t(slotOf[size_t(p)])], p);
  }
}

/// runExperts' launch sequence (MoE.cu) over the emulator; with `shared`
/// (GEMV paths), the shared expert's blocks ride in the GEMV launches; with
/// `fusedSort` (GEMV paths), the gate/up launch sorts the pairs itself;
/// with `norm` (GEMV paths), the down launch's last block combines and
/// normalizes (GemvCombine, its counter `*counter`) instead of the combine
/// launch.
template <class WT>
std::vector<float>
runExperts(const MoECase &m, Path path, const SharedCase *shared = nullptr,
           bool fusedSort = false, const NormEpilogue *norm = nullptr,
           unsigned *counter = nullptr) {
  using namespace dsrt::cuda::moe;
  const int64_t pairs = m.n * m.topK, E = m.count;
  constexpr bool bf16W = std::is_same<WT, __nv_bfloat16>::value;
  const int64_t tileRows =
      path == Path::TensorCores || (path == Path::Batched && bf16W) ? kTcBM
                                                                    : kBM;
  const size_t slots = size_t(E + 1);
  std::vector<int32_t> offsets(slots), tileOffsets(slots), active(slots, 7777),
      rowOf(static_cast<size_t>(pairs)), slotOf(static_cast<size_t>(pairs));
  checkSort(m.idx, m.lo, E, tileRows, offsets, tileOffsets, active, rowOf,
            slotOf);
  const int64_t rows = offsets[size_t(E)];
  std::vector<float> h(size_t(std::max<int64_t>(rows, 1) * m.inter), NAN),
      yp(size_t(std::max<int64_t>(rows, 1) * m.hidden), NAN),
      y(size_t(m.n * m.hidden), NAN);
  std::vector<int32_t> padOf;
  const void *const *gate = m.table.data(), *const *up = gate + E,
                    *const *down = gate + 2 * E;
  const Rows xRows{m.x.data(), m.ldx, rowOf.data(), m.topK};
  const Rows hRows{h.data(), m.inter, nullptr, 1};
  const bool vecX = m.hidden % 8 == 0 && m.ldx % 4 == 0,
             vecH = m.inter % 8 == 0;
  const int64_t si = shared ? shared->inter : 0;
  std::vector<float> sh(size_t(m.n * std::max<int64_t>(si, 1)), NAN),
      ys(size_t(m.n * m.hidden), NAN);
  if (path == Path::Gemv || path == Path::GemvShared || path == Path::GemvTc) {
    const unsigned blocks = unsigned(std::min(E, pairs));
    const bool bf16 = std::is_same<WT, __nv_bfloat16>::value;
    DenseGemv up1{}, down1{};
    if (shared) {
      up1 = {Rows{m.x.data(), m.ldx, nullptr, 1},
             shared->ptr(shared->gate, shared->gateB, bf16),
             shared->ptr(shared->up, shared->upB, bf16),
             m.n,
             m.hidden,
             si,
             sh.data(),
             si,
             vecX,
             blocks};
      down1 = {Rows{sh.data(), si, nullptr, 1},
               shared->ptr(shared->down, shared->downB, bf16),
               nullptr,
               m.n,
               si,
               m.hidden,
               ys.data(),
               m.hidden,
               si % 8 == 0,
               blocks};
    } else {
      up1.firstBlock = down1.firstBlock = blocks;
    }
    const std::vector<int32_t> wantOffsets(offsets), wantActive(active);
    GemvSort sort{nullptr, pairs, m.lo, E};
    if (fusedSort) { // the launch must write all of what checkSort made
      sort.idx = m.idx.data();
      std::fill(offsets.begin(), offsets.end(), 7777);
      std::fill(active.begin(), active.end(), 7777);
      std::fill(rowOf.begin(), rowOf.end(), 7777);
      std::fill(slotOf.begin(), slotOf.end(), 7777);
    }
    GemvSort none = sort;
    none.idx = nullptr;
    auto gemvs = [&](auto lanes) {
      constexpr int L = decltype(lanes)::value;
      const int64_t perBlock = 8 * gemvColumnsPerWarp<L>();
      const unsigned yUp = unsigned((m.inter + perBlock - 1) / perBlock),
                     yDown = unsigned((m.hidden + perBlock - 1) / perBlock);
      const unsigned xUp = shared ? denseGemvBlocks<L>(si, yUp) : 0,
                     xDown = shared ? denseGemvBlocks<L>(m.hidden, yDown) : 0;
      if (fusedSort)
        emu::launchShared(
            dim3(blocks + xUp, yUp), dim3(256), gemvSortSharedBytes(E, pairs),
            groupedGemvFor<WT, true, L, true>(), xRows, gate, up,
            offsets.data(), active.data(), m.hidden, m.inter, h.data(), m.inter,
            vecX, up1, sort, rowOf.data(), slotOf.data(), GemvCombine{});
      else
        emu::launch(dim3(blocks + xUp, yUp), dim3(256),
                    groupedGemvFor<WT, true, L, false>(), xRows, gate, up,
                    offsets.data(), active.data(), m.hidden, m.inter, h.data(),
                    m.inter, vecX, up1, none, nullptr, nullptr, GemvCombine{});
      GemvCombine combine{};
      if (norm)
        combine = {yp.data(),
                   m.hidden,
                   slotOf.data(),
                   m.weights.data(),
                   m.topK,
                   m.n,
                   shared ? ys.data() : nullptr,
                   m.hidden,
                   y.data(),
                   m.hidden,
                   *norm,
                   counter};
      if (norm)
        emu::launch(dim3(blocks + xDown, yDown), dim3(256),
                    groupedGemvFor<WT, false, L, false, true>(), hRows, down,
                    nullptr, offsets.data(), active.data(), m.inter, m.hidden,
                    yp.data(), m.hidden, vecH, down1, none, nullptr, nullptr,
                    combine);
      else
        emu::launch(dim3(blocks + xDown, yDown), dim3(256),
                    groupedGemvFor<WT, false, L, false>(), hRows, down, nullptr,
                    offsets.data(), active.data(), m.inter, m.hidden, yp.data(),
                    m.hidden, vecH, down1, none, nullptr, nullptr, combine);
    };
    if (path == Path::Gemv)
      gemvs(std::integral_constant<int, 32>());
    else if (path == Path::GemvShared)
      gemvs(std::integral_constant<int, 8>());
    else if constexpr (std::is_same<WT, __nv_bfloat16>::value)
      gemvs(std::integral_constant<int, kMmaLanes>());
    else
      ADD_FAILURE() << "the tensor-core GEMV takes bf16 weights only";
    if (fusedSort)
      expectSortedLike(m, offsets, active, rowOf, slotOf, wantOffsets,
                       wantActive);
    if (norm)
      return y;
  } else if (path == Path::Batched) {
    // runBatch's sequence, cuBLAS's batches as hostBatch over the pointer
    // arrays the gather kernel wrote. Every padded row of the sort's tiles
    // must be written (zeros past an expert's rows); the entries past the
    // last tile write only the trash tile.
    const int64_t bound = tileBound(pairs, E, tileRows), R = bound * tileRows,
                  used = tileOffsets[size_t(E)] * tileRows;
    std::vector<WT> xs(size_t(R * m.hidden), WT(NAN)),
        hs(size_t(R * m.inter), WT(NAN));
    std::vector<float> gu(size_t(2 * R * m.inter), NAN),
        trash(size_t(tileRows * std::max(m.hidden, m.inter)), NAN);
    yp.assign(size_t(R * m.hidden), NAN);
    std::vector<const void *> ptr(size_t(9 * bound), nullptr);
    padOf.assign(size_t(pairs), -7);
    TileBatch b{xs.data(), gu.data(), gu.data() + R * m.inter,
                hs.data(), yp.data(), trash.data(),
                m.hidden,  m.inter,   bound,
                tileRows,  ptr.data()};
    emu::launch(dim3(unsigned(bound)), dim3(256), tileGatherKernel<WT>, xRows,
                offsets.data(), tileOffsets.data(), E, m.table.data(), b,
                padOf.data(), m.hidden % 4 == 0 && m.ldx % 4 == 0);
    EXPECT_LT(used, R) << "no entry past the last tile";
    EXPECT_EQ(std::count_if(xs.begin(), xs.begin() + used * m.hidden,
                            [](WT v) { return std::isnan(toFloat(v)); }),
              0)
        << "padded rows of x left unwritten";
    const void *const *p = ptr.data();
    void *const *pc = const_cast<void *const *>(p);
    hostBatch<WT>(p, p + 2 * bound, pc + 4 * bound, 2 * bound, tileRows,
                  m.inter, m.hidden);
    emu::launch(dim3(3), dim3(64), tileSwigluKernel<WT>, gu.data(),
                gu.data() + R * m.inter, tileOffsets.data() + E,
                tileRows * m.inter, hs.data());
    hostBatch<WT>(p + 6 * bound, p + 7 * bound, pc + 8 * bound, bound, tileRows,
                  m.hidden, m.inter);
    EXPECT_EQ(std::count(padOf.begin(), padOf.begin() + rows, -7), 0)
        << "sorted slots without a padded row";
  } else if (path == Path::TensorCores) {
    const unsigned tiles = unsigned(tileBound(pairs, E, kTcBM));
    emu::launch(dim3(unsigned((m.inter + kTcBN - 1) / kTcBN), tiles), dim3(256),
                groupedGemmTcKernel<true>, xRows, gate, up, offsets.data(),
                tileOffsets.data(), E, m.hidden, m.inter, h.data(), m.inter,
                vecX);
    emu::launch(dim3(unsigned((m.hidden + kTcBN - 1) / kTcBN), tiles), dim3(256),
                groupedGemmTcKernel<false>, hRows, down, nullptr,
                offsets.data(), tileOffsets.data(), E, m.inter, m.hidden,
                yp.data(), m.hidden, vecH);
  } else {
    const unsigned tiles = unsigned(tileBound(pairs, E, kBM));
    emu::launch(dim3(unsigned((m.inter + kBN - 1) / kBN), tiles), dim3(256),
                groupedGemmKernel<WT, true>, xRows, gate, up, offsets.data(),
                tileOffsets.data(), E, m.hidden, m.inter, h.data(), m.inter);
    emu::launch(dim3(unsigned((m.hidden + kBN - 1) / kBN), tiles), dim3(256),
                groupedGemmKernel<WT, false>, hRows, down, nullptr,
                offsets.data(), tileOffsets.data(), E, m.inter, m.hidden,
                yp.data(), m.hidden);
  }
  emu::launch(dim3(unsigned(m.n),
                   unsigned(std::min<int64_t>((m.hidden + 255) / 256, 16))),
              dim3(256), combineKernel, yp.data(), m.hidden, slotOf.data(),
              path == Path::Batched ? padOf.data() : nullptr, m.weights.data(),
              m.topK, shared ? static_cast<const float *>(ys.data()) : nullptr,
              m.hidden, y.data(), m.hidden);
  return y;
}

void expectClose(const std::vector<float> &got, const std::vector<float> &want,
                 double tol) {
  ASSERT_EQ(got.size(), want.size());
  double maxErr = 0, maxRef = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << "element " << i << " never written";
    maxErr = std::max(maxErr, double(std::fabs(got[i] - want[i])));
    maxRef = std::max(maxRef, double(std::fabs(want[i])));
  }
  EXPECT_GT(maxRef, 0.0);
  EXPECT_LE(maxErr, tol * maxRef) << "max error " << maxErr << " of " << maxRef;
}

MoECase makeCase(int64_t n, int64_t topK, int64_t experts, int64_t lo,
                 int64_t count, int64_t hidden, int64_t inter, int64_t ldx,
                 bool bf16, uint32_t seed) {
  MoECase m{};
  m.n = n, m.topK = topK, m.experts = experts, m.lo = lo, m.count = count;
  m.hidden = hidden, m.inter = inter, m.ldx = ldx, m.bf16 = bf16;
  m.seed = seed;
  m.make();
  return m;
}

// Shapes with every tail: rows that end mid-tile, columns past the last
// full tile, K past the last full step; an expert range (EP) leaving pairs
// out; an x stride wider than the row.
MoECase smallCase(bool bf16, int64_t hidden, uint32_t seed) {
  return makeCase(45, 3, 6, 1, 4, hidden, 80, hidden + 4, bf16, seed);
}

TEST(CudaEmuMoE, GroupedGemvFloat32) {
  MoECase m = smallCase(false, 72, 1);
  expectClose(runExperts<float>(m, Path::Gemv), m.reference(false), 1e-5);
}

TEST(CudaEmuMoE, GroupedGemvBf16Weights) {
  MoECase m = smallCase(true, 72, 2);
  expectClose(runExperts<__nv_bfloat16>(m, Path::Gemv), m.reference(false),
              1e-5);
}

TEST(CudaEmuMoE, GroupedGemvSharedInputsFloat32) {
  MoECase m = smallCase(false, 72, 8);
  expectClose(runExperts<float>(m, Path::GemvShared), m.reference(false), 1e-5);
}

TEST(CudaEmuMoE, GroupedGemvSharedInputsBf16Weights) {
  // inter 80 and hidden 72: the last warp's four columns run past N.
  MoECase m = smallCase(true, 72, 9);
  expectClose(runExperts<__nv_bfloat16>(m, Path::GemvShared),
              m.reference(false), 1e-5);
}

TEST(CudaEmuMoE, GroupedGemvFewerPairsThanExperts) {
  // Decode: one token's 3 pairs over 6 local experts of 8, so the grid has
  // blocks for 3 experts and each must find its expert in `active`.
  MoECase m = makeCase(1, 3, 8, 1, 6, 64, 48, 64, true, 7);
  m.idx = {6, 2, 0}; // expert 0 is another rank's
  expectClose(runExperts<__nv_bfloat16>(m, Path::Gemv), m.reference(false),
              1e-5);
}

TEST(CudaEmuMoE, GroupedGemvWithSharedExpert) {
  // The shared expert's blocks beside the routed ones (moeExpertsSharedW at
  // decode): inter 200 needs more column chunks than the routed grid's
  // height (extra x-blocks: 5 for gate/up at a warp per column, 4 at four
  // columns per warp), and its width differs from the routed experts';
  // n = 3 and 1 token.
  for (int64_t n : {3, 1})
    for (bool bf16 : {false, true}) {
      MoECase m = makeCase(n, 2, 8, 0, 8, 64, 40, 64, bf16, uint32_t(20 + n));
      const SharedCase shared(200, 64, uint32_t(30 + n));
      std::vector<float> want = m.reference(false);
      shared.addTo(m, want);
      for (Path p : {Path::Gemv, Path::GemvShared}) {
        SCOPED_TRACE(testing::Message()
                     << "n " << n << " bf16 " << bf16 << " shared inputs "
                     << (p == Path::GemvShared));
        expectClose(bf16 ? runExperts<__nv_bfloat16>(m, p, &shared)
                         : runExperts<float>(m, p, &shared),
                    want, 1e-5);
      }
    }
}

TEST(CudaEmuMoE, GroupedGemvSortsInItsBlocks) {
  // The decode path's fused sort (DS_CUDA_MOE_SORT=fused): the gate/up
  // launch's expert blocks each sort the pairs; the down launch and the
  // combine read what its blocks (0, 0) and (x, 0) wrote. An EP range
  // leaving pairs out, more pairs than a warp's ballot (45 x 3), fewer
  // pairs than experts, both lane layouts, the shared expert's blocks
  // beside them, and a rank none of whose experts was picked.
  for (bool bf16 : {false, true}) {
    MoECase m = smallCase(bf16, 72, uint32_t(40 + bf16));
    for (Path p : {Path::Gemv, Path::GemvShared}) {
      SCOPED_TRACE(testing::Message() << "bf16 " << bf16 << " shared inputs "
                                      << (p == Path::GemvShared));
      expectClose(bf16 ? runExperts<__nv_bfloat16>(m, p, nullptr, true)
                       : runExperts<float>(m, p, nullptr, true),
                  m.reference(false), 1e-5);
    }
  }
  MoECase few = makeCase(1, 3, 8, 1, 6, 64, 48, 64, true, 7);
  few.idx = {6, 2, 0};
  expectClose(runExperts<__nv_bfloat16>(few, Path::Gemv, nullptr, true),
              few.reference(false), 1e-5);
  MoECase m = makeCase(3, 2, 8, 0, 8, 64, 40, 64, false, 23);
  const SharedCase shared(200, 64, 33);
  std::vector<float> want = m.reference(false);
  shared.addTo(m, want);
  expectClose(runExperts<float>(m, Path::GemvShared, &shared, true), want,
              1e-5);
  // Every pair another rank's: the launch still writes -1 slots and an
  // empty active list, and the combine gives zeros.
  MoECase other = makeCase(2, 2, 8, 4, 4, 64, 40, 64, false, 24);
  other.idx = {0, 1, 2, 3};
  const std::vector<float> got =
      runExperts<float>(other, Path::Gemv, nullptr, true);
  EXPECT_EQ(std::count(got.begin(), got.end(), 0.0f), int64_t(got.size()));
}

TEST(CudaEmuMoE, GroupedGemvCombinesInItsLastBlock) {
  // DS_CUDA_MOE_COMBINE=fused: the down launch's last block to finish
  // combines each token's pairs and the shared expert's row, adds the
  // residual and normalizes, bit for bit the combine launch followed by
  // addRmsNormKernel; its counter back at zero. Tokens 1 to 3, both lane
  // layouts, with and without the shared expert's blocks (whose output the
  // last block reads too), the sum apart or over the residual, and blocks
  // with no expert (a rank none of whose experts was picked).
  // The tensor-core GEMV (bf16 only) at widths that are multiples of 64.
  using namespace dsrt::cuda::moe;
  for (int64_t n : {1, 2, 3})
    for (bool bf16 : {false, true})
      for (bool withShared : {false, true})
        for (Path p : {Path::Gemv, Path::GemvShared, Path::GemvTc}) {
          if (p == Path::GemvTc && !bf16)
            continue;
          SCOPED_TRACE(testing::Message()
                       << "n " << n << " bf16 " << bf16 << " shared expert "
                       << withShared << " path " << int(p));
          const bool tc = p == Path::GemvTc;
          const int64_t hidden = tc ? 320 : 300;
          MoECase m = makeCase(n, 2, 8, 1, 6, hidden, tc ? 64 : 40, hidden,
                               bf16, uint32_t(50 + n));
          if (n == 1)
            m.idx = {0, 7}; // both another rank's
          const SharedCase sharedCase(tc ? 192 : 200, hidden, uint32_t(60 + n));
          const SharedCase *shared = withShared ? &sharedCase : nullptr;
          auto run = [&](const NormEpilogue *e, unsigned *counter) {
            return bf16 ? runExperts<__nv_bfloat16>(m, p, shared, true, e,
                                                    counter)
                        : runExperts<float>(m, p, shared, true, e, counter);
          };
          const std::vector<float> y = run(nullptr, nullptr);
          std::mt19937 rng(uint32_t(70 + n));
          const std::vector<float> res = uniformVector(rng, n * m.hidden),
                                   normW = uniformVector(rng, m.hidden);
          std::vector<float> sum(y.size(), NAN), normed(y.size(), NAN);
          emu::launch(dim3(unsigned(n)), dim3(256),
                      dsrt::cuda::rowk::addRmsNormKernel, res.data(), m.hidden,
                      y.data(), m.hidden, m.hidden, normW.data(), 1e-6f,
                      sum.data(), m.hidden, normed.data(), m.hidden);
          {
            const bool inPlace = withShared == (p == Path::Gemv);
            std::vector<float> r2 = res, s2(y.size(), NAN), n2(y.size(), NAN);
            float *sumOut = inPlace ? r2.data() : s2.data();
            const NormEpilogue e{r2.data(), m.hidden, normW.data(), 1e-6f,
                                 sumOut,    m.hidden, n2.data(),    m.hidden};
            unsigned counter = 0;
            const std::vector<float> y2 = run(&e, &counter);
            EXPECT_EQ(counter, 0u) << "the last block resets its counter";
            for (size_t i = 0; i < y.size(); ++i) {
              ASSERT_EQ(y2[i], y[i]) << "y " << i << " in place " << inPlace;
              ASSERT_EQ(sumOut[i], sum[i]) << "sum " << i;
              ASSERT_EQ(n2[i], normed[i]) << "normed " << i;
            }
          }
        }
}

TEST(CudaEmuMoE, GroupedGemvTensorCores) {
  // 16 columns a warp on tensor cores, against products of bf16-rounded
  // inputs: 45 tokens x 3 over 4 local experts of 6 (about 34 rows an
  // expert: three passes of 16 rows, the last one partial; an EP range
  // leaving pairs out), an x stride wider than the row, K of two 64-wide
  // steps (gate/up) and of three (down: the second step of an unrolled
  // pair absent); then with the fused sort.
  MoECase m = makeCase(45, 3, 6, 1, 4, 128, 192, 132, true, 80);
  expectClose(runExperts<__nv_bfloat16>(m, Path::GemvTc), m.reference(true),
              1e-5);
  expectClose(runExperts<__nv_bfloat16>(m, Path::GemvTc, nullptr, true),
              m.reference(true), 1e-5);
  // Decode-sized batches (a row or two per expert; B tiles mostly empty),
  // and the shared expert's blocks beside the routed ones.
  for (int64_t n : {1, 2, 3}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    MoECase d = makeCase(n, 3, 8, 0, 8, 192, 64, 192, true, uint32_t(81 + n));
    expectClose(runExperts<__nv_bfloat16>(d, Path::GemvTc, nullptr, true),
                d.reference(true), 1e-5);
    const SharedCase shared(320, 192, uint32_t(85 + n));
    std::vector<float> want = d.reference(true);
    shared.addTo(d, want, true);
    expectClose(runExperts<__nv_bfloat16>(d, Path::GemvTc, &shared, true), want,
                1e-5);
  }
}

TEST(CudaEmuMoE, SimtGemmFloat32) {
  MoECase m = smallCase(false, 72, 3);
  expectClose(runExperts<float>(m, Path::Simt), m.reference(false), 1e-5);
}

TEST(CudaEmuMoE, TensorCoreGemm) {
  MoECase m = smallCase(true, 72, 4);
  expectClose(runExperts<__nv_bfloat16>(m, Path::TensorCores),
              m.reference(true), 1e-4);
}

TEST(CudaEmuMoE, TensorCoreGemmUnalignedK) {
  // K % 8 != 0: the element-wise staging path.
  MoECase m = smallCase(true, 70, 5);
  expectClose(runExperts<__nv_bfloat16>(m, Path::TensorCores),
              m.reference(true), 1e-4);
}

TEST(CudaEmuMoE, BatchedFloat32) {
  // f32 tiles of 32 rows; the expert range leaves pairs to other ranks
  // (their slots stay -1, and no padded row); x rows wider than hidden.
  MoECase m = smallCase(false, 72, 11);
  expectClose(runExperts<float>(m, Path::Batched), m.reference(false), 1e-5);
}

TEST(CudaEmuMoE, BatchedBf16Weights) {
  // bf16: x and h rounded as the tensor cores' inputs are; hidden 70: the
  // gather's element-wise path.
  for (int64_t hidden : {72, 70}) {
    MoECase m = smallCase(true, hidden, uint32_t(12 + hidden));
    expectClose(runExperts<__nv_bfloat16>(m, Path::Batched), m.reference(true),
                1e-4);
  }
}

TEST(CudaEmuMoE, BatchedManyRowsPerExpert) {
  // Experts of several 64-row tiles, one expert with none: tile i's expert
  // is found past the empty one; tiles past the last multiply zeros.
  MoECase m = makeCase(150, 2, 3, 0, 3, 64, 64, 64, true, 13);
  for (int64_t t = 0; t < m.n; ++t)
    m.idx[size_t(t * 2)] = 0, m.idx[size_t(t * 2 + 1)] = 1;
  expectClose(runExperts<__nv_bfloat16>(m, Path::Batched), m.reference(true),
              1e-4);
}

TEST(CudaEmuMoE, CombineWithNormEqualsCombineThenAddRmsNorm) {
  // moeExpertsSharedNormW's combine at decode: bit for bit the combine
  // followed by addRmsNormKernel; hidden 300 > 256 threads, a pair of
  // another rank (slot -1), and the sum written over the residual.
  using namespace dsrt::cuda::moe;
  const int64_t n = 3, hidden = 300, K = 2, ld = hidden + 2;
  std::mt19937 rng(17);
  auto random = [&](int64_t count) { return uniformVector(rng, count); };
  const std::vector<float> yp = random(5 * hidden), w = random(n * K),
                           shared = random(n * hidden), res = random(n * ld),
                           normW = random(hidden);
  const std::vector<int32_t> slotOf = {4, 0, -1, 2, 3, 1};
  std::vector<float> y(size_t(n * ld), NAN), sum(size_t(n * ld), NAN),
      normed(size_t(n * ld), NAN);
  emu::launch(dim3(unsigned(n), 2), dim3(256), combineKernel, yp.data(), hidden,
              slotOf.data(), static_cast<const int32_t *>(nullptr), w.data(), K,
              shared.data(), hidden, y.data(), ld);
  emu::launch(dim3(unsigned(n)), dim3(256), dsrt::cuda::rowk::addRmsNormKernel,
              res.data(), ld, static_cast<const float *>(y.data()), ld, hidden,
              normW.data(), 1e-6f, sum.data(), ld, normed.data(), ld);
  for (bool inPlace : {false, true}) {
    SCOPED_TRACE(inPlace ? "sum over the residual" : "sum apart");
    std::vector<float> r2 = res, y2(size_t(n * ld), NAN),
                       s2(size_t(n * ld), NAN), n2(size_t(n * ld), NAN);
    float *sumOut = inPlace ? r2.data() : s2.data();
    const NormEpilogue e{r2.data(), ld, normW.data(), 1e-6f,
                         sumOut,    ld, n2.data(),    ld};
    emu::launch(dim3(unsigned(n)), dim3(256), combineNormKernel, yp.data(),
                hidden, slotOf.data(), w.data(), K, shared.data(), hidden,
                y2.data(), ld, e);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < hidden; ++c) {
        const size_t i = size_t(t * ld + c);
        ASSERT_EQ(y2[i], y[i]) << t << "," << c;
        ASSERT_EQ(sumOut[i], sum[i]) << t << "," << c;
        ASSERT_EQ(n2[i], normed[i]) << t << "," << c;
      }
  }
}

TEST(CudaEmuMoE, TensorCoreGemmManyRowsPerExpert) {
  // More than one 64-row tile per expert, one expert with no rows.
  MoECase m = makeCase(150, 2, 3, 0, 3, 64, 64, 64, true, 6);
  for (int64_t t = 0; t < m.n; ++t) // nobody picks expert 2
    m.idx[size_t(t * 2)] = 0, m.idx[size_t(t * 2 + 1)] = 1;
  expectClose(runExperts<__nv_bfloat16>(m, Path::TensorCores),
              m.reference(true), 1e-4);
}

//===----------------------------------------------------------------------===//
// Dense GEMV (Gemm.cu's path for a few rows)
//===----------------------------------------------------------------------===//

/// denseGemvKernel over n rows of x [n, ldx] (K used) and weights [N, K]
/// (values exact in bf16, held as WT), against a double-precision product;
/// output columns ldo > N keep their NaN. accumulate: the product is added
/// to what the output held.
template <class WT, bool GATED, int LANES>
void checkDenseGemv(int64_t n, int64_t K, int64_t N, int64_t ldx, uint32_t seed,
                    bool accumulate = false) {
  // The tensor-core GEMV multiplies x rounded to bf16.
  auto in = [](float v) { return LANES == kMmaLanes ? bf16Round(v) : v; };
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(size_t(n * ldx), NAN), wa(size_t(N * K)),
      wb(size_t(N * K));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < K; ++k)
      x[size_t(t * ldx + k)] = u(rng);
  for (size_t i = 0; i < wa.size(); ++i)
    wa[i] = bf16Round(0.3f * u(rng)), wb[i] = bf16Round(0.3f * u(rng));
  std::vector<WT> a(wa.size()), b(wb.size());
  for (size_t i = 0; i < wa.size(); ++i)
    a[i] = WT(wa[i]), b[i] = WT(wb[i]);
  const int64_t ldo = N + 3;
  std::vector<float> out(size_t(n * ldo), NAN), want(size_t(n * N));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < N; ++c) {
      const float base = 8.0f * u(rng);
      if (accumulate)
        out[size_t(t * ldo + c)] = base;
      double p = 0, q = 0;
      for (int64_t k = 0; k < K; ++k) {
        p += double(in(x[size_t(t * ldx + k)])) * wa[size_t(c * K + k)];
        q += double(in(x[size_t(t * ldx + k)])) * wb[size_t(c * K + k)];
      }
      want[size_t(t * N + c)] = (accumulate ? base : 0.0f) +
                                (GATED ? silu(float(p)) * float(q) : float(p));
    }
  const bool vec = K % 8 == 0 && ldx % 4 == 0;
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  emu::launch(dim3(unsigned((N + perBlock - 1) / perBlock)), dim3(256),
              denseGemvKernel<WT, GATED, LANES>,
              Rows{x.data(), ldx, nullptr, 1}, a.data(),
              GATED ? b.data() : nullptr, n, K, N, out.data(), ldo, vec,
              accumulate);
  std::vector<float> got(size_t(n * N));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < ldo; ++c) {
      if (c < N)
        got[size_t(t * N + c)] = out[size_t(t * ldo + c)];
      else
        EXPECT_TRUE(std::isnan(out[size_t(t * ldo + c)]))
            << "row " << t << " written past column " << N;
    }
  expectClose(got, want, 1e-5);
}

TEST(CudaEmuGemv, DenseBf16) {
  // 16-byte loads, K past the last 4-load step; one row, then a full group
  // of 8, then 11 rows (a second pass over the weights).
  for (int64_t n : {1, 8, 11})
    checkDenseGemv<__nv_bfloat16, false, 32>(n, 1032, 37, 1036, uint32_t(n));
}

TEST(CudaEmuGemv, DenseFloat32Gated) {
  checkDenseGemv<float, true, 32>(3, 264, 21, 268, 12);
}

TEST(CudaEmuGemv, DenseUnalignedK) {
  // K % 8 != 0: the element-wise path.
  checkDenseGemv<__nv_bfloat16, true, 32>(2, 70, 19, 70, 13);
}

TEST(CudaEmuGemv, DenseSharedInputs) {
  // Four columns per warp: 37 and 21 columns end mid-warp (columns past N
  // must still join the shuffles), K past a 4-load step of 64 elements
  // (1032 = 4 * 256 + 8), the element-wise path.
  for (int64_t n : {1, 8, 11})
    checkDenseGemv<__nv_bfloat16, false, 8>(n, 1032, 37, 1036,
                                            uint32_t(20 + n));
  checkDenseGemv<float, true, 8>(3, 264, 21, 268, 14);
  checkDenseGemv<__nv_bfloat16, true, 8>(2, 70, 19, 70, 15);
}

TEST(CudaEmuGemv, DenseAccumulate) {
  // y += x W^T (linearAddW): both lane layouts, both load paths.
  checkDenseGemv<__nv_bfloat16, false, 32>(1, 1032, 37, 1036, 30, true);
  checkDenseGemv<float, false, 8>(5, 264, 21, 268, 31, true);
  checkDenseGemv<__nv_bfloat16, false, 32>(2, 70, 19, 70, 32, true);
}

TEST(CudaEmuGemv, DenseTensorCores) {
  // 16 columns a warp: 72 columns end mid-group (the lanes' second column
  // past N loads nothing and stores nothing), 37 mid-warp; 1 row, 8 (one B
  // tile), 11, 16 (two tiles), 19 (a second pass over the weights); K of
  // one 64-wide step, of two and of five; gated; accumulating.
  for (int64_t n : {1, 8, 11, 16, 19})
    checkDenseGemv<__nv_bfloat16, false, kMmaLanes>(n, 320, 72, 324,
                                                    uint32_t(40 + n));
  checkDenseGemv<__nv_bfloat16, true, kMmaLanes>(3, 64, 37, 68, 46);
  checkDenseGemv<__nv_bfloat16, true, kMmaLanes>(17, 128, 72, 128, 47);
  checkDenseGemv<__nv_bfloat16, false, kMmaLanes>(5, 128, 40, 132, 48, true);
}

/// denseGemvNormKernel (linearNormW at decode): bit for bit
/// denseGemvKernel, then addRmsNormKernel over its output, in the block that
/// counts last; the counter is back at 0 after each launch, so a second
/// launch finishes the same way. inPlace: the sum over the residual.
template <class WT, int LANES>
void checkGemvNorm(int64_t n, int64_t K, int64_t N, uint32_t seed,
                   bool inPlace) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t ldx = K + 4, ldo = N + 3, ld = N + 1;
  std::vector<float> x(size_t(n * ldx)), res(size_t(n * ld)),
      normW(static_cast<size_t>(N));
  for (float &v : x)
    v = u(rng);
  for (float &v : res)
    v = u(rng);
  for (float &v : normW)
    v = u(rng);
  std::vector<WT> w(size_t(N * K));
  for (WT &v : w)
    v = WT(bf16Round(u(rng)));
  const bool vec = K % 8 == 0;
  const Rows rows{x.data(), ldx, nullptr, 1};
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  const unsigned blocks = unsigned((N + perBlock - 1) / perBlock);
  std::vector<float> y(size_t(n * ldo), NAN), sum(size_t(n * ld), NAN),
      normed(size_t(n * ld), NAN);
  emu::launch(dim3(blocks), dim3(256), denseGemvKernel<WT, false, LANES>, rows,
              static_cast<const WT *>(w.data()),
              static_cast<const WT *>(nullptr), n, K, N, y.data(), ldo, vec,
              false);
  emu::launch(dim3(unsigned(n)), dim3(256), dsrt::cuda::rowk::addRmsNormKernel,
              static_cast<const float *>(res.data()), ld,
              static_cast<const float *>(y.data()), ldo, N, normW.data(), 1e-6f,
              sum.data(), ld, normed.data(), ld);
  unsigned counter = 0;
  for (int launch = 0; launch < 2; ++launch) {
    SCOPED_TRACE("launch " + std::to_string(launch));
    std::vector<float> r2 = res, y2(size_t(n * ldo), NAN),
                       s2(size_t(n * ld), NAN), n2(size_t(n * ld), NAN);
    float *sumOut = inPlace ? r2.data() : s2.data();
    const NormEpilogue e{r2.data(), ld, normW.data(), 1e-6f,
                         sumOut,    ld, n2.data(),    ld};
    emu::launch(dim3(blocks), dim3(256), denseGemvNormKernel<WT, LANES>, rows,
                static_cast<const WT *>(w.data()), n, K, N, y2.data(), ldo, vec,
                e, &counter);
    EXPECT_EQ(counter, 0u);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t c = 0; c < ldo; ++c) {
        const size_t i = size_t(t * ldo + c);
        if (c < N)
          ASSERT_EQ(y2[i], y[i]) << t << "," << c;
        else
          ASSERT_TRUE(std::isnan(y2[i])) << t << "," << c << " written";
      }
      for (int64_t c = 0; c < N; ++c) {
        const size_t i = size_t(t * ld + c);
        ASSERT_EQ(sumOut[i], sum[i]) << t << "," << c;
        ASSERT_EQ(n2[i], normed[i]) << t << "," << c;
      }
    }
  }
}

TEST(CudaEmuGemv, DenseWithNormEqualsDenseThenAddRmsNorm) {
  // 300 columns (more than the norm's 256 threads; several blocks, a partial
  // last one), one row and several (a warp each), both lane layouts, the
  // element-wise path (K % 8 != 0), the sum apart and over the residual.
  checkGemvNorm<__nv_bfloat16, 32>(1, 264, 300, 50, false);
  checkGemvNorm<__nv_bfloat16, 8>(3, 264, 300, 51, true);
  checkGemvNorm<float, 32>(8, 70, 37, 52, true);
  checkGemvNorm<float, 8>(2, 72, 300, 53, false);
  // More rows than the block's 8 warps.
  checkGemvNorm<__nv_bfloat16, 32>(11, 264, 300, 54, true);
}

/// denseGemvPairKernel: the two products of one input, each against the
/// single-matrix kernel's result (the same code per column, so bit for bit),
/// with column counts ending mid-block.
template <class WT, int LANES>
void checkGemvPair(int64_t n, int64_t K, int64_t Na, int64_t Nb,
                   uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t ldx = K + 4;
  std::vector<float> x(size_t(n * ldx));
  for (float &v : x)
    v = u(rng);
  std::vector<WT> a(size_t(Na * K)), b(size_t(Nb * K));
  for (WT &v : a)
    v = WT(bf16Round(u(rng)));
  for (WT &v : b)
    v = WT(bf16Round(u(rng)));
  const int64_t ldA = Na + 1, ldB = Nb + 2;
  std::vector<float> ya(size_t(n * ldA), NAN), yb(size_t(n * ldB), NAN),
      wantA(ya), wantB(yb);
  const bool vec = K % 8 == 0;
  const Rows rows{x.data(), ldx, nullptr, 1};
  const int64_t perBlock = 8 * gemvColumnsPerWarp<LANES>();
  const unsigned blocksA = unsigned((Na + perBlock - 1) / perBlock),
                 blocksB = unsigned((Nb + perBlock - 1) / perBlock);
  emu::launch(dim3(blocksA + blocksB), dim3(256),
              denseGemvPairKernel<WT, LANES>, rows,
              static_cast<const WT *>(a.data()), Na, ya.data(), ldA,
              static_cast<const WT *>(b.data()), Nb, yb.data(), ldB, blocksA, n,
              K, vec);
  emu::launch(dim3(blocksA), dim3(256), denseGemvKernel<WT, false, LANES>, rows,
              static_cast<const WT *>(a.data()),
              static_cast<const WT *>(nullptr), n, K, Na, wantA.data(), ldA,
              vec, false);
  emu::launch(dim3(blocksB), dim3(256), denseGemvKernel<WT, false, LANES>, rows,
              static_cast<const WT *>(b.data()),
              static_cast<const WT *>(nullptr), n, K, Nb, wantB.data(), ldB,
              vec, false);
  auto same = [](const std::vector<float> &got,
                 const std::vector<float> &want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      if (std::isnan(want[i]))
        EXPECT_TRUE(std::isnan(got[i])) << "element " << i << " written";
      else
        EXPECT_EQ(got[i], want[i]) << "element " << i;
  };
  same(ya, wantA);
  same(yb, wantB);
}

TEST(CudaEmuGemv, DensePair) {
  // q (37 columns, a partial block) then kv_a (21); one row and several.
  checkGemvPair<__nv_bfloat16, 32>(1, 264, 37, 21, 40);
  checkGemvPair<float, 8>(3, 72, 37, 21, 41);
  checkGemvPair<__nv_bfloat16, 8>(2, 70, 40, 9, 42);
}

//===----------------------------------------------------------------------===//
// GEMM input conversions: against the CPU backend's (Convert.h)
//===----------------------------------------------------------------------===//

TEST(CudaEmuConvert, Bf16CopyAndFp8Activations) {
  // 3 rows of 300 columns (two full 128-wide tiles and a partial one) in a
  // stride of 304: magnitudes over many binades, a tile of zeros, a tile
  // with one huge value (others underflow to 0), exact ties.
  const int64_t rows = 3, cols = 300, ld = 304;
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(size_t(rows * ld), NAN);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c)
      x[size_t(i * ld + c)] = u(rng) * std::ldexp(1.0f, int(c % 23) - 11);
  for (int64_t c = 128; c < 256; ++c)
    x[size_t(ld + c)] = 0.0f;
  x[size_t(2 * ld + 5)] = 3.0e38f;
  x[size_t(7)] = 1.0f + std::ldexp(1.0f, -8); // bf16 tie: to even
  x[size_t(8)] = 1.0f + 3 * std::ldexp(1.0f, -8);

  std::vector<__nv_bfloat16> b(size_t(rows * cols));
  emu::launch(dim3(unsigned(rows), 2), dim3(64), toBf16Kernel, x.data(), ld,
              cols, b.data());
  std::vector<float> q(size_t(rows * cols), NAN);
  emu::launch(dim3(unsigned(rows), 1), dim3(256), fakeQuantE4M3Kernel, x.data(),
              ld, cols, q.data());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t t = 0; t * 128 < cols; ++t) {
      const int64_t c0 = t * 128, c1 = std::min<int64_t>(cols, c0 + 128);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c)
        amax = std::max(amax, std::fabs(x[size_t(i * ld + c)]));
      const float s = dsrt::e4m3BlockScale(amax);
      for (int64_t c = c0; c < c1; ++c) {
        const float v = x[size_t(i * ld + c)];
        const float want = dsrt::e4m3ToFloat(dsrt::floatToE4M3(v / s)) * s;
        ASSERT_EQ(q[size_t(i * cols + c)], want) << "row " << i << " col " << c;
        uint16_t bits;
        std::memcpy(&bits, &b[size_t(i * cols + c)], 2);
        ASSERT_EQ(bits, dsrt::floatToBf16(v)) << "row " << i << " col " << c;
      }
    }
}

//===----------------------------------------------------------------------===//
// Row kernels: against the CPU backend
//===----------------------------------------------------------------------===//

/// A Context whose CPU kernels are the references: one YaRN RoPE table of
/// 16 dims, a latent cache of 2 layers (lora 24 + rope 16), 2 sequences.
struct CudaEmuRows : ::testing::Test {
  static constexpr int64_t kLora = 24, kRope = 16, kLayers = 2, kMaxSeq = 200;
  dsrt::RopeSpec ropeSpec{kRope, 10000.0, true, 4.0, 64, 32.0, 1.0, 1.0, 1.0};
  ModelSpec spec{};
  std::unique_ptr<dsrt::Context> ctx;
  std::mt19937 rng{41};

  void SetUp() override {
    spec.name = "rows";
    spec.vocabSize = 16;
    spec.hiddenSize = 8;
    spec.maxSeqLen = kMaxSeq;
    spec.arenaBytes = 64;
    spec.ropes = &ropeSpec;
    spec.numRopes = 1;
    spec.cacheLayers = kLayers;
    spec.kvLoraRank = kLora;
    spec.qkRopeDim = kRope;
    ctx = std::make_unique<dsrt::Context>(spec, 1, 2);
  }
  std::vector<float> random(int64_t count) {
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    std::vector<float> v(static_cast<size_t>(count));
    for (float &x : v)
      x = u(rng);
    return v;
  }
  const dsrt::RopeTable &table() { return ctx->impl().ropes[0]; }
};

/// The [n, d] part of a [n, ld] buffer.
std::vector<float> rowsOf(const std::vector<float> &v, int64_t n, int64_t d,
                          int64_t ld) {
  std::vector<float> out;
  for (int64_t i = 0; i < n; ++i)
    out.insert(out.end(), v.begin() + long(i * ld), v.begin() + long(i * ld + d));
  return out;
}

TEST_F(CudaEmuRows, EmbeddingNormsSwiglu) {
  using namespace dsrt::cuda::rowk;
  // d = 300: more columns than threads (256).
  const int64_t n = 5, d = 300, ld = d + 3, vocab = 11;
  std::vector<float> a = random(n * ld), b = random(n * ld), w = random(d);
  const float *none = nullptr;

  std::vector<float> table = random(vocab * d);
  const std::vector<int32_t> ids = {3, 0, 10, 3, 7};
  std::vector<float> emb(size_t(n * ld), NAN), embWant(size_t(n * ld), NAN);
  emu::launch(dim3(unsigned(n)), dim3(256), embeddingKernel,
              static_cast<const float *>(table.data()), d, ids.data(),
              emb.data(), ld);
  dsrt::cpu::embedding(*ctx, table.data(), vocab, d, ids.data(), n,
                       embWant.data(), ld);
  EXPECT_EQ(rowsOf(emb, n, d, ld), rowsOf(embWant, n, d, ld));

  std::vector<float> y(size_t(n * ld), NAN), yWant(size_t(n * ld), NAN);
  emu::launch(dim3(unsigned(n)), dim3(256), addRmsNormKernel, none, int64_t(0),
              static_cast<const float *>(b.data()), ld, d,
              static_cast<const float *>(w.data()), 1e-6f,
              static_cast<float *>(nullptr), int64_t(0), y.data(), ld);
  dsrt::cpu::rmsNorm(*ctx, b.data(), ld, w.data(), n, d, 1e-6, yWant.data(), ld);
  expectClose(rowsOf(y, n, d, ld), rowsOf(yWant, n, d, ld), 1e-6);

  std::vector<float> sum(size_t(n * ld), NAN), sumWant(size_t(n * ld), NAN);
  emu::launch(dim3(unsigned(n)), dim3(256), addRmsNormKernel,
              static_cast<const float *>(a.data()), ld,
              static_cast<const float *>(b.data()), ld, d,
              static_cast<const float *>(w.data()), 1e-6f, sum.data(), ld,
              y.data(), ld);
  dsrt::cpu::addRmsNorm(*ctx, a.data(), ld, b.data(), ld, n, d, w.data(), 1e-6,
                        sumWant.data(), ld, yWant.data(), ld);
  EXPECT_EQ(rowsOf(sum, n, d, ld), rowsOf(sumWant, n, d, ld));
  expectClose(rowsOf(y, n, d, ld), rowsOf(yWant, n, d, ld), 1e-6);

  // Two blocks per row: the grid-stride loop.
  std::vector<float> act(size_t(n * ld), NAN), actWant(size_t(n * ld), NAN);
  emu::launch(dim3(unsigned(n), 2), dim3(128), swigluKernel,
              static_cast<const float *>(a.data()), ld,
              static_cast<const float *>(b.data()), ld, d, act.data(), ld);
  dsrt::cpu::swiglu(*ctx, a.data(), ld, b.data(), ld, n, d, actWant.data(), ld);
  expectClose(rowsOf(act, n, d, ld), rowsOf(actWant, n, d, ld), 1e-6);
}

TEST_F(CudaEmuRows, Rope) {
  using namespace dsrt::cuda::rowk;
  // 3 heads of 8 + 16 dims, the rotated part at offset 8.
  const int64_t n = 4, heads = 3, headStride = 24, offset = 8;
  const int64_t ld = heads * headStride + 5, half = kRope / 2;
  const std::vector<int32_t> pos = {0, 7, 150, 199};
  std::vector<float> x = random(n * ld), want = x;
  const int64_t total = n * heads * half;
  emu::launch(dim3(unsigned((total + 63) / 64)), dim3(64), ropeKernel,
              x.data(), ld, heads, headStride, offset, pos.data(),
              static_cast<const float *>(table().cos.data()),
              static_cast<const float *>(table().sin.data()), half, total);
  dsrt::cpu::rope(*ctx, want.data(), ld, n, heads, headStride, offset,
                  pos.data(), 0);
  expectClose(x, want, 1e-6);
}

/// The cache write (with and without the fused RoPE) into the device
/// layout through the block table, against the CPU backend's write into its
/// cache: tokens of two sequences, blocks reserved in interleaved order.
TEST_F(CudaEmuRows, CacheWrites) {
  using namespace dsrt::cuda::rowk;
  dsrt::KVCache &cache = ctx->cache();
  std::string error;
  const int32_t s0 = cache.startSequence(&error), s1 = cache.startSequence(&error);
  ASSERT_TRUE(s0 >= 0 && s1 >= 0) << error;
  ASSERT_TRUE(cache.reserve(s1, 64, &error) && cache.reserve(s0, 10, &error) &&
              cache.reserve(s1, 132, &error))
      << error;
  const std::vector<int32_t> seq = {s1, s0, s1}, pos = {130, 5, 131};
  const int64_t n = 3, ldl = kLora + 2, ldk = kRope + 3, row = kLora + kRope;
  const int64_t maxBlocks = (kMaxSeq + 63) / 64;
  std::vector<int32_t> blockTable(size_t(2 * maxBlocks));
  for (int32_t s : {s0, s1})
    for (int64_t b = 0; b < maxBlocks; ++b)
      blockTable[size_t(s * maxBlocks + b)] = cache.blockId(s, b);
  ctx->setTokenSequences(seq.data(), n);

  // The device cache in float32 (f32 mode) and in bf16 (bf16 mode, each
  // value rounded to nearest even once); plain, with the key's RoPE, and
  // the decode prologue (the query's RoPE too, with and without the
  // latent's RMSNorm).
  enum Mode { Plain, Rope, QK, QKNorm };
  const char *names[] = {"kvCacheWrite", "ropeKvCacheWrite", "qkRopeCacheWrite",
                         "qkRopeCacheWrite with norm"};
  // The query: 3 heads of 8 + 16 dims, the rotated part at offset 8.
  const int64_t heads = 3, headStride = 24, offset = 8,
                ldq = heads * headStride + 5;
  for (int variant = 0; variant < 8; ++variant) {
    const Mode mode = Mode(variant % 4);
    const bool bf16 = variant / 4, roped = mode != Plain;
    SCOPED_TRACE(std::string(names[mode]) +
                 (bf16 ? ", bf16 cache" : ", float cache"));
    const int64_t layer = variant % 2;
    std::vector<float> latent = random(n * ldl), krope = random(n * ldk),
                       q = random(n * ldq), normW = random(kLora);
    std::vector<float> kropeWant = krope, qWant = q;
    const size_t cacheSize = size_t(cache.totalBlocks() * kLayers * 64 * row);
    std::vector<float> device(cacheSize, NAN);
    std::vector<__nv_bfloat16> deviceB(cacheSize, __float2bfloat16(NAN));
    const float *cosT = roped ? table().cos.data() : nullptr,
                *sinT = roped ? table().sin.data() : nullptr;
    const QRope qr =
        mode >= QK ? QRope{q.data(), ldq, heads, headStride, offset} : QRope{};
    const float *w = mode == QKNorm ? normW.data() : nullptr;
    if (bf16)
      emu::launch(dim3(unsigned(n)), dim3(256), cacheWriteKernel<__nv_bfloat16>,
                  CacheWrite<__nv_bfloat16>{
                      latent.data(), ldl, krope.data(), ldk, pos.data(),
                      seq.data(), blockTable.data(), maxBlocks, deviceB.data(),
                      kLayers, layer, kLora, kRope, cosT, sinT, qr, w, 1e-6f});
    else
      emu::launch(dim3(unsigned(n)), dim3(256), cacheWriteKernel<float>,
                  CacheWrite<float>{latent.data(), ldl, krope.data(), ldk,
                                    pos.data(), seq.data(), blockTable.data(),
                                    maxBlocks, device.data(), kLayers, layer,
                                    kLora, kRope, cosT, sinT, qr, w, 1e-6f});
    if (bf16)
      for (size_t e = 0; e < cacheSize; ++e)
        device[e] = __bfloat162float(deviceB[e]);
    if (mode >= QK)
      dsrt::cpu::qkRopeCacheWrite(
          *ctx, layer, qWant.data(), ldq, heads, headStride, offset,
          latent.data(), ldl, kropeWant.data(), ldk, pos.data(), n, 0, w, 1e-6);
    else if (mode == Rope)
      dsrt::cpu::ropeKvCacheWrite(*ctx, layer, latent.data(), ldl,
                                  kropeWant.data(), ldk, pos.data(), n, 0);
    else
      dsrt::cpu::kvCacheWrite(*ctx, layer, latent.data(), ldl,
                              kropeWant.data(), ldk, pos.data(), n);
    expectClose(krope, kropeWant, 1e-6); // rotated in place when roped
    expectClose(q, qWant, 1e-6);         // likewise the query's rope columns
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = pos[size_t(i)];
      const int64_t block = blockTable[size_t(seq[size_t(i)] * maxBlocks + p / 64)];
      const float *got = device.data() + ((block * kLayers + layer) * 64 + p % 64) * row;
      const float *want = ctx->cacheRow(layer, seq[size_t(i)], p);
      for (int64_t d = 0; d < row; ++d) {
        // bf16: the CPU's value rounded to nearest even: exactly for copied
        // values, up to a rounding flip for computed ones (the rotated key,
        // the normalized latent: their float value may differ from the
        // CPU's in the last bit).
        const float wv = bf16 ? bf16Round(want[d]) : want[d];
        const bool computed = (roped && d >= kLora) || mode == QKNorm;
        const float tol = bf16 ? (computed ? 4e-3f * std::fabs(want[d]) : 0.0f)
                               : 1e-6f * std::max(1.0f, std::fabs(want[d]));
        EXPECT_NEAR(got[d], wv, tol) << "token " << i << " dim " << d;
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// MLA attention
//===----------------------------------------------------------------------===//

/// A naive-form (prefill) call: q [n, ldq] with heads of nope + rope dims,
/// kv [n, ldkv] with heads of nope + vdim (k_nope then v), krope [n, ldk]
/// shared by the heads; out [n, ldo] with heads of vdim.
struct PrefillCase {
  int64_t n, heads, nope, rope, vdim, ldq, ldkv, ldk, ldo;
  float scale;
  std::vector<float> q, kv, krope;

  /// aligned: strides of whole 16-byte chunks (the tensor-core kernel's
  /// 16-byte K/V loads; odd strides take its element-wise loads).
  PrefillCase(int64_t n, int64_t heads, int64_t nope, int64_t rope,
              int64_t vdim, uint32_t seed, bool aligned = false)
      : n(n), heads(heads), nope(nope), rope(rope), vdim(vdim),
        ldq(heads * (nope + rope) + 5),
        ldkv(heads * (nope + vdim) + (aligned ? 4 : 3)),
        ldk(rope + (aligned ? 4 : 2)), ldo(heads * vdim + 7),
        scale(2.0f / std::sqrt(float(nope + rope))) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto *v : {&q, &kv, &krope}) {
      const int64_t ld = v == &q ? ldq : v == &kv ? ldkv : ldk;
      v->resize(size_t(n * ld));
      for (float &x : *v)
        x = u(rng);
    }
    // Else the kernel quietly takes its element-wise loads.
    if (aligned) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(kv.data()) % 16, 0u);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(krope.data()) % 16, 0u);
    }
  }

  /// Causal softmax attention in double; inputs rounded to bf16 where the
  /// tensor-core kernel rounds them.
  std::vector<float> reference(bool roundInputs) const {
    auto in = [&](float v) { return double(roundInputs ? bf16Round(v) : v); };
    const int64_t qHead = nope + rope, kvHead = nope + vdim;
    std::vector<float> out(size_t(n * heads * vdim));
    std::vector<double> p(static_cast<size_t>(n));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t d = 0; d < qHead; ++d)
            s += in(q[size_t(i * ldq + h * qHead + d)]) *
                 in(d < nope ? kv[size_t(j * ldkv + h * kvHead + d)]
                             : krope[size_t(j * ldk + d - nope)]);
          p[size_t(j)] = s * scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        for (int64_t j = 0; j <= i; ++j)
          sum += p[size_t(j)] = std::exp(p[size_t(j)] - mx);
        for (int64_t d = 0; d < vdim; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j)
            o += p[size_t(j)] * in(kv[size_t(j * ldkv + h * kvHead + nope + d)]);
          out[size_t((i * heads + h) * vdim + d)] = float(o / sum);
        }
      }
    return out;
  }

  enum Kernel { Simt, Wmma, Mma };

  /// MLA.cu's launch of a kernel; the [n, heads * vdim] part of out, after
  /// checking that nothing beyond it (ldo padding) was written.
  std::vector<float> run(Kernel kernel) const {
    using namespace dsrt::cuda::mla;
    const int64_t qHead = nope + rope, kvHead = nope + vdim;
    std::vector<float> out(size_t(n * ldo), std::nanf(""));
    if (kernel == Mma) {
      const PrefillMmaLayout mma(qHead, vdim);
      emu::launchShared(dim3(unsigned((n + kTcQ - 1) / kTcQ), unsigned(heads)),
                        dim3(kTcWarps * 32), size_t(mma.bytes),
                        mlaPrefillMmaKernel, q.data(), ldq, kv.data(), ldkv,
                        krope.data(), ldk, n, nope, vdim, qHead, kvHead, scale,
                        out.data(), ldo);
    } else if (kernel == Wmma) {
      const PrefillTcLayout tc(qHead, vdim);
      emu::launchShared(dim3(unsigned((n + kTcQ - 1) / kTcQ), unsigned(heads)),
                        dim3(kTcWarps * 32), size_t(tc.bytes),
                        mlaPrefillTcKernel, q.data(), ldq, kv.data(), ldkv,
                        krope.data(), ldk, n, nope, vdim, qHead, kvHead, scale,
                        out.data(), ldo);
    } else {
      emu::launchShared(dim3(unsigned((n + kQT - 1) / kQT), unsigned(heads)),
                        dim3(256), prefillSharedBytes(qHead, vdim),
                        mlaPrefillKernel, q.data(), ldq, kv.data(), ldkv,
                        krope.data(), ldk, n, nope, rope, vdim, qHead, kvHead,
                        scale, out.data(), ldo);
    }
    std::vector<float> got;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = heads * vdim; c < ldo; ++c)
        EXPECT_TRUE(std::isnan(out[size_t(i * ldo + c)])) << "row " << i
                                                          << " col " << c;
      got.insert(got.end(), out.begin() + long(i * ldo),
                 out.begin() + long(i * ldo + heads * vdim));
    }
    return got;
  }
};

TEST(CudaEmuMLA, PrefillFloat32) {
  // 150 queries: 9 full 16-query tiles and a tail of 6.
  PrefillCase c(150, 3, 24, 8, 20, 21);
  expectClose(c.run(PrefillCase::Simt), c.reference(false), 1e-5);
}

/// The tensor-core kernels: WMMA through shared memory, and mma.sync with
/// scores and output in registers.
class CudaEmuMLAPrefillTc
    : public ::testing::TestWithParam<PrefillCase::Kernel> {};

TEST_P(CudaEmuMLAPrefillTc, Tiles) {
  // Two full 64-query tiles and a tail of 22 (a warp with no queries); head
  // dims 32 and 20 (v padded to 32; the mma kernel's last n-tile of 8 is
  // cut at 20).
  for (bool aligned : {false, true}) {
    SCOPED_TRACE(aligned ? "16-byte loads" : "element-wise loads");
    PrefillCase c(150, 3, 24, 8, 20, 22, aligned);
    expectClose(c.run(GetParam()), c.reference(true), 4e-3);
  }
  // 16-byte loads with a zero chunk of K padding (qk 24 + 4 = 28 of 32).
  PrefillCase c(70, 2, 24, 4, 20, 24, true);
  expectClose(c.run(GetParam()), c.reference(true), 4e-3);
  // Odd head dims: qk 13 + 6 = 19 (padded to 32), v 7 (one short n-tile).
  PrefillCase odd(90, 2, 13, 6, 7, 26);
  expectClose(odd.run(GetParam()), odd.reference(true), 4e-3);
}

TEST_P(CudaEmuMLAPrefillTc, DeepSeekHeads) {
  // DeepSeek-V3's head dims: qk 128 + 64, v 128; 16 + 1 queries, and 130
  // (the last query tile's warps read three key tiles).
  for (bool aligned : {false, true}) {
    SCOPED_TRACE(aligned ? "16-byte loads" : "element-wise loads");
    PrefillCase c(17, 1, 128, 64, 128, 23, aligned);
    expectClose(c.run(GetParam()), c.reference(true), 4e-3);
  }
  PrefillCase c(130, 2, 128, 64, 128, 27, true);
  expectClose(c.run(GetParam()), c.reference(true), 4e-3);
}

INSTANTIATE_TEST_SUITE_P(Kernels, CudaEmuMLAPrefillTc,
                         ::testing::Values(PrefillCase::Wmma, PrefillCase::Mma),
                         [](const auto &info) {
                           return info.param == PrefillCase::Wmma ? "Wmma"
                                                                  : "Mma";
                         });

/// absorbQKernel and absorbOutKernel against double-precision products
/// over kv_b [heads * (nope + vdim), lora] (W_UK rows, then W_UV rows, per
/// head), for n tokens with strided q and out.
void checkAbsorbed(int64_t n, int64_t lora, uint32_t seed, int64_t nope = 16) {
  using namespace dsrt::cuda::mla;
  const int64_t heads = 3, rope = 8, vdim = 24;
  const int64_t qHead = nope + rope, kvHead = nope + vdim;
  const int64_t ldq = heads * qHead + 5, ldo = heads * vdim + 3;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(size_t(n * ldq)), kvB(size_t(heads * kvHead * lora)),
      oLat(size_t(n * heads * lora));
  for (auto *v : {&q, &kvB, &oLat})
    for (float &x : *v)
      x = u(rng);
  // kv_b's values exact in bf16: its bf16 copy (the runtime's, in bf16
  // mode) must give the same bits.
  for (float &x : kvB)
    x = bf16Round(x);
  std::vector<__nv_bfloat16> kvB16(kvB.size());
  for (size_t i = 0; i < kvB.size(); ++i)
    kvB16[i] = __float2bfloat16(kvB[i]);
  std::vector<float> qLat(size_t(n * heads * lora), NAN),
      out(size_t(n * ldo), NAN), wantQ(qLat.size()),
      wantOut(size_t(n * heads * vdim));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t c = 0; c < lora; ++c) {
        double s = 0;
        for (int64_t i = 0; i < nope; ++i)
          s += double(q[size_t(t * ldq + h * qHead + i)]) *
               kvB[size_t((h * kvHead + i) * lora + c)];
        wantQ[size_t((t * heads + h) * lora + c)] = float(s);
      }
      for (int64_t j = 0; j < vdim; ++j) {
        double s = 0;
        for (int64_t c = 0; c < lora; ++c)
          s += double(oLat[size_t((t * heads + h) * lora + c)]) *
               kvB[size_t((h * kvHead + nope + j) * lora + c)];
        wantOut[size_t(t * heads * vdim + h * vdim + j)] = float(s);
      }
    }
  emu::launchShared(absorbQGrid(heads, lora), dim3(kAqGroups * kAqSlices),
                    absorbQSharedBytes(n, nope), absorbQKernel<float>,
                    static_cast<const float *>(q.data()), ldq, qHead, n,
                    static_cast<const float *>(kvB.data()), kvHead, nope, lora,
                    heads, qLat.data(), lora % 4 == 0);
  expectClose(qLat, wantQ, 1e-5);
  std::vector<float> qLat16(qLat.size(), NAN);
  emu::launchShared(absorbQGrid(heads, lora), dim3(kAqGroups * kAqSlices),
                    absorbQSharedBytes(n, nope), absorbQKernel<__nv_bfloat16>,
                    static_cast<const float *>(q.data()), ldq, qHead, n,
                    static_cast<const __nv_bfloat16 *>(kvB16.data()), kvHead,
                    nope, lora, heads, qLat16.data(), lora % 4 == 0);
  EXPECT_EQ(std::memcmp(qLat16.data(), qLat.data(), qLat.size() * 4), 0)
      << "q_lat from bf16 kv_b differs";
  emu::launch(dim3(unsigned(heads), unsigned((vdim + 7) / 8)), dim3(256),
              absorbOutKernel<float>, static_cast<const float *>(oLat.data()),
              heads, lora, static_cast<const float *>(kvB.data()), kvHead, nope,
              vdim, n, out.data(), ldo, lora % 8 == 0);
  std::vector<float> out16(out.size(), NAN);
  emu::launch(dim3(unsigned(heads), unsigned((vdim + 7) / 8)), dim3(256),
              absorbOutKernel<__nv_bfloat16>,
              static_cast<const float *>(oLat.data()), heads, lora,
              static_cast<const __nv_bfloat16 *>(kvB16.data()), kvHead, nope,
              vdim, n, out16.data(), ldo, lora % 8 == 0);
  EXPECT_EQ(std::memcmp(out16.data(), out.data(), out.size() * 4), 0)
      << "the output product from bf16 kv_b differs";
  std::vector<float> got(wantOut.size());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < ldo; ++c) {
      if (c < heads * vdim)
        got[size_t(t * heads * vdim + c)] = out[size_t(t * ldo + c)];
      else
        EXPECT_TRUE(std::isnan(out[size_t(t * ldo + c)])) << "past the heads";
    }
  expectClose(got, wantOut, 1e-5);
}

TEST(CudaEmuMLA, AbsorbedProductsForFewTokens) {
  // 16-byte loads (lora 40), then the element-wise path of the output
  // product (lora 36) and of both (lora 30, a partial group of 4 dims);
  // lora 300 spans five blocks of 64 latent dims, the last partial; 1, 3
  // and 8 tokens.
  for (int64_t n : {1, 3, 8})
    checkAbsorbed(n, 40, uint32_t(50 + n));
  checkAbsorbed(3, 36, 60);
  checkAbsorbed(4, 30, 62);
  checkAbsorbed(2, 300, 61);
  // DeepSeek's nope 128 (8 rows per thread), and 160 (a second pass).
  checkAbsorbed(8, 64, 63, 128);
  checkAbsorbed(5, 72, 64, 160);
}

/// The absorbed q product's launch with the blocks of
/// dsk.mla_attention_absorbed's rope prologue beside it (absorbQRopeKernel)
/// against the two launches it replaces (cacheWriteKernel, then
/// absorbQKernel): the same bits in the cache, the query, the rope key and
/// q_lat. heads < n puts the prologue's tokens on several rows of blocks.
template <class CT>
void checkQRopeLaunch(int64_t heads, int64_t n, int64_t lora, bool norm,
                      uint32_t seed) {
  using namespace dsrt::cuda::mla;
  using dsrt::cuda::rowk::CacheWrite;
  using dsrt::cuda::rowk::cacheWriteKernel;
  using dsrt::cuda::rowk::QRope;
  SCOPED_TRACE(testing::Message() << "heads " << heads << " n " << n << " lora "
                                  << lora << " norm " << norm);
  const int64_t nope = 16, rope = 8, vdim = 16, qHead = nope + rope,
                kvHead = nope + vdim, ldq = heads * qHead + 3, ldl = lora + 2,
                ldk = rope + 1, layers = 2, layer = 1, maxBlocks = 2,
                row = lora + rope;
  const std::vector<int32_t> table = {3, 1, 0, 2};
  std::vector<int32_t> pos, seq;
  for (int64_t i = 0; i < n; ++i) {
    pos.push_back(int32_t((i * 37 + 5) % 128));
    seq.push_back(int32_t(i % 2));
  }
  std::mt19937 rng(seed);
  auto random = [&](int64_t count) { return uniformVector(rng, count); };
  const std::vector<float> q = random(n * ldq), latent = random(n * ldl),
                           krope = random(n * ldk),
                           kvB = roundedBf16(random(heads * kvHead * lora)),
                           normW = random(lora), cosT = random(128 * rope / 2),
                           sinT = random(128 * rope / 2);
  struct Out {
    std::vector<float> q, krope, qLat;
    std::vector<CT> cache;
  };
  auto start = [&] {
    return Out{q, krope, std::vector<float>(size_t(n * heads * lora), NAN),
               std::vector<CT>(size_t(4 * layers * 64 * row), CT(0.0f))};
  };
  auto args = [&](Out &o) {
    return CacheWrite<CT>{latent.data(),
                          ldl,
                          o.krope.data(),
                          ldk,
                          pos.data(),
                          seq.data(),
                          table.data(),
                          maxBlocks,
                          o.cache.data(),
                          layers,
                          layer,
                          lora,
                          rope,
                          cosT.data(),
                          sinT.data(),
                          QRope{o.q.data(), ldq, heads, qHead, nope},
                          norm ? normW.data() : nullptr,
                          1e-6f};
  };
  const bool vec = lora % 4 == 0;
  const size_t bytes = absorbQSharedBytes(n, nope);
  Out want = start(), got = start();
  emu::launch(dim3(unsigned(n)), dim3(256), cacheWriteKernel<CT>, args(want));
  emu::launchShared(
      absorbQGrid(heads, lora), dim3(kAqGroups * kAqSlices), bytes,
      absorbQKernel<float>, static_cast<const float *>(want.q.data()), ldq,
      qHead, n, kvB.data(), kvHead, nope, lora, heads, want.qLat.data(), vec);
  const dim3 qGrid = absorbQGrid(heads, lora);
  const unsigned ropeRows = unsigned((n + heads - 1) / heads);
  emu::launchShared(
      dim3(qGrid.x, qGrid.y + ropeRows), dim3(kAqGroups * kAqSlices), bytes,
      absorbQRopeKernel<CT, float>, static_cast<const float *>(got.q.data()),
      ldq, qHead, n, kvB.data(), kvHead, nope, lora, heads, got.qLat.data(),
      vec, qGrid.y, args(got));
  // kv_b in bf16 (exact): the same launch, the same bits.
  Out got16 = start();
  std::vector<__nv_bfloat16> kvB16(kvB.size());
  for (size_t i = 0; i < kvB.size(); ++i)
    kvB16[i] = __float2bfloat16(kvB[i]);
  emu::launchShared(
      dim3(qGrid.x, qGrid.y + ropeRows), dim3(kAqGroups * kAqSlices), bytes,
      absorbQRopeKernel<CT, __nv_bfloat16>,
      static_cast<const float *>(got16.q.data()), ldq, qHead, n,
      static_cast<const __nv_bfloat16 *>(kvB16.data()), kvHead, nope, lora,
      heads, got16.qLat.data(), vec, qGrid.y, args(got16));
  auto same = [](const auto &a, const auto &b, const char *what) {
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])), 0)
        << what << " differs";
  };
  same(got.q, want.q, "the query");
  same(got.krope, want.krope, "the rope key");
  same(got.qLat, want.qLat, "q_lat");
  same(got.cache, want.cache, "the cache");
  same(got16.qLat, want.qLat, "q_lat from bf16 kv_b");
  same(got16.cache, want.cache, "the cache (bf16 kv_b)");
  EXPECT_NE(got.q, q) << "the query's rope columns were not rotated";
  EXPECT_EQ(std::count_if(got.qLat.begin(), got.qLat.end(),
                          [](float v) { return std::isnan(v); }),
            0);
}

TEST(CudaEmuMLA, AbsorbedProductWithRopePrologue) {
  checkQRopeLaunch<float>(4, 3, 40, true, 70);
  checkQRopeLaunch<__nv_bfloat16>(4, 3, 40, true, 71);
  // Two heads for 5 tokens: three rows of prologue blocks, the last half
  // empty; no norm; an unaligned lora (element-wise W_UK loads).
  checkQRopeLaunch<float>(2, 5, 36, false, 72);
  checkQRopeLaunch<__nv_bfloat16>(2, 8, 30, true, 73);
}

/// An absorbed-form (decode) call over a paged latent cache: tokens of
/// different sequences and positions (two of one sequence, as MTP verifies),
/// blocks in scattered order, the layer not the first; each kernel
/// (mlaDecodeKernel over a float and a bf16 cache, mlaDecodeTcKernel) at
/// several split counts, then mlaCombineKernel, against a double-precision
/// softmax.
void checkDecode(int64_t heads, int64_t lora, int64_t rope, uint32_t seed) {
  using namespace dsrt::cuda::mla;
  const int64_t nope = 16, row = lora + rope;
  const int64_t qHead = nope + rope, ldq = heads * qHead + 3;
  const int64_t layers = 2, layer = 1, blocks = 8, maxBlocks = 4;
  const std::vector<int32_t> tokenSeq = {1, 0, 1}, pos = {130, 5, 131};
  const std::vector<int32_t> table = {5, 2, 7, 4,  // sequence 0
                                      3, 0, 6, 1}; // sequence 1
  const int64_t n = int64_t(pos.size());
  const float scale = 0.4f;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> cache(size_t(blocks * layers * 64 * row)),
      qLat(size_t(n * heads * lora)), q(size_t(n * ldq));
  for (auto *v : {&cache, &qLat, &q})
    for (float &x : *v)
      x = u(rng);
  // Cache values exact in bf16, so the float and bf16 caches hold the same.
  for (float &x : cache)
    x = bf16Round(x);
  std::vector<__nv_bfloat16> cacheB(cache.size());
  for (size_t e = 0; e < cache.size(); ++e)
    cacheB[e] = __float2bfloat16(cache[e]);
  auto cached = [&](int64_t seq, int64_t p, int64_t d) {
    const int64_t block = table[size_t(seq * maxBlocks + p / 64)];
    return double(cache[size_t(((block * layers + layer) * 64 + p % 64) * row + d)]);
  };
  // roundQ: q as the tensor-core kernel holds it (bf16).
  auto reference = [&](bool roundQ) {
    auto qv = [&](float x) { return double(roundQ ? bf16Round(x) : x); };
    std::vector<float> want(size_t(n * heads * lora));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t keys = pos[size_t(t)] + 1;
        std::vector<double> p(static_cast<size_t>(keys));
        double mx = -INFINITY, sum = 0;
        for (int64_t k = 0; k < keys; ++k) {
          double s = 0;
          for (int64_t d = 0; d < row; ++d)
            s += (d < lora
                      ? qv(qLat[size_t((t * heads + h) * lora + d)])
                      : qv(q[size_t(t * ldq + h * qHead + nope + d - lora)])) *
                 cached(tokenSeq[size_t(t)], k, d);
          mx = std::max(mx, p[size_t(k)] = s * scale);
        }
        for (double &v : p)
          sum += v = std::exp(v - mx);
        for (int64_t c = 0; c < lora; ++c) {
          double o = 0;
          for (int64_t k = 0; k < keys; ++k)
            o += p[size_t(k)] * cached(tokenSeq[size_t(t)], k, c);
          want[size_t((t * heads + h) * lora + c)] = float(o / sum);
        }
      }
    return want;
  };
  const std::vector<float> want = reference(false), wantTc = reference(true);
  // 7 splits leave the position-5 token's last split empty; 1 is no split;
  // 40 and 64 (the most): two splits per lane of the combine, and a
  // position-5 token with most of its splits empty.
  const std::array<int, 5> splitCounts = {1, 4, 7, 40, kMaxSplits};
  enum Kernel { Float, Bf16, TensorCores };
  for (Kernel kernel : {Float, Bf16, TensorCores})
    for (int splits : splitCounts) {
      SCOPED_TRACE(std::to_string(splits) + " splits, " +
                   (kernel == Float  ? "float cache"
                    : kernel == Bf16 ? "bf16 cache"
                                     : "tensor cores"));
      std::vector<float> part(size_t(n * heads * splits * (lora + 2)),
                              std::nanf(""));
      std::vector<float> oLat(size_t(n * heads * lora), std::nanf(""));
      const int64_t hb = kernel == TensorCores ? kDtH : kHB;
      const dim3 grid(unsigned(n), unsigned((heads + hb - 1) / hb),
                      unsigned(splits));
      const auto *cb = static_cast<const __nv_bfloat16 *>(cacheB.data());
      if (kernel == TensorCores)
        emu::launchShared(
            grid, dim3(kDtWarps * 32), size_t(DecodeTcLayout(row, lora).bytes),
            mlaDecodeTcKernel, qLat.data(), q.data(), ldq, qHead, nope, cb,
            table.data(), maxBlocks, tokenSeq.data(), pos.data(), layers, layer,
            heads, lora, rope, scale, splits, part.data());
      else if (kernel == Bf16)
        emu::launchShared(grid, dim3(256), decodeSharedBytes(row),
                          mlaDecodeKernel<__nv_bfloat16>, qLat.data(), q.data(),
                          ldq, qHead, nope, cb, table.data(), maxBlocks,
                          tokenSeq.data(), pos.data(), layers, layer, heads,
                          lora, rope, scale, splits, part.data());
      else
        emu::launchShared(grid, dim3(256), decodeSharedBytes(row),
                          mlaDecodeKernel<float>, qLat.data(), q.data(), ldq,
                          qHead, nope, static_cast<const float *>(cache.data()),
                          table.data(), maxBlocks, tokenSeq.data(), pos.data(),
                          layers, layer, heads, lora, rope, scale, splits,
                          part.data());
      emu::launch(dim3(unsigned(n), unsigned(heads)), dim3(256),
                  mlaCombineKernel, static_cast<const float *>(part.data()),
                  heads, lora, splits, oLat.data());
      // Tensor cores: q as rounded, P rounded to bf16 (about 2^-9 each).
      if (kernel == TensorCores)
        expectClose(oLat, wantTc, 4e-3);
      else
        expectClose(oLat, want, 1e-5);
      // The combine in the W_UV product's launch (absorbOutCombineKernel,
      // which the runtime takes at batch 1) against the two launches: the
      // same o_lat, the product's sums in another order. vdim 40: a
      // partial block of 32 columns, and a warp with columns past it.
      const int64_t vdim = 40, kvHead = nope + vdim, ldo = heads * vdim + 2;
      std::vector<float> kvB(size_t(heads * kvHead * lora));
      for (float &x : kvB)
        x = bf16Round(u(rng));
      std::vector<float> outTwo(size_t(n * ldo), 0.0f), outOne = outTwo,
                                                        outOne16 = outTwo;
      const bool vec = lora % 8 == 0;
      emu::launch(dim3(unsigned(heads), unsigned((vdim + 7) / 8)), dim3(256),
                  absorbOutKernel<float>,
                  static_cast<const float *>(oLat.data()), heads, lora,
                  static_cast<const float *>(kvB.data()), kvHead, nope, vdim, n,
                  outTwo.data(), ldo, vec);
      emu::launchShared(absorbOutCombineGrid(heads, vdim), dim3(256),
                        absorbOutCombineSharedBytes(n, lora),
                        absorbOutCombineKernel<float>,
                        static_cast<const float *>(part.data()), splits, heads,
                        lora, static_cast<const float *>(kvB.data()), kvHead,
                        nope, vdim, n, outOne.data(), ldo, vec);
      expectClose(outOne, outTwo, 1e-5);
      // kv_b in bf16 (exact): the same bits.
      std::vector<__nv_bfloat16> kvB16(kvB.size());
      for (size_t i = 0; i < kvB.size(); ++i)
        kvB16[i] = __float2bfloat16(kvB[i]);
      emu::launchShared(absorbOutCombineGrid(heads, vdim), dim3(256),
                        absorbOutCombineSharedBytes(n, lora),
                        absorbOutCombineKernel<__nv_bfloat16>,
                        static_cast<const float *>(part.data()), splits, heads,
                        lora, static_cast<const __nv_bfloat16 *>(kvB16.data()),
                        kvHead, nope, vdim, n, outOne16.data(), ldo, vec);
      EXPECT_EQ(outOne16, outOne) << "the fused output from bf16 kv_b differs";
    }
}

TEST(CudaEmuMLA, DecodeSplitsOverPagedCache) {
  // 20 heads: a full head group and a partial one for either kernel's group
  // (8 or 16 heads); rows of 48 values (16-byte rows in bf16).
  checkDecode(20, 40, 8, 31);
}

TEST(CudaEmuMLA, DecodeOddRowsAndDeepSeekDims) {
  // Rows of 44 values: no 16-byte loads, zero padding to 48 inside the
  // tensor-core row; lora 36 is a partial 16-column tile of O.
  checkDecode(5, 36, 8, 32);
  // Rows of 40: 16-byte loads, and a zero chunk of padding to 48.
  checkDecode(3, 32, 8, 34);
  // DeepSeek's latent row: lora 512 + rope 64, 16 heads (one tensor-core
  // group, two SIMT groups).
  checkDecode(16, 512, 64, 33);
}

//===----------------------------------------------------------------------===//
// Argmax
//===----------------------------------------------------------------------===//

/// runMain's argmax (Main.cpp): lowest index of the largest value; a NaN
/// never wins (and a NaN first element stays the answer).
int32_t hostArgmax(const float *row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best])
      best = i;
  return int32_t(best);
}

TEST(CudaEmuArgmax, MatchesHost) {
  // 1000: one element per thread at most; 20000: more than one round of
  // loads per thread, so ties and the maximum fall in different rounds.
  // 16-byte loads where ld is a multiple of 4 (then 20003: a tail of 3
  // single loads), single floats otherwise (1001, 20001).
  for (auto [vocab, ld] : {std::pair<int64_t, int64_t>{1000, 1004},
                           {20000, 20004},
                           {20003, 20008},
                           {1001, 1001},
                           {20001, 20003}}) {
    std::vector<std::vector<float>> rows;
    std::mt19937 rng(uint32_t(7 + vocab));
    std::uniform_real_distribution<float> u(-5.0f, 5.0f);
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int r = 0; r < 9; ++r) {
      std::vector<float> row(static_cast<size_t>(vocab));
      for (float &v : row)
        v = u(rng);
      rows.push_back(row);
    }
    const size_t last = size_t(vocab - 1), late = size_t(vocab * 7 / 10);
    rows[1][last] = 100.0f;                    // last element
    rows[2][3] = rows[2][late] = 100.0f;       // tie: lowest index
    rows[3].assign(size_t(vocab), -inf);       // all -inf: 0
    rows[4][10] = nan, rows[4][11] = 50.0f;    // NaN never wins
    rows[5][0] = nan;                          // NaN first: 0, as on the host
    rows[6][late] = inf, rows[6][last] = inf;  // +inf tie
    rows[7].assign(size_t(vocab), 1.0f);       // all equal: 0
    rows[8][late + 1] = rows[8][late] = 60.0f; // tie, adjacent
    std::vector<float> logits(size_t(rows.size() * ld), 0.0f);
    for (size_t r = 0; r < rows.size(); ++r)
      std::copy(rows[r].begin(), rows[r].end(), logits.begin() + long(r * ld));
    std::vector<int32_t> out(rows.size(), -1);
    emu::launch(dim3(unsigned(rows.size())), dim3(kArgmaxThreads), argmaxKernel,
                static_cast<const float *>(logits.data()), ld, vocab,
                out.data());
    for (size_t r = 0; r < rows.size(); ++r)
      EXPECT_EQ(out[r], hostArgmax(rows[r].data(), vocab))
          << "vocab " << vocab << " row " << r;
  }
}

} // namespace
