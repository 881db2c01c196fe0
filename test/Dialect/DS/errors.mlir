// RUN: ds-opt --split-input-file --verify-diagnostics %s

// One case per verifier rule of the ds dialect.

// MLA: heads must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: heads must be positive, got 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 0, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MLA: q_lora_rank is 0 (none) or positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: q_lora_rank must be >= 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 2, q_lora_rank = -1, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MLA: kv_lora_rank must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: kv_lora_rank must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 0, qk_nope = 4, qk_rope = 2, v_head = 4>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MLA: qk_nope must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: qk_nope must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 0, qk_rope = 2, v_head = 4>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MLA: rope dims odd.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: qk_rope must be positive and even (RoPE rotates pairs of dims), got 3}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 3, v_head = 4>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MLA: v_head must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mla: v_head must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: experts must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: experts must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 0, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: shared must be non-negative.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: shared must be >= 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = -1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: top_k > experts.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: top_k (17) must be in [1, experts = 16]}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 17, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: top_k must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: top_k (0) must be in [1, experts = 16]}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 0, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: inter must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: inter must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 0, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: n_group must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: n_group must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 0, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: experts % n_group != 0.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: experts (16) must be divisible by n_group (3)}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 3, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: topk_group > n_group.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: topk_group (5) must be in [1, n_group = 4]}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 5, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: routed_scaling_factor must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: scale (routed_scaling_factor) must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 0.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: noaux_tc needs two experts per group.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: noaux_tc scores a group by its top-2 experts, but each of the 16 groups has 1}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 16, topk_group = 4, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: the kept groups must hold top_k experts.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.moe: top_k (8) exceeds the 4 experts of the topk_group kept groups}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 8, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 1, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: unknown scoring function.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+2 {{expected one of [sigmoid, softmax] for MoE router scoring function, got: relu}}
  // expected-error @+1 {{failed to parse DS_MoEConfigAttr parameter 'scoring' which is to be a `ScoringFunc`}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = relu, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MoE: unknown top-k method.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+2 {{expected one of [greedy, group_limited_greedy, noaux_tc] for MoE expert selection method, got: best}}
  // expected-error @+1 {{failed to parse DS_MoEConfigAttr parameter 'topk_method' which is to be a `TopkMethod`}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = best, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// YaRN: factor below 1.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.yarn: factor must be >= 1}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.yarn<factor = 0.5, original_max_position_embeddings = 4096, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// YaRN: original_max_position_embeddings must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.yarn: original_max_position_embeddings must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.yarn<factor = 40.0, original_max_position_embeddings = 0, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// YaRN: beta_fast must exceed beta_slow.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.yarn: need beta_fast > beta_slow > 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.yarn<factor = 40.0, original_max_position_embeddings = 4096, beta_fast = 1.0, beta_slow = 32.0, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// YaRN: mscale must be non-negative.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.yarn: mscale and mscale_all_dim must be >= 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.yarn<factor = 40.0, original_max_position_embeddings = 4096, beta_fast = 32.0, beta_slow = 1.0, mscale = -1.0, mscale_all_dim = 1.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// RoPE: theta must be positive.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.rope: theta must be positive}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.rope<theta = 0.0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// MTP: depth starts at 1.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.mtp: depth must be >= 1, got 0}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.mtp<depth = 0>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// FP8: the block has two positive sizes.
func.func @f(%x: tensor<?x2x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{#ds.fp8: block must be two positive sizes [rows, columns]}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>, test = #ds.fp8<block = [128]>} : tensor<?x2x4xf32>, tensor<?xi32>
  return
}

// -----

// ds.quantization is a module attribute.
// expected-error @+1 {{'ds.quantization' is a module attribute}}
func.func @f() attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  return
}

// -----

// ds.quantization holds a #ds.fp8.
// expected-error @+1 {{'ds.quantization' must be a #ds.fp8 attribute}}
module attributes {ds.quantization = 1 : i64} {
}

