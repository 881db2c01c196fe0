//===- LowerToKernels.cpp - ds -> dsk prefill/decode programs -------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

namespace ds {
#define GEN_PASS_DEF_LOWERTOKERNELS
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;
namespace dsk = ds::kernel;

/// Softmax scale of MLA: (qk_nope + qk_rope)^-0.5, times mscale^2 under YaRN
/// with mscale = 0.1 * mscale_all_dim * ln(factor) + 1 (HF's yarn_get_mscale).
static double mlaSoftmaxScale(MLAConfigAttr c, RoPEConfigAttr rope) {
  double scale = 1.0 / std::sqrt(static_cast<double>(c.getQHeadDim()));
  if (YaRNAttr yarn = rope.getYarn()) {
    double factor = yarn.getFactor().convertToDouble();
    double all = yarn.getMscaleAllDim().convertToDouble();
    if (all != 0.0 && factor > 1.0) {
      double m = 0.1 * all * std::log(factor) + 1.0;
      scale *= m * m;
    }
  }
  return scale;
}

namespace {

/// Lowers @forward into one program. Values of the model level (tensors)
/// map to buffers (memrefs) allocated per result; the memory plan reuses
/// them later.
class ProgramLowering {
public:
  /// `source` is @forward (prefill, decode) or @mtp_1 (mtp); MLA layers are
  /// numbered from `firstLayer` in the latent cache. With `stage` >= 0 the
  /// source is pipelined (ds.stage ops) and the program is that stage's:
  /// the other stages' ops are skipped, values crossing stages become
  /// dsk.recv / dsk.send.
  ProgramLowering(func::FuncOp source, dsk::ProgramKind kind, int64_t maxTokens,
                  int64_t firstLayer = 0, int64_t stage = -1)
      : forward(source), kind(kind), maxTokens(maxTokens),
        firstLayer(firstLayer), stage(stage), b(source.getContext()),
        loc(source.getLoc()) {}

  LogicalResult run() {
    MLIRContext *ctx = forward.getContext();
    bool mtp = kind == dsk::ProgramKind::mtp;
    auto results = forward.getFunctionType().getResults();
    auto logitsType = results.size() == 2 ? dyn_cast<RankedTensorType>(results[0])
                                          : RankedTensorType();
    auto hiddenType = results.size() == 2 ? dyn_cast<RankedTensorType>(results[1])
                                          : RankedTensorType();
    if (!logitsType || !hiddenType || logitsType.getRank() != 2 ||
        hiddenType.getRank() != 2 || forward.getNumArguments() != (mtp ? 3u : 2u))
      return forward.emitOpError()
             << (mtp ? "must be @mtp_1(hidden, ids, positions) -> (logits, hidden)"
                     : "must be @forward(ids, positions) -> (logits, hidden)");
    vocab = logitsType.getDimSize(1);
    hidden = hiddenType.getDimSize(1);

    b.setInsertionPointToEnd(forward->getParentOfType<ModuleOp>().getBody());
    Type i32 = b.getI32Type(), f32 = b.getF32Type();
    auto tokens = MemRefType::get({ShapedType::kDynamic}, i32);
    auto rows = [&](int64_t w) { return MemRefType::get({ShapedType::kDynamic, w}, f32); };
    std::string name = stringifyProgramKind(kind).str();
    if (stage >= 0)
      name += "_stage" + std::to_string(stage);
    SmallVector<Type> args;
    if (mtp)
      args.push_back(rows(hidden));
    args.append({tokens, tokens, rows(vocab), rows(hidden)});
    fn = func::FuncOp::create(b, loc, name, b.getFunctionType(args, {}));
    fn->setAttr(dsk::kProgramAttrName,
                dsk::ProgramAttr::get(ctx, kind, maxTokens, 0,
                                      std::max<int64_t>(stage, 0)));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    // The source function's arguments (ids, positions; for MTP first the
    // hidden state) map one-to-one onto the program's leading arguments.
    unsigned a = mtp ? 1 : 0;
    ids = entry->getArgument(a++);
    positions = entry->getArgument(a++);
    logitsOut = entry->getArgument(a++);
    hiddenOut = entry->getArgument(a++);
    n = memref::DimOp::create(b, loc, ids, 0);
    for (auto [i, arg] : llvm::enumerate(forward.getArguments()))
      map[arg] = entry->getArgument(i);
    // The value @forward/@mtp_1 returns as its hidden state is written
    // straight into the hidden output.
    auto ret = cast<func::ReturnOp>(forward.getBody().front().getTerminator());
    preassigned[yielded(ret.getOperand(0))] = logitsOut;
    if (!mtp)
      preassigned[yielded(ret.getOperand(1))] = hiddenOut;
    return lowerBlock(forward.getBody().front());
  }

