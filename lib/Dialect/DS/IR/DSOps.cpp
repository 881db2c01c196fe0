//===- DSOps.cpp - ds operations ------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace ds;

#include "ds/Dialect/DS/IR/DSInterfaces.cpp.inc"

#define GET_OP_CLASSES
#include "ds/Dialect/DS/IR/DSOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// Two extents agree unless both are known and differ.
static bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static std::string formatShape(ArrayRef<int64_t> shape) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(shape, os, [&](int64_t d) {
    if (ShapedType::isDynamic(d))
      os << "?";
    else
      os << d;
  });
  os << "]";
  return s;
}

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Checks that `v` is [tokens, hidden] with a static hidden size.
static LogicalResult verifyTokensByHidden(Operation *op, Value v,
                                          StringRef what) {
  RankedTensorType t = tensorType(v);
  if (t.getRank() != 2 || t.isDynamicDim(1))
    return op->emitOpError() << what
                             << " must be [tokens, hidden] with a static "
                                "hidden size, got "
                             << t;
  return success();
}

static LogicalResult verifyTokensMatch(Operation *op, Value a, Value b,
                                       StringRef what) {
  if (!compatible(tensorType(a).getDimSize(0), tensorType(b).getDimSize(0)))
    return op->emitOpError() << what << " disagree on the number of tokens ("
                             << tensorType(a).getDimSize(0) << " vs "
                             << tensorType(b).getDimSize(0) << ")";
  return success();
}

static LogicalResult verifyEps(Operation *op, double eps) {
  if (!(eps > 0.0))
    return op->emitOpError() << "eps must be positive, got " << eps;
  return success();
}

static int64_t hiddenOf(Value v) { return tensorType(v).getDimSize(1); }

LogicalResult ds::verifyWeightUses(Operation *op,
                                   SymbolTableCollection &tables) {
  SmallVector<WeightUse> uses;
  cast<WeightUserInterface>(op).getWeightUses(uses);
  MLIRContext *ctx = op->getContext();
  for (const WeightUse &use : uses) {
    auto weight = tables.lookupNearestSymbolFrom<WeightOp>(
        op, StringAttr::get(ctx, use.name));
    if (!weight)
      return op->emitOpError()
             << "weight '" << use.name << "' is not defined by a ds.weight";
    RankedTensorType type = weight.getTensorType();
    bool shapeOk = type.getRank() == static_cast<int64_t>(use.shape.size());
    for (size_t i = 0; shapeOk && i < use.shape.size(); ++i)
      shapeOk = compatible(type.getDimSize(i), use.shape[i]);
    if (!shapeOk)
      return op->emitOpError()
             << "weight '" << use.name << "' has shape "
             << formatShape(type.getShape()) << " but the op implies "
             << formatShape(use.shape);
    if (isa<Float8E4M3FNType>(type.getElementType()) && !use.quantizable)
      return op->emitOpError()
             << "weight '" << use.name
             << "' cannot be FP8: only linear-layer weights are quantized";
  }
  return success();
}

#define DS_VERIFY_SYMBOL_USES(OP)                                              \
  LogicalResult OP::verifySymbolUses(SymbolTableCollection &tables) {          \
    return verifyWeightUses(*this, tables);                                    \
  }
DS_VERIFY_SYMBOL_USES(EmbeddingOp)
DS_VERIFY_SYMBOL_USES(RMSNormOp)
DS_VERIFY_SYMBOL_USES(LinearOp)
DS_VERIFY_SYMBOL_USES(LMHeadOp)
DS_VERIFY_SYMBOL_USES(MLAOp)
DS_VERIFY_SYMBOL_USES(MLPOp)
DS_VERIFY_SYMBOL_USES(MoEOp)
DS_VERIFY_SYMBOL_USES(MTPOp)
#undef DS_VERIFY_SYMBOL_USES

static WeightUse use(const Twine &name, ArrayRef<int64_t> shape,
                     bool quantizable) {
  return WeightUse{name.str(), SmallVector<int64_t>(shape), quantizable};
}

