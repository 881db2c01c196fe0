//===- KernelOps.td - the dsk kernel-level dialect ---------*- tablegen -*-===//
//
// The kernel level: one op per kernel or library call, on memref buffers, in
// launch order. Buffers are [tokens, width] rows (width static, tokens
// dynamic, bounded by the program's max_tokens); column slices are upstream
// memref.subview views. Weights stay ds.weight symbols.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECT_KERNEL_IR_KERNELOPS_TD
#define DS_DIALECT_KERNEL_IR_KERNELOPS_TD

include "ds/Dialect/Kernel/IR/KernelEnums.td"
include "ds/Dialect/DS/IR/DSAttrs.td"
include "ds/Dialect/DS/IR/DSInterfaces.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def DSK_Dialect : Dialect {
  let name = "dsk";
  let cppNamespace = "::ds::kernel";
  let summary = "ds kernel level: kernels and library calls on buffers";
  let description = [{
    The last level before emission. A program (`func.func` with a
    `dsk.program` attribute) is a sequence of kernel ops, each a call of one
    runtime kernel (libdsrt) on memref buffers, in launch order. Before
    memory planning buffers are `memref.alloc`s of `[tokens, width]`; after
    `dsk-plan-memory` they are `memref.view`s at static offsets of one
    `dsk.arena`. Both emitters (C++ and CUDA C++) translate this level op by
    op.
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect", "::ds::DSDialect"];
  let useDefaultAttributePrinterParser = 1;
}

def DSK_ProgramAttr : AttrDef<DSK_Dialect, "Program"> {
  let mnemonic = "program";
  let summary = "marks a kernel-level program";
  let description = [{
    `prefill` runs the prompt at positions 0..n-1 (naive MLA), `decode` one
    step per sequence over the latent cache (absorbed MLA), `mtp` the MTP
    module (absorbed MLA on its own cache layer). Token counts are at most
    `max_tokens`; `arena_bytes` is the memory plan's size (0 before
    `dsk-plan-memory`). A pipelined model (`pp > 1`) has one program per
    kind and `stage`: what the ranks of that pipeline stage run.
  }];
  let parameters = (ins "ProgramKind":$kind, "int64_t":$max_tokens,
                        "int64_t":$arena_bytes,
                        DefaultValuedParameter<"int64_t", "0">:$stage);
  let assemblyFormat = "`<` struct(params) `>`";
}

def DSK_ModelAttr : AttrDef<DSK_Dialect, "Model"> {
  let mnemonic = "model";
  let summary = "what the runtime needs to know of a lowered model";
  let parameters = (ins "int64_t":$vocab, "int64_t":$hidden,
                        "int64_t":$cache_layers, "int64_t":$kv_lora_rank,
                        "int64_t":$qk_rope, "int64_t":$max_seq_len);
  let assemblyFormat = "`<` struct(params) `>`";
}

class DSK_Op<string mnemonic, list<Trait> traits = []>
    : Op<DSK_Dialect, mnemonic, traits>;

class DSK_WeightOp<string mnemonic, list<Trait> traits = []>
    : DSK_Op<mnemonic, traits # [
        DeclareOpInterfaceMethods<DS_WeightUserInterface>,
        DeclareOpInterfaceMethods<SymbolUserOpInterface>]>;

def DSK_Rows : MemRefRankOf<[F32], [2]>;
def DSK_IntRows : MemRefRankOf<[I32], [2]>;
def DSK_Tokens : MemRefRankOf<[I32], [1]>;