  /// What a function result is inside its stage: the yielded value for a
  /// result of ds.stage, else the value itself.
  static Value yielded(Value v) {
    if (auto s = v.getDefiningOp<StageOp>())
      return cast<YieldOp>(s.getBody().front().getTerminator())
          .getValues()[cast<OpResult>(v).getResultNumber()];
    return v;
  }

  /// This program's stage: its inputs from other stages arrive by dsk.recv,
  /// its results that later stages read leave by dsk.send. Other stages'
  /// ops are not this program's.
  LogicalResult lowerStage(StageOp o) {
    if (stage < 0)
      return o.emitOpError("in an unpipelined lowering (no stage given)");
    if (static_cast<int64_t>(o.getStage()) != stage)
      return success();
    Block &body = o.getBody().front();
    for (auto [input, arg] : llvm::zip(o.getInputs(), body.getArguments())) {
      if (auto from = input.getDefiningOp<StageOp>()) {
        auto type = dyn_cast<RankedTensorType>(input.getType());
        if (!type || type.getRank() != 2 || !type.getElementType().isF32())
          return o.emitOpError("can only receive [tokens, features] f32 "
                               "activations from another stage");
        Value buf = alloc(type.getDimSize(1));
        dsk::RecvOp::create(b, loc, buf, b.getI64IntegerAttr(from.getStage()));
        map[arg] = buf;
      } else {
        map[arg] = lookup(input);
      }
    }
    if (failed(lowerBlock(body)))
      return failure();
    auto yield = cast<YieldOp>(body.getTerminator());
    for (auto [result, value] : llvm::zip(o.getResults(), yield.getValues())) {
      Value buf = lookup(value);
      map[result] = buf;
      llvm::SmallSetVector<int64_t, 4> to;
      for (Operation *user : result.getUsers())
        if (auto s = dyn_cast<StageOp>(user))
          to.insert(s.getStage());
      for (int64_t s : to)
        dsk::SendOp::create(b, loc, buf, b.getI64IntegerAttr(s));
    }
    return success();
  }

