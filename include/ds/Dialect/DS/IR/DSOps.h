//===- DSOps.h - ds operations ----------------------------------*- C++ -*-===//

#ifndef DS_DIALECT_DS_IR_DSOPS_H
#define DS_DIALECT_DS_IR_DSOPS_H

#include "ds/Dialect/DS/IR/DSDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <string>

namespace ds {

/// A checkpoint weight an op reads, with the shape its configuration implies.
struct WeightUse {
  std::string name;
  /// Expected shape; mlir::ShapedType::kDynamic accepts any extent.
  llvm::SmallVector<int64_t> shape;
  /// Whether the checkpoint may store it as FP8 with a weight_scale_inv
  /// companion (linear-layer weights; not norms, routers or embeddings).
  bool quantizable = false;
};

/// Suffix of the FP8 scale companion of a weight named "X.weight".
inline constexpr llvm::StringLiteral kScaleSuffix = "_scale_inv";

class WeightUserInterface;

/// The symbol verifier shared by every op that reads weights: each weight the
/// op lists must be a ds.weight of the shape its configuration implies.
mlir::LogicalResult verifyWeightUses(mlir::Operation *op,
                                     mlir::SymbolTableCollection &tables);

} // namespace ds

#include "ds/Dialect/DS/IR/DSInterfaces.h.inc"

#define GET_OP_CLASSES
#include "ds/Dialect/DS/IR/DSOps.h.inc"

#endif // DS_DIALECT_DS_IR_DSOPS_H
