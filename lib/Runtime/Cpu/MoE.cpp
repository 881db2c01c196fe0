//===- MoE.cpp - MoE routing and routed experts ---------------------------===//
//
// Routing follows DeepSeek-V3 inference/model.py Gate (V3 noaux_tc) and HF
// DeepseekV2's MoEGate (softmax, greedy / group_limited_greedy); see
// DESIGN.md "The ds dialect". Experts run as grouped GEMMs: token rows are
// sorted by expert, each active expert does gate, up and down as one GEMM
// over its rows, and the weighted outputs are summed per token in top-k
// order (no per-thread partial sums), so the result does not depend on the
// thread count. moeExpertsW is the same with weights by index, each expert
// GEMM through linearW's logic (float32, bf16 or FP8, ActQuant on the
// expert's input: x for gate/up, the SwiGLU output for down).
//
//===----------------------------------------------------------------------===//

#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace dsrt {
namespace cpu {

void moeRoute(Context &ctx, const float *logits, int64_t ldl, int64_t n,
              const float *bias, const MoERouting &routing, int32_t *idx,
              float *weights) {
  const int64_t experts = routing.experts, topK = routing.topK;
  const bool grouped =
      routing.method != MoERouting::Greedy && routing.nGroup > 1;
  const int64_t nGroup = grouped ? routing.nGroup : 1;
  const int64_t groupSize = experts / nGroup;
  const float scale = static_cast<float>(routing.scale);
  const float negInf = -std::numeric_limits<float>::infinity();

  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        std::vector<float> score(experts), choice(experts), groupScore(nGroup);
        std::vector<int32_t> order(experts), groupOrder(nGroup);
        // Descending value, ties to the lower index (deterministic top-k).
        auto byChoice = [&](int32_t a, int32_t b) {
          return choice[a] > choice[b] || (choice[a] == choice[b] && a < b);
        };
        auto byGroup = [&](int32_t a, int32_t b) {
          return groupScore[a] > groupScore[b] ||
                 (groupScore[a] == groupScore[b] && a < b);
        };

        for (int64_t i = begin; i < end; ++i) {
          const float *l = logits + i * ldl;
          if (routing.scoring == MoERouting::Sigmoid) {
            for (int64_t e = 0; e < experts; ++e)
              score[e] = 1.0f / (1.0f + std::exp(-l[e]));
          } else {
            float mx = *std::max_element(l, l + experts), sum = 0;
            for (int64_t e = 0; e < experts; ++e)
              sum += score[e] = std::exp(l[e] - mx);
            for (int64_t e = 0; e < experts; ++e)
              score[e] /= sum;
          }
          // The bias (noaux_tc) steers the selection only.
          for (int64_t e = 0; e < experts; ++e)
            choice[e] = score[e] + (bias ? bias[e] : 0.0f);

          if (grouped) {
            for (int64_t g = 0; g < nGroup; ++g) {
              const float *c = choice.data() + g * groupSize;
              float first = negInf, second = negInf;
              for (int64_t e = 0; e < groupSize; ++e) {
                if (c[e] > first) {
                  second = first;
                  first = c[e];
                } else if (c[e] > second) {
                  second = c[e];
                }
              }
              groupScore[g] = routing.method == MoERouting::NoauxTC
                                  ? first + (groupSize > 1 ? second : 0.0f)
                                  : first;
            }
            std::iota(groupOrder.begin(), groupOrder.end(), 0);
            int64_t keep = std::min(routing.topkGroup, nGroup);
            std::partial_sort(groupOrder.begin(), groupOrder.begin() + keep,
                              groupOrder.end(), byGroup);
            for (int64_t r = keep; r < nGroup; ++r)
              std::fill_n(choice.begin() + groupOrder[r] * groupSize, groupSize,
                          negInf);
          }

          std::iota(order.begin(), order.end(), 0);
          std::partial_sort(order.begin(), order.begin() + topK, order.end(),
                            byChoice);
          int32_t *ii = idx + i * topK;
          float *wi = weights + i * topK;
          float sum = 0;
          for (int64_t k = 0; k < topK; ++k) {
            ii[k] = order[k];
            wi[k] = score[order[k]]; // the unbiased score
            sum += wi[k];
          }
          for (int64_t k = 0; k < topK; ++k)
            wi[k] = (routing.normTopk ? wi[k] / sum : wi[k]) * scale;
        }
      },
      rowsPerChunk(experts * 8));
}

