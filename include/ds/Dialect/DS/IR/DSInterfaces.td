//===- DSInterfaces.td - ds op interfaces ------------------*- tablegen -*-===//

#ifndef DS_DIALECT_DS_IR_DSINTERFACES_TD
#define DS_DIALECT_DS_IR_DSINTERFACES_TD

include "mlir/IR/OpBase.td"

def DS_WeightUserInterface : OpInterface<"WeightUserInterface"> {
  let cppNamespace = "::ds";
  let description = [{
    An op that reads checkpoint weights. It lists every weight it needs with
    the shape its configuration implies; the shared symbol verifier checks the
    module's `ds.weight` symbols against that list, and analyses (model
    statistics, partitioning, lowering) enumerate weights through it.
  }];
  let methods = [
    InterfaceMethod<
      "Appends the weights this op reads, with their expected shapes "
      "(ShapedType::kDynamic where any extent is accepted).",
      "void", "getWeightUses",
      (ins "::llvm::SmallVectorImpl<::ds::WeightUse> &":$uses)>,
  ];
}

#endif // DS_DIALECT_DS_IR_DSINTERFACES_TD
