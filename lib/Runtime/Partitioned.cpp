//===- Partitioned.cpp - pipeline stages and data-parallel replicas -------===//
//
// Main runs the same loop on every rank and hands every program all tokens
// of a step. For pp > 1 or dp > 1 the emitted programs come here: the
// replica keeps its sequences, the stage runs its layers over them in
// micro-batches, and the outputs are made whole again on every rank.
//
//===----------------------------------------------------------------------===//

#include "Cpu/CpuCommon.h"
#include "ds/Runtime/Comm.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dsrt {

namespace {

/// This replica's share of one program call: the rows (in order) of the
/// sequence slots it owns, copied when the replica does not own them all.
struct Share {
  std::vector<int32_t> allSeq; // slot of every row of the call
  std::vector<int64_t> rows;   // this replica's rows
  std::vector<int32_t> ids, pos, seq;
  std::vector<float> logits, hidden;
  bool whole = true; // rows == [0, n): work on the caller's arrays

  Share(Context &ctx, const int32_t *idsIn, const int32_t *posIn, int64_t n) {
    const int dp = ctx.meshSize(MeshAxis::DP), me = ctx.meshCoord(MeshAxis::DP);
    allSeq.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      allSeq[size_t(i)] = ctx.tokenSequence(i);
      if (allSeq[size_t(i)] % dp == me)
        rows.push_back(i);
    }
    whole = int64_t(rows.size()) == n;
    seq.resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r)
      seq[r] = allSeq[size_t(rows[r])];
    if (whole)
      return;
    for (int64_t i : rows) {
      ids.push_back(idsIn[i]);
      pos.push_back(posIn[i]);
    }
    const ModelSpec &spec = ctx.spec();
    logits.assign(rows.size() * size_t(spec.vocabSize), 0.0f);
    hidden.assign(rows.size() * size_t(spec.hiddenSize), 0.0f);
  }

  int64_t size() const { return int64_t(rows.size()); }
};

Comm &comm(Context &ctx, MeshAxis axis) {
  Comm *c = ctx.comm(axis);
  if (!c)
    cpu::fatal("runPartitioned", "no communicator for mesh axis (setComm not "
               "called)", static_cast<long long>(axis));
  return *c;
}

/// Micro-batch boundaries over rows [0, m) with slots `seq`: `parts` ranges
/// of whole sequences (a sequence's tokens are adjacent), about m / parts
/// rows each, possibly empty.
std::vector<int64_t> microBatches(const std::vector<int32_t> &seq,
                                  int64_t parts) {
  const int64_t m = int64_t(seq.size());
  std::vector<int64_t> bounds = {0};
  for (int64_t k = 1; k < parts; ++k) {
    int64_t at = std::max(bounds.back(), m * k / parts);
    while (at > bounds.back() && at < m && seq[size_t(at)] == seq[size_t(at - 1)])
      ++at; // do not split a sequence
    bounds.push_back(std::min(at, m));
  }
  bounds.push_back(m);
  return bounds;
}

/// Makes every rank's outputs whole: the last stage's rows go to every
/// stage (broadcast over pp), then every replica's rows to every replica
/// (gathered over dp) into their places among the call's n rows.
void complete(Context &ctx, Share &share, int64_t n, float *logits,
              float *hidden) {
  const ModelSpec &spec = ctx.spec();
  const int64_t m = share.size();
  float *outs[2] = {share.whole ? logits : share.logits.data(),
                    share.whole ? hidden : share.hidden.data()};
  const int64_t widths[2] = {spec.vocabSize, spec.hiddenSize};
  std::string error;
  const int pp = ctx.meshSize(MeshAxis::PP);
  if (pp > 1)
    for (int k = 0; k < 2; ++k)
      if (!comm(ctx, MeshAxis::PP).broadcast(outs[k], m * widths[k], pp - 1,
                                             &error))
        cpu::commFailed(ctx, "runPartitioned (outputs of the last stage)",
                        error);
  const int dp = ctx.meshSize(MeshAxis::DP);
  if (dp == 1)
    return;
  // Replica j's rows, in order; every rank knows them all.
  std::vector<std::vector<int64_t>> rowsOf(static_cast<size_t>(dp));
  for (int64_t i = 0; i < n; ++i)
    rowsOf[size_t(share.allSeq[size_t(i)] % dp)].push_back(i);
  Comm &replicas = comm(ctx, MeshAxis::DP);
  float *final[2] = {logits, hidden};
  for (int k = 0; k < 2; ++k) {
    const int64_t w = widths[k];
    const size_t ranks = static_cast<size_t>(dp);
    std::vector<int64_t> sendCounts(ranks, m * w), sendOffsets(ranks, 0),
        recvCounts(ranks), recvOffsets(ranks);
    int64_t total = 0;
    for (int j = 0; j < dp; ++j) {
      recvCounts[size_t(j)] = int64_t(rowsOf[size_t(j)].size()) * w;
      recvOffsets[size_t(j)] = total;
      total += recvCounts[size_t(j)];
    }
    std::vector<float> all(size_t(std::max<int64_t>(total, 1)));
    // outs[k] never overlaps `all`: it is sent as it is.
    if (!replicas.allToAllv(outs[k], sendCounts.data(), sendOffsets.data(),
                            all.data(), recvCounts.data(), recvOffsets.data(),
                            &error))
      cpu::commFailed(ctx, "runPartitioned (outputs of the replicas)", error);
    for (int j = 0; j < dp; ++j)
      for (size_t r = 0; r < rowsOf[size_t(j)].size(); ++r)
        std::memcpy(final[k] + rowsOf[size_t(j)][r] * w,
                    all.data() + recvOffsets[size_t(j)] + int64_t(r) * w,
                    sizeof(float) * size_t(w));
  }
}

