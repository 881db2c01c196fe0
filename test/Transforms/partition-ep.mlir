// RUN: ds-opt --split-input-file --verify-diagnostics --ds-partition-ep %s | FileCheck %s
// RUN: not ds-opt --split-input-file --ds-partition-ep --ds-lower-to-kernels="max-seq-len=64" %s 2>/dev/null | FileCheck %s --check-prefix=KERNELS
// (The error cases below make that second run fail as a whole; its checks
// look at the first case only.)

// ep = 2 over 4 experts: experts 0-1 on ep rank 0, 2-3 on ep rank 1 (all
// three projections); router, shared experts and attention replicated.

// CHECK-DAG: ds.weight @m.gate.weight : tensor<4x16xf32>
// CHECK-DAG: ds.weight @m.experts.0.gate_proj.weight {shards = [#ds.shard<axis = ep, owner = 0>]} : tensor<8x16xf32>
// CHECK-DAG: ds.weight @m.experts.1.down_proj.weight {shards = [#ds.shard<axis = ep, owner = 0>]} : tensor<16x8xf32>
// CHECK-DAG: ds.weight @m.experts.2.up_proj.weight {shards = [#ds.shard<axis = ep, owner = 1>]} : tensor<8x16xf32>
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight {shards = [#ds.shard<axis = ep, owner = 1>]} : tensor<16x8xf32>
// CHECK-DAG: ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
// CHECK-DAG: ds.weight @a.o_proj.weight : tensor<16x32xf32>
// CHECK: ds.moe %{{.+}} {config = #moe, ep = 2 : i64, prefix = "m"}
// CHECK-NOT: ds.all_reduce

// KERNELS: dsk.moe_experts %{{.+}} {ep = 2 : i64, experts = 4 : i64, inter = 8 : i64, prefix = "m"}

#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 2, pp = 1, dp = 1>} {
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

// With tp as well, the experts' intermediate is split too: two shards.
// CHECK-LABEL: module attributes {ds.plan = #ds.plan<tp = 2, ep = 2
// CHECK: ds.weight @m.experts.1.gate_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>, #ds.shard<axis = ep, owner = 1>]} : tensor<4x16xf32>
module attributes {ds.plan = #ds.plan<tp = 2, ep = 2, pp = 1, dp = 1>} {
  ds.weight @m.gate.weight : tensor<2x16xf32>
  ds.weight @m.experts.0.gate_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<16x4xf32>
  func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    %y = ds.moe %x {prefix = "m", config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}

// -----

module attributes {ds.plan = #ds.plan<tp = 1, ep = 3, pp = 1, dp = 1>} {
  ds.weight @m.gate.weight : tensor<2x16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x8xf32>
  func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    // expected-error @+1 {{'ds.moe' op has 2 routed experts, not divisible by ep = 3}}
    %y = ds.moe %x {prefix = "m", config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}

// -----

// expected-error @+1 {{ds-partition-ep: ep = 2 but the model has no MoE layer to split}}
module attributes {ds.plan = #ds.plan<tp = 1, ep = 2, pp = 1, dp = 1>} {
  ds.weight @head : tensor<32x16xf32>
  func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x32xf32> {
    %l = ds.lm_head %x, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}
