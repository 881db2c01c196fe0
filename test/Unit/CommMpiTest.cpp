//===- CommMpiTest.cpp - dsrt::Comm over MPI, run under mpirun -------------===//
//
// Not GoogleTest: every rank runs the same checks and rank 0 prints the
// verdict, so that test/Runtime/comm-mpi.test can FileCheck mpirun's output.
//
//   dsrt-comm-mpi-test [all]   every collective with exact values; rank 0
//                              prints "PASS np=<size>" (exit 0) or the first
//                              mismatch (exit 1)
//   ... never-arrives          rank 1 never calls allReduceSum: rank 0 must
//                              report the timeout (DS_COMM_TIMEOUT) and the
//                              job must end non-zero
//   ... dies                   rank 1 exits without MPI_Finalize while rank 0
//                              waits in allReduceSum
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using dsrt::Comm;

namespace {

int failures = 0;

void check(bool ok, const Comm &comm, const char *what, long index,
           double got, double want) {
  if (ok)
    return;
  if (++failures <= 5)
    std::fprintf(stderr, "rank %d: %s[%ld] = %g, expected %g\n", comm.rank(),
                 what, index, got, want);
}

bool step(bool ok, const Comm &comm, const char *what,
          const std::string &error) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: %s failed: %s\n", comm.rank(), what,
                 error.c_str());
  }
  return ok;
}

void testAllReduce(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(1000)}) {
    std::vector<float> data(size_t(count) + 1, -1.f);
    for (int64_t i = 0; i < count; ++i)
      data[size_t(i)] = float(r * 1000 + i);
    if (!step(comm.allReduceSum(data.data(), count, &error), comm,
              "allReduceSum", error))
      return;
    for (int64_t i = 0; i < count; ++i) {
      double want = 1000.0 * n * (n - 1) / 2 + double(n) * double(i);
      check(data[size_t(i)] == want, comm, "allReduceSum", long(i),
            data[size_t(i)], want);
    }
    check(data[size_t(count)] == -1.f, comm, "allReduceSum past end",
          long(count), data[size_t(count)], -1);
  }
}

void testAllGather(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  const int64_t count = 7;
  std::vector<float> send(count), recv(size_t(n * count), -1.f);
  for (int64_t i = 0; i < count; ++i)
    send[size_t(i)] = float(100 * r + i);
  if (!step(comm.allGather(send.data(), count, recv.data(), &error), comm,
            "allGather", error))
    return;
  for (int k = 0; k < n; ++k)
    for (int64_t i = 0; i < count; ++i)
      check(recv[size_t(k * count + i)] == 100 * k + i, comm, "allGather",
            long(k * count + i), recv[size_t(k * count + i)], 100 * k + i);
  // In place: this rank's part already at recv + rank * count.
  std::vector<float> inPlace(size_t(n * count), -1.f);
  for (int64_t i = 0; i < count; ++i)
    inPlace[size_t(r * count + i)] = float(100 * r + i);
  if (!step(comm.allGather(inPlace.data() + r * count, count, inPlace.data(),
                           &error),
            comm, "allGather (in place)", error))
    return;
  for (int k = 0; k < n; ++k)
    for (int64_t i = 0; i < count; ++i)
      check(inPlace[size_t(k * count + i)] == 100 * k + i, comm,
            "allGather (in place)", long(k * count + i),
            inPlace[size_t(k * count + i)], 100 * k + i);
}

// Rank r sends (2r + j) % 4 floats to rank j (so zeros, self included, and
// uneven), packed with one unused float after each peer's block.
void testAllToAllv(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  auto sendCount = [](int from, int to) { return int64_t((2 * from + to) % 4); };
  std::vector<int64_t> sc(n), so(n), rc(n), ro(n);
  int64_t sendTotal = 0, recvTotal = 0;
  for (int j = 0; j < n; ++j) {
    sc[size_t(j)] = sendCount(r, j);
    so[size_t(j)] = sendTotal;
    sendTotal += sc[size_t(j)] + 1;
    rc[size_t(j)] = sendCount(j, r);
    ro[size_t(j)] = recvTotal;
    recvTotal += rc[size_t(j)] + 1;
  }
  std::vector<float> send(size_t(sendTotal), -2.f), recv(size_t(recvTotal), -1.f);
  for (int j = 0; j < n; ++j)
    for (int64_t k = 0; k < sc[size_t(j)]; ++k)
      send[size_t(so[size_t(j)] + k)] = float(10000 * r + 100 * j + k);
  if (!step(comm.allToAllv(send.data(), sc.data(), so.data(), recv.data(),
                           rc.data(), ro.data(), &error),
            comm, "allToAllv", error))
    return;
  for (int j = 0; j < n; ++j) {
    for (int64_t k = 0; k < rc[size_t(j)]; ++k) {
      size_t at = size_t(ro[size_t(j)] + k);
      double want = 10000.0 * j + 100.0 * r + double(k);
      check(recv[at] == want, comm, "allToAllv", long(at), recv[at], want);
    }
    size_t gap = size_t(ro[size_t(j)] + rc[size_t(j)]);
    check(recv[gap] == -1.f, comm, "allToAllv gap", long(gap), recv[gap], -1);
  }
}

