//===- DSDialect.h - the ds dialect -----------------------------*- C++ -*-===//

#ifndef DS_DIALECT_DS_IR_DSDIALECT_H
#define DS_DIALECT_DS_IR_DSDIALECT_H

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpImplementation.h"

#include "ds/Dialect/DS/IR/DSDialect.h.inc"
#include "ds/Dialect/DS/IR/DSEnums.h.inc"

namespace ds {
/// Prints a float attribute parameter in its shortest round-trip form with a
/// decimal point (`10000.0`, `2.5`, `1.0E-6`).
void printFloatParameter(mlir::AsmPrinter &printer, const llvm::APFloat &value);
} // namespace ds

#define GET_ATTRDEF_CLASSES
#include "ds/Dialect/DS/IR/DSAttrs.h.inc"

#endif // DS_DIALECT_DS_IR_DSDIALECT_H
