//===- DSAttrs.td - ds configuration attributes ------------*- tablegen -*-===//
//
// Typed configuration attributes. Each verifies its own invariants, so an
// inconsistent configuration is a diagnostic wherever it appears.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECT_DS_IR_DSATTRS_TD
#define DS_DIALECT_DS_IR_DSATTRS_TD

include "ds/Dialect/DS/IR/DSDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def DS_ScoringFunc : I32EnumAttr<"ScoringFunc", "MoE router scoring function", [
    I32EnumAttrCase<"sigmoid", 0>,
    I32EnumAttrCase<"softmax", 1>]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}
def DS_ScoringFuncAttr : EnumAttr<DS_Dialect, DS_ScoringFunc, "scoring">;

def DS_TopkMethod : I32EnumAttr<"TopkMethod", "MoE expert selection method", [
    I32EnumAttrCase<"greedy", 0>,
    I32EnumAttrCase<"group_limited_greedy", 1>,
    I32EnumAttrCase<"noaux_tc", 2>]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}
def DS_TopkMethodAttr : EnumAttr<DS_Dialect, DS_TopkMethod, "topk_method">;

def DS_MeshAxis : I32EnumAttr<"MeshAxis", "an axis of the device mesh", [
    I32EnumAttrCase<"tp", 0>,
    I32EnumAttrCase<"ep", 1>,
    I32EnumAttrCase<"pp", 2>,
    I32EnumAttrCase<"dp", 3>]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}
def DS_MeshAxisAttr : EnumAttr<DS_Dialect, DS_MeshAxis, "axis"> {
  let assemblyFormat = "`<` $value `>`";
}

// A float printed in shortest round-trip form (`2.5`, `1.0e-06`).
class DS_FloatParameter<string desc> : APFloatParameter<desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::APFloat> {
    double value;
    if (::mlir::failed($_parser.parseFloat(value)))
      return ::mlir::failure();
    return ::llvm::APFloat(value);
  }() }];
  let printer = [{ ::ds::printFloatParameter($_printer, $_self) }];
}

class DS_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<DS_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// MLA
//===----------------------------------------------------------------------===//

def DS_MLAConfigAttr : DS_Attr<"MLAConfig", "mla"> {
  let summary = "Multi-head Latent Attention configuration";
  let description = [{
    `heads` attention heads; queries go through a LoRA of rank `q_lora_rank`
    (0: a plain `q_proj`); keys and values are compressed to a latent of
    `kv_lora_rank` plus one shared RoPE key of `qk_rope` dims. Each head's
    query/key is `qk_nope` (no position) + `qk_rope` (rotated) dims, its value
    `v_head` dims. Field names follow `config.json` (`q_lora_rank`,
    `kv_lora_rank`, `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`).

    Example: `#ds.mla<heads = 128, q_lora_rank = 1536, kv_lora_rank = 512,
    qk_nope = 128, qk_rope = 64, v_head = 128>` (DeepSeek-V3).
  }];
  let parameters = (ins "int64_t":$heads, "int64_t":$q_lora_rank,
                        "int64_t":$kv_lora_rank, "int64_t":$qk_nope,
                        "int64_t":$qk_rope, "int64_t":$v_head);
  let extraClassDeclaration = [{
    int64_t getQHeadDim() const { return getQkNope() + getQkRope(); }
  }];
}

//===----------------------------------------------------------------------===//
// MoE
//===----------------------------------------------------------------------===//

