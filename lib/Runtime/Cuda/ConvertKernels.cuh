//===- ConvertKernels.cuh - GEMM input conversions ------------*- CUDA -*-===//
//
// The GEMM inputs Gemm.cu prepares: a bf16 copy for cuBLASLt's bf16 GEMMs
// and DeepSeek-V3's FP8 activation quantization. In a header so that
// test/Unit/CudaEmuTest.cpp runs them on the CPU against the CPU backend's
// conversions (Convert.h).
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_CONVERTKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_CONVERTKERNELS_CUH

#include "KernelCommon.cuh"

#include <cuda_fp8.h>

namespace dsrt {
namespace cuda {

/// y [rows, cols] (dense) = bf16(x [rows, ldx]); block row = blockIdx.x.
__global__ void toBf16Kernel(const float *x, int64_t ldx, int64_t cols,
                             __nv_bfloat16 *y) {
  pdlEnter();
  const int64_t i = blockIdx.x;
  for (int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.y) * blockDim.x)
    y[i * cols + j] = __float2bfloat16_rn(x[i * ldx + j]);
}

/// DeepSeek-V3's activation quantization, kept in float: each row's 128-wide
/// tiles become e4m3(x / s) * s with s = amax / 448 (1 for a zero tile),
/// which is what the FP8 GEMM multiplies. One warp per (row, tile).
__global__ void fakeQuantE4M3Kernel(const float *x, int64_t ldx, int64_t cols,
                                    float *y) {
  pdlEnter();
  const int64_t i = blockIdx.x;
  const int64_t c0 =
      (int64_t(blockIdx.y) * (blockDim.x / 32) + threadIdx.x / 32) * 128;
  if (c0 >= cols)
    return;
  const int lane = threadIdx.x % 32;
  const int64_t c1 = c0 + 128 < cols ? c0 + 128 : cols;
  float amax = 0.0f;
  for (int64_t c = c0 + lane; c < c1; c += 32)
    amax = fmaxf(amax, fabsf(x[i * ldx + c]));
  for (int o = 16; o > 0; o >>= 1)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  float s = amax / 448.0f;
  if (!(s > 0.0f) || isinf(s))
    s = 1.0f;
  for (int64_t c = c0 + lane; c < c1; c += 32) {
    __nv_fp8_e4m3 q(x[i * ldx + c] / s);
    y[i * cols + c] = float(q) * s;
  }
}

} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_CONVERTKERNELS_CUH
