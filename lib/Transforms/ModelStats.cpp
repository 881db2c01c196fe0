//===- ModelStats.cpp - parameter and KV-cache statistics -----------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Transforms/Passes.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/raw_ostream.h"

namespace ds {
#define GEN_PASS_DEF_MODELSTATS
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {
struct ModelStatsPass : public ds::impl::ModelStatsBase<ModelStatsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);

    // Classify weights by their readers: main-model ops first, so a weight
    // shared with an MTP module (embedding, head) counts as main-model.
    llvm::StringSet<> mainWeights, mtpWeights;
    int64_t inactive = 0, kvBytesPerToken = 0;
    module.walk([&](WeightUserInterface op) {
      bool inMTP = isa<MTPOp>(op) || op->getParentOfType<MTPOp>();
      SmallVector<WeightUse> uses;
      op.getWeightUses(uses);
      for (const WeightUse &use : uses)
        (inMTP ? mtpWeights : mainWeights).insert(use.name);
      if (inMTP)
        return;
      if (auto moe = dyn_cast<MoEOp>(*op)) {
        MoEConfigAttr c = moe.getConfig();
        int64_t hidden =
            cast<RankedTensorType>(moe.getInput().getType()).getDimSize(1);
        inactive += (c.getExperts() - c.getTopK()) * c.getExpertParams(hidden);
      } else if (auto mla = dyn_cast<MLAOp>(*op)) {
        MLAConfigAttr c = mla.getConfig();
        kvBytesPerToken += (c.getKvLoraRank() + c.getQkRope()) * 2;
      }
    });

    auto count = [&](const llvm::StringSet<> &names, bool skipMain) {
      int64_t n = 0;
      for (const auto &entry : names) {
        if (skipMain && mainWeights.contains(entry.getKey()))
          continue;
        if (auto w = symbols.lookup<WeightOp>(entry.getKey()))
          n += w.getNumElements();
      }
      return n;
    };
    int64_t total = count(mainWeights, false);
    llvm::raw_ostream &os = llvm::outs();
    os << "params.total: " << total << "\n";
    os << "params.active: " << total - inactive << "\n";
    os << "params.mtp: " << count(mtpWeights, true) << "\n";
    os << "kv_cache.bytes_per_token: " << kvBytesPerToken << "\n";
    os.flush();
    markAllAnalysesPreserved();
  }
};
} // namespace