def DS_MoEConfigAttr : DS_Attr<"MoEConfig", "moe"> {
  let summary = "DeepSeekMoE configuration";
  let description = [{
    `experts` routed experts of intermediate size `inter`, of which `top_k`
    are chosen per token, plus `shared` always-active shared experts (fused
    into one MLP of intermediate size `shared * inter`, as the checkpoints
    store them).

    Routing: scores are `scoring(x . gate^T)`. `topk_method` selects:
    - `greedy`: plain top-k over all experts;
    - `group_limited_greedy` (V2): experts form `n_group` groups scored by
      their max; only the best `topk_group` groups compete;
    - `noaux_tc` (V3): the `e_score_correction_bias` is added for selection
      only, and groups are scored by the sum of their top-2 biased scores.
    Routing weights are the unbiased scores of the chosen experts,
    renormalized when `norm_topk`, times `scale` (`routed_scaling_factor`).

    Example: `#ds.moe<experts = 256, shared = 1, top_k = 8, inter = 2048,
    scoring = sigmoid, topk_method = noaux_tc, n_group = 8, topk_group = 4,
    norm_topk = true, scale = 2.5>` (DeepSeek-V3).
  }];
  let parameters = (ins "int64_t":$experts, "int64_t":$shared,
                        "int64_t":$top_k, "int64_t":$inter,
                        "ScoringFunc":$scoring, "TopkMethod":$topk_method,
                        "int64_t":$n_group, "int64_t":$topk_group,
                        "bool":$norm_topk, DS_FloatParameter<"routed_scaling_factor">:$scale);
  let extraClassDeclaration = [{
    /// Elements of one routed expert (gate, up and down projections).
    int64_t getExpertParams(int64_t hidden) const {
      return 3 * hidden * getInter();
    }
  }];
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

def DS_YaRNAttr : DS_Attr<"YaRN", "yarn"> {
  let summary = "YaRN rope scaling (`rope_scaling.type = yarn`)";
  let description = [{
    The fields of `config.json`'s `rope_scaling` for YaRN. Frequencies are
    interpolated by `factor` with a linear ramp between the correction dims of
    `beta_fast` and `beta_slow` over `original_max_position_embeddings`; the
    attention softmax scale is multiplied by `m^2` with
    `m = 0.1 * mscale_all_dim * ln(factor) + 1`.
  }];
  let parameters = (ins DS_FloatParameter<"factor">:$factor,
                        "int64_t":$original_max_position_embeddings,
                        DS_FloatParameter<"beta_fast">:$beta_fast,
                        DS_FloatParameter<"beta_slow">:$beta_slow,
                        DS_FloatParameter<"mscale">:$mscale,
                        DS_FloatParameter<"mscale">:$mscale_all_dim);
}

def DS_RoPEConfigAttr : DS_Attr<"RoPEConfig", "rope"> {
  let summary = "rotary position embedding configuration";
  let description = [{
    Rotary embedding with base `theta` on interleaved pairs (2i, 2i+1) of the
    rotated dims, optionally with YaRN scaling.

    Examples: `#ds.rope<theta = 10000.0>`,
    `#ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 40.0,
    original_max_position_embeddings = 4096, beta_fast = 32.0,
    beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>`.
  }];
  let parameters = (ins DS_FloatParameter<"theta">:$theta,
                        OptionalParameter<"YaRNAttr">:$yarn);
}

//===----------------------------------------------------------------------===//
// MTP
//===----------------------------------------------------------------------===//

def DS_MTPConfigAttr : DS_Attr<"MTPConfig", "mtp"> {
  let summary = "Multi-Token Prediction module configuration";
  let description = [{
    `depth` is the module's position k >= 1 in the MTP chain: module k
    predicts token i + k + 1 from the hidden state of module k - 1 (module 0
    is the main model) and the embedding of token i + k. Its checkpoint
    layer index is `num_hidden_layers + k - 1`.
  }];
  let parameters = (ins "int64_t":$depth);
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def DS_FP8QuantAttr : DS_Attr<"FP8Quant", "fp8"> {
  let summary = "FP8 e4m3 block quantization of weights";
  let description = [{
    Weights in `f8E4M3FN` with one f32 `weight_scale_inv` per `block` (rows x
    columns) tile, as `quantization_config` of DeepSeek-V3 describes
    (`quant_method = fp8`, `fmt = e4m3`, `weight_block_size = [128, 128]`).
    Dimensions that are not multiples of the block are covered by a partial
    last block: the scale tensor of an `[N, K]` weight is
    `[ceildiv(N, block[0]), ceildiv(K, block[1])]`.
  }];
  let parameters = (ins ArrayRefParameter<"int64_t">:$block);
  let assemblyFormat = "`<` `block` `=` `[` $block `]` `>`";
}

//===----------------------------------------------------------------------===//
// Parallelism
//===----------------------------------------------------------------------===//

def DS_PlanAttr : DS_Attr<"Plan", "plan"> {
  let summary = "the device mesh a model is partitioned over";
  let description = [{
    Module attribute `ds.plan`: `tp * ep * pp * dp` ranks, rank
    `((pp_i * dp + dp_i) * ep + ep_i) * tp + tp_i` (tensor-parallel ranks
    adjacent). `tp` splits attention heads, MLP and expert intermediates and
    the vocabulary; `ep` splits the routed experts (attention is replicated
    over it); `pp` splits the layers into stages; `dp` makes independent
    replicas. See docs/parallelism.md.

    Example: `#ds.plan<tp = 2, ep = 2, pp = 1, dp = 1>`.
  }];
  let parameters = (ins "int64_t":$tp, "int64_t":$ep, "int64_t":$pp,
                        "int64_t":$dp);
  let extraClassDeclaration = [{
    int64_t getRanks() const { return getTp() * getEp() * getPp() * getDp(); }
    int64_t getSize(::ds::MeshAxis axis) const;
  }];
}

def DS_ShardAttr : DS_Attr<"Shard", "shard"> {
  let summary = "how a weight is split over one mesh axis";
  let description = [{
    On `ds.weight` (`shards = [...]`), set by the partition passes. With
    `dim = d` the tensor is split evenly along dimension d over the `axis`
    ranks: the weight's type is one rank's slice, and rank `i` of the axis
    reads rows (d = 0) or columns (d = 1) `[i * s, (i + 1) * s)` of the
    checkpoint tensor, `s` the slice's size. With `owner = k` only the ranks
    at coordinate k of `axis` hold the tensor (routed experts under EP,
    layers under PP).
  }];
  let parameters = (ins "::ds::MeshAxis":$axis,
                        DefaultValuedParameter<"int64_t", "-1">:$dim,
                        DefaultValuedParameter<"int64_t", "-1">:$owner);
}

#endif // DS_DIALECT_DS_IR_DSATTRS_TD
