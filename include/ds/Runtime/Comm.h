//===- Comm.h - libdsrt collectives between ranks --------------*- C++ -*-===//
//
// The communicator emitted code uses for the collectives the partition passes
// insert. Plain C++17: no MLIR, no exceptions; every operation returns false
// and fills *error (when error is not null) instead of throwing or aborting.
//
// Implementations:
//   createSingleComm()  size 1, part of libdsrt, needs no MPI. Collectives are
//                       copies (or nothing); send/recv have no peer and fail.
//   createMpiComm()     MPI on CPU ranks (library dsrt-mpi, built only when
//                       CMake finds MPI). Every operation is non-blocking MPI
//                       polled against a deadline of DS_COMM_TIMEOUT seconds
//                       (default 300): a peer that died or never arrives is
//                       an error naming the operation, the rank and the
//                       timeout, never a hang.
//   createNcclComm()    NCCL on GPU ranks (library dsrt-nccl, built when
//                       CMake finds CUDA, NCCL and MPI). Buffers are device
//                       memory; operations run on the given CUDA stream and
//                       return once done (inside graph capture: once
//                       recorded). Same timeout rule, through non-blocking
//                       NCCL communicators. Tags are ignored (NCCL delivers
//                       a pair's messages in order); split() is refused
//                       (make one createNcclComm per host sub-communicator).
//
// All counts and offsets are in floats (elements), int64: counts beyond
// INT_MAX are split into chunks MPI accepts. Collectives must be called by
// every rank in the same order with the same `count` (allReduceSum,
// allGather, broadcast); for allToAllv, sendCounts[j] on rank i must equal
// recvCounts[i] on rank j. Calls come from one thread at a time (the MPI
// implementation asks for MPI_THREAD_FUNNELED: the thread that created it).
//
// After a failed operation the communicator is unusable: later calls fail at
// once with the first error, and destroying an MPI communicator then calls
// MPI_Abort (see Mpi.cpp) so that every rank of the job exits non-zero.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RUNTIME_COMM_H
#define DS_RUNTIME_COMM_H

#include <cstdint>
#include <memory>
#include <string>

struct CUstream_st; // cudaStream_t, without the CUDA headers

namespace dsrt {

class Comm {
public:
  virtual ~Comm();

  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// In place: data[0, count) becomes the elementwise sum over all ranks.
  virtual bool allReduceSum(float *data, int64_t count, std::string *error) = 0;

  /// recv[r * count, (r + 1) * count) = rank r's send[0, count). recv holds
  /// size() * count floats and must not overlap send.
  virtual bool allGather(const float *send, int64_t count, float *recv,
                         std::string *error) = 0;

  /// data[0, count) of rank `root` to every rank (in place).
  virtual bool broadcast(float *data, int64_t count, int root,
                         std::string *error) = 0;

  /// To every rank j: send[sendOffsets[j], + sendCounts[j]); from every
  /// rank j: into recv[recvOffsets[j], + recvCounts[j]). The arrays have
  /// size() entries; counts may be zero and uneven. send and recv must not
  /// overlap.
  virtual bool allToAllv(const float *send, const int64_t *sendCounts,
                         const int64_t *sendOffsets, float *recv,
                         const int64_t *recvCounts, const int64_t *recvOffsets,
                         std::string *error) = 0;

  /// Point to point with another rank (peer != rank()); tag >= 0. A recv
  /// must receive exactly `count` floats: a shorter message is an error.
  virtual bool send(const float *data, int64_t count, int peer, int tag,
                    std::string *error) = 0;
  virtual bool recv(float *data, int64_t count, int peer, int tag,
                    std::string *error) = 0;

  virtual bool barrier(std::string *error) = 0;

  /// Collective: the ranks that pass the same `color` form a new
  /// communicator, ordered by `key` (then by rank). Null (with *error) on
  /// failure. The new communicator fails and aborts like this one.
  virtual std::unique_ptr<Comm> split(int color, int key,
                                      std::string *error) = 0;
};

/// One rank, no MPI.
std::unique_ptr<Comm> createSingleComm();

/// Initializes MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless the program
/// already did, and returns a communicator over MPI_COMM_WORLD; destroying it
/// finalizes MPI if it initialized it. Null (with *error) when DS_COMM_TIMEOUT
/// is not a positive number of seconds or MPI fails to initialize. Defined in
/// dsrt-mpi (not in libdsrt), so that single-rank programs need no MPI.
std::unique_ptr<Comm> createMpiComm(int *argc, char ***argv,
                                    std::string *error);

/// A communicator over the ranks of `host` (any communicator of the same
/// ranks, MPI in practice: it carries the ncclUniqueId) whose operations run
/// on `stream` of the current CUDA device; every rank must have selected its
/// own device (NCCL refuses two ranks on one GPU). Null (with *error) when
/// DS_COMM_TIMEOUT is bad or NCCL fails to initialize within it. Defined in
/// dsrt-nccl.
std::unique_ptr<Comm> createNcclComm(Comm &host, CUstream_st *stream,
                                     std::string *error);

} // namespace dsrt

#endif // DS_RUNTIME_COMM_H