  LogicalResult lowerBlock(Block &block) {
    for (Operation &op : block) {
      loc = op.getLoc(); // kernels keep their source op's location
      LogicalResult r =
          llvm::TypeSwitch<Operation *, LogicalResult>(&op)
              .Case([&](EmbeddingOp o) {
                Value out = outFor(o.getResult(), hiddenOf(o.getResult()));
                dsk::EmbeddingOp::create(b, loc, lookup(o.getIds()), out,
                                         o.getWeightAttr());
                return bind(o.getResult(), out);
              })
              .Case([&](RMSNormOp o) {
                Value in = lookup(o.getInput());
                Value out = outFor(o.getResult(), width(in));
                dsk::RMSNormOp::create(b, loc, in, out, o.getWeightAttr(),
                                       b.getF64FloatAttr(o.getEps().convertToDouble()));
                return bind(o.getResult(), out);
              })
              .Case([&](LinearOp o) -> LogicalResult {
                if (tensorRank(o.getInput()) != 2)
                  return o.emitOpError("only [tokens, features] inputs lower "
                                       "to kernels");
                Value out = outFor(o.getResult(), hiddenOf(o.getResult()));
                dsk::LinearOp::create(b, loc, lookup(o.getInput()), out,
                                      o.getWeightAttr());
                return bind(o.getResult(), out);
              })
              .Case([&](arith::AddFOp o) {
                Value lhs = lookup(o.getLhs());
                Value out = outFor(o.getResult(), width(lhs));
                dsk::AddOp::create(b, loc, lhs, lookup(o.getRhs()), out);
                return bind(o.getResult(), out);
              })
              .Case([&](MLAOp o) { return lowerMLA(o); })
              .Case([&](MLPOp o) {
                return bind(o.getResult(),
                            mlp(lookup(o.getInput()), o.getPrefix(), o.getInter(),
                                outFor(o.getResult(), hiddenOf(o.getResult()))));
              })
              .Case([&](MoEOp o) { return lowerMoE(o); })
              .Case([&](MTPOp o) { return lowerMTP(o); })
              .Case([&](YieldOp o) { return success(); })
              .Case([&](StageOp o) { return lowerStage(o); })
              .Case([&](LMHeadOp o) {
                Value out = outFor(o.getResult(), hiddenOf(o.getResult()));
                dsk::LinearOp::create(b, loc, lookup(o.getInput()), out,
                                      o.getWeightAttr());
                return bind(o.getResult(), out);
              })
              .Case([&](AllReduceOp o) -> LogicalResult {
                // In place: the partial sum has no other reader.
                if (!o.getInput().hasOneUse())
                  return o.emitOpError("must be the only reader of its input");
                Value buf = lookup(o.getInput());
                dsk::AllReduceOp::create(b, loc, buf, o.getAxisAttr());
                return bind(o.getResult(), buf);
              })
              .Case([&](AllGatherOp o) -> LogicalResult {
                if (o.getDim() != 1)
                  return o.emitOpError("only gathers along dim 1 lower to "
                                       "kernels");
                Value out = outFor(o.getResult(), hiddenOf(o.getResult()));
                dsk::AllGatherOp::create(b, loc, lookup(o.getInput()), out,
                                         o.getAxisAttr());
                return bind(o.getResult(), out);
              })
              .Case([&](func::ReturnOp o) -> LogicalResult {
                // Stages before the last one compute no outputs.
                auto last = o.getNumOperands()
                                ? o.getOperand(0).getDefiningOp<StageOp>()
                                : StageOp();
                if (last && static_cast<int64_t>(last.getStage()) != stage) {
                  func::ReturnOp::create(b, loc);
                  return success();
                }
                if (o.getNumOperands() == 0 ||
                    lookup(o.getOperand(0)) != logitsOut)
                  return o.emitOpError(
                      "must return the ds.lm_head (or ds.mtp) logits first");
                func::ReturnOp::create(b, loc);
                return success();
              })
              .Default([&](Operation *o) {
                return o->emitOpError("is not supported by "
                                      "ds-lower-to-kernels yet");
              });
      if (failed(r))
        return failure();
    }
    return success();
  }

  func::FuncOp fn;
  int64_t vocab = 0, hidden = 0;
  SmallVector<MLAOp> mlaLayers;

private:
  static int64_t tensorRank(Value v) {
    return cast<RankedTensorType>(v.getType()).getRank();
  }
  static int64_t hiddenOf(Value tensor) {
    return cast<RankedTensorType>(tensor.getType()).getDimSize(1);
  }
  static int64_t width(Value buffer) {
    return cast<MemRefType>(buffer.getType()).getDimSize(1);
  }

  Value lookup(Value tensor) { return map.lookup(tensor); }

  /// The buffer a result is written to: a program output where the value is
  /// one (the hidden state), else a fresh allocation.
  Value outFor(Value tensor, int64_t w) {
    if (Value out = preassigned.lookup(tensor))
      return out;
    return alloc(w);
  }
  LogicalResult bind(Value tensor, Value buffer) {
    map[tensor] = buffer;
    return success();
  }

  /// A [tokens, width] buffer.
  Value alloc(int64_t w, Type elt = {}) {
    if (!elt)
      elt = b.getF32Type();
    auto type = MemRefType::get({ShapedType::kDynamic, w}, elt);
    return memref::AllocOp::create(b, loc, type, ValueRange{n});
  }

