//===- Mpi.cpp - collectives between CPU ranks over MPI -------------------===//
//
// Library dsrt-mpi (built only when CMake finds MPI), so that single-rank
// executables never need MPI.
//
// Every operation is non-blocking MPI (MPI_Iallreduce, MPI_Iallgather,
// MPI_Ialltoallv, MPI_Ibcast, MPI_Isend/MPI_Irecv, MPI_Ibarrier) polled with MPI_Testall
// against a deadline of DS_COMM_TIMEOUT seconds (default 300), so a peer that
// died or never calls the matching operation is an error after the timeout,
// never a hang. MPI_COMM_WORLD (and our duplicates of it) use
// MPI_ERRORS_RETURN, so an MPI error is returned to us, not an abort.
//
// Failure policy. A timed-out request cannot be taken back (collectives
// cannot be cancelled), and MPI_Finalize would then wait for the missing peer
// forever: Open MPI's finalize synchronizes with every process of the job. So
// after a failure the communicator refuses every later call (with the first
// error), and its destructor prints the error and calls MPI_Abort(
// MPI_COMM_WORLD, 1) instead of MPI_Finalize: this rank exits with a message
// and status 1, mpirun takes the remaining ranks down (also those still
// stuck in a collective with a longer timeout) and returns non-zero. The
// caller reports the returned error first and destroys the communicator when
// it gives up; a program that exits without destroying it leaves MPI
// unfinalized, which mpirun also reports as a failed job.
//
// Counts are int64; MPI's are int. Larger counts go in chunks of at most
// INT_MAX floats (DS_COMM_MAX_CHUNK lowers that limit, for tests of the
// chunked paths): several outstanding MPI_Iallreduce calls, MPI_Iallgather
// with a resized receive type (rank r's chunk lands r * count floats apart,
// an MPI_Aint extent), chunked MPI_Isend/MPI_Irecv. allToAllv takes a single
// MPI_Ialltoallv when every count and offset of every rank fits; whether they
// do is a property of the whole job (a rank only knows its own counts), so the
// ranks first agree on it with a one-int MPI_Iallreduce(MAX), and otherwise
// all exchange chunked MPI_Isend/MPI_Irecv pairs with every peer.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"

#include "CommEnv.h"

// The C API only (MPI::MPI_C); keep mpi.h from pulling the C++ bindings.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sched.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace dsrt {
namespace {

using Clock = std::chrono::steady_clock;

using comm::fail;
using comm::formatSeconds;
using comm::parseTimeout;

std::string mpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, size_t(length));
}

/// DS_COMM_MAX_CHUNK: the largest count one MPI call gets (tests only);
/// default INT_MAX.
bool parseMaxChunk(int64_t *chunk, std::string *error) {
  *chunk = INT_MAX;
  const char *text = std::getenv("DS_COMM_MAX_CHUNK");
  if (!text)
    return true;
  char *end = nullptr;
  long long value = std::strtoll(text, &end, 10);
  if (!*text || *end != '\0' || value <= 0 || value > INT_MAX)
    return fail(error, std::string("DS_COMM_MAX_CHUNK='") + text +
                           "' is not an integer in [1, " +
                           std::to_string(INT_MAX) + "]");
  *chunk = value;
  return true;
}

int64_t numChunks(int64_t count, int64_t chunk) {
  return count <= 0 ? 1 : (count + chunk - 1) / chunk;
}

class MpiComm final : public Comm {
public:
  MpiComm(bool ownsMpi, double timeoutS, int64_t maxChunk)
      : ownsMpi_(ownsMpi), timeoutS_(timeoutS), maxChunk_(maxChunk) {}
  ~MpiComm() override;

  /// Everything after MPI_Init: error handlers, duplicates of `base`,
  /// attributes.
  bool init(MPI_Comm base, std::string *error);

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  bool allReduceSum(float *data, int64_t count, std::string *error) override;
  bool allGather(const float *send, int64_t count, float *recv,
                 std::string *error) override;
  bool broadcast(float *data, int64_t count, int root,
                 std::string *error) override;
  bool allToAllv(const float *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, float *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 std::string *error) override;
  bool send(const float *data, int64_t count, int peer, int tag,
            std::string *error) override;
  bool recv(float *data, int64_t count, int peer, int tag,
            std::string *error) override;
  bool barrier(std::string *error) override;
  std::unique_ptr<Comm> split(int color, int key, std::string *error) override;