/// gate/up/down projections of a SwiGLU MLP under `prefix`.
static void addSwiGLUWeights(SmallVectorImpl<WeightUse> &uses,
                             const Twine &prefix, int64_t hidden,
                             int64_t inter) {
  uses.push_back(use(prefix + ".gate_proj.weight", {inter, hidden}, true));
  uses.push_back(use(prefix + ".up_proj.weight", {inter, hidden}, true));
  uses.push_back(use(prefix + ".down_proj.weight", {hidden, inter}, true));
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  RankedTensorType type = getTensorType();
  Type elt = type.getElementType();
  if (!elt.isF32() && !elt.isBF16() && !elt.isF16() &&
      !isa<Float8E4M3FNType>(elt))
    return emitOpError() << "weight '" << getSymName()
                         << "' has element type " << elt
                         << "; checkpoints hold f32, bf16, f16 or f8E4M3FN";
  if (llvm::is_contained(type.getShape(), 0))
    return emitOpError() << "weight '" << getSymName() << "' is empty";
  if (isa<Float8E4M3FNType>(elt)) {
    if (type.getRank() != 2 || !getSymName().ends_with(".weight"))
      return emitOpError() << "FP8 weight '" << getSymName()
                           << "' must be a 2-D '*.weight' tensor";
    auto module = (*this)->getParentOfType<ModuleOp>();
    if (!module || !module->hasAttr(DSDialect::kQuantizationAttrName))
      return emitOpError() << "FP8 weight '" << getSymName()
                           << "' needs a module '"
                           << DSDialect::kQuantizationAttrName
                           << "' attribute giving its block size";
  }
  if (std::optional<ArrayAttr> shards = getShards()) {
    auto module = (*this)->getParentOfType<ModuleOp>();
    auto plan = module ? module->getAttrOfType<PlanAttr>(DSDialect::kPlanAttrName)
                       : PlanAttr();
    if (!plan)
      return emitOpError() << "weight '" << getSymName()
                           << "' has shards but the module has no '"
                           << DSDialect::kPlanAttrName << "'";
    for (auto shard : shards->getAsRange<ShardAttr>()) {
      int64_t size = plan.getSize(shard.getAxis());
      if (shard.getDim() >= type.getRank())
        return emitOpError() << "weight '" << getSymName() << "' is split along dim "
                             << shard.getDim() << " but has rank "
                             << type.getRank();
      if (shard.getOwner() >= size)
        return emitOpError() << "weight '" << getSymName() << "' is owned by "
                             << stringifyMeshAxis(shard.getAxis()) << " rank "
                             << shard.getOwner() << " of " << size;
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Primitives
//===----------------------------------------------------------------------===//

LogicalResult AllGatherOp::verify() {
  RankedTensorType in = tensorType(getInput()), out = tensorType(getResult());
  int64_t dim = getDim();
  if (in.getRank() != out.getRank() || dim < 0 || dim >= in.getRank())
    return emitOpError() << "dim " << dim << " must be a dimension of both "
                         << in << " and " << out;
  for (int64_t d = 0; d < in.getRank(); ++d) {
    int64_t a = in.getDimSize(d), b = out.getDimSize(d);
    if (d != dim && a != b)
      return emitOpError() << "input " << in << " and result " << out
                           << " differ outside dim " << dim;
    if (d == dim && (ShapedType::isDynamic(a) || ShapedType::isDynamic(b) ||
                     b % a != 0))
      return emitOpError() << "result dim " << dim << " (" << b
                           << ") must be a static multiple of the input's ("
                           << a << ")";
  }
  return success();
}

LogicalResult EmbeddingOp::verify() {
  if (failed(verifyTokensByHidden(*this, getResult(), "result")))
    return failure();
  return verifyTokensMatch(*this, getIds(), getResult(), "ids and result");
}

void EmbeddingOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {ShapedType::kDynamic, hiddenOf(getResult())},
                     false));
}

LogicalResult RMSNormOp::verify() {
  RankedTensorType t = tensorType(getInput());
  if (t.getRank() < 1 || t.isDynamicDim(t.getRank() - 1))
    return emitOpError() << "input needs a static last dimension, got " << t;
  return verifyEps(*this, getEps().convertToDouble());
}

void RMSNormOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  RankedTensorType t = tensorType(getInput());
  uses.push_back(use(getWeight(), {t.getDimSize(t.getRank() - 1)}, false));
}

LogicalResult LinearOp::verify() {
  RankedTensorType in = tensorType(getInput()), out = tensorType(getResult());
  if (in.getRank() < 1 || in.getRank() != out.getRank())
    return emitOpError() << "input and result must have the same rank >= 1";
  int64_t last = in.getRank() - 1;
  for (int64_t i = 0; i < last; ++i)
    if (!compatible(in.getDimSize(i), out.getDimSize(i)))
      return emitOpError() << "input and result differ in dimension " << i;
  if (in.isDynamicDim(last) || out.isDynamicDim(last))
    return emitOpError() << "input and result need static feature sizes";
  return success();
}

void LinearOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  RankedTensorType in = tensorType(getInput()), out = tensorType(getResult());
  uses.push_back(use(getWeight(),
                     {out.getDimSize(out.getRank() - 1),
                      in.getDimSize(in.getRank() - 1)},
                     true));
}

