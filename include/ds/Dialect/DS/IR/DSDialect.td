//===- DSDialect.td - the ds dialect -----------------------*- tablegen -*-===//
//
// The model level of ds: DeepSeek building blocks (MLA, DeepSeekMoE, MTP) as
// ops on tensors, with weights as module-level symbols named as in the Hugging
// Face checkpoint.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECT_DS_IR_DSDIALECT_TD
#define DS_DIALECT_DS_IR_DSDIALECT_TD

include "mlir/IR/OpBase.td"

def DS_Dialect : Dialect {
  let name = "ds";
  let cppNamespace = "::ds";
  let summary = "DeepSeek-architecture model dialect";
  let description = [{
    The `ds` dialect describes a DeepSeek-architecture language model at the
    level of its building blocks: Multi-head Latent Attention (`ds.mla`),
    DeepSeekMoE (`ds.moe`), dense SwiGLU MLPs (`ds.mlp`), Multi-Token
    Prediction modules (`ds.mtp`) and the primitives around them (embedding,
    RMSNorm, linear, RoPE, attention, lm_head).

    Weights are module-level `ds.weight` symbols named exactly as in the
    Hugging Face checkpoint, so a compiled model maps one-to-one onto
    safetensors files. Single-weight ops name their weight with a symbol
    reference; composite ops (`ds.mla`, `ds.mlp`, `ds.moe`, `ds.mtp`) name the
    checkpoint prefix of their module (e.g. `model.layers.3.mlp`) and find
    their weights under it by the checkpoint's naming convention. Every op
    checks that the weights it needs exist with the shapes its configuration
    implies.

    Activations are `tensor<tokens x ... x f32>`: the batch is flattened into
    the token dimension and positions are an explicit operand. The model
    level fixes the mathematics, not the storage precision: backends choose
    how activations are stored.

    A module that holds FP8 weights carries `ds.quantization =
    #ds.fp8<block = [128, 128]>`; every `f8E4M3FN` weight `X.weight` then has
    an f32 companion `X.weight_scale_inv` with one scale per block.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
    /// Name of the module attribute that records FP8 block quantization.
    static constexpr llvm::StringLiteral kQuantizationAttrName = "ds.quantization";
    /// Name of the module attribute that records the device mesh (#ds.plan).
    static constexpr llvm::StringLiteral kPlanAttrName = "ds.plan";
  }];
}

class DS_Op<string mnemonic, list<Trait> traits = []>
    : Op<DS_Dialect, mnemonic, traits>;

#endif // DS_DIALECT_DS_IR_DSDIALECT_TD