  bool failed() const { return failed_; }
  const std::string &firstError() const { return firstError_; }

private:
  /// "allReduceSum on rank 1 of 4".
  std::string where(const std::string &op) const {
    return op + " on rank " + std::to_string(rank_) + " of " +
           std::to_string(size_);
  }
  /// Records the first failure (the communicator is unusable from then on).
  bool failWith(const std::string &message, std::string *error) {
    if (!failed_) {
      failed_ = true;
      firstError_ = message;
    }
    return fail(error, message);
  }
  /// Refuses calls after a failure.
  bool usable(const std::string &op, std::string *error) const {
    if (!failed_)
      return true;
    return fail(error, where(op) +
                           ": the communicator is unusable after an earlier "
                           "failure: " +
                           firstError_);
  }
  /// send/recv arguments: another rank, a tag MPI allows, a count >= 0.
  bool validP2P(const std::string &op, int peer, int tag, int64_t count,
                std::string *error) const {
    if (peer >= 0 && peer < size_ && peer != rank_ && tag >= 0 &&
        tag <= tagUb_ && count >= 0)
      return true;
    return fail(error, where(op) + ": invalid peer, tag (0.." +
                           std::to_string(tagUb_) + ") or count " +
                           std::to_string(count));
  }
  bool checkMpi(int rc, const std::string &op, std::string *error) {
    if (rc == MPI_SUCCESS)
      return true;
    return failWith(where(op) + " failed: " + mpiErrorString(rc), error);
  }
  /// Polls `requests` until all completed, an error, or the deadline.
  /// `peerWhat` says who is missing on timeout.
  bool waitAll(std::vector<MPI_Request> &requests, const std::string &op,
               const char *peerWhat, std::string *error,
               std::vector<MPI_Status> *statuses = nullptr);

  bool ownsMpi_;
  double timeoutS_;
  int64_t maxChunk_;
  MPI_Comm coll_ = MPI_COMM_NULL; ///< collectives (and allToAllv's chunks)
  MPI_Comm p2p_ = MPI_COMM_NULL;  ///< the caller's send/recv
  int rank_ = 0, size_ = 1;
  int tagUb_ = 32767;
  bool failed_ = false;
  std::string firstError_;

  // Buffers pending requests may still read or write after a timeout: they
  // live as long as the communicator (which then aborts on destruction).
  std::vector<MPI_Request> requests_;
  std::vector<MPI_Status> statuses_;
  std::vector<MPI_Datatype> types_;
  std::vector<int> sendCountsI_, sendDisplsI_, recvCountsI_, recvDisplsI_;
  int wideLocal_ = 0, wideGlobal_ = 0;
};

bool MpiComm::init(MPI_Comm base, std::string *error) {
  // A dead peer must be an error returned to us, not an abort.
  if (!checkMpi(MPI_Comm_set_errhandler(base, MPI_ERRORS_RETURN),
                "MPI_Comm_set_errhandler", error))
    return false;
  if (!checkMpi(MPI_Comm_rank(base, &rank_), "MPI_Comm_rank", error) ||
      !checkMpi(MPI_Comm_size(base, &size_), "MPI_Comm_size", error))
    return false;
  void *attr = nullptr;
  int flag = 0;
  if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &attr, &flag) ==
          MPI_SUCCESS &&
      flag)
    tagUb_ = *static_cast<int *>(attr);
  // Our own communicators (they inherit MPI_ERRORS_RETURN), so that our
  // messages never match the program's; MPI_Comm_idup, so that a rank that
  // never starts is a timeout here too.
  requests_.assign(2, MPI_REQUEST_NULL);
  if (!checkMpi(MPI_Comm_idup(base, &coll_, &requests_[0]),
                "MPI_Comm_idup", error) ||
      !checkMpi(MPI_Comm_idup(base, &p2p_, &requests_[1]),
                "MPI_Comm_idup", error))
    return false;
  return waitAll(requests_, "createMpiComm (MPI_Comm_idup)",
                 "a peer died or never arrived", error);
}

