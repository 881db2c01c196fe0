// RUN: ds-opt --split-input-file --verify-diagnostics --ds-partition-tp %s | FileCheck %s
// RUN: not ds-opt --split-input-file --ds-partition-tp --ds-lower-to-kernels="max-seq-len=64" %s 2>/dev/null | FileCheck %s --check-prefix=KERNELS
// (The error cases below make that second run fail as a whole; its checks
// look at the first case only.)

// tp = 2 on one MLA + MoE layer: q_b_proj and kv_b_proj split by rows
// (heads: 2 -> 1), o_proj by columns; the latent path (q_a, kv_a, norms)
// replicated. Routed and shared experts split their intermediate (8 -> 4):
// gate/up rows, down columns; the router stays whole. The head is split by
// vocabulary rows and its logits gathered. Every block's output is a
// partial sum: one all-reduce each.

// CHECK-DAG: #mla = #ds.mla<heads = 1, q_lora_rank = 4,
// CHECK-DAG: #moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 4,
// CHECK-DAG: ds.weight @head {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<16x16xf32>
// CHECK-DAG: ds.weight @a.q_a_proj.weight : tensor<4x16xf32>
// CHECK-DAG: ds.weight @a.q_b_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<24x4xf32>
// CHECK-DAG: ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
// CHECK-DAG: ds.weight @a.kv_b_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<32x8xf32>
// CHECK-DAG: ds.weight @a.o_proj.weight {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<16x16xf32>
// CHECK-DAG: ds.weight @m.gate.weight : tensor<4x16xf32>
// CHECK-DAG: ds.weight @m.experts.3.gate_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<16x4xf32>
// CHECK-DAG: ds.weight @m.shared_experts.up_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<4x16xf32>
// CHECK-LABEL: func.func @forward
// CHECK: %[[A:.+]] = ds.mla %{{.+}} {config = #mla,
// CHECK-NEXT: %[[AS:.+]] = ds.all_reduce %[[A]] {axis = #ds.axis<tp>}
// CHECK-NEXT: arith.addf %{{.+}}, %[[AS]]
// CHECK: %[[F:.+]] = ds.moe %{{.+}} {config = #moe,
// CHECK-NEXT: %[[FS:.+]] = ds.all_reduce %[[F]] {axis = #ds.axis<tp>}
// CHECK: %[[L:.+]] = ds.lm_head %{{.+}}, @head : (tensor<?x16xf32>) -> tensor<?x16xf32>
// CHECK-NEXT: %[[LG:.+]] = ds.all_gather %[[L]] {axis = #ds.axis<tp>, dim = 1 : i64} : (tensor<?x16xf32>) -> tensor<?x32xf32>
// CHECK-NEXT: return %[[LG]],

// At the kernel level the reductions are in place and the gather writes the
// logits output.
// KERNELS-LABEL: func.func @prefill
// KERNELS: dsk.linear %{{.+}}, %[[O:.+]] {weight = @a.o_proj.weight} : memref<?x16xf32>, memref<?x16xf32>
// KERNELS-NEXT: dsk.all_reduce %[[O]] {axis = #ds.axis<tp>}
// KERNELS: dsk.linear %{{.+}}, %[[H:.+]] {weight = @head} : memref<?x16xf32>, memref<?x16xf32>
// KERNELS-NEXT: dsk.all_gather %[[H]], %arg2 {axis = #ds.axis<tp>} : memref<?x16xf32>, memref<?x32xf32>

#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 1, dp = 1>} {
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