def DSK_ArenaOp : DSK_Op<"arena", [Pure]> {
  let summary = "the program's memory arena (ctx.arena())";
  let results = (outs MemRefRankOf<[I8], [1]>:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def DSK_EmbeddingOp : DSK_WeightOp<"embedding"> {
  let summary = "out[i] = table[ids[i]]";
  let arguments = (ins Arg<DSK_Tokens, "", [MemRead]>:$ids,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       FlatSymbolRefAttr:$weight);
  let assemblyFormat = "$ids `,` $out attr-dict `:` type($ids) `,` type($out)";
}

def DSK_RMSNormOp : DSK_WeightOp<"rms_norm"> {
  let summary = "RMSNorm of each row, in float32";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       FlatSymbolRefAttr:$weight, F64Attr:$eps);
  let assemblyFormat = "$input `,` $out attr-dict `:` type($input) `,` type($out)";
  let hasVerifier = 1;
}

def DSK_LinearOp : DSK_WeightOp<"linear", [AttrSizedOperandSegments]> {
  let summary = "out = input * weight^T (GEMM through BLAS / cuBLASLt)";
  let description = [{
    With `fp8`, the input is quantized to e4m3 per row per 128 columns
    before the product (DeepSeek-V3's FP8 GEMM; the weight is FP8). With
    `accumulate`, `out += input * weight^T` (a residual add in the GEMM's
    epilogue, as `dsk-fuse` forms it).

    `norm(residual, sum, normed)` and the `norm` and `eps` attributes add
    the `dsk.add_rms_norm` that reads `out` next, as `dsk-fuse` forms it
    (the attention output and the dense MLP's down projection, then the
    residual add and the next norm): `out` is written as before, then `sum
    = residual + out` and `normed = rms_norm(sum)`. At decode the GPU's GEMV
    does the add and the norm in its last block, one launch fewer per
    layer.
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_Rows, "", [MemRead, MemWrite]>:$out,
                       Arg<Optional<DSK_Rows>, "", [MemRead]>:$residual,
                       Arg<Optional<DSK_Rows>, "", [MemWrite]>:$sum,
                       Arg<Optional<DSK_Rows>, "", [MemWrite]>:$normed,
                       FlatSymbolRefAttr:$weight, UnitAttr:$fp8,
                       UnitAttr:$accumulate,
                       OptionalAttr<FlatSymbolRefAttr>:$norm,
                       OptionalAttr<F64Attr>:$eps);
  let assemblyFormat = [{
    $input `,` $out (`norm` `(` $residual^ `,` $sum `,` $normed `)`)?
    attr-dict `:` type($input) `,` type($out)
    (`norm` `(` type($residual)^ `,` type($sum) `,` type($normed) `)`)?
  }];
  let builders = [
    // The plain GEMM (no norm epilogue).
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::Value":$out,
                   "::mlir::FlatSymbolRefAttr":$weight,
                   CArg<"bool", "false">:$fp8), [{
      build($_builder, $_state, input, out, /*residual=*/::mlir::Value(),
            /*sum=*/::mlir::Value(), /*normed=*/::mlir::Value(), weight,
            fp8 ? $_builder.getUnitAttr() : ::mlir::UnitAttr(),
            /*accumulate=*/::mlir::UnitAttr(),
            /*norm=*/::mlir::FlatSymbolRefAttr(),
            /*eps=*/::mlir::FloatAttr());
    }]>
  ];
  let hasVerifier = 1;
}

def DSK_LinearPairOp : DSK_WeightOp<"linear_pair"> {
  let summary = "two GEMMs of one input: out_a = input * weight_a^T, out_b = input * weight_b^T";
  let description = [{
    One launch for both where the runtime can (a GEMV over both weights'
    columns at decode); with `fp8`, the input of each FP8 weight's product
    is quantized as for `dsk.linear`.
    MLA's query and latent projections of the same normalized row
    (`q_proj` or `q_a_proj`, and `kv_a_proj_with_mqa`), as `dsk-fuse` forms
    it.
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_Rows, "", [MemWrite]>:$out_a,
                       Arg<DSK_Rows, "", [MemWrite]>:$out_b,
                       FlatSymbolRefAttr:$weight_a, FlatSymbolRefAttr:$weight_b,
                       UnitAttr:$fp8);
  let assemblyFormat = [{
    $input `,` $out_a `,` $out_b attr-dict `:` type($input) `,` type($out_a)
    `,` type($out_b)
  }];
  let hasVerifier = 1;
}

def DSK_AddOp : DSK_Op<"add"> {
  let summary = "out = lhs + rhs";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$lhs,
                       Arg<DSK_Rows, "", [MemRead]>:$rhs,
                       Arg<DSK_Rows, "", [MemWrite]>:$out);
  let assemblyFormat = "$lhs `,` $rhs `,` $out attr-dict `:` type($lhs) `,` type($rhs) `,` type($out)";
  let hasVerifier = 1;
}

def DSK_SwiGLUOp : DSK_Op<"swiglu"> {
  let summary = "out = silu(gate) * up";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$gate,
                       Arg<DSK_Rows, "", [MemRead]>:$up,
                       Arg<DSK_Rows, "", [MemWrite]>:$out);
  let assemblyFormat = "$gate `,` $up `,` $out attr-dict `:` type($gate) `,` type($up) `,` type($out)";
  let hasVerifier = 1;
}

def DSK_RoPEOp : DSK_Op<"rope"> {
  let summary = "rotary embedding, in place, on interleaved pairs";
  let description = [{
    Rotates columns `[h * head_stride + offset, ... + dim)` of every head h
    of each row by the row's position.
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead, MemWrite]>:$inout,
                       Arg<DSK_Tokens, "", [MemRead]>:$positions,
                       DS_RoPEConfigAttr:$config, I64Attr:$dim, I64Attr:$heads,
                       I64Attr:$head_stride, I64Attr:$offset);
  let assemblyFormat = "$inout `,` $positions attr-dict `:` type($inout) `,` type($positions)";
  let hasVerifier = 1;
}

def DSK_KVCacheWriteOp : DSK_Op<"kv_cache_write"> {
  let summary = "stores latents and rope keys in the latent KV cache";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$latent,
                       Arg<DSK_Rows, "", [MemRead]>:$krope,
                       Arg<DSK_Tokens, "", [MemRead]>:$positions,
                       I64Attr:$layer);
  let assemblyFormat = "$latent `,` $krope `,` $positions attr-dict `:` type($latent) `,` type($krope) `,` type($positions)";
}

