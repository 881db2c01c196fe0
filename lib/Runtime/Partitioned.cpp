//===- Partitioned.cpp - pipeline stages and data-parallel replicas -------===//
//
// Main runs the same loop on every rank and hands every program all tokens
// of a step. For pp > 1 or dp > 1 the emitted programs come here: the
// replica keeps its sequences, the stage runs its layers over them in
// micro-batches, and the outputs are made whole again on every rank.
//
//===----------------------------------------------------------------------===//

#include "Argmax.h"
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

/// Puts `mine` (this replica's m rows of width w, valid on the last stage)
/// into `whole` (the call's n rows) on every rank: a broadcast over pp from
/// the last stage, then every replica's rows to every replica (gathered over
/// dp) into their places. `mine` and `whole` may be the same buffer (one
/// replica owning every row).
void gatherRows(Context &ctx, const Share &share, int64_t n, float *mine,
                float *whole, int64_t w, const char *what) {
  const int64_t m = share.size();
  std::string error;
  const int pp = ctx.meshSize(MeshAxis::PP);
  if (pp > 1 && !comm(ctx, MeshAxis::PP).broadcast(mine, m * w, pp - 1, &error))
    cpu::commFailed(ctx, what, error);
  const int dp = ctx.meshSize(MeshAxis::DP);
  if (dp == 1) {
    if (mine != whole)
      std::memcpy(whole, mine, sizeof(float) * size_t(m * w));
    return;
  }
  // Replica j's rows, in order; every rank knows them all.
  std::vector<std::vector<int64_t>> rowsOf(static_cast<size_t>(dp));
  for (int64_t i = 0; i < n; ++i)
    rowsOf[size_t(share.allSeq[size_t(i)] % dp)].push_back(i);
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
  // `mine` never overlaps `all`: it is sent as it is.
  if (!comm(ctx, MeshAxis::DP)
           .allToAllv(mine, sendCounts.data(), sendOffsets.data(), all.data(),
                      recvCounts.data(), recvOffsets.data(), &error))
    cpu::commFailed(ctx, what, error);
  for (int j = 0; j < dp; ++j)
    for (size_t r = 0; r < rowsOf[size_t(j)].size(); ++r)
      std::memcpy(whole + rowsOf[size_t(j)][r] * w,
                  all.data() + recvOffsets[size_t(j)] + int64_t(r) * w,
                  sizeof(float) * size_t(w));
}

/// The caller's Context::Outputs, and the stage programs' while they run.
/// argmaxFrom indexes the rows of the whole call, so a stage program over a
/// replica's subset, or over one of several micro-batches, would misread it
/// (its lm_head computes rows from logitsRowsFrom): there every row is
/// computed and the stages take no argmax; complete() takes it.
class StageOutputs {
public:
  StageOutputs(Context &ctx, bool subset)
      : want(ctx.outputs()), ctx(ctx), subset(subset) {
    if (subset) {
      Context::Outputs all = want;
      all.logits = true;
      all.argmax = nullptr;
      all.argmaxFrom = 0;
      ctx.setOutputs(all);
    }
  }
  /// Back to the caller's outputs (clears argmaxDone; see complete()).
  void restore() {
    if (subset)
      ctx.setOutputs(want);
    subset = false;
  }
  ~StageOutputs() { restore(); }

  const Context::Outputs want;

private:
  Context &ctx;
  bool subset;
};

/// Makes every rank's outputs whole, as far as `want` asks. A greedy step
/// that wants no logits (no --dump-logits) moves each row's argmax, one
/// number, where the logits would be a vocab-wide row; token ids are exact
/// as floats below 2^24, which the collectives carry. `stagesTookArgmax`:
/// the stage program (a whole, single call) took the argmax itself into
/// want.argmax, and its logits rows may not be on the host.
void complete(Context &ctx, Share &share, int64_t n, float *logits,
              float *hidden, const Context::Outputs &want,
              bool stagesTookArgmax) {
  const ModelSpec &spec = ctx.spec();
  const int64_t m = share.size();
  float *myLogits = share.whole ? logits : share.logits.data();
  if (want.argmax && !want.logits) {
    if (spec.vocabSize > (int64_t(1) << 24)) // ids travel as floats
      cpu::fatal("runPartitioned",
                 "vocabulary too large to send token ids "
                 "as floats",
                 spec.vocabSize);
    const int64_t from = std::max<int64_t>(want.argmaxFrom, 0);
    std::vector<float> mine(size_t(std::max<int64_t>(m, 1)), 0.0f),
        all(size_t(n), 0.0f);
    if (ctx.meshCoord(MeshAxis::PP) == ctx.meshSize(MeshAxis::PP) - 1)
      for (int64_t r = 0; r < m; ++r) {
        const int64_t i = share.rows[size_t(r)];
        if (i >= from)
          mine[size_t(r)] =
              float(stagesTookArgmax ? want.argmax[i]
                                     : argmaxRow(myLogits + r * spec.vocabSize,
                                                 spec.vocabSize));
      }
    gatherRows(ctx, share, n, mine.data(), all.data(), 1,
               "runPartitioned (argmax of the replicas)");
    for (int64_t i = from; i < n; ++i)
      want.argmax[i] = int32_t(all[size_t(i)]);
  } else {
    gatherRows(ctx, share, n, myLogits, logits, spec.vocabSize,
               "runPartitioned (logits of the replicas)");
  }
  if (want.hidden)
    gatherRows(ctx, share, n, share.whole ? hidden : share.hidden.data(),
               hidden, spec.hiddenSize,
               "runPartitioned (hidden states of the replicas)");
}

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
  StageOutputs outputs(ctx, !share.whole || bounds.size() > 2);
  for (size_t b = 0; b + 1 < bounds.size(); ++b) {
    const int64_t r0 = bounds[b], rows = bounds[b + 1] - r0;
    ctx.setTokenSequences(share.seq.data() + r0, rows);
    stage(ctx, myIds + r0, myPos + r0, rows, myLogits + r0 * spec.vocabSize,
          myHidden + r0 * spec.hiddenSize);
  }
  ctx.setTokenSequences(share.allSeq.data(), n);
  const bool tookArgmax = ctx.argmaxDone();
  outputs.restore();
  complete(ctx, share, n, logits, hidden, outputs.want, tookArgmax);
  if (outputs.want.argmax && !outputs.want.logits)
    ctx.setArgmaxDone();
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
  StageOutputs outputs(ctx, !share.whole);
  bool tookArgmax = false;
  if (ctx.meshCoord(MeshAxis::PP) == ctx.meshSize(MeshAxis::PP) - 1) {
    ctx.setTokenSequences(share.seq.data(), share.size());
    lastStage(ctx, share.whole ? hiddenIn : myHiddenIn.data(),
              share.whole ? ids : share.ids.data(),
              share.whole ? pos : share.pos.data(), share.size(),
              share.whole ? logits : share.logits.data(),
              share.whole ? hiddenOut : share.hidden.data());
    ctx.setTokenSequences(share.allSeq.data(), n);
    tookArgmax = ctx.argmaxDone();
  }
  outputs.restore();
  complete(ctx, share, n, logits, hiddenOut, outputs.want, tookArgmax);
  if (outputs.want.argmax && !outputs.want.logits)
    ctx.setArgmaxDone();
}

} // namespace dsrt
