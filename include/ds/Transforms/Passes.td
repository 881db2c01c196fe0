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

def PartitionTP : Pass<"ds-partition-tp", "::mlir::ModuleOp"> {
  let summary = "Split attention heads, MLP/expert intermediates and the vocabulary over tp ranks";
  let description = [{
    Reads `tp` from the module's `ds.plan` (nothing to do when it is 1 or
    absent) and rewrites the model into what one tensor-parallel rank
    computes:

    - `ds.mla`: `heads / tp` heads per rank. `q_b_proj` (or `q_proj`) and
      `kv_b_proj` are split along their rows (heads), `o_proj` along its
      columns; `q_a_proj`, `kv_a_proj_with_mqa` and the norms (the latent
      path) are replicated, so every rank caches the whole latent.
    - `ds.mlp`, and the routed and shared experts of `ds.moe`: the
      intermediate size is split (`gate_proj`/`up_proj` rows, `down_proj`
      columns); the router is replicated.
    - `ds.lm_head`: the vocabulary is split (rows of the head) and the
      logits are gathered (`ds.all_gather` along dim 1), unless the head is
      shared with the embedding or an MTP module.

    Each of `ds.mla`, `ds.mlp` and `ds.moe` then produces a partial sum:
    a `ds.all_reduce` over `tp` follows it. Split weights get
    `#ds.shard<axis = tp, dim = d>` and their type becomes one rank's slice.
    A plan the model cannot take (heads, intermediate or vocabulary not
    divisible by tp, FP8 checkpoints) is an error naming the op and sizes.
  }];
}

def PartitionEP : Pass<"ds-partition-ep", "::mlir::ModuleOp"> {
  let summary = "Split the routed experts over ep ranks";
  let description = [{
    Reads `ep` from the module's `ds.plan`. Every `ds.moe` gets `ep = N`:
    its routed experts are split into N consecutive ranges, and expert e's
    three weights get `#ds.shard<axis = ep, owner = e / (experts / N)>`, so
    each rank loads only its experts. Attention, dense layers, the router
    and the shared experts are replicated over `ep`. At run time every rank
    routes only its share of the tokens and exchanges only the rows each
    rank needs (see `dsk.moe_experts`). Errors: experts not divisible by ep,
    a model without MoE layers.
  }];
}

def PartitionDP : Pass<"ds-partition-dp", "::mlir::ModuleOp"> {
  let summary = "Share the routed experts between data-parallel replicas";
  let description = [{
    Reads `dp` from the module's `ds.plan` (after ds-partition-ep). The dp
    replicas run different sequences (the runtime gives sequence slot s to
    replica s mod dp) through attention, dense layers and shared experts,
    each holding those weights whole (or tp-split). The routed experts are
    split over the ep x dp ranks of an expert group, as DeepSeek deploys
    attention data parallelism with expert parallelism: expert e of a layer
    keeps its `#ds.shard<axis = ep, owner = ...>` and gets
    `#ds.shard<axis = dp, owner = (e mod (experts / ep)) / (experts / (ep * dp))>`,
    and every `ds.moe` gets `ep = ep * dp` (the ranks its experts are split
    over; tokens travel between them by all-to-all). A model without MoE
    layers becomes dp independent replicas. Errors: experts not divisible by
    ep x dp.
  }];
}

