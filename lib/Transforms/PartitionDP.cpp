//===- PartitionDP.cpp - data parallelism ---------------------------------===//
//
// Data-parallel replicas run different sequences through attention, dense
// layers and shared experts, each with its own copy of those weights. The
// routed experts are shared: they are split over the ep x dp ranks of an
// expert group, as DeepSeek deploys attention DP with expert parallelism (and
// as vLLM's data parallelism treats MoE layers). Which replica runs which
// sequence is the runtime's (sequence slot modulo dp).
//
//===----------------------------------------------------------------------===//

#include "PartitionUtils.h"
#include "ds/Transforms/Passes.h"

namespace ds {
#define GEN_PASS_DEF_PARTITIONDP
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

struct PartitionDPPass : public ds::impl::PartitionDPBase<PartitionDPPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    PlanAttr plan = getPlan(module);
    if (!plan || plan.getDp() == 1)
      return;
    int64_t ep = plan.getEp(), dp = plan.getDp(), group = ep * dp;
    WeightSharder sharder(module);
    SmallVector<MoEOp> layers;
    forEachModelOp(module, [&](Operation *op) {
      if (auto moe = dyn_cast<MoEOp>(op))
        layers.push_back(moe);
    });
    for (MoEOp moe : layers) {
      if (int64_t(moe.getEp()) != ep) {
        moe.emitOpError() << "has ep = " << moe.getEp() << ", the plan ep = "
                          << ep << " (run ds-partition-ep first)";
        return signalPassFailure();
      }
      int64_t experts = moe.getConfig().getExperts();
      if (experts % group != 0) {
        moe.emitOpError() << "has " << experts
                          << " routed experts, not divisible by ep x dp = "
                          << ep << " x " << dp;
        return signalPassFailure();
      }
      // Expert e: ep owner e / (experts / ep) (ds-partition-ep), and within
      // that rank's range the dp owner; group rank ep_i * dp + dp_i holds
      // experts [g * experts / group, (g + 1) * experts / group).
      int64_t perEp = experts / ep, perRank = experts / group;
      if (failed(placeExperts(sharder, moe, MeshAxis::dp, [&](int64_t e) {
            return (e % perEp) / perRank;
          })))
        return signalPassFailure();
      moe.setEp(group);
    }
  }
};

} // namespace