  /// Columns [col, col + w) of every row of `buffer`.
  Value columns(Value buffer, int64_t col, int64_t w) {
    SmallVector<OpFoldResult> offsets = {b.getIndexAttr(0), b.getIndexAttr(col)};
    SmallVector<OpFoldResult> sizes = {n, b.getIndexAttr(w)};
    SmallVector<OpFoldResult> strides = {b.getIndexAttr(1), b.getIndexAttr(1)};
    return memref::SubViewOp::create(b, loc, buffer, offsets, sizes, strides);
  }

  FlatSymbolRefAttr sym(const Twine &name) {
    return FlatSymbolRefAttr::get(b.getContext(), name.str());
  }

  Value linear(Value in, FlatSymbolRefAttr weight, int64_t outWidth) {
    Value out = alloc(outWidth);
    dsk::LinearOp::create(b, loc, in, out, weight);
    return out;
  }

  Value rmsNorm(Value in, FlatSymbolRefAttr weight, double eps) {
    Value out = alloc(width(in));
    dsk::RMSNormOp::create(b, loc, in, out, weight, b.getF64FloatAttr(eps));
    return out;
  }

  Value mlp(Value x, StringRef prefix, int64_t inter, Value out = {}) {
    Value gate = linear(x, sym(prefix + ".gate_proj.weight"), inter);
    Value up = linear(x, sym(prefix + ".up_proj.weight"), inter);
    Value act = alloc(inter);
    dsk::SwiGLUOp::create(b, loc, gate, up, act);
    if (!out)
      return linear(act, sym(prefix + ".down_proj.weight"), width(x));
    dsk::LinearOp::create(b, loc, act, out, sym(prefix + ".down_proj.weight"));
    return out;
  }

  LogicalResult lowerMLA(MLAOp o) {
    MLAConfigAttr c = o.getConfig();
    Value x = lookup(o.getInput());
    std::string p = o.getPrefix().str();
    int64_t heads = c.getHeads(), nope = c.getQkNope(), rope = c.getQkRope();
    int64_t vdim = c.getVHead(), kvl = c.getKvLoraRank();
    int64_t qhd = nope + rope;
    double eps = o.getEps().convertToDouble();
    int64_t layer = firstLayer + mlaLayers.size();
    mlaLayers.push_back(o);

    // The two projections of x first, side by side (dsk-fuse pairs them).
    Value q, kva;
    if (c.getQLoraRank() > 0) {
      Value qa = linear(x, sym(p + ".q_a_proj.weight"), c.getQLoraRank());
      kva = linear(x, sym(p + ".kv_a_proj_with_mqa.weight"), kvl + rope);
      Value qan = rmsNorm(qa, sym(p + ".q_a_layernorm.weight"), eps);
      q = linear(qan, sym(p + ".q_b_proj.weight"), heads * qhd);
    } else {
      q = linear(x, sym(p + ".q_proj.weight"), heads * qhd);
      kva = linear(x, sym(p + ".kv_a_proj_with_mqa.weight"), kvl + rope);
    }
    Value latent = rmsNorm(columns(kva, 0, kvl),
                           sym(p + ".kv_a_layernorm.weight"), eps);
    Value krope = columns(kva, kvl, rope);
    auto ropeOp = [&](Value buf, int64_t h, int64_t stride, int64_t offset) {
      dsk::RoPEOp::create(b, loc, buf, positions, o.getRope(),
                          b.getI64IntegerAttr(rope), b.getI64IntegerAttr(h),
                          b.getI64IntegerAttr(stride),
                          b.getI64IntegerAttr(offset));
    };
    ropeOp(q, heads, qhd, nope);
    ropeOp(krope, 1, rope, 0);
    dsk::KVCacheWriteOp::create(b, loc, latent, krope, positions,
                                b.getI64IntegerAttr(layer));

    double scale = mlaSoftmaxScale(c, o.getRope());
    Value attn = alloc(heads * vdim);
    // Prefill starts sequences: its tokens attend only to each other, so the
    // naive form is cheapest. Decode and MTP attend over the cache.
    if (kind == dsk::ProgramKind::prefill) {
      Value kv = linear(latent, sym(p + ".kv_b_proj.weight"),
                        heads * (nope + vdim));
      dsk::MLAAttentionNaiveOp::create(
          b, loc, q, kv, krope, attn, b.getI64IntegerAttr(heads),
          b.getI64IntegerAttr(nope), b.getI64IntegerAttr(rope),
          b.getI64IntegerAttr(vdim), b.getF64FloatAttr(scale));
    } else {
      dsk::MLAAttentionAbsorbedOp::create(
          b, loc, q, positions, attn, /*latent=*/Value(), /*krope=*/Value(),
          sym(p + ".kv_b_proj.weight"), b.getI64IntegerAttr(layer),
          b.getI64IntegerAttr(kvl), b.getI64IntegerAttr(heads),
          b.getI64IntegerAttr(nope), b.getI64IntegerAttr(rope),
          b.getI64IntegerAttr(vdim), b.getF64FloatAttr(scale),
          /*rope_config=*/nullptr, /*norm=*/nullptr, /*eps=*/nullptr);
    }
    Value out = outFor(o.getResult(), width(x));
    dsk::LinearOp::create(b, loc, attn, out, sym(p + ".o_proj.weight"));
    return bind(o.getResult(), out);
  }