// -----

// Unknown ds attribute.
// expected-error @+1 {{unknown ds dialect attribute 'ds.bogus'}}
module attributes {ds.bogus = 1 : i64} {
}

// -----

// An FP8 weight needs its scale companion.
module attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  // expected-error @+1 {{FP8 weight 'w.weight' has no 'w.weight_scale_inv' companion}}
  ds.weight @w.weight : tensor<256x256xf8E4M3FN>
}

// -----

// The scale companion has one f32 per block, partial blocks included.
module attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  ds.weight @w.weight : tensor<576x7168xf8E4M3FN>
  // expected-error @+1 {{scale 'w.weight_scale_inv' must be tensor<5x56xf32> for the 128x128 blocks of a 576x7168 weight}}
  ds.weight @w.weight_scale_inv : tensor<4x56xf32>
}

// -----

// Weights are f32, bf16, f16 or f8E4M3FN.
// expected-error @+1 {{weight 'w' has element type 'i8'; checkpoints hold f32, bf16, f16 or f8E4M3FN}}
ds.weight @w : tensor<4xi8>

// -----

// Weights are static tensors.
// expected-error @+1 {{attribute 'type' failed to satisfy constraint}}
ds.weight @w : tensor<?x4xf32>

// -----

// Weights are not empty.
// expected-error @+1 {{weight 'w' is empty}}
ds.weight @w : tensor<0x4xf32>

// -----

// FP8 weights are 2-D '*.weight' tensors.
module attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  // expected-error @+1 {{FP8 weight 'w.weight' must be a 2-D '*.weight' tensor}}
  ds.weight @w.weight : tensor<4xf8E4M3FN>
}

// -----

// FP8 weights need the module's block size.
// expected-error @+1 {{FP8 weight 'w.weight' needs a module 'ds.quantization' attribute giving its block size}}
ds.weight @w.weight : tensor<4x4xf8E4M3FN>

// -----

// Weights live at module level.
func.func @f() {
  // expected-error @+1 {{expects parent op 'builtin.module'}}
  ds.weight @w : tensor<4xf32>
  return
}

// -----

// A weight that is not declared.
func.func @f(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{weight 'missing' is not defined by a ds.weight}}
  %0 = ds.rms_norm %x, @missing : tensor<?x4xf32>
  return %0 : tensor<?x4xf32>
}

// -----

// Weight shape vs config: kv_b_proj of an MLA layer.
ds.weight @a.q_proj.weight : tensor<12x16xbf16>
ds.weight @a.kv_a_proj_with_mqa.weight : tensor<10x16xbf16>
ds.weight @a.kv_a_layernorm.weight : tensor<8xbf16>
ds.weight @a.kv_b_proj.weight : tensor<12x8xbf16>
ds.weight @a.o_proj.weight : tensor<16x8xbf16>
func.func @f(%x: tensor<?x16xf32>, %p: tensor<?xi32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{weight 'a.kv_b_proj.weight' has shape [12, 8] but the op implies [16, 8]}}
  %0 = ds.mla %x, %p {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #ds.rope<theta = 1.0>} : tensor<?x16xf32>, tensor<?xi32>
  return %0 : tensor<?x16xf32>
}

// -----

// Weight shape vs config: expert intermediate size.
ds.weight @m.gate.weight : tensor<2x16xbf16>
ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xbf16>
ds.weight @m.experts.0.up_proj.weight : tensor<8x16xbf16>
ds.weight @m.experts.0.down_proj.weight : tensor<16x8xbf16>
ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xbf16>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{weight 'm.experts.1.gate_proj.weight' has shape [4, 16] but the op implies [8, 16]}}
  %0 = ds.moe %x {prefix = "m", config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
  return %0 : tensor<?x16xf32>
}

// -----

