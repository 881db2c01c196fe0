//===- KernelCommon.cuh - helpers of the kernel headers ---------*- CUDA -*-===//
//
// The kernel headers (*.cuh) hold only device code and its constants, so
// that nvcc builds them into libdsrt-cuda and the host compiler builds them
// into the CPU-emulated kernel tests (test/Unit/CudaEmu.h, which defines
// DS_CUDA_EMU and provides the intrinsics and WMMA they use).
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_KERNELCOMMON_CUH
#define DS_LIB_RUNTIME_CUDA_KERNELCOMMON_CUH

#include <cuda_bf16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#ifndef DS_CUDA_EMU
#include <mma.h>
#endif

/// `T name[]` in the block's dynamic shared memory (128-byte aligned).
/// Kernels of one translation unit use different names: nvcc makes every
/// `extern __shared__` array one symbol, whose types must agree.
#ifdef DS_CUDA_EMU
#define DS_DYNAMIC_SHARED(T, name) T *name = emu::dynamicShared<T>()
#else
#define DS_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

namespace dsrt {
namespace cuda {

__host__ __device__ inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}

/// Programmatic dependent launch (sm_90+, DeviceState::pdl): the first
/// statement of every kernel but the GEMVs. It waits until the kernels
/// before this one in the stream have completed with their writes visible
/// (at once when this launch did not ask for an early start), then lets the
/// next kernel's blocks be scheduled, so that its launch overlaps this
/// kernel's work instead of following it: decode steps are hundreds of
/// small dependent kernels. Nothing before it may read or write global
/// memory but the weights (written once, before any program runs): the
/// GEMVs issue their first weight loads before it (gemvColumns' deferWait).
__device__ inline void pdlEnter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#elif defined(DS_CUDA_EMU)
  ++emu::gridWaits(); // launchKernelOn checks that the grid waited
#endif
}

/// Asks for the 128-byte line at p in L2 (a hint: no value, no fault).
__device__ inline void prefetchL2(const void *p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

/// The sum of v over the block (every thread gets it); `shared` holds 32
/// floats.
__device__ inline float blockSum(float v, float *shared) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? shared[lane] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0)
    shared[0] = v;
  __syncthreads();
  v = shared[0];
  __syncthreads();
  return v;
}

/// The residual add + RMSNorm a kernel does after its own output (device
/// pointers; dsrt::AddNorm's).
struct NormEpilogue {
  const float *residual;
  int64_t ldr;
  const float *weight;
  float eps;
  float *sum;
  int64_t lds;
  float *normed;
  int64_t ldn;
};

