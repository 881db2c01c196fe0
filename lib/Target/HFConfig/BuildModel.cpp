//===- BuildModel.cpp - ModelConfig -> ds module --------------------------===//
//
// Emits one ds.weight per checkpoint tensor, named and shaped as in the
// published safetensors and grouped by layer, then @forward (the main model)
// and @mtp_<k> (one function per MTP module).
//
//===----------------------------------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Target/HFConfig.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace ds;

namespace {

class ModelBuilder {
public:
  ModelBuilder(const ModelConfig &c, MLIRContext *ctx, StringRef file,
               StringRef json)
      : c(c), ctx(ctx), b(ctx), file(file), json(json),
        loc(file.empty() ? Location(UnknownLoc::get(ctx))
                         : Location(FileLineColLoc::get(ctx, file, 0, 0))) {
    ctx->loadDialect<DSDialect, func::FuncDialect, arith::ArithDialect>();
    floatType = c.torchDtype == "float32"   ? Type(b.getF32Type())
                : c.torchDtype == "float16" ? Type(b.getF16Type())
                                            : Type(b.getBF16Type());
    act = RankedTensorType::get({ShapedType::kDynamic, c.hiddenSize},
                                b.getF32Type());
    logitsType = RankedTensorType::get({ShapedType::kDynamic, c.vocabSize},
                                       b.getF32Type());
    idsType = RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type());
    mla = MLAConfigAttr::get(ctx, c.numHeads, c.qLoraRank, c.kvLoraRank,
                             c.qkNopeHeadDim, c.qkRopeHeadDim, c.vHeadDim);
    YaRNAttr yarn;
    if (c.yarn)
      yarn = YaRNAttr::get(ctx, APFloat(c.yarn->factor),
                           c.yarn->originalMaxPositionEmbeddings,
                           APFloat(c.yarn->betaFast), APFloat(c.yarn->betaSlow),
                           APFloat(c.yarn->mscale),
                           APFloat(c.yarn->mscaleAllDim));
    rope = RoPEConfigAttr::get(ctx, APFloat(c.ropeTheta), yarn);
    if (c.routedExperts > 0)
      moe = MoEConfigAttr::get(
          ctx, c.routedExperts, c.sharedExperts, c.expertsPerToken,
          c.moeIntermediateSize,
          c.scoringFunc == "sigmoid" ? ScoringFunc::sigmoid
                                     : ScoringFunc::softmax,
          *symbolizeTopkMethod(c.topkMethod), c.nGroup, c.topkGroup,
          c.normTopkProb, APFloat(c.routedScalingFactor));
  }

  OwningOpRef<ModuleOp> build() {
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
    if (c.fp8Block)
      (*module)->setAttr(DSDialect::kQuantizationAttrName,
                         FP8QuantAttr::get(ctx, {c.fp8Block->first,
                                                 c.fp8Block->second}));
    b.setInsertionPointToEnd(module->getBody());
    buildWeights();
    buildForward();
    for (int64_t k = 1; k <= c.numNextnPredictLayers; ++k)
      buildMTP(k);
    return module;
  }

private:
  //===--------------------------------------------------------------------===//
  // Weights.
  //===--------------------------------------------------------------------===//

  void weight(const Twine &name, ArrayRef<int64_t> shape,
              bool quantizable = false, Type elt = {}) {
    bool fp8 = quantizable && c.fp8Block;
    if (!elt)
      elt = fp8 ? Type(b.getType<Float8E4M3FNType>()) : floatType;
    std::string n = name.str();
    WeightOp::create(b, at("", n), n, RankedTensorType::get(shape, elt));
    if (fp8) {
      int64_t rows = llvm::divideCeil(shape[0], c.fp8Block->first);
      int64_t cols = llvm::divideCeil(shape[1], c.fp8Block->second);
      WeightOp::create(b, at("", n + std::string(kScaleSuffix)),
                       n + std::string(kScaleSuffix),
                       RankedTensorType::get({rows, cols}, b.getF32Type()));
    }
  }

  void swigluWeights(const Twine &prefix, int64_t inter) {
    int64_t h = c.hiddenSize;
    weight(prefix + ".down_proj.weight", {h, inter}, true);
    weight(prefix + ".gate_proj.weight", {inter, h}, true);
    weight(prefix + ".up_proj.weight", {inter, h}, true);
  }