def DSK_MLAAttentionNaiveOp : DSK_Op<"mla_attention_naive"> {
  let summary = "MLA prefill attention on up-projected keys and values";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$q,
                       Arg<DSK_Rows, "", [MemRead]>:$kv,
                       Arg<DSK_Rows, "", [MemRead]>:$krope,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       I64Attr:$heads, I64Attr:$qk_nope, I64Attr:$qk_rope,
                       I64Attr:$v_head, F64Attr:$scale);
  let assemblyFormat = [{
    $q `,` $kv `,` $krope `,` $out attr-dict `:` type($q) `,` type($kv) `,`
    type($krope) `,` type($out)
  }];
  let hasVerifier = 1;
}

def DSK_MLAAttentionAbsorbedOp : DSK_WeightOp<"mla_attention_absorbed",
                                              [AttrSizedOperandSegments]> {
  let summary = "MLA decode attention on the latent cache (weights absorbed)";
  let description = [{
    With `rope(latent, krope)` and `rope_config` (and optionally `norm` and
    `eps`), the op first does what the `dsk.qk_rope_cache_write` before it
    did, as `dsk-fuse` forms it: the query's rope columns (each head's
    `qk_rope` columns from `qk_nope`) and the rope key rotated in place,
    the latent (its `rms_norm` with `norm`) and the rotated key stored in
    layer `layer` of the cache; then the attention. The prologue is done
    before `out` is written, so `out` may share memory with `latent` and
    `krope`. The GPU runs the prologue's blocks in the launch of the
    absorbed query product (one launch fewer per layer at decode).
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead, MemWrite]>:$q,
                       Arg<DSK_Tokens, "", [MemRead]>:$positions,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       Arg<Optional<DSK_Rows>, "", [MemRead]>:$latent,
                       Arg<Optional<DSK_Rows>, "", [MemRead, MemWrite]>:$krope,
                       FlatSymbolRefAttr:$kv_b, I64Attr:$layer,
                       I64Attr:$kv_lora_rank, I64Attr:$heads,
                       I64Attr:$qk_nope, I64Attr:$qk_rope, I64Attr:$v_head,
                       F64Attr:$scale,
                       OptionalAttr<DS_RoPEConfigAttr>:$rope_config,
                       OptionalAttr<FlatSymbolRefAttr>:$norm,
                       OptionalAttr<F64Attr>:$eps);
  let assemblyFormat = [{
    $q `,` $positions `,` $out (`rope` `(` $latent^ `,` $krope `)`)?
    attr-dict `:` type($q) `,` type($positions) `,` type($out)
    (`rope` `(` type($latent)^ `,` type($krope) `)`)?
  }];
  let hasVerifier = 1;
}

def DSK_MoERouteOp : DSK_WeightOp<"moe_route"> {
  let summary = "router scores, bias, group-limited top-k, routing weights";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$logits,
                       Arg<DSK_IntRows, "", [MemWrite]>:$indices,
                       Arg<DSK_Rows, "", [MemWrite]>:$weights,
                       DS_MoEConfigAttr:$config,
                       OptionalAttr<FlatSymbolRefAttr>:$bias);
  let assemblyFormat = "$logits `,` $indices `,` $weights attr-dict `:` type($logits) `,` type($indices) `,` type($weights)";
  let hasVerifier = 1;
}

