//===- DSDialect.cpp - ds dialect and attributes --------------------------===//

#include "ds/Dialect/DS/IR/DSDialect.h"
#include "ds/Dialect/DS/IR/DSOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace mlir;
using namespace ds;

#include "ds/Dialect/DS/IR/DSDialect.cpp.inc"
#include "ds/Dialect/DS/IR/DSEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ds/Dialect/DS/IR/DSAttrs.cpp.inc"

namespace {
/// Prints repeated configurations once, as `#mla = #ds.mla<...>` aliases.
struct DSOpAsmInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    return llvm::TypeSwitch<Attribute, AliasResult>(attr)
        .Case([&](MLAConfigAttr) { os << "mla"; return AliasResult::OverridableAlias; })
        .Case([&](MoEConfigAttr) { os << "moe"; return AliasResult::OverridableAlias; })
        .Case([&](RoPEConfigAttr) { os << "rope"; return AliasResult::OverridableAlias; })
        .Case([&](YaRNAttr) { os << "yarn"; return AliasResult::OverridableAlias; })
        .Default([](Attribute) { return AliasResult::NoAlias; });
  }
};
} // namespace

void DSDialect::initialize() {
  addInterfaces<DSOpAsmInterface>();
  addOperations<
#define GET_OP_LIST
#include "ds/Dialect/DS/IR/DSOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ds/Dialect/DS/IR/DSAttrs.cpp.inc"
      >();
}

void ds::printFloatParameter(AsmPrinter &printer, const APFloat &value) {
  // Shortest %g form that reads back to the same double, with a '.' in the
  // mantissa so MLIR lexes it as a float (10000.0, 2.5, 0.707, 1.0e-06).
  double v = value.convertToDouble();
  char buf[40];
  // Start at the integer digit count so that 10000 prints as 10000.0, not 1e+04.
  int digits = std::fabs(v) >= 1.0 && std::isfinite(v)
                   ? static_cast<int>(std::log10(std::fabs(v))) + 1
                   : 1;
  for (int precision = std::min(digits, 17); precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  std::string str(buf);
  size_t exp = str.find('e');
  std::string mantissa = str.substr(0, exp);
  if (mantissa.find('.') == std::string::npos && std::isfinite(v))
    str.insert(exp == std::string::npos ? str.size() : exp, ".0");
  printer << str;
}

//===----------------------------------------------------------------------===//
// Attribute verifiers
//===----------------------------------------------------------------------===//

static bool positive(const APFloat &v) {
  return v.isFiniteNonZero() && !v.isNegative();
}

LogicalResult MLAConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    int64_t heads, int64_t qLoraRank,
                                    int64_t kvLoraRank, int64_t qkNope,
                                    int64_t qkRope, int64_t vHead) {
  if (heads <= 0)
    return emitError() << "#ds.mla: heads must be positive, got " << heads;
  if (qLoraRank < 0)
    return emitError() << "#ds.mla: q_lora_rank must be >= 0 (0: no q LoRA), got "
                       << qLoraRank;
  if (kvLoraRank <= 0)
    return emitError() << "#ds.mla: kv_lora_rank must be positive, got "
                       << kvLoraRank;
  if (qkNope <= 0)
    return emitError() << "#ds.mla: qk_nope must be positive, got " << qkNope;
  if (qkRope <= 0 || qkRope % 2 != 0)
    return emitError() << "#ds.mla: qk_rope must be positive and even (RoPE "
                          "rotates pairs of dims), got "
                       << qkRope;
  if (vHead <= 0)
    return emitError() << "#ds.mla: v_head must be positive, got " << vHead;
  return success();
}

LogicalResult MoEConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    int64_t experts, int64_t shared,
                                    int64_t topK, int64_t inter,
                                    ScoringFunc scoring, TopkMethod method,
                                    int64_t nGroup, int64_t topkGroup,
                                    bool normTopk, APFloat scale) {
  if (experts <= 0)
    return emitError() << "#ds.moe: experts must be positive, got " << experts;
  if (shared < 0)
    return emitError() << "#ds.moe: shared must be >= 0, got " << shared;
  if (topK <= 0 || topK > experts)
    return emitError() << "#ds.moe: top_k (" << topK
                       << ") must be in [1, experts = " << experts << "]";
  if (inter <= 0)
    return emitError() << "#ds.moe: inter must be positive, got " << inter;
  if (nGroup <= 0)
    return emitError() << "#ds.moe: n_group must be positive, got " << nGroup;
  if (experts % nGroup != 0)
    return emitError() << "#ds.moe: experts (" << experts
                       << ") must be divisible by n_group (" << nGroup << ")";
  if (topkGroup <= 0 || topkGroup > nGroup)
    return emitError() << "#ds.moe: topk_group (" << topkGroup
                       << ") must be in [1, n_group = " << nGroup << "]";
  if (!positive(scale))
    return emitError() << "#ds.moe: scale (routed_scaling_factor) must be "
                          "positive";
  int64_t perGroup = experts / nGroup;
  if (method == TopkMethod::noaux_tc && perGroup < 2)
    return emitError() << "#ds.moe: noaux_tc scores a group by its top-2 "
                          "experts, but each of the "
                       << nGroup << " groups has " << perGroup;
  if (method != TopkMethod::greedy && topK > topkGroup * perGroup)
    return emitError() << "#ds.moe: top_k (" << topK << ") exceeds the "
                       << topkGroup * perGroup
                       << " experts of the topk_group kept groups";
  return success();
}

