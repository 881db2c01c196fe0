//===- KernelDialect.cpp - the dsk kernel-level dialect -------------------===//

#include "ds/Dialect/Kernel/IR/KernelDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace ds::kernel;
using ds::WeightUse;

#include "ds/Dialect/Kernel/IR/KernelDialect.cpp.inc"
#include "ds/Dialect/Kernel/IR/KernelEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ds/Dialect/Kernel/IR/KernelAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "ds/Dialect/Kernel/IR/KernelOps.cpp.inc"

void DSKDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ds/Dialect/Kernel/IR/KernelOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ds/Dialect/Kernel/IR/KernelAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// Static row width of a [tokens, width] buffer.
static int64_t width(Value v) { return cast<MemRefType>(v.getType()).getDimSize(1); }

bool ds::kernel::disjoint(Value a, Value b) {
  if (rootBuffer(a) != rootBuffer(b))
    return true;
  auto va = a.getDefiningOp<memref::SubViewOp>();
  auto vb = b.getDefiningOp<memref::SubViewOp>();
  if (!va || !vb || va.getSource() != vb.getSource())
    return false;
  ArrayRef<int64_t> oa = va.getStaticOffsets(), ob = vb.getStaticOffsets();
  ArrayRef<int64_t> sa = va.getStaticStrides(), sb = vb.getStaticStrides();
  int64_t wa = width(a), wb = width(b);
  // Contiguous column ranges only: a column stride s spans (w - 1) s + 1.
  if (oa.size() != 2 || ob.size() != 2 || sa[1] != 1 || sb[1] != 1 ||
      ShapedType::isDynamic(oa[1]) || ShapedType::isDynamic(ob[1]) ||
      ShapedType::isDynamic(wa) || ShapedType::isDynamic(wb))
    return false;
  return oa[1] + wa <= ob[1] || ob[1] + wb <= oa[1];
}

static LogicalResult verifyWidth(Operation *op, Value v, int64_t expected,
                                 StringRef what) {
  int64_t w = width(v);
  if (ShapedType::isDynamic(w) || w != expected)
    return op->emitOpError() << what << " must have " << expected
                             << " columns, got " << v.getType();
  return success();
}

static WeightUse use(const Twine &name, ArrayRef<int64_t> shape,
                     bool quantizable) {
  return WeightUse{name.str(), SmallVector<int64_t>(shape), quantizable};
}

#define DSK_VERIFY_SYMBOL_USES(OP)                                             \
  LogicalResult OP::verifySymbolUses(SymbolTableCollection &tables) {          \
    return ds::verifyWeightUses(*this, tables);                                \
  }
DSK_VERIFY_SYMBOL_USES(EmbeddingOp)
DSK_VERIFY_SYMBOL_USES(RMSNormOp)
DSK_VERIFY_SYMBOL_USES(LinearOp)
DSK_VERIFY_SYMBOL_USES(MLAAttentionAbsorbedOp)
DSK_VERIFY_SYMBOL_USES(MoERouteOp)
DSK_VERIFY_SYMBOL_USES(MoEExpertsOp)
DSK_VERIFY_SYMBOL_USES(AddRMSNormOp)
DSK_VERIFY_SYMBOL_USES(GatedUpOp)
DSK_VERIFY_SYMBOL_USES(MoEGateOp)
DSK_VERIFY_SYMBOL_USES(QKRoPECacheWriteOp)
DSK_VERIFY_SYMBOL_USES(LinearPairOp)
#undef DSK_VERIFY_SYMBOL_USES

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

void EmbeddingOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {ShapedType::kDynamic, width(getOut())}, false));
}

LogicalResult RMSNormOp::verify() {
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError() << "eps must be positive";
  return verifyWidth(*this, getOut(), width(getInput()), "out");
}

void RMSNormOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {width(getInput())}, false));
}