// A head shared with the embedding (tie_word_embeddings) stays whole.
// CHECK-LABEL: module attributes {ds.plan
// CHECK: ds.weight @emb : tensor<32x16xf32>
// CHECK: ds.lm_head %{{.+}}, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32>
// CHECK-NOT: ds.all_gather
module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 1, dp = 1>} {
  ds.weight @emb : tensor<32x16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %l = ds.lm_head %x, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %x : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

module attributes {ds.plan = #ds.plan<tp = 3, ep = 1, pp = 1, dp = 1>} {
  ds.weight @a.q_proj.weight : tensor<48x16xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a.o_proj.weight : tensor<16x32xf32>
  func.func @forward(%x: tensor<?x16xf32>, %pos: tensor<?xi32>) -> tensor<?x16xf32> {
    // expected-error @+1 {{'ds.mla' op has 2 heads, not divisible by tp = 3}}
    %a = ds.mla %x, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>, rope = #ds.rope<theta = 10000.0>} : tensor<?x16xf32>, tensor<?xi32>
    return %a : tensor<?x16xf32>
  }
}

// -----

module attributes {ds.plan = #ds.plan<tp = 4, ep = 1, pp = 1, dp = 1>} {
  ds.weight @p.gate_proj.weight : tensor<6x16xf32>
  ds.weight @p.up_proj.weight : tensor<6x16xf32>
  ds.weight @p.down_proj.weight : tensor<16x6xf32>
  func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
    // expected-error @+1 {{'ds.mlp' op has 6 intermediate units, not divisible by tp = 4}}
    %y = ds.mlp %x {prefix = "p", inter = 6} : tensor<?x16xf32>
    return %y : tensor<?x16xf32>
  }
}

// -----

module attributes {ds.plan = #ds.plan<tp = 3, ep = 1, pp = 1, dp = 1>} {
  ds.weight @head : tensor<32x16xf32>
  func.func @forward(%x: tensor<?x16xf32>) -> tensor<?x32xf32> {
    // expected-error @+1 {{'ds.lm_head' op has 32 vocabulary rows, not divisible by tp = 3}}
    %l = ds.lm_head %x, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l : tensor<?x32xf32>
  }
}

// -----

// An FP8 checkpoint (ds.quantization): e4m3 weights split on the 128x128
// block grid, each with its "_scale_inv" split along the same dim.

// CHECK-LABEL: module attributes {ds.plan = #ds.plan<tp = 2
// CHECK-DAG: ds.weight @q.gate_proj.weight {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<256x256xf8E4M3FN>
// CHECK-DAG: ds.weight @q.gate_proj.weight_scale_inv {shards = [#ds.shard<axis = tp, dim = 0>]} : tensor<2x2xf32>
// CHECK-DAG: ds.weight @q.down_proj.weight {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<256x256xf8E4M3FN>
// CHECK-DAG: ds.weight @q.down_proj.weight_scale_inv {shards = [#ds.shard<axis = tp, dim = 1>]} : tensor<2x2xf32>
module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 1, dp = 1>, ds.quantization = #ds.fp8<block = [128, 128]>} {
  ds.weight @q.gate_proj.weight : tensor<512x256xf8E4M3FN>
  ds.weight @q.gate_proj.weight_scale_inv : tensor<4x2xf32>
  ds.weight @q.up_proj.weight : tensor<512x256xf8E4M3FN>
  ds.weight @q.up_proj.weight_scale_inv : tensor<4x2xf32>
  ds.weight @q.down_proj.weight : tensor<256x512xf8E4M3FN>
  ds.weight @q.down_proj.weight_scale_inv : tensor<2x4xf32>
  func.func @forward(%x: tensor<?x256xf32>) -> tensor<?x256xf32> {
    %y = ds.mlp %x {prefix = "q", inter = 512} : tensor<?x256xf32>
    return %y : tensor<?x256xf32>
  }
}

// -----

// A part of an FP8 weight that is not whole blocks has no scales of its own.
module attributes {ds.plan = #ds.plan<tp = 2, ep = 1, pp = 1, dp = 1>, ds.quantization = #ds.fp8<block = [128, 128]>} {
  ds.weight @p.gate_proj.weight : tensor<128x64xf8E4M3FN>
  ds.weight @p.gate_proj.weight_scale_inv : tensor<1x1xf32>
  ds.weight @p.up_proj.weight : tensor<128x64xf8E4M3FN>
  ds.weight @p.up_proj.weight_scale_inv : tensor<1x1xf32>
  ds.weight @p.down_proj.weight : tensor<64x128xf8E4M3FN>
  ds.weight @p.down_proj.weight_scale_inv : tensor<1x1xf32>
  func.func @forward(%x: tensor<?x64xf32>) -> tensor<?x64xf32> {
    // expected-error @+1 {{'ds.mlp' op cannot split FP8 weight 'p.gate_proj.weight' 'tensor<128x64xf8E4M3FN>' along dim 0 over tp = 2: each part (64) must be a whole number of 128-wide FP8 blocks}}
    %y = ds.mlp %x {prefix = "p", inter = 128} : tensor<?x64xf32>
    return %y : tensor<?x64xf32>
  }
}
