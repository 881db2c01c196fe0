// RUN: ds-opt --split-input-file %s | ds-opt --split-input-file | FileCheck %s
// RUN: ds-opt --split-input-file --mlir-print-op-generic %s | ds-opt --split-input-file | FileCheck %s

// Every op of the dialect, printed and parsed back.

// CHECK: #[[ROPE0:.+]] = #ds.rope<theta = 500000.0>
// CHECK-LABEL: module
// CHECK: ds.weight @emb : tensor<32x16xbf16>
// CHECK: ds.weight @norm : tensor<16xf32>
// CHECK: ds.weight @proj : tensor<8x16xf16>
// CHECK-LABEL: func.func @primitives
// CHECK: %[[X:.+]] = ds.embedding %{{.+}}, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
// CHECK: ds.rms_norm %[[X]], @norm {eps = 1.000000e-05 : f64} : tensor<?x16xf32>
// CHECK: ds.linear %{{.+}}, @proj : (tensor<?x16xf32>) -> tensor<?x8xf32>
// CHECK: ds.rope %{{.+}}, %{{.+}} {config = #[[ROPE0]]} : tensor<?x4x2xf32>, tensor<?xi32>
// CHECK: ds.attention %{{.+}}, %{{.+}}, %{{.+}} {scale = 2.500000e-01 : f64, window = 16 : i64} : tensor<?x4x2xf32>, tensor<?x2x2xf32>, tensor<?x2x2xf32> -> tensor<?x4x2xf32>
// CHECK: ds.attention %{{.+}}, %{{.+}}, %{{.+}} {causal = false} : tensor<?x4x2xf32>, tensor<?x4x2xf32>, tensor<?x4x2xf32> -> tensor<?x4x2xf32>
// CHECK: ds.lm_head %{{.+}}, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32>
module {
  ds.weight @emb : tensor<32x16xbf16>
  ds.weight @norm : tensor<16xf32>
  ds.weight @proj : tensor<8x16xf16>
  func.func @primitives(%ids: tensor<?xi32>, %pos: tensor<?xi32>, %q: tensor<?x4x2xf32>, %kv: tensor<?x2x2xf32>) -> tensor<?x32xf32> {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n = ds.rms_norm %x, @norm {eps = 1.0e-5 : f64} : tensor<?x16xf32>
    %l = ds.linear %n, @proj : (tensor<?x16xf32>) -> tensor<?x8xf32>
    %r = ds.rope %q, %pos {config = #ds.rope<theta = 500000.0>} : tensor<?x4x2xf32>, tensor<?xi32>
    %o = ds.attention %r, %kv, %kv {window = 16 : i64, scale = 0.25 : f64} : tensor<?x4x2xf32>, tensor<?x2x2xf32>, tensor<?x2x2xf32> -> tensor<?x4x2xf32>
    %p = ds.attention %r, %r, %r {causal = false} : tensor<?x4x2xf32>, tensor<?x4x2xf32>, tensor<?x4x2xf32> -> tensor<?x4x2xf32>
    %logits = ds.lm_head %x, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %logits : tensor<?x32xf32>
  }
}

// -----

// MLA with and without a query LoRA, a dense MLP, MoE routing of each kind.
// CHECK: #[[MLA:.+]] = #ds.mla<heads = 2, q_lora_rank = 8, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>
// CHECK: #[[MLA1:.+]] = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>
// CHECK: #[[MOE:.+]] = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
// CHECK: #[[MOE1:.+]] = #ds.moe<experts = 4, shared = 0, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>
// CHECK: #[[MOE2:.+]] = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 8, scoring = softmax, topk_method = group_limited_greedy, n_group = 2, topk_group = 1, norm_topk = false, scale = 16.0>
// CHECK: #[[YARN:.+]] = #ds.yarn<factor = 40.0, original_max_position_embeddings = 4096, beta_fast = 32.0, beta_slow = 1.0, mscale = 0.707, mscale_all_dim = 0.707>
// CHECK: #[[ROPE:.+]] = #ds.rope<theta = 10000.0, yarn = #[[YARN]]>
// CHECK-LABEL: module
// CHECK: ds.mla %{{.+}}, %{{.+}} {config = #[[MLA]], prefix = "a", rope = #[[ROPE]]} : tensor<?x16xf32>, tensor<?xi32>
// CHECK: ds.mla %{{.+}}, %{{.+}} {config = #[[MLA1]], eps = 1.000000e-05 : f64, prefix = "b", rope = #[[ROPE]]} : tensor<?x16xf32>, tensor<?xi32>
// CHECK: ds.mlp %{{.+}} {inter = 8 : i64, prefix = "m"} : tensor<?x16xf32>
// CHECK: ds.moe %{{.+}} {config = #[[MOE]], prefix = "v3"} : tensor<?x16xf32>
// CHECK: ds.moe %{{.+}} {config = #[[MOE1]], prefix = "v2"} : tensor<?x16xf32>
// CHECK: ds.moe %{{.+}} {config = #[[MOE2]], prefix = "v2g"} : tensor<?x16xf32>
#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 40.0, original_max_position_embeddings = 4096, beta_fast = 32.0, beta_slow = 1.0, mscale = 0.707, mscale_all_dim = 0.707>>
module {
  ds.weight @a.q_a_proj.weight : tensor<8x16xbf16>
  ds.weight @a.q_a_layernorm.weight : tensor<8xbf16>
  ds.weight @a.q_b_proj.weight : tensor<12x8xbf16>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<10x16xbf16>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xbf16>
  ds.weight @a.kv_b_proj.weight : tensor<16x8xbf16>
  ds.weight @a.o_proj.weight : tensor<16x8xbf16>
  ds.weight @b.q_proj.weight : tensor<12x16xbf16>
  ds.weight @b.kv_a_proj_with_mqa.weight : tensor<10x16xbf16>
  ds.weight @b.kv_a_layernorm.weight : tensor<8xbf16>
  ds.weight @b.kv_b_proj.weight : tensor<16x8xbf16>
  ds.weight @b.o_proj.weight : tensor<16x8xbf16>
  ds.weight @m.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @m.up_proj.weight : tensor<8x16xbf16>
  ds.weight @m.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v3.gate.weight : tensor<4x16xbf16>
  ds.weight @v3.gate.e_score_correction_bias : tensor<4xf32>
  ds.weight @v3.experts.0.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.0.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.0.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v3.experts.1.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.1.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.1.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v3.experts.2.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.2.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.2.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v3.experts.3.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.3.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.experts.3.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v3.shared_experts.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.shared_experts.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v3.shared_experts.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2.gate.weight : tensor<4x16xbf16>
  ds.weight @v2.experts.0.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.0.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.0.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2.experts.1.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.1.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.1.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2.experts.2.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.2.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.2.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2.experts.3.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.3.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2.experts.3.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2g.gate.weight : tensor<4x16xbf16>
  ds.weight @v2g.experts.0.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.0.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.0.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2g.experts.1.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.1.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.1.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2g.experts.2.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.2.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.2.down_proj.weight : tensor<16x8xbf16>
  ds.weight @v2g.experts.3.gate_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.3.up_proj.weight : tensor<8x16xbf16>
  ds.weight @v2g.experts.3.down_proj.weight : tensor<16x8xbf16>
  func.func @blocks(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
    %a = ds.mla %x, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 8, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %b = ds.mla %a, %pos {prefix = "b", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 4, qk_rope = 2, v_head = 4>, rope = #rope, eps = 1.0e-5 : f64} : tensor<?x16xf32>, tensor<?xi32>
    %m = ds.mlp %b {prefix = "m", inter = 8 : i64} : tensor<?x16xf32>
    %e3 = ds.moe %m {prefix = "v3", config = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>} : tensor<?x16xf32>
    %e2 = ds.moe %e3 {prefix = "v2", config = #ds.moe<experts = 4, shared = 0, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
    %e2g = ds.moe %e2 {prefix = "v2g", config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 8, scoring = softmax, topk_method = group_limited_greedy, n_group = 2, topk_group = 1, norm_topk = false, scale = 16.0>} : tensor<?x16xf32>
    return %e2g : tensor<?x16xf32>
  }
}

// -----

// An MTP module whose embedding and head are the main model's, and FP8
// weights with their block scales.
// CHECK-LABEL: module attributes {ds.quantization = #ds.fp8<block = [128, 128]>}
// CHECK: ds.weight @mtp.eh_proj.weight : tensor<16x32xbf16>
// CHECK: ds.weight @fp8.weight : tensor<200x300xf8E4M3FN>
// CHECK: ds.weight @fp8.weight_scale_inv : tensor<2x3xf32>
// CHECK: %{{.+}}, %{{.+}} = ds.mtp %{{.+}}, %{{.+}}, %{{.+}} {config = #ds.mtp<depth = 1>, embed = @emb, head = @head, prefix = "mtp"} : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
// CHECK: ^bb0(%[[A:.+]]: tensor<?x16xf32>, %{{.+}}: tensor<?xi32>):
// CHECK:   ds.yield %[[A]] : tensor<?x16xf32>
module attributes {ds.quantization = #ds.fp8<block = [128, 128]>} {
  ds.weight @emb : tensor<32x16xbf16>
  ds.weight @head : tensor<32x16xbf16>
  ds.weight @mtp.enorm.weight : tensor<16xbf16>
  ds.weight @mtp.hnorm.weight : tensor<16xbf16>
  ds.weight @mtp.eh_proj.weight : tensor<16x32xbf16>
  ds.weight @mtp.shared_head.norm.weight : tensor<16xbf16>
  ds.weight @fp8.weight : tensor<200x300xf8E4M3FN>
  ds.weight @fp8.weight_scale_inv : tensor<2x3xf32>
  func.func @mtp(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %logits, %y = ds.mtp %h, %ids, %pos {prefix = "mtp", config = #ds.mtp<depth = 1>, embed = @emb, head = @head}
        : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
    ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
      ds.yield %x : tensor<?x16xf32>
    }
    return %logits, %y : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// A partitioned weight and the collectives.
// CHECK-LABEL: module attributes {ds.plan = #ds.plan<tp = 2, ep = 2, pp = 1, dp = 1>}
// CHECK: ds.weight @w {shards = [#ds.shard<axis = tp, dim = 1>, #ds.shard<axis = ep, owner = 1>]} : tensor<4x8xf32>
// CHECK: ds.all_reduce %{{.+}} {axis = #ds.axis<tp>} : tensor<?x8xf32>
// CHECK: ds.all_gather %{{.+}} {axis = #ds.axis<ep>, dim = 1 : i64} : (tensor<?x8xf32>) -> tensor<?x16xf32>
module attributes {ds.plan = #ds.plan<tp = 2, ep = 2, pp = 1, dp = 1>} {
  ds.weight @w {shards = [#ds.shard<axis = tp, dim = 1>, #ds.shard<axis = ep, owner = 1>]} : tensor<4x8xf32>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x16xf32> {
    %s = ds.all_reduce %x {axis = #ds.axis<tp>} : tensor<?x8xf32>
    %g = ds.all_gather %s {axis = #ds.axis<ep>, dim = 1} : (tensor<?x8xf32>) -> tensor<?x16xf32>
    return %g : tensor<?x16xf32>
  }
}

// -----

// Pipeline stages: the second stage reads the first one's result and a
// function argument.
// CHECK-LABEL: func.func @stages
// CHECK: %[[A:.+]] = ds.stage 0 ins(%{{.+}}) : (tensor<?x8xf32>) -> tensor<?x8xf32> {
// CHECK: ds.all_reduce
// CHECK: ds.yield %{{.+}} : tensor<?x8xf32>
// CHECK: %[[B:.+]]:2 = ds.stage 1 ins(%[[A]], %{{.+}}) : (tensor<?x8xf32>, tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
// CHECK: return %[[B]]#1
module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 2, dp = 1>} {
  func.func @stages(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %a = ds.stage 0 ins(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32> {
    ^bb0(%in: tensor<?x8xf32>):
      %s = ds.all_reduce %in {axis = #ds.axis<tp>} : tensor<?x8xf32>
      ds.yield %s : tensor<?x8xf32>
    }
    %b:2 = ds.stage 1 ins(%a, %x) : (tensor<?x8xf32>, tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
    ^bb0(%in: tensor<?x8xf32>, %orig: tensor<?x8xf32>):
      ds.yield %orig, %in : tensor<?x8xf32>, tensor<?x8xf32>
    }
    return %b#1 : tensor<?x8xf32>
  }
}
