//===- Cpp.h - emit kernel-level programs as C++ ----------------*- C++ -*-===//

#ifndef DS_TARGET_CPP_H
#define DS_TARGET_CPP_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace ds {

/// Emits a planned kernel-level module (after ds-lower-to-kernels and
/// dsk-plan-memory) as one C++ translation unit for the CPU backend of
/// libdsrt: the weight table, the RoPE tables, `prefill` and `decode` as
/// kernel calls in launch order, the ModelSpec and `main`.
mlir::LogicalResult emitCpp(mlir::ModuleOp module, llvm::raw_ostream &os);

/// Which runtime backend the emitted program calls.
struct KernelTarget {
  enum Kind { Cpu, Cuda } kind = Cpu;
  /// Cuda: GEMM weights in bf16 (else float32).
  bool computeBf16 = true;
  /// A multi-rank executable (MPI main; NCCL on Cuda) even for one rank.
  bool multiRank = false;
};

/// The emitter behind emitCpp and emitCuda (lib/Target/CUDA): the same
/// kernel calls for either backend of libdsrt.
mlir::LogicalResult emitKernelModule(mlir::ModuleOp module,
                                     llvm::raw_ostream &os,
                                     const KernelTarget &target);

} // namespace ds

#endif // DS_TARGET_CPP_H
