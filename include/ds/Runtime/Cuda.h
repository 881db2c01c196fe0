//===- Cuda.h - libdsrt-cuda: the API emitted CUDA programs call -*- C++ -*-===//
//
// The CUDA backend runs the same programs as the CPU backend (Runtime.h):
// the same kernels with the same arguments, on device pointers. A program
// (prefill, decode, mtp) is emitted as a body taking an Io of device
// buffers plus a thin wrapper with the ProgramFn signature that calls
// runProgram: runProgram uploads the token ids, positions, sequence slots
// and the KV-cache block table, runs the body on the backend's stream
// (decode: captured once per token count as a CUDA graph, then replayed),
// takes each logits row's argmax on the device when runMain asks for it
// (Context::Outputs), and copies back only what runMain wants: token ids
// while generating, logits for --dump-logits, hidden states for MTP. So
// runMain's generation loop, batching and MTP speculation work unchanged on
// the GPU.
//
// Device data: every weight in the compute dtype (bf16 for GEMM-only
// weights in ComputeDtype::BF16, else float32; FP8 checkpoints are
// dequantized on upload), activations float32 in one device arena at the
// memory plan's offsets, the latent KV cache float32 in the host cache's
// block layout (KVCache.cpp), RoPE tables float32.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RUNTIME_CUDA_H
#define DS_RUNTIME_CUDA_H

#include "ds/Runtime/Runtime.h"

namespace dsrt {
namespace cuda {

/// Storage of GEMM weights on the device (ds-compile --compute-dtype).
/// F32: every product in float32 (no TF32), to check against the CPU
/// backend; BF16: GEMM weights and GEMM inputs in bf16, float32
/// accumulation and everything else float32.
enum class ComputeDtype : int32_t { F32 = 0, BF16 = 1 };

/// Device buffers of one program call.
struct Io {
  char *arena;
  const int32_t *ids, *pos; ///< [n]
  int64_t n;
  float *logits;         ///< [n, vocab] (rows from Context::logitsRowsFrom)
  float *hidden;         ///< [n, hidden]
  const float *hiddenIn; ///< [n, hidden] (mtp only)
};

using BodyFn = void (*)(Context &ctx, const Io &io);

enum class Program : int32_t { Prefill = 0, Decode = 1, Mtp = 2 };

/// Runs one program on the device (see the file comment). Host pointers in,
/// host pointers out (those ctx.outputs() wants); returns after the results
/// are on the host. A CUDA
/// error is reported with the failing kernel's name and ends the process.
void runProgram(Context &ctx, Program program, BodyFn body,
                const float *hiddenIn, const int32_t *ids, const int32_t *pos,
                int64_t n, float *logits, float *hidden);

/// ModelSpec::prepare of CUDA executables: creates the device state
/// (uploads the weights in `dtype`, allocates arena, cache and buffers).
bool prepare(Context &ctx, ComputeDtype dtype, std::string *error);

/// main of a CUDA executable: fails with "no CUDA device" (exit 1) when
/// there is none, else runMain.
int runMainCuda(int argc, char **argv, const ModelSpec &spec);

// Multi-rank CUDA executables (tensor and expert parallelism), library
// dsrt-nccl: MPI launches the ranks and carries the NCCL ids; the
// collectives run on NCCL over device buffers.

/// main of a multi-rank CUDA executable: runMainCuda's device check, then
/// runMainMpi.
int runMainCudaMpi(int argc, char **argv, const ModelSpec &spec);

/// ModelSpec::prepare of multi-rank CUDA executables: selects this rank's
/// GPU (its node-local rank, from the launcher's environment, modulo the
/// devices), prepares it as prepare() does (holding only this rank's
/// weights), and creates the NCCL communicators of the tp and ep axes over
/// the MPI ones of Context::setComm. Program waits are then bounded by
/// DS_COMM_TIMEOUT.
bool prepareNccl(Context &ctx, ComputeDtype dtype, std::string *error);

/// Device float32 copy of weight `index` (non-GEMM weights: norms, biases,
/// embedding table, kv_b for absorbed attention).
const float *weight(Context &ctx, int64_t index);

// Kernels: the semantics of dsrt::cpu's namesakes (Runtime.h), on device
// pointers; ids and pos are Io's.
void embedding(Context &ctx, const float *table, int64_t vocab, int64_t hidden,
               const int32_t *ids, int64_t n, float *out, int64_t ldo);
void rmsNorm(Context &ctx, const float *x, int64_t ldx, const float *w,
             int64_t n, int64_t d, double eps, float *y, int64_t ldy);
void addRmsNorm(Context &ctx, const float *a, int64_t lda, const float *b,
                int64_t ldb, int64_t n, int64_t d, const float *w, double eps,
                float *sum, int64_t lds, float *y, int64_t ldy);
void add(Context &ctx, const float *a, int64_t lda, const float *b,
         int64_t ldb, int64_t n, int64_t d, float *y, int64_t ldy);
void swiglu(Context &ctx, const float *gate, int64_t ldg, const float *up,
            int64_t ldu, int64_t n, int64_t d, float *y, int64_t ldy);
void rope(Context &ctx, float *x, int64_t ldx, int64_t n, int64_t heads,
          int64_t headStride, int64_t offset, const int32_t *pos,
          int64_t ropeIndex);
void kvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                  int64_t ldl, const float *krope, int64_t ldk,
                  const int32_t *pos, int64_t n);
void ropeKvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                      int64_t ldl, float *krope, int64_t ldk,
                      const int32_t *pos, int64_t n, int64_t ropeIndex);
