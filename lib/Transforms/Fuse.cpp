//===- Fuse.cpp - group kernel-level ops into fused kernels ---------------===//

#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace ds {
#define GEN_PASS_DEF_FUSE
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
namespace dsk = ds::kernel;

namespace {

/// `v` is read or written by exactly the ops in `users`.
static bool onlyUsedBy(Value v, ArrayRef<Operation *> users) {
  return llvm::all_of(v.getUsers(), [&](Operation *u) {
    return llvm::is_contained(users, u);
  });
}

static int64_t width(Value v) {
  return cast<MemRefType>(v.getType()).getDimSize(1);
}

/// A GEMM with nothing folded in (no accumulation, no norm epilogue): what
/// the rules that rebuild a dsk.linear from its input, output and weight
/// alone may consume.
static bool plain(dsk::LinearOp l) {
  return !l.getAccumulate() && !l.getNorm();
}

static void eraseIfDead(Value v) {
  if (Operation *def = v.getDefiningOp())
    if (isa<memref::AllocOp>(def) && def->use_empty())
      def->erase();
}

struct Fused {
  Operation *op = nullptr; // the fused kernel, where the last part was
  int replaced = 0;        // how many kernels it replaced
  explicit operator bool() const { return op != nullptr; }
};

/// Tries to fuse the kernels ending with the last one of `kernels` (launch
/// order).
static Fused fuseLast(ArrayRef<Operation *> kernels) {
  size_t i = kernels.size() - 1;
  Operation *op = kernels[i];
  Operation *prev = i >= 1 ? kernels[i - 1] : nullptr;
  Operation *prev2 = i >= 2 ? kernels[i - 2] : nullptr;
  OpBuilder b(op);

  // Residual add, then the norm of the sum.
  if (auto norm = dyn_cast<dsk::RMSNormOp>(op))
    if (auto add = dyn_cast_or_null<dsk::AddOp>(prev))
      if (norm.getInput() == add.getOut()) {
        Operation *fused = dsk::AddRMSNormOp::create(
            b, op->getLoc(), add.getLhs(), add.getRhs(), add.getOut(),
            norm.getOut(), norm.getWeightAttr(), norm.getEpsAttr());
        add.erase();
        norm.erase();
        return {fused, 2};
      }

  // RoPE of the shared rope key, then the latent-cache write of it.
  if (auto write = dyn_cast<dsk::KVCacheWriteOp>(op))
    if (auto rope = dyn_cast_or_null<dsk::RoPEOp>(prev)) {
      int64_t width = cast<MemRefType>(rope.getInout().getType()).getDimSize(1);
      if (rope.getInout() == write.getKrope() &&
          rope.getPositions() == write.getPositions() && rope.getHeads() == 1 &&
          rope.getOffset() == 0 && static_cast<int64_t>(rope.getDim()) == width) {
        Operation *fused = dsk::RoPEKVCacheWriteOp::create(
            b, op->getLoc(), write.getLatent(), write.getKrope(),
            write.getPositions(), rope.getConfig(), write.getLayerAttr());
        rope.erase();
        write.erase();
        return {fused, 2};
      }
    }

  // RoPE of the query, then the rope key's RoPE and cache write with the
  // same table and positions: one per-token kernel for all three.
  if (auto write = dyn_cast<dsk::RoPEKVCacheWriteOp>(op))
    if (auto rope = dyn_cast_or_null<dsk::RoPEOp>(prev)) {
      Value q = rope.getInout();
      if (rope.getPositions() == write.getPositions() &&
          rope.getConfig() == write.getConfig() &&
          static_cast<int64_t>(rope.getDim()) == width(write.getKrope()) &&
          dsk::rootBuffer(q) != dsk::rootBuffer(write.getLatent()) &&
          dsk::rootBuffer(q) != dsk::rootBuffer(write.getKrope())) {
        Operation *fused = dsk::QKRoPECacheWriteOp::create(
            b, op->getLoc(), q, write.getLatent(), write.getKrope(),
            write.getPositions(), write.getConfig(), rope.getHeadsAttr(),
            rope.getHeadStrideAttr(), rope.getOffsetAttr(),
            write.getLayerAttr(), /*norm=*/FlatSymbolRefAttr(),
            /*eps=*/FloatAttr());
        rope.erase();
        write.erase();
        return {fused, 2};
      }
    }

  // The latent's RMSNorm, then the prologue, when only the cache reads the
  // normalized latent (decode): the norm moves into the prologue, which
  // stores the normalized row without writing it to a buffer.
  if (auto qk = dyn_cast<dsk::QKRoPECacheWriteOp>(op))
    if (auto norm = dyn_cast_or_null<dsk::RMSNormOp>(prev)) {
      Value normed = norm.getOut();
      if (!qk.getNorm() && normed == qk.getLatent() &&
          normed.getDefiningOp<memref::AllocOp>() &&
          onlyUsedBy(normed, {norm, qk}) &&
          dsk::rootBuffer(norm.getInput()) != dsk::rootBuffer(qk.getQ()) &&
          dsk::disjoint(norm.getInput(), qk.getKrope())) {
        qk.getLatentMutable().assign(norm.getInput());
        qk.setNormAttr(norm.getWeightAttr());
        qk.setEpsAttr(norm.getEpsAttr());
        norm.erase();
        eraseIfDead(normed);
        return {qk, 2};
      }
    }

  // The prologue, then the decode attention over the cache it wrote (the
  // query it rotated, its layer and positions): one op, whose prologue the
  // GPU runs in the blocks beside the absorbed query product, which reads
  // only the query's unrotated columns.
  if (auto attn = dyn_cast<dsk::MLAAttentionAbsorbedOp>(op))
    if (auto qk = dyn_cast_or_null<dsk::QKRoPECacheWriteOp>(prev)) {
      auto nope = static_cast<int64_t>(attn.getQkNope()),
           rope = static_cast<int64_t>(attn.getQkRope());
      if (!attn.getLatent() && qk.getQ() == attn.getQ() &&
          qk.getPositions() == attn.getPositions() &&
          qk.getLayer() == attn.getLayer() &&
          qk.getHeads() == attn.getHeads() &&
          static_cast<int64_t>(qk.getHeadStride()) == nope + rope &&
          static_cast<int64_t>(qk.getOffset()) == nope &&
          width(qk.getKrope()) == rope &&
          width(qk.getLatent()) == static_cast<int64_t>(attn.getKvLoraRank())) {
        Operation *fused = dsk::MLAAttentionAbsorbedOp::create(
            b, op->getLoc(), attn.getQ(), attn.getPositions(), attn.getOut(),
            qk.getLatent(), qk.getKrope(), attn.getKvBAttr(),
            attn.getLayerAttr(), attn.getKvLoraRankAttr(), attn.getHeadsAttr(),
            attn.getQkNopeAttr(), attn.getQkRopeAttr(), attn.getVHeadAttr(),
            attn.getScaleAttr(), qk.getConfig(), qk.getNormAttr(),
            qk.getEpsAttr());
        attn.erase();
        qk.erase();
        return {fused, 2};
      }
    }

  // Gate and up GEMMs of one input, then SwiGLU of their results.
  if (auto act = dyn_cast<dsk::SwiGLUOp>(op)) {
    auto gate = dyn_cast_or_null<dsk::LinearOp>(prev2);
    auto up = dyn_cast_or_null<dsk::LinearOp>(prev);
    if (gate && up && plain(gate) && plain(up) &&
        gate.getInput() == up.getInput() && act.getGate() == gate.getOut() &&
        act.getUp() == up.getOut() && gate.getFp8() == up.getFp8() &&
        dsk::disjoint(gate.getInput(), act.getOut()) &&
        onlyUsedBy(gate.getOut(), {gate, act}) &&
        onlyUsedBy(up.getOut(), {up, act})) {
      Value g = gate.getOut(), u = up.getOut();
      Operation *fused = dsk::GatedUpOp::create(
          b, op->getLoc(), gate.getInput(), act.getOut(), gate.getWeightAttr(),
          up.getWeightAttr(), gate.getFp8Attr());
      act.erase();
      up.erase();
      gate.erase();
      eraseIfDead(g);
      eraseIfDead(u);
      return {fused, 3};
    }
  }

  // A GEMM, then the residual add of its result into the other operand, in
  // place: the GEMM adds into that buffer itself (the shared expert's down
  // projection into the routed experts' sum). a + b is b + a, bit for bit.
  if (auto add = dyn_cast<dsk::AddOp>(op))
    if (auto linear = dyn_cast_or_null<dsk::LinearOp>(prev)) {
      Value t = linear.getOut();
      Value other = add.getRhs() == t ? add.getLhs() : add.getRhs();
      if (plain(linear) && (add.getLhs() == t || add.getRhs() == t) &&
          other != t && add.getOut() == other &&
          t.getDefiningOp<memref::AllocOp>() && onlyUsedBy(t, {linear, add}) &&
          dsk::rootBuffer(other) != dsk::rootBuffer(linear.getInput())) {
        linear.getOutMutable().assign(other);
        linear.setAccumulate(true);
        add.erase();
        eraseIfDead(t);
        return {linear, 2};
      }
    }

  // The routed experts, then the shared expert of the same input adding into
  // their sum: one kernel (the GPU runs the shared expert in the routed
  // experts' launches; the sum stays routed first, then shared). Only when
  // the sum does not overwrite the input, which the shared expert reads.
  if (auto down = dyn_cast<dsk::LinearOp>(op)) {
    auto gated = dyn_cast_or_null<dsk::GatedUpOp>(prev);
    auto experts = dyn_cast_or_null<dsk::MoEExpertsOp>(prev2);
    if (gated && experts && down.getAccumulate() && !down.getNorm() &&
        down.getOut() == experts.getOut() &&
        down.getInput() == gated.getOut() &&
        gated.getInput() == experts.getInput() && experts.getEp() == 1 &&
        dsk::disjoint(experts.getOut(), experts.getInput()) &&
        !experts.getSharedHidden() && gated.getFp8() == down.getFp8() &&
        gated.getFp8() == experts.getFp8() &&
        gated.getOut().getDefiningOp<memref::AllocOp>() &&
        onlyUsedBy(gated.getOut(), {gated, down})) {
      // At the GEMM's place: after the intermediate buffer's allocation.
      Operation *fused = dsk::MoEExpertsOp::create(
          b, op->getLoc(), experts.getInput(), experts.getIndices(),
          experts.getWeights(), experts.getOut(), gated.getOut(),
          /*residual=*/Value(), /*sum=*/Value(), /*normed=*/Value(),
          experts.getPrefixAttr(), experts.getExpertsAttr(),
          experts.getInterAttr(), experts.getFp8Attr(), experts.getEpAttr(),
          gated.getGateAttr(), gated.getUpAttr(), down.getWeightAttr(),
          /*norm=*/FlatSymbolRefAttr(), /*eps=*/FloatAttr());
      down.erase();
      gated.erase();
      experts.erase();
      return {fused, 3};
    }
  }

  // The routed and shared experts, then the residual add and RMSNorm of
  // their sum: the norm becomes the experts' epilogue (the GPU's combine
  // does it at decode). out is still written; a + b is b + a, bit for bit.
  if (auto norm = dyn_cast<dsk::AddRMSNormOp>(op))
    if (auto experts = dyn_cast_or_null<dsk::MoEExpertsOp>(prev)) {
      Value out = experts.getOut();
      Value residual = norm.getLhs() == out ? norm.getRhs() : norm.getLhs();
      // Other blocks of the GPU's combine read the routing weights and
      // indices: the new outputs must not overlap them (nor the residual
      // overlap out but as the same buffer).
      auto apart = [&](Value v) {
        return dsk::disjoint(v, experts.getWeights()) &&
               dsk::disjoint(v, experts.getIndices());
      };
      if (experts.getSharedHidden() && !experts.getNorm() &&
          (norm.getLhs() == out || norm.getRhs() == out) && residual != out &&
          dsk::disjoint(residual, out) && apart(norm.getSum()) &&
          apart(norm.getOut())) {
        Operation *fused = dsk::MoEExpertsOp::create(
            b, op->getLoc(), experts.getInput(), experts.getIndices(),
            experts.getWeights(), out, experts.getSharedHidden(), residual,
            norm.getSum(), norm.getOut(), experts.getPrefixAttr(),
            experts.getExpertsAttr(), experts.getInterAttr(),
            experts.getFp8Attr(), experts.getEpAttr(),
            experts.getSharedGateAttr(), experts.getSharedUpAttr(),
            experts.getSharedDownAttr(), norm.getWeightAttr(),
            norm.getEpsAttr());
        norm.erase();
        experts.erase();
        return {fused, 2};
      }
    }

  // A GEMM, then the residual add and RMSNorm of its result (the attention
  // output or the dense MLP's down projection, then the next norm): the norm
  // becomes the GEMM's epilogue (the GPU's GEMV does it in its last block at
  // decode). out is still written, and must be a buffer of the program's
  // own, not one of its arguments (the logits, of which a call may compute
  // some rows only); a + b is b + a, bit for bit.
  if (auto norm = dyn_cast<dsk::AddRMSNormOp>(op))
    if (auto linear = dyn_cast_or_null<dsk::LinearOp>(prev)) {
      Value out = linear.getOut();
      Value residual = norm.getLhs() == out ? norm.getRhs() : norm.getLhs();
      if (plain(linear) && (norm.getLhs() == out || norm.getRhs() == out) &&
          residual != out && dsk::disjoint(residual, out) &&
          !isa<BlockArgument>(dsk::rootBuffer(out))) {
        linear.getResidualMutable().assign(residual);
        linear.getSumMutable().assign(norm.getSum());
        linear.getNormedMutable().assign(norm.getOut());
        linear.setNormAttr(norm.getWeightAttr());
        linear.setEpsAttr(norm.getEpsAttr());
        // The norm's outputs may be allocated after the GEMM: the fused
        // kernel goes where the norm was.
        linear->moveBefore(norm);
        norm.erase();
        return {linear, 2};
      }
    }

  // The router GEMM, then routing on its logits.
  if (auto route = dyn_cast<dsk::MoERouteOp>(op))
    if (auto router = dyn_cast_or_null<dsk::LinearOp>(prev))
      if (plain(router) && route.getLogits() == router.getOut() &&
          !router.getFp8() && onlyUsedBy(router.getOut(), {router, route})) {
        Value logits = router.getOut();
        Operation *fused = dsk::MoEGateOp::create(
            b, op->getLoc(), router.getInput(), route.getIndices(),
            route.getWeights(), router.getWeightAttr(), route.getConfig(),
            route.getBiasAttr());
        route.erase();
        router.erase();
        eraseIfDead(logits);
        return {fused, 2};
      }
  return {};
}

/// Two plain GEMMs (no accumulation, no norm epilogue) of one input, each
/// into its own buffer (neither the input's).
static bool pairable(dsk::LinearOp a, dsk::LinearOp b) {
  Value in = dsk::rootBuffer(a.getInput());
  return a.getInput() == b.getInput() && plain(a) && plain(b) &&
         a.getFp8() == b.getFp8() &&
         dsk::rootBuffer(a.getOut()) != dsk::rootBuffer(b.getOut()) &&
         dsk::rootBuffer(a.getOut()) != in && dsk::rootBuffer(b.getOut()) != in;
}

/// Adjacent GEMMs of one input -> dsk.linear_pair. A separate sweep after
/// the others, so that gate and up GEMMs became gated_up first.
static void pairLinears(func::FuncOp fn) {
  Operation *prev = nullptr;
  for (Operation &op : llvm::make_early_inc_range(fn.getBody().front())) {
    if (!isa<dsk::DSKDialect>(op.getDialect()) || isa<dsk::ArenaOp>(op))
      continue;
    auto a = dyn_cast_or_null<dsk::LinearOp>(prev);
    auto b = dyn_cast<dsk::LinearOp>(&op);
    if (a && b && pairable(a, b)) {
      OpBuilder builder(b); // after both outputs' allocations
      prev = dsk::LinearPairOp::create(
          builder, b.getLoc(), a.getInput(), a.getOut(), b.getOut(),
          a.getWeightAttr(), b.getWeightAttr(), a.getFp8Attr());
      a.erase();
      b.erase();
      continue;
    }
    prev = &op;
  }
}

struct FusePass : public ds::impl::FuseBase<FusePass> {
  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      if (!fn->hasAttr(dsk::kProgramAttrName))
        continue;
      // Kernels in launch order; allocations, views and constants between
      // them move no data, so kernels adjacent in this list are neighbours.
      SmallVector<Operation *> kernels;
      for (Operation &op : fn.getBody().front())
        if (isa<dsk::DSKDialect>(op.getDialect()) && !isa<dsk::ArenaOp>(op))
          kernels.push_back(&op);
      SmallVector<Operation *> sequence;
      for (Operation *kernel : kernels) {
        sequence.push_back(kernel);
        while (Fused f = fuseLast(sequence)) {
          sequence.resize(sequence.size() - f.replaced);
          sequence.push_back(f.op);
        }
      }
      pairLinears(fn);
    }
  }
};

} // namespace
