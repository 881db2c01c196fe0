//===- PartitionUtils.cpp - shared by the partition passes ----------------===//

#include "PartitionUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;
using namespace ds;

PlanAttr ds::getPlan(ModuleOp module) {
  return module->getAttrOfType<PlanAttr>(DSDialect::kPlanAttrName);
}

WeightSharder::WeightSharder(ModuleOp module) {
  for (auto w : module.getOps<WeightOp>())
    weights[w.getSymName()] = w;
  if (auto q = module->getAttrOfType<FP8QuantAttr>(DSDialect::kQuantizationAttrName))
    if (q.getBlock().size() == 2)
      std::copy(q.getBlock().begin(), q.getBlock().end(), fp8Block);
}

LogicalResult WeightSharder::add(Operation *user, StringRef name,
                                 ShardAttr shard, WeightOp *weight,
                                 bool *added) {
  *added = false;
  auto it = weights.find(name);
  if (it == weights.end())
    return user->emitOpError() << "reads weight '" << name
                               << "', which the module does not declare";
  *weight = it->second;
  SmallVector<Attribute> shards;
  if (std::optional<ArrayAttr> old = weight->getShards()) {
    for (auto s : old->getAsRange<ShardAttr>()) {
      if (s == shard)
        return success();
      if (s.getAxis() == shard.getAxis())
        return user->emitOpError()
               << "needs weight '" << name << "' sharded as " << shard
               << ", but another op already sharded it as " << s;
    }
    shards.append(old->begin(), old->end());
  }
  shards.push_back(shard);
  weight->setShardsAttr(ArrayAttr::get(user->getContext(), shards));
  *added = true;
  return success();
}

LogicalResult WeightSharder::split(Operation *user, StringRef name,
                                   MeshAxis axis, int64_t dim, int64_t parts) {
  auto shard = ShardAttr::get(user->getContext(), axis, dim, -1);
  WeightOp weight;
  bool added = false;
  if (failed(add(user, name, shard, &weight, &added)))
    return failure();
  if (!added)
    return success(); // another reader already split it this way
  RankedTensorType type = weight.getTensorType();
  if (dim >= type.getRank() || type.getDimSize(dim) % parts != 0)
    return user->emitOpError()
           << "cannot split weight '" << name << "' " << type << " along dim "
           << dim << " over " << stringifyMeshAxis(axis) << " = " << parts;
  SmallVector<int64_t> shape(type.getShape());
  shape[dim] /= parts;
  // An FP8 checkpoint tensor is split on its block grid, so that each part
  // has whole blocks and its scales are the matching slice of
  // "<name>_scale_inv" (split the same way).
  const bool fp8 = isa<Float8E4M3FNType>(type.getElementType());
  if (fp8 && fp8Block[dim] > 0 && shape[dim] % fp8Block[dim] != 0)
    return user->emitOpError()
           << "cannot split FP8 weight '" << name << "' " << type
           << " along dim " << dim << " over " << stringifyMeshAxis(axis)
           << " = " << parts << ": each part (" << shape[dim]
           << ") must be a whole number of " << fp8Block[dim]
           << "-wide FP8 blocks";
  weight.setType(RankedTensorType::get(shape, type.getElementType()));
  if (fp8) {
    std::string scale = (name + kScaleSuffix).str();
    if (weights.count(scale))
      return this->split(user, scale, axis, dim, parts);
  }
  return success();
}

LogicalResult WeightSharder::place(Operation *user, StringRef name,
                                   MeshAxis axis, int64_t owner) {
  WeightOp weight;
  bool added = false;
  return add(user, name, ShardAttr::get(user->getContext(), axis, -1, owner),
             &weight, &added);
}

LogicalResult ds::placeExperts(WeightSharder &sharder, MoEOp moe,
                               MeshAxis axis,
                               function_ref<int64_t(int64_t)> ownerOf) {
  for (int64_t e = 0, n = moe.getConfig().getExperts(); e < n; ++e) {
    std::string p = (moe.getPrefix() + ".experts." + Twine(e)).str();
    for (StringRef proj :
         {".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"})
      if (failed(sharder.place(moe, p + proj.str(), axis, ownerOf(e))))
        return failure();
  }
  return success();
}

void ds::forEachModelOp(ModuleOp module, function_ref<void(Operation *)> fn) {
  for (auto f : module.getOps<func::FuncOp>())
    if (f.getName() == "forward" || f.getName().starts_with("mtp_"))
      f.walk([&](Operation *op) { fn(op); });
}