/// One row of a residual add + RMSNorm over the block: sum = a + b (a null:
/// no sum, b itself), y = rmsNorm(sum) * w. The order of sums is the
/// block's. A thread reads and writes the same elements of a, b and sum
/// only, so sum may alias a.
__device__ inline void addRmsNormRow(const float *a, const float *b, int64_t d,
                                     const float *w, float eps, float *sum,
                                     float *y, float *shared) {
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = a ? a[j] + b[j] : b[j];
    if (a)
      sum[j] = v;
    ss += v * v;
  }
  ss = blockSum(ss, shared);
  const float r = 1.0f / sqrtf(ss / float(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    y[j] = (a ? sum[j] : b[j]) * r * w[j];
}

/// Threads of addRmsNormKernel's block, whose order of sums
/// addRmsNormRowWarp reproduces.
constexpr int kNormThreads = 256;

/// addRmsNormRow<true> of a 256-thread block (kNormThreads), bit for bit, in
/// one warp: lane l keeps the partial sums of the block's threads l, l + 32,
/// ..., l + 224 (thread t sums elements t, t + 256, ... in that order), then
/// reduces them as blockSum does (each warp's butterfly, then warp 0's over
/// the 8 totals). So several rows of one block normalize in parallel, a warp
/// each. Loads go past L1 (other blocks of the launch wrote b; a, the
/// residual, may share its buffer), 16 in flight per lane before the stores.
__device__ inline void addRmsNormRowWarp(const float *a, const float *b,
                                         int64_t d, const float *w, float eps,
                                         float *sum, float *y) {
  constexpr int kWarps = kNormThreads / 32;
  const int lane = int(threadIdx.x % 32);
  float ss[kWarps];
#pragma unroll
  for (int k = 0; k < kWarps; ++k)
    ss[k] = 0.0f;
  for (int64_t base = 0; base < d; base += kNormThreads) {
    float av[kWarps], bv[kWarps];
#pragma unroll
    for (int k = 0; k < kWarps; ++k) { // element of block thread 32 k + lane
      const int64_t j = base + 32 * k + lane;
      av[k] = bv[k] = 0.0f;
      if (j < d) {
        bv[k] = __ldcg(b + j);
        if (a)
          av[k] = __ldcg(a + j);
      }
    }
#pragma unroll
    for (int k = 0; k < kWarps; ++k) {
      const int64_t j = base + 32 * k + lane;
      if (j < d) {
        const float v = a ? av[k] + bv[k] : bv[k];
        if (a)
          sum[j] = v;
        ss[k] += v * v;
      }
    }
  }
  float total = 0.0f; // lane k: the total of the block's warp k
#pragma unroll
  for (int k = 0; k < kWarps; ++k) {
    float v = ss[k];
    for (int o = 16; o > 0; o >>= 1)
      v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == k)
      total = v;
  }
  for (int o = 16; o > 0; o >>= 1)
    total += __shfl_xor_sync(0xffffffffu, total, o);
  const float r = 1.0f / sqrtf(total / float(d) + eps);
  for (int64_t j = lane; j < d; j += 32)
    y[j] = (a ? sum[j] : __ldcg(b + j)) * r * w[j];
}

/// After a block's writes, with every thread of it: whether it is the last
/// block of the grid to get here, by a device counter that is zero between
/// launches (the last block resets it). Two block barriers; `last` is the
/// kernel's __shared__ flag. The last block then sees every block's writes.
__device__ inline bool lastBlockDone(unsigned *counter, bool &last) {
  __threadfence(); // this block's writes, visible before it is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence(); // cumulative: the block's fenced writes come first
    last = atomicAdd(counter, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
  }
  __syncthreads();
  if (!last)
    return false;
  __threadfence();
  if (threadIdx.x == 0)
    *counter = 0; // every block has counted: ready for the next launch
  return true;
}

/// Two floats as the bf16x2 word of an mma operand (lo in the low half).
__device__ inline uint32_t packBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

/// d += A B for the warp (mma.sync m16n8k16, bf16 in, float32 out): A 16x16
/// row-major, B 16x8 column-major, spread over the lanes as the PTX ISA
/// fixes. Lane (g = lane / 4, t = lane % 4) holds
///   a[0] = A[g][2t, 2t+1]   a[1] = A[g+8][2t, 2t+1]
///   a[2] = A[g][2t+8, 2t+9] a[3] = A[g+8][2t+8, 2t+9]
///   b[0] = B[2t, 2t+1][g]   b[1] = B[2t+8, 2t+9][g]
///   d = D[g][2t, 2t+1], D[g+8][2t, 2t+1]
/// (the lower k of each pair in the word's low half). Every lane of the
/// warp calls it (sm_80+).
__device__ inline void mmaBf16(float d[4], const uint32_t a[4],
                               const uint32_t b[2]) {
#if defined(__CUDA_ARCH__)
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),
                 "r"(b[1]));
#elif defined(DS_CUDA_EMU)
  emu::mmaM16N8K16Bf16(d, a, b);
#else
  (void)d, (void)a, (void)b;
#endif
}

__device__ inline float toFloat(float v) { return v; }
__device__ inline float toFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

/// Stores v in a buffer of float or bf16 (round to nearest even).
__device__ inline void storeAs(float *p, float v) { *p = v; }
__device__ inline void storeAs(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_KERNELCOMMON_CUH