MpiComm::~MpiComm() {
  if (failed_) {
    std::fprintf(stderr,
                 "ds: rank %d of %d: %s\n"
                 "ds: rank %d: calling MPI_Abort: after a failed collective "
                 "MPI_Finalize would wait for the missing peer forever\n",
                 rank_, size_, firstError_.c_str(), rank_);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1); // MPI_Abort does not return; in case it does.
  }
  if (coll_ != MPI_COMM_NULL)
    MPI_Comm_free(&coll_);
  if (p2p_ != MPI_COMM_NULL)
    MPI_Comm_free(&p2p_);
  if (ownsMpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Finalize();
  }
}

bool MpiComm::waitAll(std::vector<MPI_Request> &requests, const std::string &op,
                      const char *peerWhat, std::string *error,
                      std::vector<MPI_Status> *statuses) {
  const int n = int(requests.size());
  if (statuses)
    statuses->resize(size_t(n));
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(timeoutS_));
  for (uint64_t iteration = 0;; ++iteration) {
    int done = 0;
    int rc = MPI_Testall(n, requests.data(), &done,
                         statuses ? statuses->data() : MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      if (rc == MPI_ERR_IN_STATUS && statuses)
        for (const MPI_Status &status : *statuses)
          if (status.MPI_ERROR != MPI_SUCCESS &&
              status.MPI_ERROR != MPI_ERR_PENDING) {
            rc = status.MPI_ERROR;
            break;
          }
      return failWith(where(op) + " failed: " + mpiErrorString(rc), error);
    }
    if (done)
      return true;
    Clock::time_point now = Clock::now();
    if (now >= deadline)
      return failWith(where(op) + " timed out after " +
                          formatSeconds(timeoutS_) + " s: " + peerWhat +
                          " (DS_COMM_TIMEOUT)",
                      error);
    // Open MPI progresses non-blocking operations only inside MPI calls:
    // spin at first (latency), then yield (ranks may share cores), then
    // sleep a little (a peer that is still computing).
    if (iteration < 64)
      continue;
    if (now - start < std::chrono::milliseconds(20))
      sched_yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

bool MpiComm::allReduceSum(float *data, int64_t count, std::string *error) {
  const char *op = "allReduceSum";
  if (!usable(op, error))
    return false;
  if (count < 0)
    return fail(error, where(op) + ": negative count " + std::to_string(count));
  requests_.clear();
  for (int64_t c = 0, n = numChunks(count, maxChunk_); c < n; ++c) {
    int64_t offset = c * maxChunk_;
    int length = int(std::min(maxChunk_, count - offset));
    requests_.push_back(MPI_REQUEST_NULL);
    if (!checkMpi(MPI_Iallreduce(MPI_IN_PLACE, data + offset, length, MPI_FLOAT,
                                 MPI_SUM, coll_, &requests_.back()),
                  op, error))
      return false;
  }
  return waitAll(requests_, op, "a peer died or never arrived", error);
}

bool MpiComm::allGather(const float *send, int64_t count, float *recv,
                        std::string *error) {
  const char *op = "allGather";
  if (!usable(op, error))
    return false;
  if (count < 0)
    return fail(error, where(op) + ": negative count " + std::to_string(count));
  // send already in place at recv + rank * count: MPI_IN_PLACE.
  const bool inPlace = send == recv + int64_t(rank_) * count;
  requests_.clear();
  for (MPI_Datatype &type : types_)
    MPI_Type_free(&type);
  types_.clear();
  if (count <= maxChunk_) {
    requests_.push_back(MPI_REQUEST_NULL);
    return checkMpi(MPI_Iallgather(inPlace ? MPI_IN_PLACE : send, int(count),
                                   MPI_FLOAT, recv, int(count), MPI_FLOAT,
                                   coll_, &requests_.back()),
                    op, error) &&
           waitAll(requests_, op, "a peer died or never arrived", error);
  }
  // Chunk c of every rank: `length` floats received as one element of a
  // type whose extent is `count` floats, so rank r's lands at
  // recv + r * count + offset.
  for (int64_t c = 0, n = numChunks(count, maxChunk_); c < n; ++c) {
    int64_t offset = c * maxChunk_;
    int length = int(std::min(maxChunk_, count - offset));
    MPI_Datatype block, strided;
    if (!checkMpi(MPI_Type_contiguous(length, MPI_FLOAT, &block), op, error) ||
        !checkMpi(MPI_Type_create_resized(
                      block, 0, MPI_Aint(count) * MPI_Aint(sizeof(float)),
                      &strided),
                  op, error))
      return false;
    MPI_Type_free(&block);
    types_.push_back(strided);
    if (!checkMpi(MPI_Type_commit(&types_.back()), op, error))
      return false;
    requests_.push_back(MPI_REQUEST_NULL);
    if (!checkMpi(MPI_Iallgather(inPlace ? MPI_IN_PLACE : send + offset, length,
                                 MPI_FLOAT, recv + offset, 1, types_.back(),
                                 coll_, &requests_.back()),
                  op, error))
      return false;
  }
  if (!waitAll(requests_, op, "a peer died or never arrived", error))
    return false;
  for (MPI_Datatype &type : types_)
    MPI_Type_free(&type);
  types_.clear();
  return true;
}

bool MpiComm::broadcast(float *data, int64_t count, int root,
                        std::string *error) {
  std::string op = "broadcast from rank " + std::to_string(root);
  if (!usable(op, error))
    return false;
  if (count < 0 || root < 0 || root >= size_)
    return fail(error, where(op) + ": bad count " + std::to_string(count) +
                           " or root (size " + std::to_string(size_) + ")");
  requests_.clear();
  for (int64_t c = 0, n = numChunks(count, maxChunk_); c < n; ++c) {
    int64_t offset = c * maxChunk_;
    int length = int(std::min(maxChunk_, count - offset));
    requests_.push_back(MPI_REQUEST_NULL);
    if (!checkMpi(MPI_Ibcast(data + offset, length, MPI_FLOAT, root, coll_,
                             &requests_.back()),
                  op, error))
      return false;
  }
  return waitAll(requests_, op, "a peer died or never arrived", error);
}

bool MpiComm::allToAllv(const float *send, const int64_t *sendCounts,
                        const int64_t *sendOffsets, float *recv,
                        const int64_t *recvCounts, const int64_t *recvOffsets,
                        std::string *error) {
  const char *op = "allToAllv";
  if (!usable(op, error))
    return false;
  wideLocal_ = 0;
  for (int j = 0; j < size_; ++j) {
    if (sendCounts[j] < 0 || sendOffsets[j] < 0 || recvCounts[j] < 0 ||
        recvOffsets[j] < 0)
      return fail(error, where(op) + ": negative count or offset for rank " +
                             std::to_string(j));
    if (sendCounts[j] > maxChunk_ || sendOffsets[j] > maxChunk_ ||
        recvCounts[j] > maxChunk_ || recvOffsets[j] > maxChunk_)
      wideLocal_ = 1;
  }
  if (sendCounts[rank_] != recvCounts[rank_])
    return fail(error, where(op) + ": sends " +
                           std::to_string(sendCounts[rank_]) +
                           " floats to itself but receives " +
                           std::to_string(recvCounts[rank_]));
  // Does any rank need more than one MPI_Ialltoallv can say?
  requests_.assign(1, MPI_REQUEST_NULL);
  if (!checkMpi(MPI_Iallreduce(&wideLocal_, &wideGlobal_, 1, MPI_INT, MPI_MAX,
                               coll_, &requests_[0]),
                op, error) ||
      !waitAll(requests_, op, "a peer died or never arrived", error))
    return false;

  if (!wideGlobal_) {
    sendCountsI_.resize(size_t(size_));
    sendDisplsI_.resize(size_t(size_));
    recvCountsI_.resize(size_t(size_));
    recvDisplsI_.resize(size_t(size_));
    for (int j = 0; j < size_; ++j) {
      sendCountsI_[j] = int(sendCounts[j]);
      sendDisplsI_[j] = int(sendOffsets[j]);
      recvCountsI_[j] = int(recvCounts[j]);
      recvDisplsI_[j] = int(recvOffsets[j]);
    }
    requests_.assign(1, MPI_REQUEST_NULL);
    return checkMpi(MPI_Ialltoallv(send, sendCountsI_.data(),
                                   sendDisplsI_.data(), MPI_FLOAT, recv,
                                   recvCountsI_.data(), recvDisplsI_.data(),
                                   MPI_FLOAT, coll_, &requests_[0]),
                    op, error) &&
           waitAll(requests_, op, "a peer died or never arrived", error);
  }

  // Chunked pairwise exchange (messages between one pair with one tag arrive
  // in order, so chunk c matches chunk c).
  const int tag = 1;
  if (sendCounts[rank_] > 0)
    std::memmove(recv + recvOffsets[rank_], send + sendOffsets[rank_],
                 size_t(sendCounts[rank_]) * sizeof(float));
  requests_.clear();
  std::vector<int> expected; // receive lengths, in request order
  for (int j = 0; j < size_; ++j) {
    if (j == rank_)
      continue;
    for (int64_t offset = 0; offset < recvCounts[j]; offset += maxChunk_) {
      int length = int(std::min(maxChunk_, recvCounts[j] - offset));
      requests_.push_back(MPI_REQUEST_NULL);
      expected.push_back(length);
      if (!checkMpi(MPI_Irecv(recv + recvOffsets[j] + offset, length, MPI_FLOAT,
                              j, tag, coll_, &requests_.back()),
                    op, error))
        return false;
    }
  }
  const size_t numRecvs = requests_.size();
  for (int j = 0; j < size_; ++j) {
    if (j == rank_)
      continue;
    for (int64_t offset = 0; offset < sendCounts[j]; offset += maxChunk_) {
      int length = int(std::min(maxChunk_, sendCounts[j] - offset));
      requests_.push_back(MPI_REQUEST_NULL);
      if (!checkMpi(MPI_Isend(send + sendOffsets[j] + offset, length, MPI_FLOAT,
                              j, tag, coll_, &requests_.back()),
                    op, error))
        return false;
    }
  }
  if (!waitAll(requests_, op, "a peer died or never arrived", error,
               &statuses_))
    return false;
  for (size_t i = 0; i < numRecvs; ++i) {
    int got = 0;
    MPI_Get_count(&statuses_[i], MPI_FLOAT, &got);
    if (got != expected[i])
      return failWith(where(op) + ": received " + std::to_string(got) +
                          " floats from rank " +
                          std::to_string(statuses_[i].MPI_SOURCE) +
                          " where its recvCounts said " +
                          std::to_string(expected[i]),
                      error);
  }
  return true;
}

bool MpiComm::send(const float *data, int64_t count, int peer, int tag,
                   std::string *error) {
  std::string op = "send to rank " + std::to_string(peer) + " (tag " +
                   std::to_string(tag) + ")";
  if (!usable(op, error) || !validP2P(op, peer, tag, count, error))
    return false;
  requests_.clear();
  for (int64_t c = 0, n = numChunks(count, maxChunk_); c < n; ++c) {
    int64_t offset = c * maxChunk_;
    int length = int(std::min(maxChunk_, count - offset));
    requests_.push_back(MPI_REQUEST_NULL);
    if (!checkMpi(MPI_Isend(data + offset, length, MPI_FLOAT, peer, tag, p2p_,
                            &requests_.back()),
                  op, error))
      return false;
  }
  return waitAll(requests_, op,
                 "the peer died or never posted the matching recv", error);
}

bool MpiComm::recv(float *data, int64_t count, int peer, int tag,
                   std::string *error) {
  std::string op = "recv from rank " + std::to_string(peer) + " (tag " +
                   std::to_string(tag) + ")";
  if (!usable(op, error) || !validP2P(op, peer, tag, count, error))
    return false;
  requests_.clear();
  std::vector<int> expected;
  for (int64_t c = 0, n = numChunks(count, maxChunk_); c < n; ++c) {
    int64_t offset = c * maxChunk_;
    int length = int(std::min(maxChunk_, count - offset));
    requests_.push_back(MPI_REQUEST_NULL);
    expected.push_back(length);
    if (!checkMpi(MPI_Irecv(data + offset, length, MPI_FLOAT, peer, tag, p2p_,
                            &requests_.back()),
                  op, error))
      return false;
  }
  if (!waitAll(requests_, op, "the peer died or never sent", error,
               &statuses_))
    return false;
  int64_t received = 0;
  bool exact = true;
  for (size_t i = 0; i < expected.size(); ++i) {
    int got = 0;
    MPI_Get_count(&statuses_[i], MPI_FLOAT, &got);
    received += got;
    exact = exact && got == expected[i];
  }
  if (!exact)
    return failWith(where(op) + ": expected " + std::to_string(count) +
                        " floats, received " + std::to_string(received),
                    error);
  return true;
}

bool MpiComm::barrier(std::string *error) {
  const char *op = "barrier";
  if (!usable(op, error))
    return false;
  requests_.assign(1, MPI_REQUEST_NULL);
  return checkMpi(MPI_Ibarrier(coll_, &requests_[0]), op, error) &&
         waitAll(requests_, op, "a peer died or never arrived", error);
}

std::unique_ptr<Comm> MpiComm::split(int color, int key, std::string *error) {
  const char *op = "split";
  // MPI_Comm_split cannot be polled: a timed barrier first makes sure every
  // rank is there to take part.
  if (!usable(op, error) || !barrier(error))
    return nullptr;
  MPI_Comm part = MPI_COMM_NULL;
  if (!checkMpi(MPI_Comm_split(coll_, color, key, &part), op, error))
    return nullptr;
  auto child = std::make_unique<MpiComm>(false, timeoutS_, maxChunk_);
  std::string initError;
  bool ok = child->init(part, &initError);
  MPI_Comm_free(&part);
  if (!ok) {
    failWith(where(op) + ": " + initError, error);
    child.reset(); // aborts the job: its collective failed
    return nullptr;
  }
  return child;
}

} // namespace

