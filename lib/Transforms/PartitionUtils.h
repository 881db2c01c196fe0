//===- PartitionUtils.h - shared by the partition passes --------*- C++ -*-===//

#ifndef DS_LIB_TRANSFORMS_PARTITIONUTILS_H
#define DS_LIB_TRANSFORMS_PARTITIONUTILS_H

#include "ds/Dialect/DS/IR/DSOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

namespace ds {

/// The module's #ds.plan, or null.
PlanAttr getPlan(mlir::ModuleOp module);

/// Records per-rank slices and placements on ds.weight ops. A weight read by
/// several ops is sharded once; a second, different request is an error.
class WeightSharder {
public:
  explicit WeightSharder(mlir::ModuleOp module);

  /// Splits weight `name` (read by `user`) along `dim` into `parts` equal
  /// slices over `axis`: its type becomes one slice.
  mlir::LogicalResult split(mlir::Operation *user, llvm::StringRef name,
                            MeshAxis axis, int64_t dim, int64_t parts);
  /// Only the ranks at coordinate `owner` of `axis` hold weight `name`.
  mlir::LogicalResult place(mlir::Operation *user, llvm::StringRef name,
                            MeshAxis axis, int64_t owner);

private:
  /// Records `shard` on weight `name`; *added is false when the weight
  /// already had it (another reader asked for the same).
  mlir::LogicalResult add(mlir::Operation *user, llvm::StringRef name,
                          ShardAttr shard, WeightOp *weight, bool *added);
  llvm::StringMap<WeightOp> weights;
  /// FP8 block shape of the module's checkpoint (ds.quantization), if any.
  int64_t fp8Block[2] = {0, 0};
};

/// Places the three weights of every routed expert e of `moe` on coordinate
/// ownerOf(e) of `axis`.
mlir::LogicalResult
placeExperts(WeightSharder &sharder, MoEOp moe, MeshAxis axis,
             llvm::function_ref<int64_t(int64_t)> ownerOf);

/// Functions whose ops the partition passes rewrite: @forward and the MTP
/// functions (@mtp_K), with the regions of their ops.
void forEachModelOp(mlir::ModuleOp module,
                    llvm::function_ref<void(mlir::Operation *)> fn);

} // namespace ds

#endif // DS_LIB_TRANSFORMS_PARTITIONUTILS_H