// noaux_tc routing needs e_score_correction_bias.
ds.weight @m.gate.weight : tensor<4x16xbf16>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{weight 'm.gate.e_score_correction_bias' is not defined by a ds.weight}}
  %0 = ds.moe %x {prefix = "m", config = #ds.moe<experts = 4, shared = 0, top_k = 1, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 1.0>} : tensor<?x16xf32>
  return %0 : tensor<?x16xf32>
}

// -----

// Shared experts are one fused MLP of shared * inter.
ds.weight @m.gate.weight : tensor<1x16xbf16>
ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xbf16>
ds.weight @m.experts.0.up_proj.weight : tensor<8x16xbf16>
ds.weight @m.experts.0.down_proj.weight : tensor<16x8xbf16>
ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xbf16>
func.func @f(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // expected-error @+1 {{weight 'm.shared_experts.gate_proj.weight' has shape [8, 16] but the op implies [16, 16]}}
  %0 = ds.moe %x {prefix = "m", config = #ds.moe<experts = 1, shared = 2, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
  return %0 : tensor<?x16xf32>
}

// -----

// Only linear-layer weights may be FP8.
module attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  ds.weight @emb.weight : tensor<32x16xf8E4M3FN>
  ds.weight @emb.weight_scale_inv : tensor<1x1xf32>
  func.func @f(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    // expected-error @+1 {{weight 'emb.weight' cannot be FP8: only linear-layer weights are quantized}}
    %0 = ds.embedding %ids, @emb.weight : (tensor<?xi32>) -> tensor<?x16xf32>
    return %0 : tensor<?x16xf32>
  }
}

// -----

// embedding: result is [tokens, hidden].
ds.weight @e : tensor<32x16xf32>
func.func @f(%ids: tensor<?xi32>) {
  // expected-error @+1 {{result must be [tokens, hidden] with a static hidden size}}
  %0 = ds.embedding %ids, @e : (tensor<?xi32>) -> tensor<?x?xf32>
  return
}

// -----

// embedding: one row per id.
ds.weight @e : tensor<32x16xf32>
func.func @f(%ids: tensor<3xi32>) {
  // expected-error @+1 {{ids and result disagree on the number of tokens (3 vs 4)}}
  %0 = ds.embedding %ids, @e : (tensor<3xi32>) -> tensor<4x16xf32>
  return
}

// -----

// rms_norm: eps must be positive.
ds.weight @w : tensor<4xf32>
func.func @f(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{eps must be positive, got 0}}
  %0 = ds.rms_norm %x, @w {eps = 0.0 : f64} : tensor<?x4xf32>
  return
}

// -----

// rms_norm: the normalized dimension is static.
ds.weight @w : tensor<4xf32>
func.func @f(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{input needs a static last dimension}}
  %0 = ds.rms_norm %x, @w : tensor<?x?xf32>
  return
}

// -----

// linear: input and result ranks agree.
ds.weight @w : tensor<8x4xf32>
func.func @f(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{input and result must have the same rank >= 1}}
  %0 = ds.linear %x, @w : (tensor<?x4xf32>) -> tensor<8xf32>
  return
}

// -----

// linear: only the last dimension changes.
ds.weight @w : tensor<8x4xf32>
func.func @f(%x: tensor<3x4xf32>) {
  // expected-error @+1 {{input and result differ in dimension 0}}
  %0 = ds.linear %x, @w : (tensor<3x4xf32>) -> tensor<5x8xf32>
  return
}

// -----

// linear: feature sizes are static.
ds.weight @w : tensor<8x4xf32>
func.func @f(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{input and result need static feature sizes}}
  %0 = ds.linear %x, @w : (tensor<?x?xf32>) -> tensor<?x8xf32>
  return
}

// -----

// lm_head: input is [tokens, hidden].
ds.weight @w : tensor<32x4xf32>
func.func @f(%x: tensor<?x2x4xf32>) {
  // expected-error @+1 {{input must be [tokens, hidden] with a static hidden size}}
  %0 = ds.lm_head %x, @w : (tensor<?x2x4xf32>) -> tensor<?x32xf32>
  return
}

