//===- PartitionEP.cpp - expert parallelism -------------------------------===//
//
// Each expert-parallel rank keeps a contiguous range of every MoE layer's
// routed experts; the token exchange itself is the runtime's (the lowered
// dsk.moe_experts carries `ep`).
//
//===----------------------------------------------------------------------===//

#include "PartitionUtils.h"
#include "ds/Transforms/Passes.h"

namespace ds {
#define GEN_PASS_DEF_PARTITIONEP
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

struct PartitionEPPass : public ds::impl::PartitionEPBase<PartitionEPPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    PlanAttr plan = getPlan(module);
    if (!plan || plan.getEp() == 1)
      return;
    int64_t ep = plan.getEp();
    WeightSharder sharder(module);
    SmallVector<MoEOp> layers;
    forEachModelOp(module, [&](Operation *op) {
      if (auto moe = dyn_cast<MoEOp>(op))
        layers.push_back(moe);
    });
    if (layers.empty()) {
      module.emitError() << "ds-partition-ep: ep = " << ep
                         << " but the model has no MoE layer to split";
      return signalPassFailure();
    }
    for (MoEOp moe : layers) {
      int64_t experts = moe.getConfig().getExperts();
      if (experts % ep != 0) {
        moe.emitOpError() << "has " << experts
                          << " routed experts, not divisible by ep = " << ep;
        return signalPassFailure();
      }
      int64_t perRank = experts / ep;
      if (failed(placeExperts(sharder, moe, MeshAxis::ep,
                              [&](int64_t e) { return e / perRank; })))
        return signalPassFailure();
      moe.setEp(ep);
    }
  }
};

} // namespace