LogicalResult YaRNAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               APFloat factor, int64_t originalMax,
                               APFloat betaFast, APFloat betaSlow,
                               APFloat mscale, APFloat mscaleAllDim) {
  if (!positive(factor) || factor.convertToDouble() < 1.0)
    return emitError() << "#ds.yarn: factor must be >= 1";
  if (originalMax <= 0)
    return emitError()
           << "#ds.yarn: original_max_position_embeddings must be positive";
  if (!positive(betaSlow) || !positive(betaFast) ||
      betaFast.convertToDouble() <= betaSlow.convertToDouble())
    return emitError() << "#ds.yarn: need beta_fast > beta_slow > 0";
  if (mscale.isNegative() || !mscale.isFinite() || mscaleAllDim.isNegative() ||
      !mscaleAllDim.isFinite())
    return emitError() << "#ds.yarn: mscale and mscale_all_dim must be >= 0";
  return success();
}

LogicalResult RoPEConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                     APFloat theta, YaRNAttr) {
  if (!positive(theta))
    return emitError() << "#ds.rope: theta must be positive";
  return success();
}

LogicalResult MTPConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                    int64_t depth) {
  if (depth < 1)
    return emitError() << "#ds.mtp: depth must be >= 1, got " << depth;
  return success();
}

LogicalResult FP8QuantAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   ArrayRef<int64_t> block) {
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    return emitError() << "#ds.fp8: block must be two positive sizes [rows, "
                          "columns]";
  return success();
}

LogicalResult PlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               int64_t tp, int64_t ep, int64_t pp, int64_t dp) {
  for (auto [name, v] : {std::pair<const char *, int64_t>{"tp", tp},
                         {"ep", ep}, {"pp", pp}, {"dp", dp}})
    if (v < 1)
      return emitError() << "#ds.plan: " << name << " must be >= 1, got " << v;
  return success();
}

int64_t PlanAttr::getSize(MeshAxis axis) const {
  switch (axis) {
  case MeshAxis::tp: return getTp();
  case MeshAxis::ep: return getEp();
  case MeshAxis::pp: return getPp();
  case MeshAxis::dp: return getDp();
  }
  return 1;
}

LogicalResult ShardAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                MeshAxis axis, int64_t dim, int64_t owner) {
  if ((dim >= 0) == (owner >= 0))
    return emitError() << "#ds.shard: give exactly one of dim (a split) and "
                          "owner (a placement), both >= 0";
  return success();
}

//===----------------------------------------------------------------------===//
// Module attributes
//===----------------------------------------------------------------------===//

/// Checks that every FP8 weight `X.weight` has its f32 companion
/// `X.weight_scale_inv` with one scale per block.
static LogicalResult verifyQuantizedWeights(ModuleOp module,
                                            FP8QuantAttr quant) {
  llvm::StringMap<WeightOp> weights;
  for (auto w : module.getOps<WeightOp>())
    weights[w.getSymName()] = w;
  for (auto w : module.getOps<WeightOp>()) {
    RankedTensorType type = w.getTensorType();
    // Malformed FP8 weights (not 2-D '*.weight') are the weight verifier's.
    if (!isa<Float8E4M3FNType>(type.getElementType()) || type.getRank() != 2 ||
        !w.getSymName().ends_with(".weight"))
      continue;
    std::string scaleName = (w.getSymName() + kScaleSuffix).str();
    auto it = weights.find(scaleName);
    if (it == weights.end())
      return w.emitOpError() << "FP8 weight '" << w.getSymName()
                             << "' has no '" << scaleName << "' companion";
    ArrayRef<int64_t> shape = type.getShape();
    SmallVector<int64_t> expected = {
        static_cast<int64_t>(llvm::divideCeil(shape[0], quant.getBlock()[0])),
        static_cast<int64_t>(llvm::divideCeil(shape[1], quant.getBlock()[1]))};
    RankedTensorType scaleType = it->second.getTensorType();
    if (!scaleType.getElementType().isF32() ||
        scaleType.getShape() != ArrayRef<int64_t>(expected))
      return it->second.emitOpError()
             << "scale '" << scaleName << "' must be tensor<" << expected[0]
             << "x" << expected[1] << "xf32> for the "
             << quant.getBlock()[0] << "x" << quant.getBlock()[1]
             << " blocks of a " << shape[0] << "x" << shape[1] << " weight";
  }
  return success();
}

LogicalResult DSDialect::verifyOperationAttribute(Operation *op,
                                                  NamedAttribute attr) {
  if (attr.getName() == kQuantizationAttrName) {
    auto module = dyn_cast<ModuleOp>(op);
    if (!module)
      return op->emitError() << "'" << kQuantizationAttrName
                             << "' is a module attribute";
    auto quant = dyn_cast<FP8QuantAttr>(attr.getValue());
    if (!quant)
      return op->emitError() << "'" << kQuantizationAttrName
                             << "' must be a #ds.fp8 attribute";
    return verifyQuantizedWeights(module, quant);
  }
  if (attr.getName() == kPlanAttrName) {
    if (!isa<ModuleOp>(op))
      return op->emitError() << "'" << kPlanAttrName
                             << "' is a module attribute";
    if (!isa<PlanAttr>(attr.getValue()))
      return op->emitError() << "'" << kPlanAttrName
                             << "' must be a #ds.plan attribute";
    return success();
  }
  return op->emitError() << "unknown ds dialect attribute '"
                         << attr.getName().getValue() << "'";
}
