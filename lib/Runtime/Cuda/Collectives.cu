//===- Collectives.cu - multi-rank CUDA: NCCL collectives, set-up, main ---===//
//
// Library dsrt-nccl: only multi-rank CUDA executables link it (with NCCL and
// dsrt-mpi), so single-GPU ones need neither. Every collective runs on the
// backend's stream through the axis's NCCL communicator (Comm.h), so kernels
// and collectives stay in stream order and decode steps capture as graphs.
// A failed collective is fatal, as on the CPU: the message names the kernel
// and the rank, and the process exits non-zero (mpirun ends the job).
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"

#include "../Comm/CommEnv.h"

#include <nccl.h>

#include <cstdio>
#include <cstdlib>

namespace dsrt {
namespace cuda {

namespace {

Comm &deviceComm(Context &ctx, MeshAxis axis, const char *kernel) {
  Comm *c = state(ctx).comms[int(axis)].get();
  if (!c)
    fatal(kernel, "no NCCL communicator for the mesh axis (the model was "
                  "prepared without prepareNccl)");
  return *c;
}

[[noreturn]] void commFailed(Context &ctx, const char *kernel,
                             const std::string &error) {
  std::string what = "rank " + std::to_string(ctx.rank()) + ": " + error;
  fatal(kernel, what.c_str());
}

/// Rows of width d between a strided device buffer and a packed one.
void copyRows(DeviceState &st, const float *src, int64_t lds, float *dst,
              int64_t ldd, int64_t n, int64_t d, const char *where) {
  check(cudaMemcpy2DAsync(dst, size_t(ldd) * 4, src, size_t(lds) * 4,
                          size_t(d) * 4, size_t(n), cudaMemcpyDeviceToDevice,
                          st.stream),
        where);
}

/// The launcher's node-local rank (Open MPI, MPICH, Slurm), else -1.
int localRank() {
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                           "SLURM_LOCALID"})
    if (const char *v = std::getenv(name)) {
      char *end = nullptr;
      long r = std::strtol(v, &end, 10);
      if (*v && !*end && r >= 0)
        return int(r);
    }
  return -1;
}

} // namespace

void allReduce(Context &ctx, MeshAxis axis, float *x, int64_t ldx, int64_t n,
               int64_t d) {
  ProfileScope profile(ctx, "allReduce");
  Comm &c = deviceComm(ctx, axis, "allReduce");
  std::string error;
  if (ldx == d || n <= 1) {
    if (!c.allReduceSum(x, n * d, &error))
      commFailed(ctx, "allReduce", error);
    return;
  }
  DeviceState &st = state(ctx);
  auto *packed = static_cast<float *>(
      scratch(st, size_t(n * d) * sizeof(float), "allReduce"));
  copyRows(st, x, ldx, packed, d, n, d, "allReduce");
  if (!c.allReduceSum(packed, n * d, &error))
    commFailed(ctx, "allReduce", error);
  copyRows(st, packed, d, x, ldx, n, d, "allReduce");
}

void allGatherColumns(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
                      int64_t n, int64_t d, float *y, int64_t ldy) {
  ProfileScope profile(ctx, "allGatherColumns");
  Comm &c = deviceComm(ctx, axis, "allGatherColumns");
  DeviceState &st = state(ctx);
  const int64_t ranks = c.size();
  auto *send = static_cast<float *>(
      scratch(st, size_t(n * d) * sizeof(float), "allGatherColumns"));
  auto *recv = static_cast<float *>(
      scratch(st, size_t(ranks * n * d) * sizeof(float), "allGatherColumns"));
  copyRows(st, x, ldx, send, d, n, d, "allGatherColumns");
  std::string error;
  if (!c.allGather(send, n * d, recv, &error))
    commFailed(ctx, "allGatherColumns", error);
  for (int64_t r = 0; r < ranks; ++r)
    copyRows(st, recv + r * n * d, d, y + r * d, ldy, n, d, "allGatherColumns");
}

void moeExpertsEP(Context &ctx, const float *x, int64_t ldx, int64_t n,
                  int64_t hidden, int64_t inter, const int32_t *idx,
                  const float *weights, int64_t topK, const int64_t *gate,
                  const int64_t *up, const int64_t *down, int64_t experts,
                  float *y, int64_t ldy, ActQuant act) {
  if (ctx.meshSize(MeshAxis::DP) > 1)
    fatal("moeExpertsEP", "data-parallel replicas share no tokens: the CUDA "
                          "backend's expert parallelism needs dp = 1");
  Comm &ep = deviceComm(ctx, MeshAxis::EP, "moeExpertsEP");
  const int ranks = ep.size();
  if (experts % ranks != 0)
    fatal("moeExpertsEP", "experts not divisible by the expert-parallel ranks");
  const int64_t per = experts / ranks;
  moeExpertsRange(ctx, x, ldx, n, hidden, inter, idx, weights, topK, gate, up,
                  down, ep.rank() * per, per, experts, y, ldy, act);
  allReduce(ctx, MeshAxis::EP, y, ldy, n, hidden);
}

bool prepareNccl(Context &ctx, ComputeDtype dtype, std::string *error) {
  int devices = 0;
  cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    *error = std::string("no CUDA device (") +
             (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")";
    return false;
  }
  const int local = localRank();
  const int device = (local >= 0 ? local : ctx.rank()) % devices;
  if (!prepareOnDevice(ctx, dtype, device, error))
    return false;
  DeviceState &st = state(ctx);
  // The axes the CUDA backend's kernels communicate on (pp and dp are
  // refused at compile time for --target=cuda, so never needed here).
  static const char *const kAxes[4] = {"tp", "ep", "pp", "dp"};
  for (int a : {int(MeshAxis::TP), int(MeshAxis::EP)}) {
    Comm *host = ctx.comm(MeshAxis(a));
    if (!host) {
      *error = "prepareNccl: no MPI communicator for mesh axis " +
               std::string(kAxes[a]) + " (setComm not called)";
      return false;
    }
    std::string why;
    st.comms[a] = createNcclComm(*host, st.stream, &why);
    if (!st.comms[a]) {
      *error = "rank " + std::to_string(ctx.rank()) + " (GPU " +
               std::to_string(device) + "): NCCL communicator of mesh axis " +
               kAxes[a] + ": " + why;
      return false;
    }
  }
  // The timeout createNcclComm accepted also bounds program waits.
  if (!comm::parseTimeout(&st.waitTimeoutS, error))
    return false;
  if (ctx.rank() == 0) {
    int version = 0;
    ncclGetVersion(&version);
    long long ranks = 1;
    for (int a = 0; a < 4; ++a)
      ranks *= ctx.meshSize(MeshAxis(a));
    std::fprintf(stderr, "cuda: NCCL %d, %lld ranks\n", version, ranks);
  }
  return true;
}

int runMainCudaMpi(int argc, char **argv, const ModelSpec &spec) {
  return haveDevice(argc, argv) ? runMainMpi(argc, argv, spec) : 1;
}

} // namespace cuda
} // namespace dsrt
