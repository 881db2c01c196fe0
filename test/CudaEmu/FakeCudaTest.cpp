//===- FakeCudaTest.cpp - the emulated CUDA runtime's own rules -----------===//
//
// The emulated backend must refuse what a GPU refuses, or a launch that only
// the CPU accepts passes every emulated test and fails on the first GPU:
// these check the rules FakeCuda.cpp enforces at each launch.
//
//===----------------------------------------------------------------------===//

#include "EmuPrelude.h"

#include <gtest/gtest.h>

namespace emu {
cudaError_t checkLaunch(const void *kernel, dim3 grid, dim3 block,
                        size_t shared);
} // namespace emu

namespace {

__global__ void probeKernel() {}
__global__ void otherKernel() {}

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

} // namespace
