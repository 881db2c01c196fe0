//===- DSOps.td - ds operations ----------------------------*- tablegen -*-===//

#ifndef DS_DIALECT_DS_IR_DSOPS_TD
#define DS_DIALECT_DS_IR_DSOPS_TD

include "ds/Dialect/DS/IR/DSDialect.td"
include "ds/Dialect/DS/IR/DSAttrs.td"
include "ds/Dialect/DS/IR/DSInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def DS_Activation : RankedTensorOf<[AnyFloat]>;
def DS_TokenIds : 1DTensorOf<[AnySignlessInteger]>;
def DS_Positions : 1DTensorOf<[AnySignlessInteger]>;

// Ops that read weights verify them against the module's ds.weight symbols.
class DS_WeightUserOp<string mnemonic, list<Trait> traits = []>
    : DS_Op<mnemonic, traits # [Pure,
        DeclareOpInterfaceMethods<DS_WeightUserInterface>,
        DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def DS_WeightOp : DS_Op<"weight", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "a checkpoint tensor";
  let description = [{
    A tensor of the checkpoint, named exactly as in the Hugging Face
    safetensors files. Its type is the shape and dtype stored there:
    `f32`, `bf16`, `f16`, or `f8E4M3FN` (FP8 checkpoints, with an f32
    `weight_scale_inv` companion; see `#ds.fp8`).

    ```mlir
    ds.weight @"model.layers.0.self_attn.kv_b_proj.weight" : tensor<4096x512xbf16>
    ```

    After partitioning, `shards` (`#ds.shard`) says which part of the
    checkpoint tensor each rank holds, and the type is one rank's part.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<AnyStaticShapeTensor>:$type,
                       OptionalAttr<TypedArrayAttrBase<DS_ShardAttr,
                           "weight shards">>:$shards);
  let assemblyFormat = "$sym_name attr-dict `:` $type";
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$symName, "::mlir::RankedTensorType":$type), [{
      build($_builder, $_state, $_builder.getStringAttr(symName),
            ::mlir::TypeAttr::get(type), ::mlir::ArrayAttr());
    }]>
  ];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
    /// Number of elements.
    int64_t getNumElements() { return getTensorType().getNumElements(); }
  }];
}

//===----------------------------------------------------------------------===//
// Primitives
//===----------------------------------------------------------------------===//