  /// MTP module: x = eh_proj([enorm(embed(ids)), hnorm(hidden)]) (the two
  /// norms write the halves of one buffer), its decoder block, then
  /// head(shared_head.norm(y)) into the logits and y into the hidden output.
  LogicalResult lowerMTP(MTPOp o) {
    std::string p = o.getPrefix().str();
    int64_t h = hidden;
    double eps = o.getEps().convertToDouble();
    Value emb = alloc(h);
    dsk::EmbeddingOp::create(b, loc, lookup(o.getIds()), emb, o.getEmbedAttr());
    Value cat = alloc(2 * h);
    dsk::RMSNormOp::create(b, loc, emb, columns(cat, 0, h),
                           sym(p + ".enorm.weight"), b.getF64FloatAttr(eps));
    dsk::RMSNormOp::create(b, loc, lookup(o.getHidden()), columns(cat, h, h),
                           sym(p + ".hnorm.weight"), b.getF64FloatAttr(eps));
    Block &body = o.getBody().front();
    map[body.getArgument(0)] = linear(cat, sym(p + ".eh_proj.weight"), h);
    map[body.getArgument(1)] = lookup(o.getPositions());
    Value yielded = cast<YieldOp>(body.getTerminator()).getValues()[0];
    preassigned[yielded] = hiddenOut;
    if (failed(lowerBlock(body)))
      return failure();
    Value y = lookup(yielded);
    Value normed = rmsNorm(y, sym(p + ".shared_head.norm.weight"), eps);
    Value logits = outFor(o.getLogits(), vocab);
    dsk::LinearOp::create(b, loc, normed, logits, o.getHeadAttr());
    map[o.getLogits()] = logits;
    map[o.getResult()] = y;
    return success();
  }

  LogicalResult lowerMoE(MoEOp o) {
    MoEConfigAttr c = o.getConfig();
    Value x = lookup(o.getInput());
    std::string p = o.getPrefix().str();
    Value logits = linear(x, sym(p + ".gate.weight"), c.getExperts());
    Value indices = alloc(c.getTopK(), b.getI32Type());
    Value weights = alloc(c.getTopK());
    FlatSymbolRefAttr bias;
    if (c.getTopkMethod() == TopkMethod::noaux_tc)
      bias = sym(p + ".gate.e_score_correction_bias");
    dsk::MoERouteOp::create(b, loc, logits, indices, weights, c, bias);
    Value out = outFor(o.getResult(), width(x));
    dsk::MoEExpertsOp::create(
        b, loc, x, indices, weights, out, /*shared_hidden=*/Value(),
        /*residual=*/Value(), /*sum=*/Value(), /*normed=*/Value(),
        b.getStringAttr(p), b.getI64IntegerAttr(c.getExperts()),
        b.getI64IntegerAttr(c.getInter()), /*fp8=*/UnitAttr(),
        b.getI64IntegerAttr(o.getEp()), FlatSymbolRefAttr(),
        FlatSymbolRefAttr(), FlatSymbolRefAttr(), /*norm=*/FlatSymbolRefAttr(),
        /*eps=*/FloatAttr());
    if (c.getShared() > 0) {
      Value shared =
          mlp(x, p + ".shared_experts", c.getShared() * c.getInter());
      dsk::AddOp::create(b, loc, out, shared, out);
    }
    return bind(o.getResult(), out);
  }

