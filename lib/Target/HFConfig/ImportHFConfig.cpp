//===- ImportHFConfig.cpp - config.json -> ModelConfig --------------------===//
//
// Absent fields take the defaults of transformers' DeepseekV3Config /
// DeepseekV2Config; fields that do not change the computation (architectures,
// token ids, use_cache, ...) are ignored. Every rejection names its field.
//
//===----------------------------------------------------------------------===//

#include "ds/Target/HFConfig.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

using namespace ds;
using llvm::json::Object;
using llvm::json::Value;

namespace {

/// Field accessors that record the first error, naming the field.
class Reader {
public:
  Reader(const Object &obj, std::string &error) : obj(obj), error(error) {}

  bool failed() const { return !error.empty(); }

  bool fail(llvm::StringRef field, const llvm::Twine &msg) {
    if (error.empty())
      error = llvm::formatv("field '{0}': {1}", field, msg.str()).str();
    return false;
  }

  /// A JSON null counts as absent.
  const Value *find(llvm::StringRef field) const {
    const Value *v = obj.get(field);
    return v && v->kind() != Value::Null ? v : nullptr;
  }

  int64_t integer(llvm::StringRef field, std::optional<int64_t> dflt,
                  int64_t min) {
    const Value *v = find(field);
    if (!v) {
      if (!dflt)
        fail(field, "missing (required, no default)");
      return dflt.value_or(min);
    }
    std::optional<int64_t> i = v->getAsInteger();
    if (!i) {
      fail(field, "expected an integer");
      return min;
    }
    if (*i < min)
      fail(field, llvm::formatv("must be >= {0}, got {1}", min, *i));
    return *i;
  }

  double number(llvm::StringRef field, double dflt, bool positive = true) {
    const Value *v = find(field);
    if (!v)
      return dflt;
    std::optional<double> d = v->getAsNumber();
    if (!d) {
      fail(field, "expected a number");
      return dflt;
    }
    if (positive && !(*d > 0))
      fail(field, llvm::formatv("must be positive, got {0}", *d));
    return *d;
  }

  bool boolean(llvm::StringRef field, bool dflt) {
    const Value *v = find(field);
    if (!v)
      return dflt;
    if (std::optional<bool> b = v->getAsBoolean())
      return *b;
    fail(field, "expected true or false");
    return dflt;
  }

  std::string string(llvm::StringRef field, llvm::StringRef dflt,
                     llvm::ArrayRef<llvm::StringRef> allowed) {
    const Value *v = find(field);
    if (!v)
      return dflt.str();
    std::optional<llvm::StringRef> s = v->getAsString();
    if (!s) {
      fail(field, "expected a string");
      return dflt.str();
    }
    if (!allowed.empty() && !llvm::is_contained(allowed, *s)) {
      std::string list;
      llvm::raw_string_ostream os(list);
      llvm::interleave(allowed, os, [&](llvm::StringRef a) { os << "'" << a << "'"; }, ", ");
      fail(field, llvm::formatv("unsupported value '{0}' (supported: {1})", *s,
                                list));
    }
    return s->str();
  }

  const Object *object(llvm::StringRef field) {
    const Value *v = find(field);
    if (!v)
      return nullptr;
    if (const Object *o = v->getAsObject())
      return o;
    fail(field, "expected an object or null");
    return nullptr;
  }

private:
  const Object &obj;
  std::string &error;
};

/// Defaults of transformers' configuration classes where they differ by
/// model_type.
struct Defaults {
  int64_t vocab, hidden, inter, moeInter, layers, heads, qLora;
  std::optional<int64_t> routed, shared, perTok, nGroup, topkGroup;
  int64_t firstDense;
  bool normTopk;
  double scale;
  const char *scoring, *topk;
};

constexpr Defaults kV3Defaults = {129280, 7168, 18432, 2048, 61, 128, 1536,
                                  256, 1, 8, 8, 4, 3, true, 2.5,
                                  "sigmoid", "noaux_tc"};
constexpr Defaults kV2Defaults = {102400, 4096, 11008, 1407, 30, 32, 1536,
                                  std::nullopt, std::nullopt, std::nullopt,
                                  std::nullopt, std::nullopt, 0, false, 1.0,
                                  "softmax", "greedy"};

} // namespace

