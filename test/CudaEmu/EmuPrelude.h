//===- EmuPrelude.h - the CUDA backend for the host compiler --*- C++ -*-===//
//
// Included first by the wrappers that build lib/Runtime/Cuda/*.cu as C++
// (EmuDevice.cpp, ...): the CUDA runtime headers for their types and
// declarations, then the kernel emulator (test/Unit/CudaEmu.h), which turns
// the kernels into host code. FakeCuda.cpp implements the runtime, cuBLAS
// and cuBLASLt calls the backend makes on host memory, so that an emitted
// CUDA program runs, whole, on a machine without a GPU.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_CUDAEMU_EMUPRELUDE_H
#define DS_TEST_CUDAEMU_EMUPRELUDE_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "../Unit/CudaEmu.h"

#endif // DS_TEST_CUDAEMU_EMUPRELUDE_H
