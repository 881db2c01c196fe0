//===- Nccl.cpp - collectives between GPU ranks over NCCL -----------------===//
//
// Library dsrt-nccl (built when CMake finds CUDA, NCCL and MPI). The
// communicator's buffers are device memory and its operations run on the
// CUDA stream it was created with, in stream order with the kernels around
// them.
//
// Timeouts. Communicators are created non-blocking (ncclConfig_t::blocking
// = 0), so neither initialization nor a call can block the host: every NCCL
// call is followed by polling ncclCommGetAsyncError, and each operation by
// polling cudaStreamQuery, against a deadline of DS_COMM_TIMEOUT seconds
// (default 300). A peer that died or never arrives is then an error naming
// the operation and the rank, after which the communicator is aborted
// (ncclCommAbort stops its kernels) and refuses every later call.
//
// Inside CUDA graph capture an operation is recorded, not run: it returns
// after enqueueing and completes when the graph is replayed, where the
// caller's wait (cuda::runProgram polls the stream against the same
// deadline) bounds it instead.
//
// The ncclUniqueId travels over the MPI communicator of the same ranks as
// 128 floats, one byte each (exact).
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"

#include "CommEnv.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <vector>

namespace dsrt {
namespace {

using Clock = std::chrono::steady_clock;

using comm::backOff;
using comm::fail;
using comm::formatSeconds;

class NcclComm final : public Comm {
public:
  NcclComm(ncclComm_t comm, cudaStream_t stream, int rank, int size,
           double timeoutS, float *one)
      : comm_(comm), stream_(stream), rank_(rank), size_(size),
        timeoutS_(timeoutS), one_(one) {}
  ~NcclComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  bool allReduceSum(float *data, int64_t count, std::string *error) override {
    if (!usable(error))
      return false;
    return call(ncclAllReduce(data, data, size_t(count), ncclFloat, ncclSum,
                              comm_, stream_),
                "allReduceSum", error) &&
           complete("allReduceSum", error);
  }

  bool allGather(const float *send, int64_t count, float *recv,
                 std::string *error) override {
    if (!usable(error))
      return false;
    return call(ncclAllGather(send, recv, size_t(count), ncclFloat, comm_,
                              stream_),
                "allGather", error) &&
           complete("allGather", error);
  }

  bool broadcast(float *data, int64_t count, int root,
                 std::string *error) override {
    if (!usable(error))
      return false;
    if (root < 0 || root >= size_) // a caller's mistake: stays usable
      return fail(error, where("broadcast") + ": root " + std::to_string(root) +
                             " is not a rank of " + std::to_string(size_));
    return call(ncclBroadcast(data, data, size_t(count), ncclFloat, root,
                              comm_, stream_),
                "broadcast", error) &&
           complete("broadcast", error);
  }

  bool allToAllv(const float *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, float *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 std::string *error) override {
    if (!usable(error))
      return false;
    if (!call(ncclGroupStart(), "allToAllv", error))
      return false;
    ncclResult_t r = ncclSuccess;
    for (int j = 0; j < size_ && r == ncclSuccess; ++j) {
      if (sendCounts[j] > 0)
        r = ncclSend(send + sendOffsets[j], size_t(sendCounts[j]), ncclFloat,
                     j, comm_, stream_);
      if (r == ncclSuccess && recvCounts[j] > 0)
        r = ncclRecv(recv + recvOffsets[j], size_t(recvCounts[j]), ncclFloat,
                     j, comm_, stream_);
    }
    ncclResult_t end = ncclGroupEnd();
    return call(r != ncclSuccess ? r : end, "allToAllv", error) &&
           complete("allToAllv", error);
  }

  // NCCL has no tags: messages between two ranks arrive in the order they
  // were sent, which is all the callers (pipeline stages) rely on.
  bool send(const float *data, int64_t count, int peer, int,
            std::string *error) override {
    if (!usable(error) || !validPeer(peer, "send", error))
      return false;
    return call(ncclSend(data, size_t(count), ncclFloat, peer, comm_, stream_),
                "send", error) &&
           complete("send", error);
  }

  bool recv(float *data, int64_t count, int peer, int,
            std::string *error) override {
    if (!usable(error) || !validPeer(peer, "recv", error))
      return false;
    return call(ncclRecv(data, size_t(count), ncclFloat, peer, comm_, stream_),
                "recv", error) &&
           complete("recv", error);
  }

  bool barrier(std::string *error) override {
    return allReduceSum(one_, 1, error);
  }

  std::unique_ptr<Comm> split(int color, int key, std::string *error) override;

