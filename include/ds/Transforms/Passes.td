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

#endif // DS_TRANSFORMS_PASSES_TD