  void layerWeights(int64_t layer) {
    std::string p = "model.layers." + std::to_string(layer);
    int64_t h = c.hiddenSize, heads = c.numHeads;
    int64_t qHead = c.qkNopeHeadDim + c.qkRopeHeadDim;
    weight(p + ".input_layernorm.weight", {h});
    if (c.isMoELayer(layer)) {
      int64_t e = c.routedExperts;
      weight(p + ".mlp.gate.weight", {e, h});
      if (c.topkMethod == "noaux_tc")
        weight(p + ".mlp.gate.e_score_correction_bias", {e}, false,
               b.getF32Type());
      for (int64_t j = 0; j < e; ++j)
        swigluWeights(p + ".mlp.experts." + Twine(j), c.moeIntermediateSize);
      if (c.sharedExperts > 0)
        swigluWeights(p + ".mlp.shared_experts",
                      c.sharedExperts * c.moeIntermediateSize);
    } else {
      swigluWeights(p + ".mlp", c.intermediateSize);
    }
    weight(p + ".post_attention_layernorm.weight", {h});
    std::string a = p + ".self_attn";
    weight(a + ".kv_a_layernorm.weight", {c.kvLoraRank});
    weight(a + ".kv_a_proj_with_mqa.weight",
           {c.kvLoraRank + c.qkRopeHeadDim, h}, true);
    weight(a + ".kv_b_proj.weight",
           {heads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank}, true);
    weight(a + ".o_proj.weight", {h, heads * c.vHeadDim}, true);
    if (c.qLoraRank > 0) {
      weight(a + ".q_a_layernorm.weight", {c.qLoraRank});
      weight(a + ".q_a_proj.weight", {c.qLoraRank, h}, true);
      weight(a + ".q_b_proj.weight", {heads * qHead, c.qLoraRank}, true);
    } else {
      weight(a + ".q_proj.weight", {heads * qHead, h}, true);
    }
  }

  void buildWeights() {
    int64_t h = c.hiddenSize, v = c.vocabSize;
    weight("model.embed_tokens.weight", {v, h});
    for (int64_t i = 0; i < c.numLayers; ++i)
      layerWeights(i);
    weight("model.norm.weight", {h});
    if (!c.tieWordEmbeddings)
      weight("lm_head.weight", {v, h});
    for (int64_t k = 1; k <= c.numNextnPredictLayers; ++k) {
      int64_t layer = c.numLayers + k - 1;
      std::string p = "model.layers." + std::to_string(layer);
      // The published V3 checkpoint stores the MTP module's own copies of
      // the embedding and output head.
      weight(p + ".embed_tokens.weight", {v, h});
      weight(p + ".enorm.weight", {h});
      weight(p + ".hnorm.weight", {h});
      weight(p + ".eh_proj.weight", {h, 2 * h});
      layerWeights(layer);
      weight(p + ".shared_head.norm.weight", {h});
      weight(p + ".shared_head.head.weight", {v, h});
    }
  }

  //===--------------------------------------------------------------------===//
  // Functions
  //===--------------------------------------------------------------------===//

  /// Where an op comes from: its checkpoint name, at the config field that
  /// sizes it (so a diagnostic about the op shows that line of the file).
  Location at(StringRef field, const Twine &name) {
    return NameLoc::get(b.getStringAttr(name), fieldLoc(field));
  }

  /// The first `"field":` of the config text, else the file itself (also
  /// for no field).
  Location fieldLoc(StringRef field) {
    if (file.empty() || field.empty())
      return loc;
    std::string key = ("\"" + field + "\"").str();
    for (size_t at = json.find(key); at != StringRef::npos;
         at = json.find(key, at + 1)) {
      if (!json.drop_front(at + key.size()).ltrim().starts_with(":"))
        continue;
      StringRef before = json.take_front(at);
      unsigned line = 1 + unsigned(before.count('\n'));
      unsigned col = 1 + unsigned(at - (before.rfind('\n') + 1));
      return FileLineColLoc::get(ctx, file, line, col);
    }
    return loc;
  }

  FlatSymbolRefAttr sym(const Twine &name) {
    return FlatSymbolRefAttr::get(ctx, name.str());
  }