LogicalResult LMHeadOp::verify() {
  if (failed(verifyTokensByHidden(*this, getInput(), "input")) ||
      failed(verifyTokensByHidden(*this, getResult(), "result")))
    return failure();
  return verifyTokensMatch(*this, getInput(), getResult(), "input and result");
}

void LMHeadOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(
      use(getWeight(), {hiddenOf(getResult()), hiddenOf(getInput())}, false));
}

LogicalResult RoPEOp::verify() {
  RankedTensorType t = tensorType(getInput());
  if (t.getRank() != 3)
    return emitOpError() << "input must be [tokens, heads, dim], got " << t;
  int64_t dim = t.getDimSize(2);
  if (ShapedType::isDynamic(dim) || dim % 2 != 0)
    return emitOpError() << "rotated dim must be static and even (pairs "
                            "(2i, 2i+1) rotate together), got "
                         << dim;
  return verifyTokensMatch(*this, getInput(), getPositions(),
                           "input and positions");
}

LogicalResult AttentionOp::verify() {
  RankedTensorType q = tensorType(getQuery()), k = tensorType(getKey()),
                   v = tensorType(getValue()), o = tensorType(getResult());
  for (RankedTensorType t : {q, k, v, o})
    if (t.getRank() != 3 || t.isDynamicDim(1) || t.isDynamicDim(2))
      return emitOpError() << "operands and result must be [tokens, heads, "
                              "dim] with static heads and dim, got "
                           << t;
  for (RankedTensorType t : {k, v, o})
    if (!compatible(q.getDimSize(0), t.getDimSize(0)))
      return emitOpError() << "operands disagree on the number of tokens";
  int64_t hq = q.getDimSize(1), hkv = k.getDimSize(1);
  if (v.getDimSize(1) != hkv)
    return emitOpError() << "key has " << hkv << " heads but value has "
                         << v.getDimSize(1);
  if (hq % hkv != 0)
    return emitOpError() << "query heads (" << hq
                         << ") must be a multiple of key/value heads (" << hkv
                         << ")";
  if (q.getDimSize(2) != k.getDimSize(2))
    return emitOpError() << "query dim (" << q.getDimSize(2)
                         << ") differs from key dim (" << k.getDimSize(2)
                         << ")";
  if (o.getDimSize(1) != hq || o.getDimSize(2) != v.getDimSize(2))
    return emitOpError() << "result must be [tokens, " << hq << ", "
                         << v.getDimSize(2) << "], got " << o;
  if (auto window = getWindow(); window && *window <= 0)
    return emitOpError() << "window must be positive, got " << *window;
  if (auto scale = getScale(); scale && !(scale->convertToDouble() > 0.0))
    return emitOpError() << "scale must be positive";
  if (getWindow() && !getCausal())
    return emitOpError() << "a sliding window needs causal attention";
  return success();
}

//===----------------------------------------------------------------------===//
// Building blocks
//===----------------------------------------------------------------------===//

LogicalResult MLAOp::verify() {
  if (failed(verifyTokensByHidden(*this, getInput(), "input")) ||
      failed(verifyTokensMatch(*this, getInput(), getPositions(),
                               "input and positions")))
    return failure();
  return verifyEps(*this, getEps().convertToDouble());
}

void MLAOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  MLAConfigAttr c = getConfig();
  int64_t h = hiddenOf(getInput());
  int64_t heads = c.getHeads();
  std::string p = getPrefix().str();
  if (c.getQLoraRank() > 0) {
    uses.push_back(use(p + ".q_a_proj.weight", {c.getQLoraRank(), h}, true));
    uses.push_back(use(p + ".q_a_layernorm.weight", {c.getQLoraRank()}, false));
    uses.push_back(use(p + ".q_b_proj.weight",
                       {heads * c.getQHeadDim(), c.getQLoraRank()}, true));
  } else {
    uses.push_back(use(p + ".q_proj.weight", {heads * c.getQHeadDim(), h}, true));
  }
  uses.push_back(use(p + ".kv_a_proj_with_mqa.weight",
                     {c.getKvLoraRank() + c.getQkRope(), h}, true));
  uses.push_back(use(p + ".kv_a_layernorm.weight", {c.getKvLoraRank()}, false));
  uses.push_back(use(p + ".kv_b_proj.weight",
                     {heads * (c.getQkNope() + c.getVHead()), c.getKvLoraRank()},
                     true));
  uses.push_back(use(p + ".o_proj.weight", {h, heads * c.getVHead()}, true));
}