/// A kernel's `norm(residual, sum, normed)` epilogue (the `dsk.add_rms_norm`
/// of `out` and the residual, folded in by dsk-fuse): all of it or none,
/// rows as wide as `out`. `norm` tells whether it is there.
static LogicalResult verifyNormEpilogue(Operation *op, Value out,
                                        Value residual, Value sum, Value normed,
                                        bool weight, std::optional<APFloat> eps,
                                        int64_t w, bool *norm) {
  int parts = int(bool(residual)) + int(bool(sum)) + int(bool(normed)) +
              int(weight) + int(eps.has_value());
  if (parts != 0 && parts != 5)
    return op->emitOpError() << "the norm's residual, sum and normed buffers "
                                "and its norm and eps attributes go together";
  *norm = parts != 0;
  if (!*norm)
    return success();
  if (!(eps->convertToDouble() > 0.0))
    return op->emitOpError() << "eps must be positive";
  if (failed(verifyWidth(op, residual, w, "residual")) ||
      failed(verifyWidth(op, sum, w, "sum")) ||
      failed(verifyWidth(op, normed, w, "normed")))
    return failure();
  // The epilogue reads the residual after `out` is written.
  if (!disjoint(residual, out))
    return op->emitOpError() << "the norm's residual may overlap out";
  return success();
}

/// GEMM kernels read their whole input in every block while blocks write
/// the output: the two must not share an element.
static LogicalResult verifyInputApart(Operation *op, Value input, Value out) {
  if (!disjoint(input, out))
    return op->emitOpError() << "out may overlap the input";
  return success();
}

LogicalResult LinearOp::verify() {
  if (failed(verifyInputApart(*this, getInput(), getOut())))
    return failure();
  bool norm = false;
  if (failed(verifyNormEpilogue(*this, getOut(), getResidual(), getSum(),
                                getNormed(), bool(getNorm()), getEps(),
                                width(getOut()), &norm)))
    return failure();
  if (norm && getAccumulate())
    return emitOpError() << "a norm epilogue does not go with accumulate";
  return success();
}

void LinearOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {width(getOut()), width(getInput())}, true));
  if (getNorm())
    uses.push_back(use(*getNorm(), {width(getOut())}, false));
}

LogicalResult LinearPairOp::verify() {
  Value in = rootBuffer(getInput()), a = rootBuffer(getOutA()),
        b = rootBuffer(getOutB());
  if (a == b || a == in || b == in)
    return emitOpError() << "the outputs and the input must be different "
                            "buffers";
  return success();
}

void LinearPairOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(
      use(getWeightA(), {width(getOutA()), width(getInput())}, true));
  uses.push_back(
      use(getWeightB(), {width(getOutB()), width(getInput())}, true));
}

LogicalResult AddOp::verify() {
  if (failed(verifyWidth(*this, getRhs(), width(getLhs()), "rhs")))
    return failure();
  return verifyWidth(*this, getOut(), width(getLhs()), "out");
}

LogicalResult SwiGLUOp::verify() {
  if (failed(verifyWidth(*this, getUp(), width(getGate()), "up")))
    return failure();
  return verifyWidth(*this, getOut(), width(getGate()), "out");
}

LogicalResult RoPEOp::verify() {
  int64_t dim = getDim(), heads = getHeads(), stride = getHeadStride(),
          offset = getOffset();
  if (dim <= 0 || dim % 2 != 0)
    return emitOpError() << "dim must be positive and even, got " << dim;
  if (heads <= 0 || offset < 0 || offset + dim > stride)
    return emitOpError() << "rotated columns [" << offset << ", "
                         << offset + dim << ") do not fit a head of "
                         << stride << " columns";
  if (heads * stride > width(getInout()))
    return emitOpError() << heads << " heads of " << stride
                         << " columns exceed the buffer's " << width(getInout());
  return success();
}

LogicalResult MLAAttentionNaiveOp::verify() {
  int64_t h = getHeads();
  if (failed(verifyWidth(*this, getQ(), h * (getQkNope() + getQkRope()), "q")) ||
      failed(verifyWidth(*this, getKv(), h * (getQkNope() + getVHead()), "kv")) ||
      failed(verifyWidth(*this, getKrope(), getQkRope(), "krope")))
    return failure();
  return verifyWidth(*this, getOut(), h * getVHead(), "out");
}

/// What the MLA prologue (dsk.qk_rope_cache_write, or the rope(...) of
/// dsk.mla_attention_absorbed) needs of its buffers and its latent norm: the
/// query rotated in place apart from the latent and the key; norm with eps.
static LogicalResult verifyPrologue(Operation *op, Value q, Value latent,
                                    Value krope, bool norm,
                                    std::optional<APFloat> eps) {
  if (rootBuffer(q) == rootBuffer(latent) || rootBuffer(q) == rootBuffer(krope))
    return op->emitOpError() << "the query shares a buffer with the latent or "
                                "the rope key";
  if (norm != eps.has_value())
    return op->emitOpError() << "norm and eps go together";
  if (eps && !(eps->convertToDouble() > 0.0))
    return op->emitOpError() << "eps must be positive";
  return success();
}