def DSK_MoEExpertsOp : DSK_WeightOp<"moe_experts", [AttrSizedOperandSegments]> {
  let summary = "weighted sum of each token's routed SwiGLU experts";
  let description = [{
    With `ep = N > 1` each of the N expert-parallel ranks holds `experts / N`
    consecutive experts and all ranks hold the same tokens: rank r takes
    tokens [r * n / N, (r + 1) * n / N), sends each of them to the ranks
    that hold its chosen experts (all-to-all of only those rows), computes
    what it receives, returns the weighted sums (all-to-all) and all-gathers
    the finished rows.

    With `shared_gate`, `shared_up` and `shared_down` (and `ep = 1`), the
    shared expert is part of the kernel, as `dsk-fuse` forms it from the
    `dsk.gated_up` into `shared_hidden` and the accumulating `dsk.linear`
    that follow: `out` is then the routed sum plus the shared expert's
    output, added in that order; `out` must not share a buffer with
    `input`. The GPU computes the shared expert in the routed experts'
    launches at decode (GEMV-sized batches, no FP8 activations), else as
    the unfused kernels; `shared_hidden` is its intermediate buffer
    (`[tokens, shared inter]`).

    With a shared expert, `norm(residual, sum, normed)` and the `norm` and
    `eps` attributes add the `dsk.add_rms_norm` that reads `out` next, as
    `dsk-fuse` forms it: `out` is written as before, then `sum = residual +
    out` and `normed = rms_norm(sum)`. The GPU does the add and the norm in
    the experts' combine at decode, one launch fewer per MoE layer.
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_IntRows, "", [MemRead]>:$indices,
                       Arg<DSK_Rows, "", [MemRead]>:$weights,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       Arg<Optional<DSK_Rows>, "", [MemRead, MemWrite]>:$shared_hidden,
                       Arg<Optional<DSK_Rows>, "", [MemRead]>:$residual,
                       Arg<Optional<DSK_Rows>, "", [MemWrite]>:$sum,
                       Arg<Optional<DSK_Rows>, "", [MemWrite]>:$normed,
                       StrAttr:$prefix, I64Attr:$experts, I64Attr:$inter,
                       UnitAttr:$fp8, DefaultValuedAttr<I64Attr, "1">:$ep,
                       OptionalAttr<FlatSymbolRefAttr>:$shared_gate,
                       OptionalAttr<FlatSymbolRefAttr>:$shared_up,
                       OptionalAttr<FlatSymbolRefAttr>:$shared_down,
                       OptionalAttr<FlatSymbolRefAttr>:$norm,
                       OptionalAttr<F64Attr>:$eps);
  let assemblyFormat = [{
    $input `,` $indices `,` $weights `,` $out (`,` $shared_hidden^)?
    (`norm` `(` $residual^ `,` $sum `,` $normed `)`)? attr-dict
    `:` type($input) `,` type($indices) `,` type($weights) `,` type($out)
    (`,` type($shared_hidden)^)?
    (`norm` `(` type($residual)^ `,` type($sum) `,` type($normed) `)`)?
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Collectives over one axis of the device mesh (#ds.plan)
//===----------------------------------------------------------------------===//

def DSK_AllReduceOp : DSK_Op<"all_reduce"> {
  let summary = "in place: rows become their sum over the axis' ranks";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead, MemWrite]>:$inout,
                       DS_MeshAxisAttr:$axis);
  let assemblyFormat = "$inout attr-dict `:` type($inout)";
}

def DSK_AllGatherOp : DSK_Op<"all_gather"> {
  let summary = "out's columns are the axis' ranks' inputs, in rank order";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       DS_MeshAxisAttr:$axis);
  let assemblyFormat = "$input `,` $out attr-dict `:` type($input) `,` type($out)";
  let hasVerifier = 1;
}

def DSK_SendOp : DSK_Op<"send"> {
  let summary = "rows to the same rank of pipeline stage `stage` (over pp)";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$stage);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def DSK_RecvOp : DSK_Op<"recv"> {
  let summary = "rows from the same rank of pipeline stage `stage` (over pp)";
  let arguments = (ins Arg<DSK_Rows, "", [MemWrite]>:$out,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$stage);
  let assemblyFormat = "$out attr-dict `:` type($out)";
}

//===----------------------------------------------------------------------===//
// Fused kernels (dsk-fuse): one kernel where the unfused level has several.
//===----------------------------------------------------------------------===//

def DSK_AddRMSNormOp : DSK_WeightOp<"add_rms_norm"> {
  let summary = "residual add + RMSNorm: sum = lhs + rhs, out = rms_norm(sum)";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$lhs,
                       Arg<DSK_Rows, "", [MemRead]>:$rhs,
                       Arg<DSK_Rows, "", [MemWrite]>:$sum,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       FlatSymbolRefAttr:$weight, F64Attr:$eps);
  let assemblyFormat = [{
    $lhs `,` $rhs `,` $sum `,` $out attr-dict `:` type($lhs) `,` type($rhs)
    `,` type($sum) `,` type($out)
  }];
  let hasVerifier = 1;
}

def DSK_RoPEKVCacheWriteOp : DSK_Op<"rope_kv_cache_write"> {
  let summary = "RoPE on the shared rope key + latent-cache write";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$latent,
                       Arg<DSK_Rows, "", [MemRead, MemWrite]>:$krope,
                       Arg<DSK_Tokens, "", [MemRead]>:$positions,
                       DS_RoPEConfigAttr:$config, I64Attr:$layer);
  let assemblyFormat = "$latent `,` $krope `,` $positions attr-dict `:` type($latent) `,` type($krope) `,` type($positions)";
  let hasVerifier = 1;
}