// -----

// lm_head: one row of logits per token.
ds.weight @w : tensor<32x4xf32>
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{input and result disagree on the number of tokens (2 vs 3)}}
  %0 = ds.lm_head %x, @w : (tensor<2x4xf32>) -> tensor<3x32xf32>
  return
}

// -----

// rope: input is [tokens, heads, dim].
func.func @f(%x: tensor<?x4xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{input must be [tokens, heads, dim]}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>} : tensor<?x4xf32>, tensor<?xi32>
  return
}

// -----

// rope: rotated dims odd.
func.func @f(%x: tensor<?x2x5xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{rotated dim must be static and even (pairs (2i, 2i+1) rotate together), got 5}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>} : tensor<?x2x5xf32>, tensor<?xi32>
  return
}

// -----

// rope: one position per token.
func.func @f(%x: tensor<3x2x4xf32>, %p: tensor<2xi32>) {
  // expected-error @+1 {{input and positions disagree on the number of tokens (3 vs 2)}}
  %0 = ds.rope %x, %p {config = #ds.rope<theta = 1.0>} : tensor<3x2x4xf32>, tensor<2xi32>
  return
}

// -----

// attention: operands are [tokens, heads, dim].
func.func @f(%q: tensor<?x4xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>) {
  // expected-error @+1 {{operands and result must be [tokens, heads, dim] with static heads and dim}}
  %0 = ds.attention %q, %k, %v : tensor<?x4xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: operands agree on tokens.
func.func @f(%q: tensor<3x4x8xf32>, %k: tensor<2x2x8xf32>, %v: tensor<2x2x8xf32>) {
  // expected-error @+1 {{operands disagree on the number of tokens}}
  %0 = ds.attention %q, %k, %v : tensor<3x4x8xf32>, tensor<2x2x8xf32>, tensor<2x2x8xf32> -> tensor<3x4x8xf32>
  return
}

// -----

// attention: key and value heads agree.
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x1x8xf32>) {
  // expected-error @+1 {{key has 2 heads but value has 1}}
  %0 = ds.attention %q, %k, %v : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x1x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: GQA needs query heads % kv heads == 0.
func.func @f(%q: tensor<?x6x8xf32>, %k: tensor<?x4x8xf32>, %v: tensor<?x4x8xf32>) {
  // expected-error @+1 {{query heads (6) must be a multiple of key/value heads (4)}}
  %0 = ds.attention %q, %k, %v : tensor<?x6x8xf32>, tensor<?x4x8xf32>, tensor<?x4x8xf32> -> tensor<?x6x8xf32>
  return
}

// -----

// attention: query and key dims agree.
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x6xf32>, %v: tensor<?x2x8xf32>) {
  // expected-error @+1 {{query dim (8) differs from key dim (6)}}
  %0 = ds.attention %q, %k, %v : tensor<?x4x8xf32>, tensor<?x2x6xf32>, tensor<?x2x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: result is [tokens, query heads, value dim].
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x6xf32>) {
  // expected-error @+1 {{result must be [tokens, 4, 6]}}
  %0 = ds.attention %q, %k, %v : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x6xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: window must be positive.
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>) {
  // expected-error @+1 {{window must be positive, got 0}}
  %0 = ds.attention %q, %k, %v {window = 0 : i64} : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: scale must be positive.
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>) {
  // expected-error @+1 {{scale must be positive}}
  %0 = ds.attention %q, %k, %v {scale = -1.0 : f64} : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// attention: a sliding window is causal.
func.func @f(%q: tensor<?x4x8xf32>, %k: tensor<?x2x8xf32>, %v: tensor<?x2x8xf32>) {
  // expected-error @+1 {{a sliding window needs causal attention}}
  %0 = ds.attention %q, %k, %v {causal = false, window = 4 : i64} : tensor<?x4x8xf32>, tensor<?x2x8xf32>, tensor<?x2x8xf32> -> tensor<?x4x8xf32>
  return
}

// -----

// mla: input is [tokens, hidden].
func.func @f(%x: tensor<?x?xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{input must be [tokens, hidden] with a static hidden size}}
  %0 = ds.mla %x, %p {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #ds.rope<theta = 1.0>} : tensor<?x?xf32>, tensor<?xi32>
  return
}

// -----

// mla: one position per token.
func.func @f(%x: tensor<3x16xf32>, %p: tensor<2xi32>) {
  // expected-error @+1 {{input and positions disagree on the number of tokens (3 vs 2)}}
  %0 = ds.mla %x, %p {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #ds.rope<theta = 1.0>} : tensor<3x16xf32>, tensor<2xi32>
  return
}

// -----

// mla: eps must be positive.
func.func @f(%x: tensor<?x16xf32>, %p: tensor<?xi32>) {
  // expected-error @+1 {{eps must be positive, got -1}}
  %0 = ds.mla %x, %p {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #ds.rope<theta = 1.0>, eps = -1.0 : f64} : tensor<?x16xf32>, tensor<?xi32>
  return
}

// -----

// mlp: inter must be positive.
func.func @f(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{inter must be positive, got 0}}
  %0 = ds.mlp %x {prefix = "m", inter = 0 : i64} : tensor<?x16xf32>
  return
}

// -----

// mlp: input is [tokens, hidden].
func.func @f(%x: tensor<16xf32>) {
  // expected-error @+1 {{input must be [tokens, hidden] with a static hidden size}}
  %0 = ds.mlp %x {prefix = "m", inter = 8 : i64} : tensor<16xf32>
  return
}

// -----

// moe: input is [tokens, hidden].
func.func @f(%x: tensor<16xf32>) {
  // expected-error @+1 {{input must be [tokens, hidden] with a static hidden size}}
  %0 = ds.moe %x {prefix = "m", config = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>} : tensor<16xf32>
  return
}

// -----

// mtp: hidden is [tokens, hidden].
func.func @f(%h: tensor<?x?xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{hidden must be [tokens, hidden] with a static hidden size}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<?x?xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x?xf32> {
  ^bb0(%x: tensor<?x?xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<?x?xf32>
  }
  return
}

// -----

// mtp: logits are [tokens, vocab].
func.func @f(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{logits must be [tokens, hidden] with a static hidden size}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?xf32>, tensor<?x16xf32> {
  ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<?x16xf32>
  }
  return
}

// -----

// mtp: one id per token.
func.func @f(%h: tensor<3x16xf32>, %ids: tensor<2xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{hidden and ids disagree on the number of tokens (3 vs 2)}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<3x16xf32>, tensor<2xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<3x16xf32> {
  ^bb0(%x: tensor<3x16xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<3x16xf32>
  }
  return
}

// -----

// mtp: one position per token.
func.func @f(%h: tensor<3x16xf32>, %ids: tensor<3xi32>, %pos: tensor<2xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{hidden and positions disagree on the number of tokens (3 vs 2)}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<3x16xf32>, tensor<3xi32>, tensor<2xi32> -> tensor<?x32xf32>, tensor<3x16xf32> {
  ^bb0(%x: tensor<3x16xf32>, %p: tensor<2xi32>):
    ds.yield %x : tensor<3x16xf32>
  }
  return
}

// -----

// mtp: one row of logits per token.
func.func @f(%h: tensor<3x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{hidden and logits disagree on the number of tokens (3 vs 2)}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<3x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<2x32xf32>, tensor<3x16xf32> {
  ^bb0(%x: tensor<3x16xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<3x16xf32>
  }
  return
}

// -----

// mtp: the result has the hidden type.
func.func @f(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{result must have the type of hidden ('tensor<?x16xf32>')}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x8xf32> {
  ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<?x16xf32>
  }
  return
}

// -----

// mtp: eps must be positive.
func.func @f(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{eps must be positive, got 0}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h, eps = 0.0 : f64} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
  ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
    ds.yield %x : tensor<?x16xf32>
  }
  return
}

// -----

// mtp: the block takes (hidden, positions).
func.func @f(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{body must take (hidden, positions) of types ('tensor<?x16xf32>', 'tensor<?xi32>')}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
  ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi64>):
    ds.yield %x : tensor<?x16xf32>
  }
  return
}

// -----

// mtp: the block yields one hidden state.
func.func @f(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>, %other: tensor<?x8xf32>) {
  // expected-error @+1 {{body must end in ds.yield of one 'tensor<?x16xf32>'}}
  %l, %y = ds.mtp %h, %ids, %pos {prefix = "m", config = #ds.mtp<depth = 1>, embed = @e, head = @h} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
  ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
    ds.yield
  }
  return
}

// -----

// yield: only inside ds.mtp or ds.stage.
func.func @f(%x: tensor<?x16xf32>) {
  // expected-error @+1 {{expects parent op to be one of 'ds.mtp, ds.stage'}}
  ds.yield %x : tensor<?x16xf32>
}

// -----

// expected-error @+1 {{#ds.plan: ep must be >= 1, got 0}}
module attributes {ds.plan = #ds.plan<tp = 1, ep = 0, pp = 1, dp = 1>} {}

// -----

// expected-error @+1 {{#ds.shard: give exactly one of dim (a split) and owner (a placement), both >= 0}}
ds.weight @w {shards = [#ds.shard<axis = tp, dim = 0, owner = 1>]} : tensor<4x8xf32>

// -----

// expected-error @+1 {{'ds.weight' op weight 'w' has shards but the module has no 'ds.plan'}}
ds.weight @w {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x8xf32>

// -----

module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 1, dp = 1>} {
  // expected-error @+1 {{'ds.weight' op weight 'w' is split along dim 2 but has rank 2}}
  ds.weight @w {shards = [#ds.shard<axis = tp, dim = 2>]} : tensor<4x8xf32>
}

// -----

module attributes {ds.plan = #ds.plan<tp = 1, ep = 2, pp = 1, dp = 1>} {
  // expected-error @+1 {{'ds.weight' op weight 'w' is owned by ep rank 2 of 2}}
  ds.weight @w {shards = [#ds.shard<axis = ep, owner = 2>]} : tensor<4x8xf32>
}

// -----

// expected-error @+1 {{'ds.plan' must be a #ds.plan attribute}}
module attributes {ds.plan = 2} {}

// -----

func.func @f(%x: tensor<?x8xf32>) -> tensor<?x12xf32> {
  // expected-error @+1 {{'ds.all_gather' op result dim 1 (12) must be a static multiple of the input's (8)}}
  %g = ds.all_gather %x {axis = #ds.axis<tp>, dim = 1} : (tensor<?x8xf32>) -> tensor<?x12xf32>
  return %g : tensor<?x12xf32>
}

// -----

func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'ds.stage' op body arguments must have the types of the inputs}}
  %a = ds.stage 0 ins(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32> {
  ^bb0(%in: tensor<?x4xf32>):
    ds.yield
  }
  return %a : tensor<?x8xf32>
}

// -----

func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // expected-error @+1 {{'ds.stage' op body must end in ds.yield of the results' types}}
  %a = ds.stage 0 ins(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32> {
  ^bb0(%in: tensor<?x8xf32>):
    ds.yield
  }
  return %a : tensor<?x8xf32>
}

// -----

func.func @f(%x: tensor<?x8xf32>) {
  // expected-error @+1 {{'ds.stage' op attribute 'stage' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  ds.stage -1 ins(%x) : (tensor<?x8xf32>) -> () {
  ^bb0(%in: tensor<?x8xf32>):
    ds.yield
  }
  return
}