  /// Polls the communicator until its last call finished (non-blocking
  /// communicators may answer ncclInProgress).
  bool settle(const std::string &op, std::string *error);

private:
  bool usable(std::string *error) {
    return failed_.empty() ? true : fail(error, failed_);
  }
  bool validPeer(int peer, const char *op, std::string *error) {
    if (peer >= 0 && peer < size_ && peer != rank_)
      return true;
    // A caller's mistake, not a broken communicator: it stays usable.
    return fail(error, where(op) + ": peer " + std::to_string(peer) +
                           " is not another rank of " + std::to_string(size_));
  }
  std::string where(const std::string &op) const {
    return "NCCL " + op + " (rank " + std::to_string(rank_) + " of " +
           std::to_string(size_) + ")";
  }
  bool failWith(const std::string &message, std::string *error) {
    if (failed_.empty())
      failed_ = message;
    return fail(error, message);
  }
  bool ncclFailed(ncclResult_t r, const std::string &op, std::string *error) {
    const char *last = ncclGetLastError(comm_);
    std::string message = where(op) + " failed: " + ncclGetErrorString(r);
    if (last && *last)
      message += std::string(": ") + last;
    abort();
    return failWith(message, error);
  }
  bool call(ncclResult_t r, const std::string &op, std::string *error) {
    if (r == ncclInProgress)
      return settle(op, error);
    return r == ncclSuccess ? true : ncclFailed(r, op, error);
  }
  /// Waits for the stream unless it is being captured into a graph.
  bool complete(const std::string &op, std::string *error);
  template <class Step>
  bool poll(const std::string &op, std::string *error, Step step);
  void abort() {
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }
  Clock::time_point deadline(Clock::time_point start) const {
    return start + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(timeoutS_));
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_, size_;
  double timeoutS_;
  float *one_; // device float for barrier (owned)
  std::string failed_;
};

NcclComm::~NcclComm() {
  if (comm_) {
    // Finalize flushes outstanding work; a peer that never comes makes it
    // time out, and then the communicator is aborted instead.
    std::string ignored;
    if (ncclCommFinalize(comm_) == ncclInProgress)
      settle("finalize", &ignored);
    if (comm_)
      ncclCommDestroy(comm_);
  }
  cudaFree(one_);
}

/// Calls step() until it returns true (done) or false with *stop set
/// (failed), aborting the communicator at the deadline.
template <class Step>
bool NcclComm::poll(const std::string &op, std::string *error, Step step) {
  const Clock::time_point start = Clock::now(), end = deadline(start);
  for (uint64_t iteration = 0;; ++iteration) {
    bool stop = false;
    if (step(&stop))
      return true;
    if (stop)
      return false;
    if (Clock::now() >= end) {
      abort();
      return failWith(where(op) + " timed out after " +
                          formatSeconds(timeoutS_) +
                          " s: a peer died or never arrived (DS_COMM_TIMEOUT)",
                      error);
    }
    backOff(iteration, start);
  }
}

bool NcclComm::settle(const std::string &op, std::string *error) {
  return poll(op, error, [&](bool *stop) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r == ncclSuccess && state == ncclInProgress)
      return false;
    if (r == ncclSuccess && state == ncclSuccess)
      return true;
    *stop = true;
    return ncclFailed(r != ncclSuccess ? r : state, op, error);
  });
}

bool NcclComm::complete(const std::string &op, std::string *error) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream_, &capture) != cudaSuccess)
    return failWith(where(op) + ": cudaStreamIsCapturing failed", error);
  if (capture != cudaStreamCaptureStatusNone)
    return true;
  return poll(op, error, [&](bool *stop) {
    cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess)
      return true;
    *stop = true;
    if (e != cudaErrorNotReady)
      return failWith(where(op) + ": " + cudaGetErrorString(e), error);
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess &&
        state != ncclSuccess && state != ncclInProgress)
      return ncclFailed(state, op, error);
    *stop = false;
    return false;
  });
}

ncclConfig_t nonBlockingConfig() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

/// The NCCL communicator (with its barrier float) of a finished init.
std::unique_ptr<NcclComm> wrap(ncclComm_t comm, cudaStream_t stream, int rank,
                               int size, double timeoutS, std::string *error) {
  float *one = nullptr;
  cudaError_t e = cudaMalloc(&one, sizeof(float));
  if (e != cudaSuccess) {
    ncclCommAbort(comm);
    fail(error, std::string("createNcclComm: cudaMalloc: ") +
                    cudaGetErrorString(e));
    return nullptr;
  }
  return std::make_unique<NcclComm>(comm, stream, rank, size, timeoutS, one);
}

// ncclCommSplit of a non-blocking communicator gave no child handle to poll
// (NCCL 2.28 on an H100, one rank), and a blocking split could not honour
// DS_COMM_TIMEOUT: sub-communicators are made with createNcclComm over the
// matching host communicators instead (as prepareNccl does for tp and ep).
std::unique_ptr<Comm> NcclComm::split(int, int, std::string *error) {
  fail(error, where("split") + ": not supported: create the sub-communicator "
                               "with createNcclComm over the matching host "
                               "communicator");
  return nullptr;
}

} // namespace

std::unique_ptr<Comm> createNcclComm(Comm &host, CUstream_st *stream,
                                     std::string *error) {
  double timeoutS = 300;
  if (!comm::parseTimeout(&timeoutS, error))
    return nullptr;
  const int rank = host.rank(), size = host.size();
  // The unique id of rank 0, one byte per float.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  float bytes[sizeof(id.internal)];
  if (rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      return fail(error, std::string("createNcclComm: ncclGetUniqueId: ") +
                             ncclGetErrorString(r)),
             nullptr;
  }
  for (size_t i = 0; i < sizeof(id.internal); ++i)
    bytes[i] = float(static_cast<unsigned char>(id.internal[i]));
  std::string hostError;
  if (!host.broadcast(bytes, int64_t(sizeof(id.internal)), 0, &hostError))
    return fail(error, "createNcclComm: broadcasting the NCCL id: " + hostError),
           nullptr;
  for (size_t i = 0; i < sizeof(id.internal); ++i)
    id.internal[i] = char(static_cast<unsigned char>(bytes[i]));

  ncclConfig_t config = nonBlockingConfig();
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm)
      ncclCommAbort(comm);
    return fail(error, "createNcclComm (rank " + std::to_string(rank) +
                           "): ncclCommInitRankConfig: " +
                           ncclGetErrorString(r)),
           nullptr;
  }
  std::unique_ptr<NcclComm> out =
      wrap(comm, reinterpret_cast<cudaStream_t>(stream), rank, size, timeoutS,
           error);
  if (!out || !out->settle("init", error))
    return nullptr;
  return out;
}

} // namespace dsrt
