//===- PartitionPP.cpp - pipeline parallelism -----------------------------===//
//
// Cuts @forward into pp contiguous ranges of decoder layers. A cut goes where
// exactly one activation (the residual stream) is live, so each stage hands
// the next one [tokens, hidden] rows and nothing else. Stage 0 also embeds,
// the last stage also normalizes, projects to logits and runs the MTP module.
//
//===----------------------------------------------------------------------===//

#include "PartitionUtils.h"
#include "ds/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"

namespace ds {
#define GEN_PASS_DEF_PARTITIONPP
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// The top-level op of `block` that contains `op` (op itself or an ancestor).
static Operation *topLevel(Block &block, Operation *op) {
  return block.findAncestorOpInBlock(*op);
}

/// Wraps ops [begin, end) of `block` into `ds.stage stage`: values defined
/// outside and used inside become the inputs, values defined inside and
/// used after become the results.
static StageOp wrap(Block &block, ArrayRef<Operation *> ops, int64_t stage) {
  llvm::SmallPtrSet<Operation *, 32> inside(ops.begin(), ops.end());
  llvm::SetVector<Value> inputs, results;
  for (Operation *op : ops) {
    op->walk([&](Operation *nested) {
      for (Value v : nested->getOperands()) {
        Operation *def = v.getDefiningOp();
        Block *owner = def ? def->getBlock() : cast<BlockArgument>(v).getOwner();
        if (owner != &block)
          continue; // defined inside this op's own regions
        if (!def || !inside.contains(def))
          inputs.insert(v);
      }
    });
    for (Value r : op->getResults())
      for (Operation *user : r.getUsers())
        if (!inside.contains(topLevel(block, user))) {
          results.insert(r);
          break;
        }
  }
  OpBuilder b(ops.front());
  SmallVector<Type> resultTypes;
  for (Value r : results)
    resultTypes.push_back(r.getType());
  auto op = StageOp::create(b, ops.front()->getLoc(), resultTypes,
                            inputs.getArrayRef(), b.getI64IntegerAttr(stage));
  Block *body = new Block();
  op.getBody().push_back(body);
  for (Value in : inputs) {
    BlockArgument arg = body->addArgument(in.getType(), in.getLoc());
    Value(in).replaceUsesWithIf(arg, [&](OpOperand &use) {
      return op->isProperAncestor(use.getOwner()) ||
             inside.contains(topLevel(block, use.getOwner()));
    });
  }
  for (Operation *o : ops)
    o->moveBefore(body, body->end());
  b.setInsertionPointToEnd(body);
  YieldOp::create(b, op.getLoc(), results.getArrayRef());
  for (auto [i, r] : llvm::enumerate(results))
    Value(r).replaceUsesWithIf(op.getResult(i), [&](OpOperand &use) {
      return !op->isProperAncestor(use.getOwner());
    });
  return op;
}

struct PartitionPPPass : public ds::impl::PartitionPPBase<PartitionPPPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    PlanAttr plan = getPlan(module);
    if (!plan || plan.getPp() == 1)
      return;
    int64_t pp = plan.getPp();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("ds-partition-pp: the module has no @forward");
      return signalPassFailure();
    }
    Block &block = forward.getBody().front();
    if (!block.getOps<StageOp>().empty()) {
      forward.emitOpError("is already split into pipeline stages");
      return signalPassFailure();
    }
    SmallVector<Operation *> ops;
    for (Operation &op : block.without_terminator())
      ops.push_back(&op);
    SmallVector<int64_t> layerAt; // index in `ops` of each decoder layer's MLA
    for (auto [i, op] : llvm::enumerate(ops))
      if (isa<MLAOp>(op))
        layerAt.push_back(i);
    int64_t layers = layerAt.size();
    if (layers < pp) {
      forward.emitOpError() << "has " << layers << " decoder layer"
                            << (layers == 1 ? "" : "s")
                            << " (ds.mla), fewer than pp = " << pp
                            << " pipeline stages";
      return signalPassFailure();
    }

    // live[c]: activations defined before ops[c] and read at or after it.
    SmallVector<int64_t> lastUse(ops.size(), -1);
    DenseMap<Operation *, int64_t> index;
    for (auto [i, op] : llvm::enumerate(ops))
      index[op] = i;
    for (auto [i, op] : llvm::enumerate(ops))
      for (Value r : op->getResults())
        for (Operation *user : r.getUsers()) {
          Operation *top = topLevel(block, user);
          lastUse[i] = std::max(lastUse[i], top && index.count(top)
                                                ? index[top]
                                                : int64_t(ops.size()));
        }
    auto liveAcross = [&](int64_t c) {
      int64_t live = 0;
      for (int64_t i = 0; i < c; ++i)
        live += ops[i]->getNumResults() > 0 && lastUse[i] >= c;
      return live;
    };

    // Stage s starts at layer s * layers / pp, at the last cut before that
    // layer's MLA (and after the previous layer's) where only the residual
    // stream is live.
    SmallVector<int64_t> cuts = {0};
    for (int64_t s = 1; s < pp; ++s) {
      int64_t layer = s * layers / pp;
      int64_t lo = layerAt[layer - 1] + 1, cut = -1;
      for (int64_t c = layerAt[layer]; c >= lo && cut < 0; --c)
        if (liveAcross(c) == 1)
          cut = c;
      if (cut < 0) {
        ops[layerAt[layer]]->emitOpError()
            << "starts pipeline stage " << s
            << ", but no point before it has only the residual stream live "
               "(ds-partition-pp cuts between decoder layers)";
        return signalPassFailure();
      }
      cuts.push_back(cut);
    }
    cuts.push_back(ops.size());
    SmallVector<StageOp> stageOps;
    for (int64_t s = 0; s < pp; ++s)
      stageOps.push_back(wrap(
          block, ArrayRef<Operation *>(ops).slice(cuts[s], cuts[s + 1] - cuts[s]),
          s));

    // The MTP modules run where the final hidden state is: the last stage.
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (!fn.getName().starts_with("mtp_"))
        continue;
      Block &mtp = fn.getBody().front();
      SmallVector<Operation *> body;
      for (Operation &op : mtp.without_terminator())
        body.push_back(&op);
      if (!body.empty())
        stageOps.push_back(wrap(mtp, body, pp - 1));
    }

    // A weight read by one stage only lives there; one read by several
    // (an embedding tied to the head, or shared with the MTP module) is
    // kept whole by each of them.
    llvm::StringMap<llvm::SmallSetVector<int64_t, 2>> readers;
    for (StageOp stage : stageOps)
      stage.walk([&](WeightUserInterface user) {
        SmallVector<WeightUse> uses;
        user.getWeightUses(uses);
        for (const WeightUse &u : uses) {
          readers[u.name].insert(stage.getStage());
          readers[(u.name + kScaleSuffix).str()].insert(stage.getStage());
        }
      });
    WeightSharder sharder(module);
    for (auto w : module.getOps<WeightOp>()) {
      auto it = readers.find(w.getSymName());
      if (it == readers.end() || it->second.size() != 1)
        continue;
      if (failed(sharder.place(w, w.getSymName(), MeshAxis::pp,
                               it->second.front())))
        return signalPassFailure();
    }
  }
};

} // namespace