  func::FuncOp forward;
  dsk::ProgramKind kind;
  int64_t maxTokens;
  int64_t firstLayer;
  int64_t stage;
  OpBuilder b;
  Location loc;
  DenseMap<Value, Value> map;
  DenseMap<Value, Value> preassigned;
  Value ids, positions, logitsOut, hiddenOut, n;
};

struct LowerToKernelsPass
    : public ds::impl::LowerToKernelsBase<LowerToKernelsPass> {
  using LowerToKernelsBase::LowerToKernelsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("ds-lower-to-kernels: the module has no @forward");
      return signalPassFailure();
    }
    if (maxSeqLen <= 0 || maxBatch <= 0 || maxBatch > maxSeqLen) {
      module.emitError() << "ds-lower-to-kernels: need 0 < max-batch ("
                         << maxBatch.getValue() << ") <= max-seq-len ("
                         << maxSeqLen.getValue() << ")";
      return signalPassFailure();
    }
    // The MTP module (depth 1) becomes its own program over one more cache
    // layer; speculative verification decodes two tokens per sequence.
    auto mtpFn = module.lookupSymbol<func::FuncOp>("mtp_1");
    int64_t decodeTokens = maxBatch.getValue() * (mtpFn ? 2 : 1);
    // A pipelined model (ds-partition-pp) gets one program per kind and
    // stage; each stage numbers its own MLA layers in its cache from 0, and
    // the MTP module runs on the last stage.
    int64_t stages = 0;
    forward.walk([&](StageOp s) {
      stages = std::max<int64_t>(stages, s.getStage() + 1);
    });
    int64_t cacheLayers = 0, lastStageLayers = 0, vocab = 0, hidden = 0;
    SmallVector<MLAOp> mlaLayers;
    for (int64_t s = 0; s < std::max<int64_t>(stages, 1); ++s) {
      int64_t stage = stages ? s : -1;
      ProgramLowering prefill(forward, dsk::ProgramKind::prefill,
                              maxSeqLen.getValue(), 0, stage);
      ProgramLowering decode(forward, dsk::ProgramKind::decode, decodeTokens,
                             0, stage);
      if (failed(prefill.run()) || failed(decode.run()))
        return signalPassFailure();
      lastStageLayers = prefill.mlaLayers.size();
      cacheLayers = std::max(cacheLayers, lastStageLayers);
      mlaLayers.append(prefill.mlaLayers);
      vocab = prefill.vocab;
      hidden = prefill.hidden;
    }
    if (mtpFn) {
      ProgramLowering mtp(mtpFn, dsk::ProgramKind::mtp, maxSeqLen.getValue(),
                          lastStageLayers, stages ? stages - 1 : -1);
      if (failed(mtp.run()))
        return signalPassFailure();
      cacheLayers =
          std::max<int64_t>(cacheLayers, lastStageLayers + mtp.mlaLayers.size());
      mlaLayers.append(mtp.mlaLayers);
    }

    // The latent cache: one row per MLA layer and position.
    int64_t kvl = 0, rope = 0;
    for (MLAOp mla : mlaLayers) {
      MLAConfigAttr c = mla.getConfig();
      if ((kvl && kvl != c.getKvLoraRank()) || (rope && rope != c.getQkRope())) {
        mla.emitOpError("all MLA layers must share kv_lora_rank and qk_rope "
                        "(one latent cache geometry)");
        return signalPassFailure();
      }
      kvl = c.getKvLoraRank();
      rope = c.getQkRope();
    }
    module->setAttr(dsk::kModelAttrName,
                    dsk::ModelAttr::get(&getContext(), vocab, hidden,
                                        cacheLayers, kvl, rope,
                                        maxSeqLen));

    // The model level is gone (modules beyond the first MTP one are not
    // compiled: depth-1 speculation uses only it).
    for (auto fn : llvm::make_early_inc_range(module.getOps<func::FuncOp>()))
      if (!fn->hasAttr(dsk::kProgramAttrName))
        fn.erase();
  }
};

} // namespace