namespace {

enum Proj { Gate, Up, Down };

/// moeExperts over any weight storage: local(e) says whether expert e has
/// weights here; project(proj, e, rows, x, ldx, outWidth, y, ldy) is one
/// expert GEMM (y = x W^T).
template <class Local, class Project>
void runExperts(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t hidden, int64_t inter, const int32_t *idx,
                const float *weights, int64_t topK, int64_t experts, float *y,
                int64_t ldy, Local &&local, Project &&project) {
  for (int64_t i = 0; i < n; ++i)
    std::memset(y + i * ldy, 0, sizeof(float) * hidden);
  if (n <= 0 || topK <= 0 || hidden <= 0 || inter <= 0)
    return;

  // Scratch per (token, k) row: gathered x, gate, up, expert output. Tokens
  // go in chunks so that it stays within ~256 MiB for any n.
  const int64_t rowFloats = 2 * hidden + 2 * inter;
  const int64_t chunk =
      std::max<int64_t>(1, (int64_t(64) << 20) / (topK * rowFloats));
  const int64_t chunkRows = std::min(n, chunk) * topK;
  std::vector<float> xs(chunkRows * hidden), gs(chunkRows * inter),
      us(chunkRows * inter), os(chunkRows * hidden);
  std::vector<int64_t> offset(experts + 1), slot(chunkRows);
  std::vector<int32_t> active;

  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t tokens = std::min(chunk, n - t0);
    const int32_t *ci = idx + t0 * topK;
    // Counting sort of the (token, k) pairs by expert; within an expert,
    // rows keep token order.
    std::fill(offset.begin(), offset.end(), 0);
    for (int64_t r = 0; r < tokens * topK; ++r)
      if (local(ci[r]))
        ++offset[ci[r] + 1];
    active.clear();
    for (int64_t e = 0; e < experts; ++e) {
      if (offset[e + 1])
        active.push_back(static_cast<int32_t>(e));
      offset[e + 1] += offset[e];
    }
    std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
    for (int64_t r = 0; r < tokens * topK; ++r)
      slot[r] = local(ci[r]) ? fill[ci[r]]++ : -1;

    pool(ctx).parallelFor(
        tokens * topK,
        [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r)
            if (slot[r] >= 0)
              std::memcpy(xs.data() + slot[r] * hidden,
                          x + (t0 + r / topK) * ldx, sizeof(float) * hidden);
        },
        rowsPerChunk(hidden));

    // One expert: three GEMMs over its rows. Few rows per expert (decode):
    // experts go to the pool whole; many: one at a time, GEMMs split.
    int64_t expertRows = 0;
    for (int32_t e : active)
      expertRows = std::max(expertRows, offset[e + 1] - offset[e]);
    auto runExpert = [&](int64_t a) {
      const int32_t e = active[a];
      const int64_t r0 = offset[e], rows = offset[e + 1] - r0;
      const float *xe = xs.data() + r0 * hidden;
      float *g = gs.data() + r0 * inter, *u = us.data() + r0 * inter;
      project(Gate, e, rows, xe, hidden, inter, g, inter);
      project(Up, e, rows, xe, hidden, inter, u, inter);
      pool(ctx).parallelFor(
          rows,
          [&](int64_t begin, int64_t end) {
            for (int64_t j = begin * inter; j < end * inter; ++j)
              g[j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
          },
          rowsPerChunk(4 * inter));
      project(Down, e, rows, g, inter, hidden, os.data() + r0 * hidden, hidden);
    };
    const int64_t numActive = static_cast<int64_t>(active.size());
    if (expertRows <= 16)
      forEachItem(ctx, numActive, runExpert);
    else
      for (int64_t a = 0; a < numActive; ++a)
        runExpert(a);

    // y[t] = sum_k w[t, k] * out(t, k), in k order.
    pool(ctx).parallelFor(
        tokens,
        [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            float *yt = y + (t0 + t) * ldy;
            for (int64_t k = 0; k < topK; ++k) {
              int64_t s = slot[t * topK + k];
              if (s < 0)
                continue;
              const float w = weights[(t0 + t) * topK + k];
              const float *o = os.data() + s * hidden;
              for (int64_t j = 0; j < hidden; ++j)
                yt[j] += w * o[j];
            }
          }
        },
        rowsPerChunk(topK * hidden));
  }
}

} // namespace