def DS_EmbeddingOp : DS_WeightUserOp<"embedding"> {
  let summary = "token embedding lookup";
  let description = [{
    Gathers rows of the `[vocab, hidden]` table `weight` for `ids`.

    ```mlir
    %h = ds.embedding %ids, @"model.embed_tokens.weight" : (tensor<?xi32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_TokenIds:$ids, FlatSymbolRefAttr:$weight);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$ids `,` $weight attr-dict `:` functional-type($ids, $result)";
}

def DS_RMSNormOp : DS_WeightUserOp<"rms_norm", [SameOperandsAndResultType]> {
  let summary = "RMSNorm over the last dimension, computed in float32";
  let description = [{
    `y = x / sqrt(mean(x^2) + eps) * weight`, the reduction in float32.

    ```mlir
    %y = ds.rms_norm %x, @"model.norm.weight" {eps = 1.0e-06 : f64} : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, FlatSymbolRefAttr:$weight,
                       DefaultValuedAttr<F64Attr, "1e-6">:$eps);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($input)";
}

def DS_LinearOp : DS_WeightUserOp<"linear"> {
  let summary = "y = x W^T with W in the checkpoint's [out, in] layout";
  let description = [{
    ```mlir
    %y = ds.linear %x, @"model.layers.0.mlp.up_proj.weight" : (tensor<?x64xf32>) -> tensor<?x128xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, FlatSymbolRefAttr:$weight);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type($input, $result)";
}

def DS_RoPEOp : DS_Op<"rope", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "rotary position embedding on interleaved pairs";
  let description = [{
    Rotates the last dimension of `[tokens, heads, dim]` by each token's
    position, treating dims (2i, 2i+1) as one complex number, as DeepSeek's
    reference code and the HF-format checkpoints do. `dim` must be even.

    ```mlir
    %y = ds.rope %x, %pos {config = #ds.rope<theta = 10000.0>} : tensor<?x4x16xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, DS_Positions:$positions,
                       DS_RoPEConfigAttr:$config);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input `,` $positions attr-dict `:` type($input) `,` type($positions)";
  let hasVerifier = 1;
}

def DS_AttentionOp : DS_Op<"attention", [Pure]> {
  let summary = "causal multi-head / grouped-query attention";
  let description = [{
    `q: [tokens, Hq, D]`, `k: [tokens, Hkv, D]`, `v: [tokens, Hkv, Dv]` with
    `Hq % Hkv == 0` (MHA when equal, GQA/MQA otherwise). Query head h reads
    key/value head `h / (Hq / Hkv)`. Softmax scale `scale` (default
    `1/sqrt(D)`); causal unless `causal = false`; with `window = W`, token i
    attends only to tokens j with `i - W < j <= i` (sliding window).

    ```mlir
    %o = ds.attention %q, %k, %v {window = 128 : i64} : tensor<?x8x32xf32>, tensor<?x2x32xf32>, tensor<?x2x32xf32> -> tensor<?x8x32xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$query, DS_Activation:$key,
                       DS_Activation:$value,
                       DefaultValuedAttr<BoolAttr, "true">:$causal,
                       OptionalAttr<F64Attr>:$scale,
                       OptionalAttr<I64Attr>:$window);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value attr-dict `:` type($query) `,` type($key) `,`
    type($value) `->` type($result)
  }];
  let hasVerifier = 1;
}

def DS_LMHeadOp : DS_WeightUserOp<"lm_head"> {
  let summary = "output projection to vocabulary logits";
  let description = [{
    `logits = x W^T` with `W: [vocab, hidden]`; with tied embeddings `weight`
    is the embedding table.

    ```mlir
    %logits = ds.lm_head %h, @"lm_head.weight" : (tensor<?x64xf32>) -> tensor<?x1024xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, FlatSymbolRefAttr:$weight);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` functional-type($input, $result)";
}

//===----------------------------------------------------------------------===//
// DeepSeek building blocks
//===----------------------------------------------------------------------===//

def DS_MLAOp : DS_WeightUserOp<"mla", [AllTypesMatch<["input", "result"]>]> {
  let summary = "Multi-head Latent Attention";
  let description = [{
    DeepSeek-V2/V3 attention with a low-rank key/value latent, causal over the
    tokens of `input` at `positions`. Weights under `prefix`
    (`model.layers.N.self_attn`), as in the checkpoint:
    `q_a_proj`, `q_a_layernorm`, `q_b_proj` (or `q_proj` when
    `q_lora_rank = 0`), `kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`,
    `o_proj`. The internal norms use `eps`. Only the latent (after
    `kv_a_layernorm`) and the shared RoPE key are cached per token.

    ```mlir
    %a = ds.mla %x, %pos {prefix = "model.layers.0.self_attn",
                          config = #ds.mla<heads = 4, q_lora_rank = 32, kv_lora_rank = 32,
                                           qk_nope = 16, qk_rope = 8, v_head = 16>,
                          rope = #ds.rope<theta = 10000.0>} : tensor<?x64xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, DS_Positions:$positions,
                       StrAttr:$prefix, DS_MLAConfigAttr:$config,
                       DS_RoPEConfigAttr:$rope,
                       DefaultValuedAttr<F64Attr, "1e-6">:$eps);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input `,` $positions attr-dict `:` type($input) `,` type($positions)";
}

def DS_MLPOp : DS_WeightUserOp<"mlp", [SameOperandsAndResultType]> {
  let summary = "SwiGLU MLP: down(silu(gate(x)) * up(x))";
  let description = [{
    Weights `prefix.gate_proj`, `prefix.up_proj` (`[inter, hidden]`) and
    `prefix.down_proj` (`[hidden, inter]`).

    ```mlir
    %y = ds.mlp %x {prefix = "model.layers.0.mlp", inter = 128 : i64} : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, StrAttr:$prefix,
                       I64Attr:$inter);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def DS_MoEOp : DS_WeightUserOp<"moe", [SameOperandsAndResultType]> {
  let summary = "DeepSeekMoE: routed experts plus shared experts";
  let description = [{
    Routes each token to `top_k` of `experts` SwiGLU experts (see `#ds.moe`)
    and adds the shared experts. Weights under `prefix` (`model.layers.N.mlp`):
    `gate.weight` (router), `gate.e_score_correction_bias` (only for
    `noaux_tc`), `experts.J.{gate,up,down}_proj.weight`, and
    `shared_experts.{gate,up,down}_proj.weight` when `shared > 0`.
    With `ep = N > 1` (ds-partition-ep; ds-partition-dp multiplies it by
    dp) the routed experts are split over the N ranks of an expert group,
    `experts / N` consecutive ones each: every rank routes its share of the
    tokens and sends each token only to the ranks holding its experts
    (all-to-all), which send the results back.

    ```mlir
    %y = ds.moe %x {prefix = "model.layers.1.mlp",
                    config = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 32,
                                     scoring = sigmoid, topk_method = noaux_tc, n_group = 4,
                                     topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, StrAttr:$prefix,
                       DS_MoEConfigAttr:$config,
                       DefaultValuedAttr<I64Attr, "1">:$ep);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def DS_MTPOp : DS_WeightUserOp<"mtp", [IsolatedFromAbove, SingleBlock]> {
  let summary = "a Multi-Token Prediction module";
  let description = [{
    DeepSeek-V3's MTP module k (`config.depth`): from the previous module's
    hidden state `hidden` and the tokens `ids` one step ahead, computes
    `x = eh_proj(concat(enorm(embed(ids)), hnorm(hidden)))`, runs the
    transformer block in its region on `x` (block arguments: `x`,
    `positions`), and returns the logits `head(shared_head.norm(y))` and the
    new hidden state `y`. Weights under `prefix` (`model.layers.L` with
    `L = num_hidden_layers + k - 1`): `enorm`, `hnorm`, `eh_proj`,
    `shared_head.norm`; `embed` and `head` name the embedding and output
    tables (the module's own or the main model's where they are shared).

    ```mlir
    %logits, %y = ds.mtp %h, %next, %pos {prefix = "model.layers.3", config = #ds.mtp<depth = 1>,
        embed = @"model.layers.3.embed_tokens.weight", head = @"model.layers.3.shared_head.head.weight"}
        : tensor<?x64xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x1024xf32>, tensor<?x64xf32> {
    ^bb0(%x: tensor<?x64xf32>, %p: tensor<?xi32>):
      ...
      ds.yield %x2 : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins DS_Activation:$hidden, DS_TokenIds:$ids,
                       DS_Positions:$positions, StrAttr:$prefix,
                       DS_MTPConfigAttr:$config, FlatSymbolRefAttr:$embed,
                       FlatSymbolRefAttr:$head,
                       DefaultValuedAttr<F64Attr, "1e-6">:$eps);
  let results = (outs DS_Activation:$logits, DS_Activation:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $hidden `,` $ids `,` $positions attr-dict `:` type($hidden) `,` type($ids)
    `,` type($positions) `->` type($logits) `,` type($result) $body
  }];
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::mlir::Type":$logitsType, "::mlir::Value":$hidden,
                   "::mlir::Value":$ids, "::mlir::Value":$positions,
                   "::llvm::StringRef":$prefix, "int64_t":$depth,
                   "::llvm::StringRef":$embed, "::llvm::StringRef":$head,
                   "double":$eps)>
  ];
}

def DS_StageOp : DS_Op<"stage", [IsolatedFromAbove, SingleBlock]> {
  let summary = "the part of a function one pipeline stage computes";
  let description = [{
    Set by ds-partition-pp: the ops in the region run on the ranks whose
    `pp` coordinate is `stage`, and only there. The region's arguments are
    the `inputs`; its `ds.yield` gives the results. An input produced by
    another stage's `ds.stage` travels from that stage (send/recv of the
    rows over `pp`); function arguments (token ids, positions) are on every
    rank. The function's results come from the last stage, which hands them
    to every rank.

    ```mlir
    %x = ds.stage 0 ins(%ids, %pos) : (tensor<?xi32>, tensor<?xi32>) -> tensor<?x64xf32> {
    ^bb0(%i: tensor<?xi32>, %p: tensor<?xi32>):
      ...
      ds.yield %x2 : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$stage);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $stage `ins` `(` $inputs `)` attr-dict `:` functional-type($inputs, $results)
    $body
  }];
  let hasRegionVerifier = 1;
}

def DS_YieldOp : DS_Op<"yield", [Pure, ReturnLike, Terminator,
                                 ParentOneOf<["MTPOp", "StageOp"]>]> {
  let summary = "ends the block of ds.mtp (its hidden state) or ds.stage";
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let assemblyFormat = "attr-dict ($values^ `:` type($values))?";
}

//===----------------------------------------------------------------------===//
// Collectives (inserted by the partition passes)
//===----------------------------------------------------------------------===//

def DS_AllReduceOp : DS_Op<"all_reduce", [Pure, SameOperandsAndResultType]> {
  let summary = "sum over the ranks of one mesh axis";
  let description = [{
    ```mlir
    %y = ds.all_reduce %x {axis = #ds.axis<tp>} : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, DS_MeshAxisAttr:$axis);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def DS_AllGatherOp : DS_Op<"all_gather", [Pure]> {
  let summary = "concatenation over the ranks of one mesh axis";
  let description = [{
    Concatenates every rank's `input` along `dim`, in rank order.

    ```mlir
    %y = ds.all_gather %x {axis = #ds.axis<tp>, dim = 1 : i64} : (tensor<?x128xf32>) -> tensor<?x256xf32>
    ```
  }];
  let arguments = (ins DS_Activation:$input, DS_MeshAxisAttr:$axis,
                       I64Attr:$dim);
  let results = (outs DS_Activation:$result);
  let assemblyFormat = "$input attr-dict `:` functional-type($input, $result)";
  let hasVerifier = 1;
}

#endif // DS_DIALECT_DS_IR_DSOPS_TD
