//===- FakeCudaTest.cpp - the emulated CUDA runtime's own rules -----------===//
//
// The emulated backend must refuse what a GPU refuses, or a launch that only
// the CPU accepts passes every emulated test and fails on the first GPU:
// these check the rules FakeCuda.cpp enforces at each launch.
//
//===----------------------------------------------------------------------===//

#include "EmuPrelude.h"

#include "Cuda/CudaCommon.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace emu {
cudaError_t checkLaunch(const void *kernel, dim3 grid, dim3 block,
                        size_t shared);
} // namespace emu

namespace {

__global__ void probeKernel() {}
__global__ void otherKernel() {}
__global__ void waitingKernel(int *out) {
  dsrt::cuda::pdlEnter();
  *out = 1;
}
__global__ void unwaitingKernel(int *out) { *out = 1; }

const void *probe() { return reinterpret_cast<const void *>(probeKernel); }

TEST(FakeCudaLaunch, RefusesEmptyOrOversizedConfigurations) {
  EXPECT_EQ(emu::checkLaunch(probe(), dim3(1), dim3(256), 0), cudaSuccess);
  EXPECT_EQ(emu::checkLaunch(probe(), dim3(1u << 30, 65535, 65535),
                             dim3(32, 32), 48 * 1024),
            cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(0), dim3(256), 0), cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(4, 0), dim3(256), 0), cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1), dim3(0), 0), cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1), dim3(1025), 0), cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1), dim3(64, 17), 0), cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1, 65536), dim3(32), 0),
            cudaSuccess);
}

TEST(FakeCudaLaunch, SharedMemoryPast48KBNeedsTheKernelsAttribute) {
  const void *other = reinterpret_cast<const void *>(otherKernel);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1), dim3(256), 48 * 1024 + 1),
            cudaSuccess);
  ASSERT_EQ(cudaFuncSetAttribute(probe(),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 100 * 1024),
            cudaSuccess);
  EXPECT_EQ(emu::checkLaunch(probe(), dim3(1), dim3(256), 100 * 1024),
            cudaSuccess);
  EXPECT_NE(emu::checkLaunch(probe(), dim3(1), dim3(256), 100 * 1024 + 1),
            cudaSuccess);
  // The attribute is the kernel's own.
  EXPECT_NE(emu::checkLaunch(other, dim3(1), dim3(256), 64 * 1024),
            cudaSuccess);
  // Past the multiprocessor's 227 KB the attribute itself is refused.
  EXPECT_EQ(cudaFuncSetAttribute(
                other, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
            cudaErrorInvalidValue);
}

// Any of the backend's launches may start early on a GPU (programmatic
// dependent launch), so a grid none of whose threads waits (pdlEnter) would
// race with the kernel before it: the emulated launch refuses it.
TEST(FakeCudaLaunch, AGridThatNeverWaitsIsRefused) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  int out = 0;
  dsrt::cuda::launchKernelOn(stream, false, "waiting", waitingKernel, dim3(2),
                             dim3(32), 0, &out);
  EXPECT_EQ(out, 1);
  EXPECT_DEATH(dsrt::cuda::launchKernelOn(stream, false, "unwaiting",
                                          unwaitingKernel, dim3(2), dim3(32), 0,
                                          &out),
               "unwaiting: no thread of the grid waited");
}

// DS_CUDA_EMU_TRACE=1 names every kernel run with its configuration, and
// DS_CUDA_EMU_SMS sets the multiprocessor count the backend sizes grids by:
// a program's launches at a GPU's sizes, read without one.
TEST(FakeCudaLaunch, TraceAndMultiprocessorCount) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  int out = 0;
  ASSERT_EQ(setenv("DS_CUDA_EMU_TRACE", "1", 1), 0);
  testing::internal::CaptureStderr();
  dsrt::cuda::launchKernelOn(stream, true, "traced", waitingKernel, dim3(3, 2),
                             dim3(64), 0, &out);
  const std::string err = testing::internal::GetCapturedStderr();
  unsetenv("DS_CUDA_EMU_TRACE");
  EXPECT_NE(err.find("cuda-emu: launch traced grid 3x2x1 block 64 smem 0 "
                     "early\n"),
            std::string::npos)
      << err;
  testing::internal::CaptureStderr();
  dsrt::cuda::launchKernelOn(stream, false, "quiet", waitingKernel, dim3(1),
                             dim3(32), 0, &out);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  cudaDeviceProp prop;
  ASSERT_EQ(setenv("DS_CUDA_EMU_SMS", "132", 1), 0);
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.multiProcessorCount, 132);
  unsetenv("DS_CUDA_EMU_SMS");
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.multiProcessorCount, 4);
}

} // namespace