  Value rmsNorm(Value x, const Twine &weightName) {
    return RMSNormOp::create(b, at("rms_norm_eps", weightName), x.getType(), x,
                             sym(weightName), b.getF64FloatAttr(c.rmsNormEps));
  }

  /// One pre-norm transformer block: x + attn(norm(x)), then + ffn(norm(.)).
  Value decoderLayer(Value x, Value positions, int64_t layer) {
    std::string p = "model.layers." + std::to_string(layer);
    Value n = rmsNorm(x, p + ".input_layernorm.weight");
    Value a = MLAOp::create(b, at("num_attention_heads", p + ".self_attn"), act,
                            n, positions, b.getStringAttr(p + ".self_attn"),
                            mla, rope, b.getF64FloatAttr(1e-6));
    x = arith::AddFOp::create(b, at("hidden_size", p), x, a);
    n = rmsNorm(x, p + ".post_attention_layernorm.weight");
    Value f;
    if (c.isMoELayer(layer))
      f = MoEOp::create(b, at("n_routed_experts", p + ".mlp"), act, n,
                        b.getStringAttr(p + ".mlp"), moe);
    else
      f = MLPOp::create(b, at("intermediate_size", p + ".mlp"), act, n,
                        b.getStringAttr(p + ".mlp"),
                        b.getI64IntegerAttr(c.intermediateSize));
    return arith::AddFOp::create(b, at("hidden_size", p), x, f);
  }

  void buildForward() {
    auto fn = func::FuncOp::create(
        b, at("num_hidden_layers", "forward"), "forward",
        b.getFunctionType({idsType, idsType}, {logitsType, act}));
    OpBuilder::InsertionGuard guard(b);
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    Value ids = entry->getArgument(0), positions = entry->getArgument(1);
    Value x = EmbeddingOp::create(b, at("vocab_size", "model.embed_tokens"),
                                  act, ids, sym("model.embed_tokens.weight"));
    for (int64_t i = 0; i < c.numLayers; ++i)
      x = decoderLayer(x, positions, i);
    Value hidden = rmsNorm(x, "model.norm.weight");
    Value logits =
        LMHeadOp::create(b, at("vocab_size", "lm_head"), logitsType, hidden,
                         sym(c.tieWordEmbeddings ? "model.embed_tokens.weight"
                                                 : "lm_head.weight"));
    func::ReturnOp::create(b, loc, ValueRange{logits, hidden});
  }

  /// @mtp_<k>(hidden, ids, positions) -> (logits, hidden): MTP module k, fed
  /// the previous module's hidden state and the tokens k steps ahead.
  void buildMTP(int64_t k) {
    int64_t layer = c.numLayers + k - 1;
    std::string p = "model.layers." + std::to_string(layer);
    auto fn = func::FuncOp::create(
        b, at("num_nextn_predict_layers", "mtp_" + std::to_string(k)),
        "mtp_" + std::to_string(k),
        b.getFunctionType({act, idsType, idsType}, {logitsType, act}));
    OpBuilder::InsertionGuard guard(b);
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    auto mtp =
        MTPOp::create(b, at("num_nextn_predict_layers", p), logitsType,
                      entry->getArgument(0), entry->getArgument(1),
                      entry->getArgument(2), p, k, p + ".embed_tokens.weight",
                      p + ".shared_head.head.weight", c.rmsNormEps);
    {
      OpBuilder::InsertionGuard inner(b);
      Block &body = mtp.getBody().front();
      b.setInsertionPointToStart(&body);
      Value y = decoderLayer(body.getArgument(0), body.getArgument(1), layer);
      YieldOp::create(b, loc, ValueRange{y});
    }
    func::ReturnOp::create(b, loc, mtp.getResults());
  }

  const ModelConfig &c;
  MLIRContext *ctx;
  OpBuilder b;
  StringRef file, json;
  Location loc;
  Type floatType;
  RankedTensorType act, logitsType, idsType;
  MLAConfigAttr mla;
  RoPEConfigAttr rope;
  MoEConfigAttr moe;
};

} // namespace

OwningOpRef<ModuleOp> ds::buildModel(const ModelConfig &config,
                                     MLIRContext *context, StringRef file,
                                     StringRef json) {
  return ModelBuilder(config, context, file, json).build();
}