// Every rank in turn is the root; the float past the end stays untouched.
void testBroadcast(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  const int64_t count = 300;
  for (int root = 0; root < n; ++root) {
    std::vector<float> data(size_t(count) + 1, -1.f);
    if (r == root)
      for (int64_t i = 0; i < count; ++i)
        data[size_t(i)] = float(1000 * root + i);
    if (!step(comm.broadcast(data.data(), count, root, &error), comm,
              "broadcast", error))
      return;
    for (int64_t i = 0; i < count; ++i)
      check(data[size_t(i)] == 1000 * root + i, comm, "broadcast", long(i),
            data[size_t(i)], 1000 * root + i);
    check(data[size_t(count)] == -1.f, comm, "broadcast past end", long(count),
          data[size_t(count)], -1);
  }
}

// Ring: rank r sends 100 floats to r + 1 and receives from r - 1.
void testSendRecv(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  const int64_t count = 100;
  const int next = (r + 1) % n, prev = (r + n - 1) % n, tag = 7;
  std::vector<float> out(count), in(count, -1.f);
  for (int64_t i = 0; i < count; ++i)
    out[size_t(i)] = float(1000 * r + i);
  bool ok;
  if (r % 2 == 0)
    ok = step(comm.send(out.data(), count, next, tag, &error), comm, "send",
              error) &&
         step(comm.recv(in.data(), count, prev, tag, &error), comm, "recv",
              error);
  else
    ok = step(comm.recv(in.data(), count, prev, tag, &error), comm, "recv",
              error) &&
         step(comm.send(out.data(), count, next, tag, &error), comm, "send",
              error);
  if (!ok)
    return;
  for (int64_t i = 0; i < count; ++i)
    check(in[size_t(i)] == 1000 * prev + i, comm, "recv", long(i),
          in[size_t(i)], 1000 * prev + i);
  // Invalid arguments are errors, not MPI aborts.
  bool refused = !comm.send(out.data(), count, r, tag, &error) &&
                 error.find("invalid peer") != std::string::npos;
  check(refused, comm, "send to self refused", 0, refused, 1);
}

int runAll(Comm &comm) {
  std::string error;
  testAllReduce(comm);
  testAllGather(comm);
  testAllToAllv(comm);
  testBroadcast(comm);
  testSendRecv(comm);
  step(comm.barrier(&error), comm, "barrier", error);
  // Rank 0 learns whether every rank passed.
  float failed = failures ? 1.f : 0.f;
  if (!comm.allReduceSum(&failed, 1, &error)) {
    std::fprintf(stderr, "rank %d: final allReduceSum failed: %s\n",
                 comm.rank(), error.c_str());
    return 1;
  }
  if (comm.rank() == 0) {
    if (failed == 0)
      std::printf("PASS np=%d\n", comm.size());
    else
      std::printf("FAIL np=%d: %g rank(s) failed\n", comm.size(), failed);
    std::fflush(stdout);
  }
  return failed == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "all";
  std::string error;
  std::unique_ptr<Comm> comm = dsrt::createMpiComm(&argc, &argv, &error);
  if (!comm) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  if (mode == "all")
    return runAll(*comm);

  if (mode == "never-arrives" || mode == "dies") {
    if (comm->size() < 2) {
      std::fprintf(stderr, "error: %s needs 2 ranks\n", mode.c_str());
      return 1;
    }
    if (comm->rank() != 0) {
      if (mode == "dies")
        _exit(3); // no MPI_Finalize, no destructors: a crash
      // Busy elsewhere for longer than the timeout; MPI_Abort from rank 0
      // ends this process.
      std::this_thread::sleep_for(std::chrono::seconds(60));
      return 0;
    }
    auto start = std::chrono::steady_clock::now();
    float data[4] = {1, 2, 3, 4};
    bool ok = comm->allReduceSum(data, 4, &error);
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    if (ok) {
      std::fprintf(stderr, "rank 0: allReduceSum unexpectedly succeeded\n");
      return 1;
    }
    std::fprintf(stderr, "rank 0: error after %.1f s: %s\n", seconds,
                 error.c_str());
    // Later calls fail at once with the first error.
    std::string again;
    if (!comm->barrier(&again))
      std::fprintf(stderr, "rank 0: then: %s\n", again.c_str());
    std::fflush(stderr);
    comm.reset(); // MPI_Abort: the job ends non-zero
    return 1;
  }
  std::fprintf(stderr, "error: unknown mode '%s'\n", mode.c_str());
  return 1;
}
