//===- Single.cpp - the one-rank communicator -----------------------------===//
//
// Part of libdsrt itself (no MPI): what a single-rank executable uses.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"

#include <cstring>

namespace dsrt {

Comm::~Comm() = default;

namespace {

bool fail(std::string *error, const std::string &message) {
  if (error)
    *error = message;
  return false;
}

bool badCount(int64_t count, const char *op, std::string *error) {
  if (count >= 0)
    return false;
  fail(error, std::string(op) + ": negative count " + std::to_string(count));
  return true;
}

class SingleComm final : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }

  bool allReduceSum(float *, int64_t count, std::string *error) override {
    return !badCount(count, "allReduceSum", error);
  }

  bool allGather(const float *send, int64_t count, float *recv,
                 std::string *error) override {
    if (badCount(count, "allGather", error))
      return false;
    if (count > 0 && recv != send)
      std::memmove(recv, send, size_t(count) * sizeof(float));
    return true;
  }

  bool broadcast(float *, int64_t count, int root, std::string *error) override {
    if (root != 0)
      return fail(error, "broadcast from rank " + std::to_string(root) +
                             " on a single-rank communicator");
    return !badCount(count, "broadcast", error);
  }

  bool allToAllv(const float *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, float *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 std::string *error) override {
    if (sendCounts[0] != recvCounts[0])
      return fail(error, "allToAllv on rank 0 of 1: sends " +
                             std::to_string(sendCounts[0]) +
                             " floats to itself but receives " +
                             std::to_string(recvCounts[0]));
    if (badCount(sendCounts[0], "allToAllv", error))
      return false;
    if (sendCounts[0] > 0)
      std::memmove(recv + recvOffsets[0], send + sendOffsets[0],
                   size_t(sendCounts[0]) * sizeof(float));
    return true;
  }

  bool send(const float *, int64_t, int peer, int, std::string *error) override {
    return fail(error, "send to rank " + std::to_string(peer) +
                           " on a single-rank communicator");
  }
  bool recv(float *, int64_t, int peer, int, std::string *error) override {
    return fail(error, "recv from rank " + std::to_string(peer) +
                           " on a single-rank communicator");
  }
  bool barrier(std::string *) override { return true; }
  std::unique_ptr<Comm> split(int, int, std::string *) override {
    return std::make_unique<SingleComm>();
  }
};

} // namespace

std::unique_ptr<Comm> createSingleComm() {
  return std::make_unique<SingleComm>();
}

} // namespace dsrt