static void parseRopeScaling(Reader &r, const Object *rs, ModelConfig &c,
                             std::string &error) {
  if (!rs)
    return;
  std::string sub;
  Reader y(*rs, sub);
  // transformers accepts both spellings of the type key.
  llvm::StringRef typeKey = y.find("rope_type") ? "rope_type" : "type";
  std::string type = y.string(typeKey, "", {"yarn"});
  if (type.empty())
    y.fail(typeKey, "missing");
  ModelConfig::YaRN yarn;
  yarn.factor = y.number("factor", 1.0);
  yarn.originalMaxPositionEmbeddings =
      y.integer("original_max_position_embeddings", 4096, 1);
  yarn.betaFast = y.number("beta_fast", 32.0);
  yarn.betaSlow = y.number("beta_slow", 1.0);
  yarn.mscale = y.number("mscale", 1.0, /*positive=*/false);
  yarn.mscaleAllDim = y.number("mscale_all_dim", 0.0, /*positive=*/false);
  if (!y.failed() && yarn.factor < 1.0)
    y.fail("factor", llvm::formatv("must be >= 1, got {0}", yarn.factor));
  if (!y.failed() && yarn.betaFast <= yarn.betaSlow)
    y.fail("beta_fast", "must exceed beta_slow");
  if (!sub.empty()) {
    r.fail("rope_scaling", sub);
    return;
  }
  c.yarn = yarn;
}

static void parseQuantization(Reader &r, const Object *q, ModelConfig &c) {
  if (!q)
    return;
  std::string sub;
  Reader qr(*q, sub);
  qr.string("quant_method", "", {"fp8"});
  if (!qr.find("quant_method"))
    qr.fail("quant_method", "missing");
  qr.string("fmt", "e4m3", {"e4m3"});
  qr.string("activation_scheme", "dynamic", {"dynamic"});
  std::pair<int64_t, int64_t> block = {128, 128};
  if (const Value *b = qr.find("weight_block_size")) {
    const llvm::json::Array *a = b->getAsArray();
    std::optional<int64_t> r0, r1;
    if (a && a->size() == 2) {
      r0 = (*a)[0].getAsInteger();
      r1 = (*a)[1].getAsInteger();
    }
    if (!r0 || !r1 || *r0 <= 0 || *r1 <= 0)
      qr.fail("weight_block_size", "expected two positive integers");
    else
      block = {*r0, *r1};
  }
  if (!sub.empty()) {
    r.fail("quantization_config", sub);
    return;
  }
  c.fp8Block = block;
}