/// Context::Outputs' argmaxFrom indexes the rows of the whole call, so a
/// stage program over a replica's subset, or over one of several
/// micro-batches, would misread it (its lm_head computes rows from
/// logitsRowsFrom): there every row is computed, as Outputs' logits asks.
class EveryLogitsRow {
public:
  EveryLogitsRow(Context &ctx, bool needed)
      : ctx(ctx), saved(ctx.outputs()), needed(needed && !saved.logits) {
    if (this->needed) {
      Context::Outputs all = saved;
      all.logits = true;
      ctx.setOutputs(all);
    }
  }
  ~EveryLogitsRow() {
    if (needed)
      ctx.setOutputs(saved);
  }

private:
  Context &ctx;
  Context::Outputs saved;
  bool needed;
};

} // namespace

void runPartitioned(Context &ctx, const ProgramFn *stages, const int32_t *ids,
                    const int32_t *pos, int64_t n, float *logits,
                    float *hidden) {
  const ModelSpec &spec = ctx.spec();
  Share share(ctx, ids, pos, n);
  const int32_t *myIds = share.whole ? ids : share.ids.data();
  const int32_t *myPos = share.whole ? pos : share.pos.data();
  float *myLogits = share.whole ? logits : share.logits.data();
  float *myHidden = share.whole ? hidden : share.hidden.data();
  const int pp = ctx.meshSize(MeshAxis::PP);
  ProgramFn stage = stages[ctx.meshCoord(MeshAxis::PP)];
  std::vector<int64_t> bounds = microBatches(share.seq, pp);
  EveryLogitsRow rows(ctx, !share.whole || bounds.size() > 2);
  for (size_t b = 0; b + 1 < bounds.size(); ++b) {
    const int64_t r0 = bounds[b], rows = bounds[b + 1] - r0;
    ctx.setTokenSequences(share.seq.data() + r0, rows);
    stage(ctx, myIds + r0, myPos + r0, rows, myLogits + r0 * spec.vocabSize,
          myHidden + r0 * spec.hiddenSize);
  }
  ctx.setTokenSequences(share.allSeq.data(), n);
  complete(ctx, share, n, logits, hidden);
}

void runPartitionedMtp(Context &ctx, MtpFn lastStage, const float *hiddenIn,
                       const int32_t *ids, const int32_t *pos, int64_t n,
                       float *logits, float *hiddenOut) {
  const ModelSpec &spec = ctx.spec();
  Share share(ctx, ids, pos, n);
  std::vector<float> myHiddenIn;
  if (!share.whole)
    for (int64_t i : share.rows)
      myHiddenIn.insert(myHiddenIn.end(), hiddenIn + i * spec.hiddenSize,
                        hiddenIn + (i + 1) * spec.hiddenSize);
  if (ctx.meshCoord(MeshAxis::PP) == ctx.meshSize(MeshAxis::PP) - 1) {
    EveryLogitsRow rows(ctx, !share.whole);
    ctx.setTokenSequences(share.seq.data(), share.size());
    lastStage(ctx, share.whole ? hiddenIn : myHiddenIn.data(),
              share.whole ? ids : share.ids.data(),
              share.whole ? pos : share.pos.data(), share.size(),
              share.whole ? logits : share.logits.data(),
              share.whole ? hiddenOut : share.hidden.data());
    ctx.setTokenSequences(share.allSeq.data(), n);
  }
  complete(ctx, share, n, logits, hiddenOut);
}

} // namespace dsrt
