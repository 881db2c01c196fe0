//===- KernelDialect.h - the dsk kernel-level dialect -----------*- C++ -*-===//

#ifndef DS_DIALECT_KERNEL_IR_KERNELDIALECT_H
#define DS_DIALECT_KERNEL_IR_KERNELDIALECT_H

#include "ds/Dialect/DS/IR/DSOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

#include "ds/Dialect/Kernel/IR/KernelDialect.h.inc"

#include "ds/Dialect/Kernel/IR/KernelEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "ds/Dialect/Kernel/IR/KernelAttrs.h.inc"

#define GET_OP_CLASSES
#include "ds/Dialect/Kernel/IR/KernelOps.h.inc"

namespace ds::kernel {
/// Name of the function attribute marking a program, and of the module
/// attribute holding the #dsk.model.
inline constexpr llvm::StringLiteral kProgramAttrName = "dsk.program";
inline constexpr llvm::StringLiteral kModelAttrName = "dsk.model";

/// GEMM kernels that can read FP8 weights (and quantize their activations).
inline bool isFP8CapableGemm(mlir::Operation *op) {
  return llvm::isa<LinearOp, LinearPairOp, GatedUpOp, MoEExpertsOp>(op);
}

/// Whether `op` reads the weight of `use` as a GEMM operand: a linear-layer
/// weight of an FP8-capable GEMM kernel (not, e.g., the norm weight of the
/// experts' epilogue).
inline bool isGemmWeightUse(mlir::Operation *op, const ::ds::WeightUse &use) {
  return use.quantizable && isFP8CapableGemm(op);
}

/// The buffer `v` is a column view (memref.subview) of, or `v` itself.
inline mlir::Value rootBuffer(mlir::Value v) {
  while (auto view = v.getDefiningOp<mlir::memref::SubViewOp>())
    v = view.getSource();
  return v;
}

/// Whether `a` and `b` provably share no element: different buffers, or
/// unit-stride column views of one buffer at static, non-overlapping column
/// ranges.
/// Kernels whose blocks read one operand while others write another (every
/// GEMM's input and output on the GPU) need this of them.
bool disjoint(mlir::Value a, mlir::Value b);
} // namespace ds::kernel

#endif // DS_DIALECT_KERNEL_IR_KERNELDIALECT_H