std::optional<ModelConfig> ds::parseHFConfig(llvm::StringRef json,
                                             std::string &error) {
  error.clear();
  llvm::Expected<Value> parsed = llvm::json::parse(json);
  if (!parsed) {
    error = "invalid JSON: " + llvm::toString(parsed.takeError());
    return std::nullopt;
  }
  const Object *obj = parsed->getAsObject();
  if (!obj) {
    error = "invalid config: the top level is not a JSON object";
    return std::nullopt;
  }
  Reader r(*obj, error);
  ModelConfig c;
  c.modelType = r.string("model_type", "", {"deepseek_v3", "deepseek_v2"});
  if (!r.find("model_type"))
    r.fail("model_type", "missing (required: deepseek_v3 or deepseek_v2)");
  if (r.failed())
    return std::nullopt;
  const Defaults &d = c.modelType == "deepseek_v3" ? kV3Defaults : kV2Defaults;

  c.vocabSize = r.integer("vocab_size", d.vocab, 1);
  c.hiddenSize = r.integer("hidden_size", d.hidden, 1);
  c.intermediateSize = r.integer("intermediate_size", d.inter, 1);
  c.numLayers = r.integer("num_hidden_layers", d.layers, 1);
  c.numHeads = r.integer("num_attention_heads", d.heads, 1);
  c.qLoraRank = r.find("q_lora_rank") ? r.integer("q_lora_rank", 0, 1)
                : obj->get("q_lora_rank") ? 0 // explicit null: no q LoRA
                                          : d.qLora;
  c.kvLoraRank = r.integer("kv_lora_rank", 512, 1);
  c.qkNopeHeadDim = r.integer("qk_nope_head_dim", 128, 1);
  c.qkRopeHeadDim = r.integer("qk_rope_head_dim", 64, 1);
  c.vHeadDim = r.integer("v_head_dim", 128, 1);
  r.string("hidden_act", "silu", {"silu"});
  if (r.boolean("attention_bias", false))
    r.fail("attention_bias", "true is not supported (no DeepSeek checkpoint "
                             "has attention biases)");

  c.routedExperts = r.integer("n_routed_experts", d.routed.value_or(0), 0);
  if (c.routedExperts > 0) {
    c.sharedExperts = r.integer("n_shared_experts", d.shared.value_or(0), 0);
    c.expertsPerToken = r.integer("num_experts_per_tok", d.perTok, 1);
    c.moeIntermediateSize = r.integer("moe_intermediate_size", d.moeInter, 1);
    c.nGroup = r.integer("n_group", d.nGroup.value_or(1), 1);
    c.topkGroup = r.integer("topk_group", d.topkGroup.value_or(1), 1);
    c.firstKDenseReplace = r.integer("first_k_dense_replace", d.firstDense, 0);
    c.moeLayerFreq = r.integer("moe_layer_freq", 1, 1);
    c.scoringFunc = r.string("scoring_func", d.scoring, {"sigmoid", "softmax"});
    c.topkMethod = r.string("topk_method", d.topk,
                            {"greedy", "group_limited_greedy", "noaux_tc"});
    c.normTopkProb = r.boolean("norm_topk_prob", d.normTopk);
    c.routedScalingFactor = r.number("routed_scaling_factor", d.scale);
  }
  c.ropeTheta = r.number("rope_theta", 10000.0);
  parseRopeScaling(r, r.object("rope_scaling"), c, error);
  c.rmsNormEps = r.number("rms_norm_eps", 1e-6);
  c.tieWordEmbeddings = r.boolean("tie_word_embeddings", false);
  c.numNextnPredictLayers = r.integer("num_nextn_predict_layers", 0, 0);
  c.torchDtype =
      r.string("torch_dtype", "bfloat16", {"bfloat16", "float16", "float32"});
  parseQuantization(r, r.object("quantization_config"), c);
  if (r.failed())
    return std::nullopt;

  // Consistency between fields.
  if (c.qkRopeHeadDim % 2 != 0)
    r.fail("qk_rope_head_dim",
           llvm::formatv("must be even (RoPE rotates pairs), got {0}",
                         c.qkRopeHeadDim));
  if (c.routedExperts > 0) {
    if (c.expertsPerToken > c.routedExperts)
      r.fail("num_experts_per_tok",
             llvm::formatv("{0} exceeds n_routed_experts ({1})",
                           c.expertsPerToken, c.routedExperts));
    if (c.routedExperts % c.nGroup != 0)
      r.fail("n_group", llvm::formatv("n_routed_experts ({0}) is not divisible "
                                      "by n_group ({1})",
                                      c.routedExperts, c.nGroup));
    if (c.topkGroup > c.nGroup)
      r.fail("topk_group", llvm::formatv("{0} exceeds n_group ({1})",
                                         c.topkGroup, c.nGroup));
    int64_t perGroup = c.routedExperts / std::max<int64_t>(c.nGroup, 1);
    if (c.topkMethod == "noaux_tc" && perGroup < 2)
      r.fail("n_group", "noaux_tc scores groups by their top-2 experts, so "
                        "each group needs at least 2");
    if (c.topkMethod != "greedy" &&
        c.expertsPerToken > c.topkGroup * perGroup)
      r.fail("num_experts_per_tok",
             llvm::formatv("{0} exceeds the {1} experts of the topk_group "
                           "kept groups",
                           c.expertsPerToken, c.topkGroup * perGroup));
  }
  if (c.fp8Block && c.torchDtype == "float32")
    r.fail("quantization_config", "FP8 weights need torch_dtype bfloat16 or "
                                  "float16 for the unquantized tensors");
  if (r.failed())
    return std::nullopt;
  return c;
}

mlir::OwningOpRef<mlir::ModuleOp> ds::importHFConfig(llvm::StringRef path,
                                                     mlir::MLIRContext *context,
                                                     std::string &error) {
  llvm::SmallString<256> file(path);
  if (llvm::sys::fs::is_directory(file))
    llvm::sys::path::append(file, "config.json");
  auto buffer = llvm::MemoryBuffer::getFile(file, /*IsText=*/true);
  if (!buffer) {
    error = (file + ": cannot read: " + buffer.getError().message()).str();
    return nullptr;
  }
  std::optional<ModelConfig> config = parseHFConfig((*buffer)->getBuffer(), error);
  if (!config) {
    error = (file + ": " + error).str();
    return nullptr;
  }
  return buildModel(*config, context, file, (*buffer)->getBuffer());
}
