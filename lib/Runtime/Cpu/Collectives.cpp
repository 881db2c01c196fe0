//===- Collectives.cpp - kernels that talk to other ranks -----------------===//
//
// The collectives the partition passes insert, on [rows, width] buffers with
// a row stride, and the expert-parallel MoE. They run on the axis
// communicators of Context::setComm. A failed collective is fatal: the
// message names the kernel and this rank, and the process exits non-zero
// (mpirun then ends the job) instead of computing on garbage.
//
//===----------------------------------------------------------------------===//

#include "CpuCommon.h"
#include "ds/Runtime/Comm.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dsrt {
namespace cpu {

void commFailed(Context &ctx, const char *kernel, const std::string &error) {
  std::fprintf(stderr, "error: rank %d: %s: %s\n", ctx.rank(), kernel,
               error.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

namespace {

Comm &axisComm(Context &ctx, MeshAxis axis, const char *kernel) {
  Comm *c = ctx.comm(axis);
  if (!c)
    fatal(kernel, "no communicator for mesh axis (setComm not called)",
          static_cast<long long>(axis));
  return *c;
}

/// Copies rows of width d between a strided buffer and a packed one.
void pack(const float *x, int64_t ldx, int64_t n, int64_t d, float *out) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * d, x + i * ldx, sizeof(float) * d);
}
void unpack(const float *in, int64_t n, int64_t d, float *y, int64_t ldy) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(y + i * ldy, in + i * d, sizeof(float) * d);
}

} // namespace

void allReduce(Context &ctx, MeshAxis axis, float *x, int64_t ldx, int64_t n,
               int64_t d) {
  Comm &c = axisComm(ctx, axis, "allReduce");
  std::string error;
  if (ldx == d || n <= 1) {
    if (!c.allReduceSum(x, n * d, &error))
      commFailed(ctx, "allReduce", error);
    return;
  }
  std::vector<float> packed(size_t(n * d));
  pack(x, ldx, n, d, packed.data());
  if (!c.allReduceSum(packed.data(), n * d, &error))
    commFailed(ctx, "allReduce", error);
  unpack(packed.data(), n, d, x, ldx);
}

void sendRows(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
              int64_t n, int64_t d, int64_t peer) {
  Comm &c = axisComm(ctx, axis, "sendRows");
  std::string error;
  bool ok;
  if (ldx == d || n <= 1) {
    ok = c.send(x, n * d, int(peer), 0, &error);
  } else {
    std::vector<float> packed(size_t(n * d));
    pack(x, ldx, n, d, packed.data());
    ok = c.send(packed.data(), n * d, int(peer), 0, &error);
  }
  if (!ok)
    commFailed(ctx, "sendRows", error);
}

void recvRows(Context &ctx, MeshAxis axis, float *y, int64_t ldy, int64_t n,
              int64_t d, int64_t peer) {
  Comm &c = axisComm(ctx, axis, "recvRows");
  std::string error;
  if (ldy == d || n <= 1) {
    if (!c.recv(y, n * d, int(peer), 0, &error))
      commFailed(ctx, "recvRows", error);
    return;
  }
  std::vector<float> packed(size_t(n * d));
  if (!c.recv(packed.data(), n * d, int(peer), 0, &error))
    commFailed(ctx, "recvRows", error);
  unpack(packed.data(), n, d, y, ldy);
}

void allGatherColumns(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
                      int64_t n, int64_t d, float *y, int64_t ldy) {
  Comm &c = axisComm(ctx, axis, "allGatherColumns");
  const int64_t ranks = c.size();
  std::vector<float> send(size_t(n * d)), recv(size_t(ranks * n * d));
  pack(x, ldx, n, d, send.data());
  std::string error;
  if (!c.allGather(send.data(), n * d, recv.data(), &error))
    commFailed(ctx, "allGatherColumns", error);
  for (int64_t r = 0; r < ranks; ++r)
    unpack(recv.data() + r * n * d, n, d, y + r * d, ldy);
}