void moeExperts(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t hidden, int64_t inter, const int32_t *idx,
                const float *weights, int64_t topK, const float *const *gate,
                const float *const *up, const float *const *down,
                int64_t experts, float *y, int64_t ldy) {
  // An index outside [0, experts) or an expert without weights (another
  // rank's, under expert parallelism) contributes nothing.
  auto local = [&](int32_t e) {
    return e >= 0 && e < experts && gate[e] && up[e] && down[e];
  };
  auto project = [&](Proj p, int32_t e, int64_t rows, const float *xe,
                     int64_t in, int64_t out, float *ye, int64_t lde) {
    const float *w = p == Gate ? gate[e] : p == Up ? up[e] : down[e];
    gemm(ctx, true, rows, out, in, 1.0f, xe, in, w, in, 0.0f, ye, lde);
  };
  runExperts(ctx, x, ldx, n, hidden, inter, idx, weights, topK, experts, y,
             ldy, local, project);
}

void moeExpertsW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t hidden, int64_t inter, const int32_t *idx,
                 const float *weights, int64_t topK, const int64_t *gate,
                 const int64_t *up, const int64_t *down, int64_t experts,
                 float *y, int64_t ldy, ActQuant act) {
  // An expert whose gate/up/down index is negative (another rank's, under
  // expert parallelism), or an index outside [0, experts), contributes
  // nothing. Weights are resolved (and checked) once per call.
  std::vector<WeightRef> refs(size_t(3 * std::max<int64_t>(experts, 0)));
  std::vector<char> here(size_t(std::max<int64_t>(experts, 0)), 0);
  for (int64_t e = 0; e < experts; ++e) {
    if (gate[e] < 0 || up[e] < 0 || down[e] < 0)
      continue;
    refs[3 * e + Gate] = weightRef(ctx, gate[e], "moeExpertsW", inter, hidden);
    refs[3 * e + Up] = weightRef(ctx, up[e], "moeExpertsW", inter, hidden);
    refs[3 * e + Down] = weightRef(ctx, down[e], "moeExpertsW", hidden, inter);
    here[e] = 1;
  }
  auto local = [&](int32_t e) { return e >= 0 && e < experts && here[e]; };
  auto project = [&](Proj p, int32_t e, int64_t rows, const float *xe,
                     int64_t in, int64_t out, float *ye, int64_t lde) {
    linearRef(ctx, xe, in, rows, in, refs[3 * e + p], out, ye, lde, act);
  };
  runExperts(ctx, x, ldx, n, hidden, inter, idx, weights, topK, experts, y,
             ldy, local, project);
}

void moeExpertsSharedW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                       int64_t hidden, int64_t inter, const int32_t *idx,
                       const float *weights, int64_t topK, const int64_t *gate,
                       const int64_t *up, const int64_t *down, int64_t experts,
                       const SharedExpert &shared, float *y, int64_t ldy,
                       ActQuant act) {
  // The unfused sequence itself, so the result is bit for bit the same.
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
  // The unfused sequence, bit for bit.
  moeExpertsSharedW(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up,
                    down, experts, shared, y, ldy, act);
  addRmsNorm(ctx, norm.residual, norm.ldr, y, ldy, n, hidden, norm.weight,
             norm.eps, norm.sum, norm.lds, norm.normed, norm.ldn);
}

} // namespace cpu
} // namespace dsrt