std::unique_ptr<Comm> createMpiComm(int *argc, char ***argv,
                                    std::string *error) {
  // Configuration first: an invalid value leaves MPI untouched.
  double timeoutS = 0;
  int64_t maxChunk = 0;
  if (!parseTimeout(&timeoutS, error) || !parseMaxChunk(&maxChunk, error))
    return nullptr;

  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    fail(error, "createMpiComm: MPI was already finalized");
    return nullptr;
  }
  MPI_Initialized(&initialized);
  bool owns = false;
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
      fail(error, "createMpiComm: MPI_Init_thread failed: " +
                      mpiErrorString(rc));
      return nullptr;
    }
    owns = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      fail(error, "createMpiComm: MPI provides thread level " +
                      std::to_string(provided) +
                      ", below MPI_THREAD_FUNNELED");
      return nullptr;
    }
  } else {
    // Initialized by the program: we call MPI from its main thread only.
    int isMain = 0;
    MPI_Is_thread_main(&isMain);
    if (!isMain) {
      fail(error, "createMpiComm: MPI was initialized by another thread "
                  "(MPI_THREAD_FUNNELED needs the main thread)");
      return nullptr;
    }
  }

  auto comm = std::make_unique<MpiComm>(owns, timeoutS, maxChunk);
  std::string initError;
  if (!comm->init(MPI_COMM_WORLD, &initError)) {
    // MPI is initialized but unusable (a peer missing, an MPI error): no
    // caller can finalize it safely, so the destructor prints the error and
    // aborts the job (see the failure policy above).
    fail(error, initError);
    comm.reset();
    return nullptr;
  }
  return comm;
}

} // namespace dsrt