def PartitionPP : Pass<"ds-partition-pp", "::mlir::ModuleOp"> {
  let summary = "Cut the model into pp pipeline stages of contiguous layers";
  let description = [{
    Reads `pp` from the module's `ds.plan`. `@forward`'s ops become `pp`
    `ds.stage` regions: stage s holds decoder layers
    `[s * L / pp, (s + 1) * L / pp)` of the L layers (`ds.mla` ops), cut
    where only the residual stream is live, so that one `[tokens, hidden]`
    activation passes from each stage to the next. Stage 0 also holds the
    embedding; the last stage the final norm, `ds.lm_head` and the MTP
    functions (`@mtp_K`, wrapped whole). A weight read by one stage only
    gets `#ds.shard<axis = pp, owner = s>` (with its FP8 scale); one read by
    several stages (an embedding tied to the head) stays on each of them.
    At run time each stage processes micro-batches of whole sequences and
    sends each one on as soon as it is done (see docs/parallelism.md).
    Errors: fewer decoder layers than stages, no single-activation cut
    before a stage's first layer.
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

def Fuse : Pass<"dsk-fuse", "::mlir::ModuleOp"> {
  let summary = "Group kernel-level ops that should be one kernel";
  let description = [{
    On each `dsk` program (before memory planning), replaces launch-order
    neighbours that read and write rows in step by one fused kernel:

    - `dsk.add` then `dsk.rms_norm` of the sum -> `dsk.add_rms_norm` (the
      residual add and the next norm of every layer);
    - `dsk.rope` of MLA's shared rope key then `dsk.kv_cache_write` ->
      `dsk.rope_kv_cache_write`; with the query's `dsk.rope` (same table and
      positions) just before -> `dsk.qk_rope_cache_write`, the MLA prologue
      of one kernel per token, which also takes in the latent's
      `dsk.rms_norm` when nothing else reads the normalized latent (decode);
    - that prologue, then the `dsk.mla_attention_absorbed` of its query,
      layer and positions (decode, MTP) -> the attention with the prologue
      (`rope(...)`; the GPU runs the prologue's blocks in the launch of the
      absorbed query product);
    - gate and up `dsk.linear`s of one input then `dsk.swiglu` of their
      results -> `dsk.gated_up` (two GEMMs, SwiGLU epilogue);
    - the router `dsk.linear` then `dsk.moe_route` of its logits ->
      `dsk.moe_gate` (router GEMM, scoring, bias, group top-k);
    - a `dsk.linear` then the in-place `dsk.add` of its result into another
      buffer -> the linear with `accumulate` (the shared expert's down
      projection adds into the routed experts' sum);
    - `dsk.moe_experts` (ep = 1), then the shared expert of its input
      (`dsk.gated_up`, then the down `dsk.linear` accumulating into the
      routed sum) -> `dsk.moe_experts` with the shared expert (the GPU runs
      it in the routed experts' launches; its intermediate buffer stays);
    - that `dsk.moe_experts`, then the `dsk.add_rms_norm` of its output and
      another buffer -> the experts with that norm as their epilogue (the
      GPU's combine does the add and the norm at decode);
    - a `dsk.linear` (no `accumulate`, into a buffer of the program's own,
      not an argument such as the logits), then the `dsk.add_rms_norm` of
      its output and another buffer -> the linear with
      that norm as its epilogue (the attention's output projection, the
      dense MLP's down projection; the GPU's GEMV does the add and the norm
      in its last block at decode);
    - then, two adjacent plain `dsk.linear`s of one input ->
      `dsk.linear_pair` (MLA's query and latent projections of the
      normalized row).

    Intermediate buffers only the group used disappear. Softmax epilogues are
    already inside the attention kernels. On the CPU backend fused kernels
    compute exactly what their parts did, in the same order; the GPU's may
    round differently (a GEMM adding into its output in cuBLASLt's epilogue).
  }];
  let dependentDialects = ["::ds::kernel::DSKDialect"];
}

def Quantize : Pass<"dsk-quantize", "::mlir::ModuleOp"> {
  let summary = "Insert FP8 quantization as DeepSeek-V3 ships it";
  let description = [{
    FP8 e4m3 weights with one f32 scale per 128x128 block, activations
    quantized dynamically per token per 128 channels, GEMMs accumulating in
    f32. The pass decides which GEMMs run in FP8: those whose every weight is
    a linear-layer weight of the published FP8 checkpoints (q_a/q_b/q_proj,
    kv_a_proj_with_mqa, kv_b_proj, o_proj, MLP and expert gate/up/down_proj)
    and is read only by GEMM kernels. Everything else stays in f32: norms,
    RoPE, the router (its GEMM, scoring and top-k), attention and its
    softmax, the embedding and lm_head, and kv_b_proj, which absorbed decode
    attention reads as a float matrix. FP8 GEMMs get `fp8`; their float
    weights become f8E4M3FN with `weight_scale_inv` companions (the runtime
    quantizes them on load, with the same recipe), and the module gets
    `ds.quantization = #ds.fp8<block = [128, 128]>`.
  }];
  let dependentDialects = ["::ds::kernel::DSKDialect"];
}

#endif // DS_TRANSFORMS_PASSES_TD
