//===- Passes.td - ds passes -------------------------------*- tablegen -*-===//

#ifndef DS_TRANSFORMS_PASSES_TD
#define DS_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def ModelStats : Pass<"ds-model-stats", "::mlir::ModuleOp"> {
  let summary = "Print parameter counts and KV-cache size of a ds model";
  let description = [{
    Prints to stdout, one `key: value` per line:

    ```
    params.total: N               every weight element of the main model
    params.active: N              params.total minus, in every MoE layer, the
                                  routed experts a token does not use:
                                  (experts - top_k) * per-expert params
    params.mtp: N                 every weight element of the MTP modules
    kv_cache.bytes_per_token: N   bf16 latent cache of the main model:
                                  sum over MLA layers of
                                  (kv_lora_rank + qk_rope) * 2
    ```

    Weights are counted once however many ops read them; a weight read by
    both the main model and an MTP module (shared embedding or head) counts
    as main-model. FP8 `weight_scale_inv` companions are quantization
    metadata, not parameters, and are not counted.

    `ds-opt` prints only these lines (not the module) when this pass runs and
    no `-o` is given.
  }];
}

def LowerToKernels : Pass<"ds-lower-to-kernels", "::mlir::ModuleOp"> {
  let summary = "Lower the model to prefill and decode kernel-level programs";
  let description = [{
    Turns `@forward` into two `dsk` programs on memref buffers:

    - `@prefill(ids, positions, logits)`: the prompt at positions 0..n-1,
      n <= `max-seq-len`; MLA in its naive form (latents up-projected to
      per-head keys and values by `kv_b_proj`, then causal attention), and
      each layer's latent and rope key written to the latent KV cache;
    - `@decode(ids, positions, logits)`: n <= `max-batch` new tokens; MLA in
      its absorbed form, attending directly over the latent cache with W_UK
      folded into the query and W_UV into the output.

    Composite ops decompose into kernels: MLA into the q (LoRA) and kv
    projections, norms, RoPE on the rope dims only, cache write, attention
    and o_proj; MoE into router GEMM, routing, grouped expert SwiGLU and the
    shared experts; MLP into GEMMs and SwiGLU. The softmax scale, including
    YaRN's mscale^2, is computed here and recorded on the attention op.
    The module gets `dsk.model` (vocab, hidden, cache geometry); `@forward`
    and the MTP functions are removed (MTP is not compiled yet: plain greedy
    decoding does not use it).
  }];
  let options = [
    Option<"maxSeqLen", "max-seq-len", "int64_t", "4096",
           "Positions the KV cache holds; the longest prompt prefill takes">,
    Option<"maxBatch", "max-batch", "int64_t", "1",
           "Most tokens one decode step takes">,
  ];
  let dependentDialects = ["::ds::kernel::DSKDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

def PlanMemory : Pass<"dsk-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Place every buffer of each program at a static arena offset";
  let description = [{
    For each `dsk` program: sizes every `memref.alloc` of `[tokens, width]`
    for the program's `max_tokens`, computes its live range in launch order
    (through views), and places it at the lowest 64-byte-aligned offset free
    for that range (largest buffers first). Allocations become
    `memref.view`s of one `dsk.arena`, and the program's `arena_bytes`
    records the total.
  }];
  let dependentDialects = ["::ds::kernel::DSKDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // DS_TRANSFORMS_PASSES_TD
