//===- PartitionTP.cpp - tensor parallelism -------------------------------===//
//
// Megatron-style: column-split the projections that fan out (per head, per
// intermediate unit), row-split the ones that fan in, and sum the partial
// outputs with one all-reduce per block.
//
//===----------------------------------------------------------------------===//

#include "PartitionUtils.h"
#include "ds/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

namespace ds {
#define GEN_PASS_DEF_PARTITIONTP
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

struct PartitionTPPass : public ds::impl::PartitionTPBase<PartitionTPPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    PlanAttr plan = getPlan(module);
    if (!plan || plan.getTp() == 1)
      return;
    tp = plan.getTp();
    WeightSharder sharder(module);
    SmallVector<Operation *> ops;
    forEachModelOp(module, [&](Operation *op) {
      if (isa<MLAOp, MLPOp, MoEOp, LMHeadOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      LogicalResult r = success();
      if (auto o = dyn_cast<MLAOp>(op))
        r = partition(o, sharder);
      else if (auto o = dyn_cast<MLPOp>(op))
        r = partition(o, sharder);
      else if (auto o = dyn_cast<MoEOp>(op))
        r = partition(o, sharder);
      else
        r = partition(cast<LMHeadOp>(op), sharder, module);
      if (failed(r))
        return signalPassFailure();
    }
  }

private:
  LogicalResult divisible(Operation *op, StringRef what, int64_t size) {
    if (size % tp == 0)
      return success();
    return op->emitOpError() << "has " << size << " " << what
                             << ", not divisible by tp = " << tp;
  }

  /// The op's result is now one rank's partial sum.
  void allReduceAfter(Operation *op) {
    OpBuilder b(op->getContext());
    b.setInsertionPointAfter(op);
    Value partial = op->getResult(0);
    auto sum = AllReduceOp::create(b, op->getLoc(), partial,
                                   MeshAxisAttr::get(op->getContext(),
                                                     MeshAxis::tp));
    partial.replaceAllUsesExcept(sum, sum);
  }

  /// SwiGLU weights under `prefix`: gate/up rows, down columns.
  LogicalResult splitMLP(Operation *op, const Twine &prefix,
                         WeightSharder &sharder) {
    std::string p = prefix.str();
    if (failed(sharder.split(op, p + ".gate_proj.weight", MeshAxis::tp, 0, tp)) ||
        failed(sharder.split(op, p + ".up_proj.weight", MeshAxis::tp, 0, tp)) ||
        failed(sharder.split(op, p + ".down_proj.weight", MeshAxis::tp, 1, tp)))
      return failure();
    return success();
  }

  LogicalResult partition(MLAOp o, WeightSharder &sharder) {
    MLAConfigAttr c = o.getConfig();
    if (failed(divisible(o, "heads", c.getHeads())))
      return failure();
    std::string p = o.getPrefix().str();
    StringRef q = c.getQLoraRank() > 0 ? ".q_b_proj.weight" : ".q_proj.weight";
    if (failed(sharder.split(o, p + q.str(), MeshAxis::tp, 0, tp)) ||
        failed(sharder.split(o, p + ".kv_b_proj.weight", MeshAxis::tp, 0, tp)) ||
        failed(sharder.split(o, p + ".o_proj.weight", MeshAxis::tp, 1, tp)))
      return failure();
    o.setConfigAttr(MLAConfigAttr::get(
        o.getContext(), c.getHeads() / tp, c.getQLoraRank(), c.getKvLoraRank(),
        c.getQkNope(), c.getQkRope(), c.getVHead()));
    allReduceAfter(o);
    return success();
  }

  LogicalResult partition(MLPOp o, WeightSharder &sharder) {
    if (failed(divisible(o, "intermediate units", o.getInter())) ||
        failed(splitMLP(o, o.getPrefix(), sharder)))
      return failure();
    o.setInter(o.getInter() / tp);
    allReduceAfter(o);
    return success();
  }

  LogicalResult partition(MoEOp o, WeightSharder &sharder) {
    MoEConfigAttr c = o.getConfig();
    if (failed(divisible(o, "intermediate units per expert", c.getInter())))
      return failure();
    for (int64_t e = 0; e < c.getExperts(); ++e)
      if (failed(splitMLP(o, o.getPrefix() + ".experts." + Twine(e), sharder)))
        return failure();
    if (c.getShared() > 0 &&
        failed(splitMLP(o, o.getPrefix() + ".shared_experts", sharder)))
      return failure();
    o.setConfigAttr(MoEConfigAttr::get(
        o.getContext(), c.getExperts(), c.getShared(), c.getTopK(),
        c.getInter() / tp, c.getScoring(), c.getTopkMethod(), c.getNGroup(),
        c.getTopkGroup(), c.getNormTopk(), c.getScale()));
    allReduceAfter(o);
    return success();
  }

  /// Vocabulary-parallel head: each rank computes vocab / tp logits, then
  /// the ranks' columns are gathered. A head that the embedding or an MTP
  /// module also reads stays whole (they need every row).
  LogicalResult partition(LMHeadOp o, WeightSharder &sharder,
                          ModuleOp module) {
    StringRef name = o.getWeight();
    bool shared = false;
    forEachModelOp(module, [&](Operation *op) {
      if (auto user = dyn_cast<WeightUserInterface>(op)) {
        if (isa<LMHeadOp>(op))
          return;
        SmallVector<WeightUse> uses;
        user.getWeightUses(uses);
        for (const WeightUse &u : uses)
          shared |= u.name == name;
      }
    });
    if (shared)
      return success();
    auto type = cast<RankedTensorType>(o.getResult().getType());
    int64_t vocab = type.getDimSize(1);
    if (failed(divisible(o, "vocabulary rows", vocab)) ||
        failed(sharder.split(o, name, MeshAxis::tp, 0, tp)))
      return failure();
    OpBuilder b(o);
    b.setInsertionPointAfter(o);
    o.getResult().setType(RankedTensorType::get(
        {type.getDimSize(0), vocab / tp}, type.getElementType()));
    auto gather = AllGatherOp::create(
        b, o.getLoc(), type, o.getResult(),
        MeshAxisAttr::get(o.getContext(), MeshAxis::tp), b.getI64IntegerAttr(1));
    o.getResult().replaceAllUsesExcept(gather, gather);
    return success();
  }

  int64_t tp = 1;
};

} // namespace