LogicalResult MLPOp::verify() {
  if (failed(verifyTokensByHidden(*this, getInput(), "input")))
    return failure();
  if (getInter() <= 0)
    return emitOpError() << "inter must be positive, got " << getInter();
  return success();
}

void MLPOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  addSwiGLUWeights(uses, getPrefix(), hiddenOf(getInput()), getInter());
}

LogicalResult MoEOp::verify() {
  return verifyTokensByHidden(*this, getInput(), "input");
}

void MoEOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  MoEConfigAttr c = getConfig();
  int64_t h = hiddenOf(getInput());
  std::string p = getPrefix().str();
  uses.push_back(use(p + ".gate.weight", {c.getExperts(), h}, false));
  if (c.getTopkMethod() == TopkMethod::noaux_tc)
    uses.push_back(
        use(p + ".gate.e_score_correction_bias", {c.getExperts()}, false));
  for (int64_t e = 0; e < c.getExperts(); ++e)
    addSwiGLUWeights(uses, p + ".experts." + Twine(e), h, c.getInter());
  if (c.getShared() > 0)
    addSwiGLUWeights(uses, p + ".shared_experts", h,
                     c.getShared() * c.getInter());
}

void MTPOp::build(OpBuilder &builder, OperationState &state, Type logitsType,
                  Value hidden, Value ids, Value positions, StringRef prefix,
                  int64_t depth, StringRef embed, StringRef head, double eps) {
  MLIRContext *ctx = builder.getContext();
  state.addOperands({hidden, ids, positions});
  state.addAttribute(getPrefixAttrName(state.name), builder.getStringAttr(prefix));
  state.addAttribute(getConfigAttrName(state.name), MTPConfigAttr::get(ctx, depth));
  state.addAttribute(getEmbedAttrName(state.name),
                     FlatSymbolRefAttr::get(ctx, embed));
  state.addAttribute(getHeadAttrName(state.name),
                     FlatSymbolRefAttr::get(ctx, head));
  state.addAttribute(getEpsAttrName(state.name), builder.getF64FloatAttr(eps));
  state.addTypes({logitsType, hidden.getType()});
  Region *body = state.addRegion();
  Block *block = new Block();
  body->push_back(block);
  block->addArgument(hidden.getType(), state.location);
  block->addArgument(positions.getType(), state.location);
}

LogicalResult MTPOp::verify() {
  if (failed(verifyTokensByHidden(*this, getHidden(), "hidden")) ||
      failed(verifyTokensByHidden(*this, getLogits(), "logits")) ||
      failed(verifyTokensMatch(*this, getHidden(), getIds(), "hidden and ids")) ||
      failed(verifyTokensMatch(*this, getHidden(), getPositions(),
                               "hidden and positions")) ||
      failed(verifyTokensMatch(*this, getHidden(), getLogits(),
                               "hidden and logits")))
    return failure();
  if (getResult().getType() != getHidden().getType())
    return emitOpError() << "result must have the type of hidden ("
                         << getHidden().getType() << ")";
  return verifyEps(*this, getEps().convertToDouble());
}

LogicalResult MTPOp::verifyRegions() {
  Block &block = getBody().front();
  if (block.getNumArguments() != 2 ||
      block.getArgument(0).getType() != getHidden().getType() ||
      block.getArgument(1).getType() != getPositions().getType())
    return emitOpError() << "body must take (hidden, positions) of types ("
                         << getHidden().getType() << ", "
                         << getPositions().getType() << ")";
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield || yield.getValues().size() != 1 ||
      yield.getValues()[0].getType() != getHidden().getType())
    return emitOpError() << "body must end in ds.yield of one "
                         << getHidden().getType();
  return success();
}

LogicalResult StageOp::verifyRegions() {
  Block &block = getBody().front();
  if (block.getArgumentTypes() != getInputs().getTypes())
    return emitOpError("body arguments must have the types of the inputs");
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield || yield.getValues().getTypes() != getResults().getTypes())
    return emitOpError("body must end in ds.yield of the results' types");
  return success();
}

void MTPOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  int64_t h = hiddenOf(getHidden()), vocab = hiddenOf(getLogits());
  std::string p = getPrefix().str();
  uses.push_back(use(p + ".enorm.weight", {h}, false));
  uses.push_back(use(p + ".hnorm.weight", {h}, false));
  uses.push_back(use(p + ".eh_proj.weight", {h, 2 * h}, false));
  uses.push_back(use(p + ".shared_head.norm.weight", {h}, false));
  uses.push_back(use(getEmbed(), {vocab, h}, false));
  uses.push_back(use(getHead(), {vocab, h}, false));
}
