//===- CommNcclTest.cpp - dsrt::Comm over NCCL, on GPUs -------------------===//
//
// Not GoogleTest, like CommMpiTest: every rank runs the same checks on
// device buffers and rank 0 prints the verdict for test/Runtime/comm-nccl.test.
//
//   dsrt-comm-nccl-test          under mpirun (one GPU per rank: the local
//                                rank's), else one rank whose NCCL id needs
//                                no MPI (createSingleComm); rank 0 prints
//                                "PASS np=<size>" (exit 0) or the first
//                                mismatch (exit 1); "error: no CUDA device"
//                                (exit 2) without one
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using dsrt::Comm;

namespace {

int failures = 0;
cudaStream_t stream = nullptr;

bool step(bool ok, const Comm &comm, const char *what,
          const std::string &error) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: %s failed: %s\n", comm.rank(), what,
                 error.c_str());
  }
  return ok;
}

/// A device buffer with host mirrors.
struct Buffer {
  explicit Buffer(size_t count) : host(count + 1, -1.f) {
    cudaMalloc(&dev, (count + 1) * sizeof(float));
    upload();
  }
  ~Buffer() { cudaFree(dev); }
  void upload() {
    cudaMemcpy(dev, host.data(), host.size() * sizeof(float),
               cudaMemcpyHostToDevice);
  }
  void download() {
    cudaMemcpy(host.data(), dev, host.size() * sizeof(float),
               cudaMemcpyDeviceToHost);
  }
  std::vector<float> host;
  float *dev = nullptr;
};

void expect(const Comm &comm, const char *what, const Buffer &b,
            const std::vector<float> &want) {
  for (size_t i = 0; i < want.size(); ++i)
    if (b.host[i] != want[i]) {
      if (++failures <= 5)
        std::fprintf(stderr, "rank %d: %s[%zu] = %g, expected %g\n",
                     comm.rank(), what, i, b.host[i], want[i]);
      return;
    }
  if (b.host[want.size()] != -1.f && ++failures <= 5) // the guard float
    std::fprintf(stderr, "rank %d: %s wrote past its end\n", comm.rank(), what);
}

void run(Comm &comm) {
  const int n = comm.size(), r = comm.rank();
  std::string error;
  { // allReduceSum, in place
    const size_t count = 1000;
    Buffer b(count);
    std::vector<float> want(count);
    for (size_t i = 0; i < count; ++i) {
      b.host[i] = float(r * 1000 + int(i));
      want[i] = float(1000 * n * (n - 1) / 2 + n * int(i));
    }
    b.upload();
    if (step(comm.allReduceSum(b.dev, count, &error), comm, "allReduceSum",
             error)) {
      b.download();
      expect(comm, "allReduceSum", b, want);
    }
  }
  { // allGather
    const size_t count = 7;
    Buffer send(count), recv(count * size_t(n));
    std::vector<float> want(count * size_t(n));
    for (size_t i = 0; i < count; ++i)
      send.host[i] = float(r * 100 + int(i));
    for (int q = 0; q < n; ++q)
      for (size_t i = 0; i < count; ++i)
        want[size_t(q) * count + i] = float(q * 100 + int(i));
    send.upload();
    if (step(comm.allGather(send.dev, count, recv.dev, &error), comm,
             "allGather", error)) {
      recv.download();
      expect(comm, "allGather", recv, want);
    }
  }
  { // broadcast from the last rank
    Buffer b(5);
    for (int i = 0; i < 5; ++i)
      b.host[size_t(i)] = float(r * 10 + i);
    b.upload();
    std::vector<float> want(5);
    for (int i = 0; i < 5; ++i)
      want[size_t(i)] = float((n - 1) * 10 + i);
    if (step(comm.broadcast(b.dev, 5, n - 1, &error), comm, "broadcast",
             error)) {
      b.download();
      expect(comm, "broadcast", b, want);
    }
  }
  { // allToAllv: rank r sends q + 1 floats (value r * 100 + q) to rank q
    const size_t ranks = static_cast<size_t>(n);
    std::vector<int64_t> sc(ranks), so(ranks), rc(ranks), ro(ranks);
    int64_t s = 0, t = 0;
    for (int q = 0; q < n; ++q) {
      sc[size_t(q)] = q + 1;
      so[size_t(q)] = s;
      s += q + 1;
      rc[size_t(q)] = r + 1;
      ro[size_t(q)] = t;
      t += r + 1;
    }
    Buffer send(static_cast<size_t>(s)), recv(static_cast<size_t>(t));
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < sc[size_t(q)]; ++i)
        send.host[size_t(so[size_t(q)] + i)] = float(r * 100 + q);
    send.upload();
    std::vector<float> want(static_cast<size_t>(t));
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < rc[size_t(q)]; ++i)
        want[size_t(ro[size_t(q)] + i)] = float(q * 100 + r);
    if (step(comm.allToAllv(send.dev, sc.data(), so.data(), recv.dev,
                            rc.data(), ro.data(), &error),
             comm, "allToAllv", error)) {
      recv.download();
      expect(comm, "allToAllv", recv, want);
    }
  }
  if (n > 1) { // a ring of send/recv
    Buffer out(3), in(3);
    for (int i = 0; i < 3; ++i)
      out.host[size_t(i)] = float(r * 3 + i);
    out.upload();
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    bool ok = r % 2 == 0
                  ? comm.send(out.dev, 3, next, 0, &error) &&
                        comm.recv(in.dev, 3, prev, 0, &error)
                  : comm.recv(in.dev, 3, prev, 0, &error) &&
                        comm.send(out.dev, 3, next, 0, &error);
    if (step(ok, comm, "send/recv", error)) {
      in.download();
      expect(comm, "recv", in, {float(prev * 3), float(prev * 3 + 1),
                                float(prev * 3 + 2)});
    }
  }
  // A peer that is this rank is refused, not deadlocked.
  Buffer self(1);
  if (comm.send(self.dev, 1, r, 0, &error) ||
      error.find("is not another rank") == std::string::npos) {
    ++failures;
    std::fprintf(stderr, "rank %d: send to itself: '%s'\n", r, error.c_str());
  }
  step(comm.barrier(&error), comm, "barrier", error);
  // split is refused with a reason (sub-communicators come from
  // createNcclComm over host sub-communicators), and the communicator stays
  // usable.
  if (comm.split(r % 2, r, &error) != nullptr ||
      error.find("not supported") == std::string::npos) {
    ++failures;
    std::fprintf(stderr, "rank %d: split: '%s'\n", r, error.c_str());
  }
  step(comm.barrier(&error), comm, "barrier after split", error);
}

} // namespace

int main(int argc, char **argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "error: no CUDA device\n");
    return 2;
  }
  std::string error;
  std::unique_ptr<Comm> host;
  int local = 0;
  if (const char *v = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    host = dsrt::createMpiComm(&argc, &argv, &error);
    local = std::atoi(v);
  } else {
    host = dsrt::createSingleComm();
  }
  if (!host) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  cudaSetDevice(local % devices);
  cudaStreamCreate(&stream);
  std::unique_ptr<Comm> comm =
      dsrt::createNcclComm(*host, stream, &error);
  if (!comm) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  run(*comm);
  // Everyone's verdict, over the host communicator.
  float failed = failures > 0 ? 1.f : 0.f;
  if (!host->allReduceSum(&failed, 1, &error))
    failed = 1;
  if (host->rank() == 0)
    std::printf(failed == 0 ? "PASS np=%d\n" : "FAIL np=%d\n", host->size());
  comm.reset();
  cudaStreamDestroy(stream);
  return failed == 0 ? 0 : 1;
}