def DSK_QKRoPECacheWriteOp : DSK_WeightOp<"qk_rope_cache_write"> {
  let summary = "RoPE on the query and the shared rope key + latent-cache write";
  let description = [{
    MLA's per-token prologue as one kernel: rotates the query's rope columns
    (`heads` heads of `head_stride` columns from `offset`, as `dsk.rope`)
    and the shared rope key, then stores the latent and the rotated key in
    the latent cache (as `dsk.rope_kv_cache_write`). With `norm`, the
    stored latent is the `dsk.rms_norm` of `latent` with that weight and
    `eps`; the normalized latent is then written nowhere else (decode, where
    only the cache reads it).
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead, MemWrite]>:$q,
                       Arg<DSK_Rows, "", [MemRead]>:$latent,
                       Arg<DSK_Rows, "", [MemRead, MemWrite]>:$krope,
                       Arg<DSK_Tokens, "", [MemRead]>:$positions,
                       DS_RoPEConfigAttr:$config, I64Attr:$heads,
                       I64Attr:$head_stride, I64Attr:$offset, I64Attr:$layer,
                       OptionalAttr<FlatSymbolRefAttr>:$norm,
                       OptionalAttr<F64Attr>:$eps);
  let assemblyFormat = [{
    $q `,` $latent `,` $krope `,` $positions attr-dict `:` type($q) `,`
    type($latent) `,` type($krope) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def DSK_GatedUpOp : DSK_WeightOp<"gated_up"> {
  let summary = "gate and up GEMMs with the SwiGLU epilogue";
  let description = [{
    `out = silu(input * gate^T) * (input * up^T)`. With `fp8`, the input is
    quantized as for `dsk.linear`.
  }];
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_Rows, "", [MemWrite]>:$out,
                       FlatSymbolRefAttr:$gate, FlatSymbolRefAttr:$up,
                       UnitAttr:$fp8);
  let assemblyFormat = "$input `,` $out attr-dict `:` type($input) `,` type($out)";
  let hasVerifier = 1;
}

def DSK_MoEGateOp : DSK_WeightOp<"moe_gate"> {
  let summary = "router GEMM + scoring + bias + group-limited top-k";
  let arguments = (ins Arg<DSK_Rows, "", [MemRead]>:$input,
                       Arg<DSK_IntRows, "", [MemWrite]>:$indices,
                       Arg<DSK_Rows, "", [MemWrite]>:$weights,
                       FlatSymbolRefAttr:$weight, DS_MoEConfigAttr:$config,
                       OptionalAttr<FlatSymbolRefAttr>:$bias);
  let assemblyFormat = "$input `,` $indices `,` $weights attr-dict `:` type($input) `,` type($indices) `,` type($weights)";
  let hasVerifier = 1;
}

#endif // DS_DIALECT_KERNEL_IR_KERNELOPS_TD
