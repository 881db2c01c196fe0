//===- Cuda.h - emit kernel-level programs as CUDA C++ ----------*- C++ -*-===//

#ifndef DS_TARGET_CUDA_H
#define DS_TARGET_CUDA_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace ds {

/// Precision of the CUDA backend's GEMMs (ds-compile --compute-dtype).
enum class CudaComputeDtype { F32, BF16 };

/// Emits a planned kernel-level module as one CUDA C++ translation unit for
/// libdsrt-cuda (include/ds/Runtime/Cuda.h): the tables and ModelSpec of
/// emitCpp, each program as a body of dsrt::cuda kernel calls run through
/// dsrt::cuda::runProgram, and a main that needs a CUDA device. Tensor and
/// expert parallelism run on NCCL (dsrt-nccl), as does any model with
/// `multiRank` (one rank under mpirun); pipeline and data parallelism are
/// errors.
mlir::LogicalResult emitCuda(mlir::ModuleOp module, llvm::raw_ostream &os,
                             CudaComputeDtype dtype = CudaComputeDtype::BF16,
                             bool multiRank = false);

} // namespace ds

#endif // DS_TARGET_CUDA_H
