//===- Quantize.cpp - FP8 quantization insertion --------------------------===//

#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringMap.h"

namespace ds {
#define GEN_PASS_DEF_QUANTIZE
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
namespace dsk = ds::kernel;

static constexpr int64_t kBlock = 128;

/// The weights DeepSeek-V3's FP8 checkpoint stores in e4m3.
static bool isFP8LinearWeight(StringRef name) {
  for (StringRef suffix :
       {".q_a_proj.weight", ".q_b_proj.weight", ".q_proj.weight",
        ".kv_a_proj_with_mqa.weight", ".kv_b_proj.weight", ".o_proj.weight",
        ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"})
    if (name.ends_with(suffix))
      return true;
  return false;
}

namespace {

struct QuantizePass : public ds::impl::QuantizeBase<QuantizePass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();

    // Who reads each weight: a weight is FP8 only if GEMM kernels alone read
    // it (absorbed attention, for one, needs kv_b_proj as a float matrix).
    llvm::StringMap<bool> onlyGemms;
    module.walk([&](ds::WeightUserInterface op) {
      if (!isa<dsk::DSKDialect>(op->getDialect()))
        return;
      SmallVector<ds::WeightUse> uses;
      op.getWeightUses(uses);
      for (const ds::WeightUse &u : uses) {
        const bool gemm = dsk::isGemmWeightUse(op, u);
        auto [it, inserted] = onlyGemms.insert({u.name, gemm});
        if (!inserted)
          it->second &= gemm;
      }
    });
    auto fp8Weight = [&](StringRef name) {
      auto it = onlyGemms.find(name);
      return isFP8LinearWeight(name) && it != onlyGemms.end() && it->second;
    };

    // Mark the GEMMs whose weights are all FP8.
    module.walk([&](Operation *op) {
      if (!dsk::isFP8CapableGemm(op))
        return;
      SmallVector<ds::WeightUse> all, uses;
      cast<ds::WeightUserInterface>(op).getWeightUses(all);
      // The GEMM operands only (not, e.g., a norm epilogue's weight).
      for (ds::WeightUse &u : all)
        if (dsk::isGemmWeightUse(op, u))
          uses.push_back(std::move(u));
      auto isFp8 = [&](const ds::WeightUse &u) { return fp8Weight(u.name); };
      // A pair is two GEMMs, and routed experts with their shared expert two
      // parts: marked if any weight is FP8, since the runtimes apply
      // ActQuant per weight (each FP8 weight's input is quantized, as it
      // would be unfused when its part's weights are all FP8).
      auto experts = dyn_cast<dsk::MoEExpertsOp>(op);
      bool parts =
          isa<dsk::LinearPairOp>(op) || (experts && experts.getSharedHidden());
      if (parts ? llvm::any_of(uses, isFp8) : llvm::all_of(uses, isFp8))
        op->setAttr("fp8", UnitAttr::get(ctx));
    });

    // Their float weights become e4m3 with block scales (quantized on load).
    bool any = false;
    for (auto w : llvm::make_early_inc_range(module.getOps<ds::WeightOp>())) {
      if (!fp8Weight(w.getSymName()))
        continue;
      any = true;
      RankedTensorType type = w.getTensorType();
      if (isa<Float8E4M3FNType>(type.getElementType()))
        continue;
      w.setType(RankedTensorType::get(type.getShape(), Float8E4M3FNType::get(ctx)));
      OpBuilder b(w);
      b.setInsertionPointAfter(w);
      int64_t rows = llvm::divideCeil(type.getDimSize(0), kBlock);
      int64_t cols = llvm::divideCeil(type.getDimSize(1), kBlock);
      std::string scale = (w.getSymName() + ds::kScaleSuffix).str();
      if (!module.lookupSymbol(scale))
        ds::WeightOp::create(b, w.getLoc(), scale,
                             RankedTensorType::get({rows, cols}, b.getF32Type()));
    }
    if (any && !module->hasAttr(ds::DSDialect::kQuantizationAttrName))
      module->setAttr(ds::DSDialect::kQuantizationAttrName,
                      ds::FP8QuantAttr::get(ctx, {kBlock, kBlock}));
  }
};

} // namespace
