// RUN: ds-opt --split-input-file --verify-diagnostics --ds-partition-ep --ds-partition-dp %s | FileCheck %s
// RUN: not ds-opt --split-input-file --ds-partition-ep --ds-partition-dp --ds-lower-to-kernels="max-seq-len=64" %s 2>/dev/null | FileCheck %s --check-prefix=KERNELS
// (The error case below makes that second run fail as a whole; its checks
// look at the first case only.)

// dp = 2 without ep: the two replicas share the 4 routed experts, 2 each
// (experts 0-1 on dp rank 0, 2-3 on dp rank 1); router, shared experts,
// attention and head whole on both. The MoE's experts are split over 2 ranks.

// CHECK-DAG: ds.weight @m.gate.weight : tensor<4x16xf32>
// CHECK-DAG: ds.weight @m.experts.0.gate_proj.weight {shards = [#ds.shard<axis = dp, owner = 0>]} : tensor<8x16xf32>
// CHECK-DAG: ds.weight @m.experts.1.down_proj.weight {shards = [#ds.shard<axis = dp, owner = 0>]} : tensor<16x8xf32>
// CHECK-DAG: ds.weight @m.experts.2.up_proj.weight {shards = [#ds.shard<axis = dp, owner = 1>]} : tensor<8x16xf32>
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight {shards = [#ds.shard<axis = dp, owner = 1>]} : tensor<16x8xf32>
// CHECK-DAG: ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
// CHECK-DAG: ds.weight @a.o_proj.weight : tensor<16x32xf32>
// CHECK-DAG: ds.weight @head : tensor<32x16xf32>
// CHECK: ds.moe %{{.+}} {config = #moe, ep = 2 : i64, prefix = "m"}
// CHECK-NOT: ds.all_reduce

// KERNELS: dsk.moe_experts %{{.+}} {ep = 2 : i64, experts = 4 : i64, inter = 8 : i64, prefix = "m"}

#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 1, dp = 2>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0 : tensor<16xf32>
  ds.weight @n1 : tensor<16xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  ds.weight @a.q_a_proj.weight : tensor<4x16xf32>
  ds.weight @a.q_a_layernorm.weight : tensor<4xf32>
  ds.weight @a.q_b_proj.weight : tensor<48x4xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a.o_proj.weight : tensor<16x32xf32>
  ds.weight @m.gate.weight : tensor<4x16xf32>
  ds.weight @m.gate.e_score_correction_bias : tensor<4xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.2.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.3.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.down_proj.weight : tensor<16x8xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n = ds.rms_norm %x, @n0 : tensor<?x16xf32>
    %a = ds.mla %n, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 4, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r = arith.addf %x, %a : tensor<?x16xf32>
    %m = ds.rms_norm %r, @n1 : tensor<?x16xf32>
    %f = ds.moe %m {prefix = "m", config = #moe} : tensor<?x16xf32>
    %y = arith.addf %r, %f : tensor<?x16xf32>
    %h = ds.rms_norm %y, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// ep = 2 x dp = 2: an expert group of 4 ranks, one expert each. ep rank i
// keeps experts [2i, 2i + 2) (ds-partition-ep); within them dp rank j keeps
// expert 2i + j. Group rank ep_i * dp + dp_i holds expert (ep_i * 2 + dp_i).

// CHECK-DAG: ds.weight @m.experts.0.gate_proj.weight {shards = [#ds.shard<axis = ep, owner = 0>, #ds.shard<axis = dp, owner = 0>]}
// CHECK-DAG: ds.weight @m.experts.1.gate_proj.weight {shards = [#ds.shard<axis = ep, owner = 0>, #ds.shard<axis = dp, owner = 1>]}
// CHECK-DAG: ds.weight @m.experts.2.up_proj.weight {shards = [#ds.shard<axis = ep, owner = 1>, #ds.shard<axis = dp, owner = 0>]}
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight {shards = [#ds.shard<axis = ep, owner = 1>, #ds.shard<axis = dp, owner = 1>]}
// CHECK-DAG: ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
// CHECK: ds.moe %{{.+}} {config = #moe, ep = 4 : i64, prefix = "m"}

#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 2, pp = 1, dp = 2>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0 : tensor<16xf32>
  ds.weight @n1 : tensor<16xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  ds.weight @a.q_a_proj.weight : tensor<4x16xf32>
  ds.weight @a.q_a_layernorm.weight : tensor<4xf32>
  ds.weight @a.q_b_proj.weight : tensor<48x4xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a.o_proj.weight : tensor<16x32xf32>
  ds.weight @m.gate.weight : tensor<4x16xf32>
  ds.weight @m.gate.e_score_correction_bias : tensor<4xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.2.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.3.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.down_proj.weight : tensor<16x8xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n = ds.rms_norm %x, @n0 : tensor<?x16xf32>
    %a = ds.mla %n, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 4, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r = arith.addf %x, %a : tensor<?x16xf32>
    %m = ds.rms_norm %r, @n1 : tensor<?x16xf32>
    %f = ds.moe %m {prefix = "m", config = #moe} : tensor<?x16xf32>
    %y = arith.addf %r, %f : tensor<?x16xf32>
    %h = ds.rms_norm %y, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// 4 experts cannot be shared by 3 replicas.

#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 1, dp = 3>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0 : tensor<16xf32>
  ds.weight @n1 : tensor<16xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  ds.weight @a.q_a_proj.weight : tensor<4x16xf32>
  ds.weight @a.q_a_layernorm.weight : tensor<4xf32>
  ds.weight @a.q_b_proj.weight : tensor<48x4xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a.o_proj.weight : tensor<16x32xf32>
  ds.weight @m.gate.weight : tensor<4x16xf32>
  ds.weight @m.gate.e_score_correction_bias : tensor<4xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.2.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.2.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.3.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.3.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.down_proj.weight : tensor<16x8xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n = ds.rms_norm %x, @n0 : tensor<?x16xf32>
    %a = ds.mla %n, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 4, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r = arith.addf %x, %a : tensor<?x16xf32>
    %m = ds.rms_norm %r, @n1 : tensor<?x16xf32>
    // expected-error @+1 {{'ds.moe' op has 4 routed experts, not divisible by ep x dp = 1 x 3}}
    %f = ds.moe %m {prefix = "m", config = #moe} : tensor<?x16xf32>
    %y = arith.addf %r, %f : tensor<?x16xf32>
    %h = ds.rms_norm %y, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// A model without MoE layers: dp independent replicas, nothing to place.

// CHECK: module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 1, dp = 2>}
// CHECK: ds.weight @emb : tensor<32x16xf32>
// CHECK-NOT: shards
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 1, dp = 2>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %h = ds.rms_norm %x, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}
