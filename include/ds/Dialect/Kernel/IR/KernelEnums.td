//===- KernelEnums.td - dsk enums --------------------------*- tablegen -*-===//
// Kept apart from KernelOps.td so enum generation does not repeat ds's enums.

#ifndef DS_DIALECT_KERNEL_IR_KERNELENUMS_TD
#define DS_DIALECT_KERNEL_IR_KERNELENUMS_TD

include "mlir/IR/EnumAttr.td"

def DSK_ProgramKind : I32EnumAttr<"ProgramKind", "program kind", [
    I32EnumAttrCase<"prefill", 0>, I32EnumAttrCase<"decode", 1>,
    I32EnumAttrCase<"mtp", 2>]> {
  let cppNamespace = "::ds::kernel";
  let genSpecializedAttr = 0;
}

#endif // DS_DIALECT_KERNEL_IR_KERNELENUMS_TD
