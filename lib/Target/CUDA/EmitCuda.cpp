//===- EmitCuda.cpp - kernel level -> CUDA C++ against libdsrt-cuda -------===//
//
// The CPU and CUDA backends share one emitter (lib/Target/Cpp): the kernel
// calls and their arguments are the same, only the namespace, the program
// wrapper and main differ.
//
//===----------------------------------------------------------------------===//

#include "ds/Target/Cuda.h"
#include "ds/Target/Cpp.h"

using namespace mlir;

LogicalResult ds::emitCuda(ModuleOp module, raw_ostream &os,
                           CudaComputeDtype dtype, bool multiRank) {
  KernelTarget target;
  target.kind = KernelTarget::Cuda;
  target.computeBf16 = dtype == CudaComputeDtype::BF16;
  target.multiRank = multiRank;
  return emitKernelModule(module, os, target);
}