void moeExpertsEP(Context &ctx, const float *x, int64_t ldx, int64_t n,
                  int64_t hidden, int64_t inter, const int32_t *idx,
                  const float *weights, int64_t topK, const int64_t *gate,
                  const int64_t *up, const int64_t *down, int64_t experts,
                  float *y, int64_t ldy, ActQuant act) {
  const char *kernel = "moeExpertsEP";
  Comm *group = ctx.expertComm();
  if (!group)
    fatal(kernel, "no expert communicator (setComm not called)", 0);
  Comm &c = *group, &sharers = axisComm(ctx, MeshAxis::EP, kernel);
  const int ranks = c.size(), me = c.rank();
  if (ranks < 1 || experts % ranks != 0)
    fatal(kernel, "experts not divisible by the expert-parallel ranks",
          static_cast<long long>(experts));
  const int64_t perRank = experts / ranks;
  // The ep ranks of this replica hold the same tokens and share them out.
  const int shareRanks = sharers.size();
  auto share = [&](int r) { return n * r / shareRanks; };
  const int64_t t0 = share(sharers.rank()), t1 = share(sharers.rank() + 1);

  // Dispatch: each of my tokens goes once to every rank that holds one of
  // its experts, as [x | expert ids | weights] with the other ranks'
  // experts marked -1 (ids are exact in float: experts < 2^24).
  const int64_t row = hidden + 2 * topK;
  std::vector<std::vector<int64_t>> rowsTo(static_cast<size_t>(ranks));
  for (int64_t t = t0; t < t1; ++t) {
    for (int r = 0; r < ranks; ++r) {
      bool needed = false;
      for (int64_t k = 0; k < topK; ++k)
        needed |= idx[t * topK + k] >= 0 &&
                  idx[t * topK + k] / perRank == r;
      if (needed)
        rowsTo[size_t(r)].push_back(t);
    }
  }
  std::vector<int64_t> sendCounts(ranks), sendOffsets(ranks),
      recvCounts(ranks), recvOffsets(ranks), ones(ranks, 1), iota(ranks);
  for (int r = 0; r < ranks; ++r)
    iota[size_t(r)] = r;
  std::vector<float> mine(ranks), theirs(ranks);
  for (int r = 0; r < ranks; ++r)
    mine[size_t(r)] = float(rowsTo[size_t(r)].size());
  std::string error;
  if (!c.allToAllv(mine.data(), ones.data(), iota.data(), theirs.data(),
                   ones.data(), iota.data(), &error))
    commFailed(ctx, kernel, error);

  int64_t sendRows = 0, recvRows = 0;
  for (int r = 0; r < ranks; ++r) {
    sendOffsets[size_t(r)] = sendRows * row;
    sendCounts[size_t(r)] = int64_t(rowsTo[size_t(r)].size()) * row;
    sendRows += int64_t(rowsTo[size_t(r)].size());
    recvOffsets[size_t(r)] = recvRows * row;
    recvCounts[size_t(r)] = int64_t(theirs[size_t(r)]) * row;
    recvRows += int64_t(theirs[size_t(r)]);
  }
  std::vector<float> send(size_t(std::max<int64_t>(sendRows * row, 1)));
  for (int r = 0, s = 0; r < ranks; ++r) {
    for (int64_t t : rowsTo[size_t(r)]) {
      float *out = send.data() + (s++) * row;
      std::memcpy(out, x + t * ldx, sizeof(float) * hidden);
      for (int64_t k = 0; k < topK; ++k) {
        int32_t e = idx[t * topK + k];
        bool there = e >= 0 && e / perRank == r;
        out[hidden + k] = there ? float(e) : -1.0f;
        out[hidden + topK + k] = there ? weights[t * topK + k] : 0.0f;
      }
    }
  }
  std::vector<float> recv(size_t(std::max<int64_t>(recvRows * row, 1)));
  if (!c.allToAllv(send.data(), sendCounts.data(), sendOffsets.data(),
                   recv.data(), recvCounts.data(), recvOffsets.data(), &error))
    commFailed(ctx, kernel, error);

  // My experts on the rows I received.
  std::vector<float> xr(size_t(recvRows * hidden)), wr(size_t(recvRows * topK));
  std::vector<int32_t> ir(size_t(recvRows * topK));
  for (int64_t i = 0; i < recvRows; ++i) {
    const float *in = recv.data() + i * row;
    std::memcpy(xr.data() + i * hidden, in, sizeof(float) * hidden);
    for (int64_t k = 0; k < topK; ++k) {
      ir[size_t(i * topK + k)] = int32_t(in[hidden + k]);
      wr[size_t(i * topK + k)] = in[hidden + topK + k];
    }
  }
  std::vector<int64_t> g(size_t(experts), -1), u(size_t(experts), -1),
      d(size_t(experts), -1);
  for (int64_t e = me * perRank; e < (me + 1) * perRank; ++e) {
    g[size_t(e)] = gate[e];
    u[size_t(e)] = up[e];
    d[size_t(e)] = down[e];
  }
  std::vector<float> yr(size_t(std::max<int64_t>(recvRows * hidden, 1)));
  moeExpertsW(ctx, xr.data(), hidden, recvRows, hidden, inter, ir.data(),
              wr.data(), topK, g.data(), u.data(), d.data(), experts,
              yr.data(), hidden, act);

  // Combine: the weighted sums go back to the tokens' ranks, which add
  // them in rank order.
  for (int r = 0; r < ranks; ++r) {
    std::swap(sendCounts[size_t(r)], recvCounts[size_t(r)]);
    std::swap(sendOffsets[size_t(r)], recvOffsets[size_t(r)]);
    sendCounts[size_t(r)] = sendCounts[size_t(r)] / row * hidden;
    sendOffsets[size_t(r)] = sendOffsets[size_t(r)] / row * hidden;
    recvCounts[size_t(r)] = recvCounts[size_t(r)] / row * hidden;
    recvOffsets[size_t(r)] = recvOffsets[size_t(r)] / row * hidden;
  }
  std::vector<float> back(size_t(std::max<int64_t>(sendRows * hidden, 1)));
  if (!c.allToAllv(yr.data(), sendCounts.data(), sendOffsets.data(),
                   back.data(), recvCounts.data(), recvOffsets.data(), &error))
    commFailed(ctx, kernel, error);
  const int64_t myRows = t1 - t0;
  std::vector<float> done(size_t(std::max<int64_t>(myRows * hidden, 1)), 0.0f);
  for (int r = 0, s = 0; r < ranks; ++r)
    for (int64_t t : rowsTo[size_t(r)]) {
      const float *part = back.data() + (s++) * hidden;
      float *out = done.data() + (t - t0) * hidden;
      for (int64_t j = 0; j < hidden; ++j)
        out[j] += part[j];
    }

  // Every ep rank of the replica gets every finished row (an all-gather of
  // uneven shares).
  sendCounts.assign(size_t(shareRanks), myRows * hidden);
  sendOffsets.assign(size_t(shareRanks), 0);
  recvCounts.resize(size_t(shareRanks));
  recvOffsets.resize(size_t(shareRanks));
  for (int r = 0; r < shareRanks; ++r) {
    recvCounts[size_t(r)] = (share(r + 1) - share(r)) * hidden;
    recvOffsets[size_t(r)] = share(r) * hidden;
  }
  std::vector<float> all(size_t(std::max<int64_t>(n * hidden, 1)));
  if (!sharers.allToAllv(done.data(), sendCounts.data(), sendOffsets.data(),
                         all.data(), recvCounts.data(), recvOffsets.data(),
                         &error))
    commFailed(ctx, kernel, error);
  unpack(all.data(), n, hidden, y, ldy);
}

} // namespace cpu
} // namespace dsrt