void qkRopeCacheWrite(Context &ctx, int64_t layer, float *q, int64_t ldq,
                      int64_t heads, int64_t headStride, int64_t offset,
                      const float *latent, int64_t ldl, float *krope,
                      int64_t ldk, const int32_t *pos, int64_t n,
                      int64_t ropeIndex, const float *normW, double eps);
void linearW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act);
void logitsW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act);
void linearPairW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t wa, int64_t outA, float *ya, int64_t ldya,
                 int64_t wb, int64_t outB, float *yb, int64_t ldyb,
                 ActQuant act);
void linearAddW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                ActQuant act);
void linearNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                 const AddNorm &norm, ActQuant act);
void gatedUp(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t gate, int64_t up, int64_t inter, float *y, int64_t ldy,
             ActQuant act);
void mlaAttentionNaive(Context &ctx, const float *q, int64_t ldq,
                       const float *kv, int64_t ldkv, const float *krope,
                       int64_t ldk, int64_t n, int64_t heads, int64_t nope,
                       int64_t rope, int64_t vdim, double scale, float *out,
                       int64_t ldo);
void mlaAttentionAbsorbed(Context &ctx, int64_t layer, const float *q,
                          int64_t ldq, const float *kvB, const int32_t *pos,
                          int64_t n, int64_t heads, int64_t nope, int64_t rope,
                          int64_t vdim, double scale, float *out, int64_t ldo);
void mlaAttentionAbsorbedRope(Context &ctx, int64_t layer, float *q,
                              int64_t ldq, const float *kvB, const int32_t *pos,
                              int64_t n, int64_t heads, int64_t nope,
                              int64_t rope, int64_t vdim, double scale,
                              float *out, int64_t ldo, const float *latent,
                              int64_t ldl, float *krope, int64_t ldk,
                              int64_t ropeIndex, const float *normW,
                              double eps);
void moeRoute(Context &ctx, const float *logits, int64_t ldl, int64_t n,
              const float *bias, const MoERouting &routing, int32_t *idx,
              float *weights);
void moeGate(Context &ctx, const float *x, int64_t ldx, int64_t n,
             int64_t hidden, int64_t weight, const float *bias,
             const MoERouting &routing, int32_t *idx, float *weights);
void moeExpertsW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t hidden, int64_t inter, const int32_t *idx,
                 const float *weights, int64_t topK, const int64_t *gate,
                 const int64_t *up, const int64_t *down, int64_t experts,
                 float *y, int64_t ldy, ActQuant act);
void moeExpertsSharedW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                       int64_t hidden, int64_t inter, const int32_t *idx,
                       const float *weights, int64_t topK, const int64_t *gate,
                       const int64_t *up, const int64_t *down, int64_t experts,
                       const SharedExpert &shared, float *y, int64_t ldy,
                       ActQuant act);
void moeExpertsSharedNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                           int64_t hidden, int64_t inter, const int32_t *idx,
                           const float *weights, int64_t topK,
                           const int64_t *gate, const int64_t *up,
                           const int64_t *down, int64_t experts,
                           const SharedExpert &shared, float *y, int64_t ldy,
                           const AddNorm &norm, ActQuant act);

// Collectives (dsrt-nccl): dsrt::cpu's namesakes on device buffers.
void allReduce(Context &ctx, MeshAxis axis, float *x, int64_t ldx, int64_t n,
               int64_t d);
void allGatherColumns(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
                      int64_t n, int64_t d, float *y, int64_t ldy);
/// Expert parallelism with the ep ranks holding the same tokens (dp = 1):
/// each rank runs its experts [r E / ep, (r + 1) E / ep) on every token
/// routed to them and the partial outputs are summed over ep (all-reduce of
/// [n, hidden]). No host synchronisation, so decode graphs capture it.
void moeExpertsEP(Context &ctx, const float *x, int64_t ldx, int64_t n,
                  int64_t hidden, int64_t inter, const int32_t *idx,
                  const float *weights, int64_t topK, const int64_t *gate,
                  const int64_t *up, const int64_t *down, int64_t experts,
                  float *y, int64_t ldy, ActQuant act);

} // namespace cuda
} // namespace dsrt

#endif // DS_RUNTIME_CUDA_H