LogicalResult MLAAttentionAbsorbedOp::verify() {
  int64_t h = getHeads();
  if (failed(
          verifyWidth(*this, getQ(), h * (getQkNope() + getQkRope()), "q")) ||
      failed(verifyWidth(*this, getOut(), h * getVHead(), "out")))
    return failure();
  // The qk_rope_cache_write prologue: all of it or none.
  bool prologue = static_cast<bool>(getLatent());
  if (prologue != static_cast<bool>(getRopeConfig()))
    return emitOpError() << "rope operands and rope_config go together";
  if (!prologue)
    return getNorm() || getEps()
               ? emitOpError() << "norm and eps need the rope prologue"
               : success();
  int64_t rope = getQkRope();
  if (rope % 2 != 0)
    return emitOpError() << "the rope prologue needs an even qk_rope, got "
                         << rope;
  if (failed(verifyWidth(*this, getLatent(), getKvLoraRank(), "latent")) ||
      failed(verifyWidth(*this, getKrope(), rope, "krope")))
    return failure();
  return verifyPrologue(*this, getQ(), getLatent(), getKrope(),
                        static_cast<bool>(getNorm()), getEps());
}

void MLAAttentionAbsorbedOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  int64_t rows = getHeads() * (getQkNope() + getVHead());
  int64_t cols = getKvLoraRank();
  uses.push_back(use(getKvB(), {rows, cols}, true));
  if (std::optional<StringRef> norm = getNorm())
    uses.push_back(use(*norm, {cols}, false));
}

/// What moe_route and moe_gate share: top_k indices and weights per token,
/// and a correction bias exactly for noaux_tc.
static LogicalResult verifyRouting(Operation *op, ds::MoEConfigAttr c,
                                   Value indices, Value weights, bool bias) {
  if (failed(verifyWidth(op, indices, c.getTopK(), "indices")) ||
      failed(verifyWidth(op, weights, c.getTopK(), "weights")))
    return failure();
  if (bias != (c.getTopkMethod() == ds::TopkMethod::noaux_tc))
    return op->emitOpError() << "a correction bias goes with noaux_tc "
                                "routing, and only with it";
  return success();
}

LogicalResult MoERouteOp::verify() {
  if (failed(verifyWidth(*this, getLogits(), getConfig().getExperts(), "logits")))
    return failure();
  return verifyRouting(*this, getConfig(), getIndices(), getWeights(),
                       static_cast<bool>(getBias()));
}

void MoERouteOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  if (auto bias = getBiasAttr())
    uses.push_back(use(bias.getValue(), {getConfig().getExperts()}, false));
}

LogicalResult MoEExpertsOp::verify() {
  if (width(getIndices()) != width(getWeights()))
    return emitOpError() << "indices and weights differ in top_k";
  if (getEp() < 1 || getExperts() % getEp() != 0)
    return emitOpError() << "ep (" << getEp() << ") must divide experts ("
                         << getExperts() << ")";
  int shared = int(bool(getSharedGate())) + int(bool(getSharedUp())) +
               int(bool(getSharedDown())) + int(bool(getSharedHidden()));
  if (shared != 0 && shared != 4)
    return emitOpError() << "shared_gate, shared_up, shared_down and the "
                            "shared_hidden buffer go together";
  if (shared && getEp() != 1)
    return emitOpError() << "a shared expert needs ep = 1, got ep = "
                         << getEp();
  if (shared) {
    Value h = rootBuffer(getSharedHidden());
    if (h == rootBuffer(getInput()) || h == rootBuffer(getOut()) ||
        h == rootBuffer(getWeights()))
      return emitOpError() << "shared_hidden must be a buffer of its own";
    // Unfused, the shared expert reads the input after the routed sum is
    // written: they must not share a buffer.
    if (rootBuffer(getOut()) == rootBuffer(getInput()))
      return emitOpError() << "with a shared expert, out must not share a "
                              "buffer with the input";
  }
  const int64_t h = width(getInput());
  bool norm = false;
  if (failed(verifyNormEpilogue(*this, getOut(), getResidual(), getSum(),
                                getNormed(), bool(getNorm()), getEps(), h,
                                &norm)))
    return failure();
  if (norm && !shared)
    return emitOpError() << "a norm epilogue needs the shared expert";
  // The combine's blocks write a token's sum and normed row while others
  // still read their routing.
  if (norm)
    for (Value v : {getSum(), getNormed()})
      if (!disjoint(v, getIndices()) || !disjoint(v, getWeights()))
        return emitOpError() << "the norm's sum and normed buffers may "
                                "overlap the routing indices or weights";
  return verifyWidth(*this, getOut(), h, "out");
}

void MoEExpertsOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  int64_t h = width(getInput()), inter = getInter();
  for (int64_t e = 0, n = getExperts(); e < n; ++e) {
    std::string p = (getPrefix() + ".experts." + Twine(e)).str();
    uses.push_back(use(p + ".gate_proj.weight", {inter, h}, true));
    uses.push_back(use(p + ".up_proj.weight", {inter, h}, true));
    uses.push_back(use(p + ".down_proj.weight", {h, inter}, true));
  }
  if (!getSharedHidden() || !getSharedGate() || !getSharedUp() ||
      !getSharedDown())
    return;
  int64_t si = width(getSharedHidden());
  uses.push_back(use(*getSharedGate(), {si, h}, true));
  uses.push_back(use(*getSharedUp(), {si, h}, true));
  uses.push_back(use(*getSharedDown(), {h, si}, true));
  if (getNorm())
    uses.push_back(use(*getNorm(), {h}, false));
}

LogicalResult GatedUpOp::verify() {
  return verifyInputApart(*this, getInput(), getOut());
}

LogicalResult AllGatherOp::verify() {
  int64_t in = width(getInput()), out = width(getOut());
  if (out % in != 0)
    return emitOpError() << "out width (" << out
                         << ") must be a multiple of the input's (" << in << ")";
  return success();
}

//===----------------------------------------------------------------------===//
// Fused ops
//===----------------------------------------------------------------------===//

LogicalResult AddRMSNormOp::verify() {
  int64_t w = width(getLhs());
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError() << "eps must be positive";
  if (failed(verifyWidth(*this, getRhs(), w, "rhs")) ||
      failed(verifyWidth(*this, getSum(), w, "sum")))
    return failure();
  return verifyWidth(*this, getOut(), w, "out");
}

void AddRMSNormOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {width(getLhs())}, false));
}

LogicalResult RoPEKVCacheWriteOp::verify() {
  int64_t dim = width(getKrope());
  if (dim <= 0 || dim % 2 != 0)
    return emitOpError() << "the rope key must have an even width, got "
                         << getKrope().getType();
  return success();
}

LogicalResult QKRoPECacheWriteOp::verify() {
  int64_t dim = width(getKrope()), heads = getHeads(), stride = getHeadStride(),
          offset = getOffset();
  if (dim <= 0 || dim % 2 != 0)
    return emitOpError() << "the rope key must have an even width, got "
                         << getKrope().getType();
  if (heads <= 0 || offset < 0 || offset + dim > stride)
    return emitOpError() << "query columns [" << offset << ", " << offset + dim
                         << ") do not fit a head of " << stride << " columns";
  if (heads * stride > width(getQ()))
    return emitOpError() << heads << " heads of " << stride
                         << " columns exceed the query's " << width(getQ());
  return verifyPrologue(*this, getQ(), getLatent(), getKrope(),
                        static_cast<bool>(getNorm()), getEps());
}

void QKRoPECacheWriteOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  if (std::optional<StringRef> norm = getNorm())
    uses.push_back(use(*norm, {width(getLatent())}, false));
}

void GatedUpOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  int64_t in = width(getInput()), inter = width(getOut());
  uses.push_back(use(getGate(), {inter, in}, true));
  uses.push_back(use(getUp(), {inter, in}, true));
}

LogicalResult MoEGateOp::verify() {
  return verifyRouting(*this, getConfig(), getIndices(), getWeights(),
                       static_cast<bool>(getBias()));
}

void MoEGateOp::getWeightUses(SmallVectorImpl<WeightUse> &uses) {
  uses.push_back(use(getWeight(), {getConfig().getExperts(), width(getInput())},
                     false));
  if (auto bias = getBiasAttr())
    uses.push_back(use(bias.getValue(), {getConfig().getExperts()}, false));
}
