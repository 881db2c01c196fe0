// RUN: ds-opt --split-input-file --verify-diagnostics --ds-partition-pp %s | FileCheck %s
// RUN: not ds-opt --split-input-file --ds-partition-pp --ds-lower-to-kernels="max-seq-len=64" %s 2>/dev/null | FileCheck %s --check-prefix=KERNELS
// (The error cases below make that second run fail as a whole; its checks
// look at the first case only.)

// pp = 2 over 3 decoder layers: stage 0 holds the embedding and layer 0
// (0 * 3 / 2 .. 1 * 3 / 2), stage 1 layers 1-2, the final norm, the head and
// the MTP module. Each stage's weights are placed on it; @emb is read by
// stage 0 (embedding) and by the MTP module on stage 1, so it stays whole on
// both. Only the residual stream crosses: one [tokens, 16] value.

// CHECK-DAG: ds.weight @emb : tensor<32x16xf32>
// CHECK-DAG: ds.weight @a0.o_proj.weight {shards = [#ds.shard<axis = pp, owner = 0>]}
// CHECK-DAG: ds.weight @f0.down_proj.weight {shards = [#ds.shard<axis = pp, owner = 0>]}
// CHECK-DAG: ds.weight @n1a {shards = [#ds.shard<axis = pp, owner = 1>]}
// CHECK-DAG: ds.weight @a2.kv_b_proj.weight {shards = [#ds.shard<axis = pp, owner = 1>]}
// CHECK-DAG: ds.weight @head {shards = [#ds.shard<axis = pp, owner = 1>]}
// CHECK-DAG: ds.weight @mtp.eh_proj.weight {shards = [#ds.shard<axis = pp, owner = 1>]}
// CHECK-LABEL: func.func @forward
// CHECK:       %[[X:.+]] = ds.stage 0 ins(%arg0, %arg1) : (tensor<?xi32>, tensor<?xi32>) -> tensor<?x16xf32> {
// CHECK:         ds.embedding
// CHECK:         ds.mla {{.+}} prefix = "a0"
// CHECK-NOT:     ds.mla
// CHECK:         ds.yield %{{.+}} : tensor<?x16xf32>
// CHECK:       %[[OUT:.+]]:2 = ds.stage 1 ins(%[[X]], %arg1) : (tensor<?x16xf32>, tensor<?xi32>) -> (tensor<?x16xf32>, tensor<?x32xf32>) {
// CHECK:         ds.mla {{.+}} prefix = "a1"
// CHECK:         ds.mla {{.+}} prefix = "a2"
// CHECK:         %[[H:.+]] = ds.rms_norm %{{.+}}, @nf
// CHECK:         %[[L:.+]] = ds.lm_head %[[H]], @head
// CHECK:         ds.yield %[[H]], %[[L]]
// CHECK:       return %[[OUT]]#1, %[[OUT]]#0
// CHECK-LABEL: func.func @mtp_1
// CHECK:       ds.stage 1 ins(%arg0, %arg1, %arg2)
// CHECK:         ds.mtp

// Lowered: one program per kind and stage. Stage 0 sends the residual rows
// to stage 1, which receives them first; each stage numbers its cache layers
// from 0 (cache_layers = 2, the larger stage's; an MTP module's layers would
// follow the last stage's).
// KERNELS:      dsk.model = #dsk.model<vocab = 32, hidden = 16, cache_layers = 2
// KERNELS-LABEL: func.func @prefill_stage0
// KERNELS-SAME:  dsk.program = #dsk.program<kind = prefill, max_tokens = 64, arena_bytes = 0>
// KERNELS:       dsk.embedding
// KERNELS:       dsk.kv_cache_write {{.+}} {layer = 0 : i64}
// KERNELS:       dsk.send %{{.+}} {stage = 1 : i64} : memref<?x16xf32>
// KERNELS-NEXT:  return
// KERNELS-LABEL: func.func @decode_stage0
// KERNELS:       dsk.send
// KERNELS-LABEL: func.func @prefill_stage1
// KERNELS-SAME:  stage = 1>
// KERNELS:       dsk.recv %[[IN:.+]] {stage = 0 : i64} : memref<?x16xf32>
// KERNELS:       dsk.rms_norm %[[IN]]
// KERNELS:       dsk.kv_cache_write {{.+}} {layer = 0 : i64}
// KERNELS:       dsk.kv_cache_write {{.+}} {layer = 1 : i64}
// KERNELS-NOT:   dsk.send
// KERNELS:       dsk.linear {{.+}} {weight = @head}
// KERNELS-LABEL: func.func @decode_stage1
// KERNELS-LABEL: func.func @mtp_stage1
// KERNELS-SAME:  stage = 1>

#mla = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>
#rope = #ds.rope<theta = 10000.0>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 2, dp = 1>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0a : tensor<16xf32>
  ds.weight @n0b : tensor<16xf32>
  ds.weight @a0.q_proj.weight : tensor<48x16xf32>
  ds.weight @a0.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a0.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a0.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a0.o_proj.weight : tensor<16x32xf32>
  ds.weight @f0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f0.up_proj.weight : tensor<8x16xf32>
  ds.weight @f0.down_proj.weight : tensor<16x8xf32>
  ds.weight @n1a : tensor<16xf32>
  ds.weight @n1b : tensor<16xf32>
  ds.weight @a1.q_proj.weight : tensor<48x16xf32>
  ds.weight @a1.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a1.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a1.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a1.o_proj.weight : tensor<16x32xf32>
  ds.weight @f1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f1.up_proj.weight : tensor<8x16xf32>
  ds.weight @f1.down_proj.weight : tensor<16x8xf32>
  ds.weight @n2a : tensor<16xf32>
  ds.weight @n2b : tensor<16xf32>
  ds.weight @a2.q_proj.weight : tensor<48x16xf32>
  ds.weight @a2.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a2.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a2.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a2.o_proj.weight : tensor<16x32xf32>
  ds.weight @f2.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f2.up_proj.weight : tensor<8x16xf32>
  ds.weight @f2.down_proj.weight : tensor<16x8xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  ds.weight @mtp.enorm.weight : tensor<16xf32>
  ds.weight @mtp.hnorm.weight : tensor<16xf32>
  ds.weight @mtp.eh_proj.weight : tensor<16x32xf32>
  ds.weight @mtp.shared_head.norm.weight : tensor<16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x0 = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n0 = ds.rms_norm %x0, @n0a : tensor<?x16xf32>
    %a0 = ds.mla %n0, %pos {prefix = "a0", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r0 = arith.addf %x0, %a0 : tensor<?x16xf32>
    %m0 = ds.rms_norm %r0, @n0b : tensor<?x16xf32>
    %f0 = ds.mlp %m0 {prefix = "f0", inter = 8} : tensor<?x16xf32>
    %x1 = arith.addf %r0, %f0 : tensor<?x16xf32>
    %n1 = ds.rms_norm %x1, @n1a : tensor<?x16xf32>
    %a1 = ds.mla %n1, %pos {prefix = "a1", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r1 = arith.addf %x1, %a1 : tensor<?x16xf32>
    %m1 = ds.rms_norm %r1, @n1b : tensor<?x16xf32>
    %f1 = ds.mlp %m1 {prefix = "f1", inter = 8} : tensor<?x16xf32>
    %x2 = arith.addf %r1, %f1 : tensor<?x16xf32>
    %n2 = ds.rms_norm %x2, @n2a : tensor<?x16xf32>
    %a2 = ds.mla %n2, %pos {prefix = "a2", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r2 = arith.addf %x2, %a2 : tensor<?x16xf32>
    %m2 = ds.rms_norm %r2, @n2b : tensor<?x16xf32>
    %f2 = ds.mlp %m2 {prefix = "f2", inter = 8} : tensor<?x16xf32>
    %x3 = arith.addf %r2, %f2 : tensor<?x16xf32>
    %h = ds.rms_norm %x3, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
  func.func @mtp_1(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %logits, %y = ds.mtp %h, %ids, %pos {prefix = "mtp", config = #ds.mtp<depth = 1>, embed = @emb, head = @head}
        : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
    ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
      ds.yield %x : tensor<?x16xf32>
    }
    return %logits, %y : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

#mla = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>
#rope = #ds.rope<theta = 10000.0>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 2, dp = 1>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0a : tensor<16xf32>
  ds.weight @n0b : tensor<16xf32>
  ds.weight @a0.q_proj.weight : tensor<48x16xf32>
  ds.weight @a0.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a0.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a0.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a0.o_proj.weight : tensor<16x32xf32>
  ds.weight @f0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f0.up_proj.weight : tensor<8x16xf32>
  ds.weight @f0.down_proj.weight : tensor<16x8xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  // expected-error @+1 {{'func.func' op has 1 decoder layer (ds.mla), fewer than pp = 2 pipeline stages}}
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x0 = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n0 = ds.rms_norm %x0, @n0a : tensor<?x16xf32>
    %a0 = ds.mla %n0, %pos {prefix = "a0", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r0 = arith.addf %x0, %a0 : tensor<?x16xf32>
    %m0 = ds.rms_norm %r0, @n0b : tensor<?x16xf32>
    %f0 = ds.mlp %m0 {prefix = "f0", inter = 8} : tensor<?x16xf32>
    %x1 = arith.addf %r0, %f0 : tensor<?x16xf32>
    %h = ds.rms_norm %x1, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

// A value other than the residual stream (here the embedding output, read
// again by layer 1) is live at every point before stage 1's first layer.

#mla = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>
#rope = #ds.rope<theta = 10000.0>
module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 2, dp = 1>} {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @n0a : tensor<16xf32>
  ds.weight @n0b : tensor<16xf32>
  ds.weight @a0.q_proj.weight : tensor<48x16xf32>
  ds.weight @a0.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a0.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a0.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a0.o_proj.weight : tensor<16x32xf32>
  ds.weight @f0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f0.up_proj.weight : tensor<8x16xf32>
  ds.weight @f0.down_proj.weight : tensor<16x8xf32>
  ds.weight @n1a : tensor<16xf32>
  ds.weight @n1b : tensor<16xf32>
  ds.weight @a1.q_proj.weight : tensor<48x16xf32>
  ds.weight @a1.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a1.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a1.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a1.o_proj.weight : tensor<16x32xf32>
  ds.weight @f1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f1.up_proj.weight : tensor<8x16xf32>
  ds.weight @f1.down_proj.weight : tensor<16x8xf32>
  ds.weight @n2a : tensor<16xf32>
  ds.weight @n2b : tensor<16xf32>
  ds.weight @a2.q_proj.weight : tensor<48x16xf32>
  ds.weight @a2.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a2.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a2.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a2.o_proj.weight : tensor<16x32xf32>
  ds.weight @f2.gate_proj.weight : tensor<8x16xf32>
  ds.weight @f2.up_proj.weight : tensor<8x16xf32>
  ds.weight @f2.down_proj.weight : tensor<16x8xf32>
  ds.weight @nf : tensor<16xf32>
  ds.weight @head : tensor<32x16xf32>
  ds.weight @mtp.enorm.weight : tensor<16xf32>
  ds.weight @mtp.hnorm.weight : tensor<16xf32>
  ds.weight @mtp.eh_proj.weight : tensor<16x32xf32>
  ds.weight @mtp.shared_head.norm.weight : tensor<16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x0 = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %n0 = ds.rms_norm %x0, @n0a : tensor<?x16xf32>
    %a0 = ds.mla %n0, %pos {prefix = "a0", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r0 = arith.addf %x0, %a0 : tensor<?x16xf32>
    %m0 = ds.rms_norm %r0, @n0b : tensor<?x16xf32>
    %f0 = ds.mlp %m0 {prefix = "f0", inter = 8} : tensor<?x16xf32>
    %x1 = arith.addf %r0, %f0 : tensor<?x16xf32>
    %n1 = ds.rms_norm %x1, @n1a : tensor<?x16xf32>
    // expected-error @+1 {{'ds.mla' op starts pipeline stage 1, but no point before it has only the residual stream live (ds-partition-pp cuts between decoder layers)}}
    %a1 = ds.mla %n1, %pos {prefix = "a1", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r1 = arith.addf %x0, %a1 : tensor<?x16xf32>
    %m1 = ds.rms_norm %r1, @n1b : tensor<?x16xf32>
    %f1 = ds.mlp %m1 {prefix = "f1", inter = 8} : tensor<?x16xf32>
    %x2 = arith.addf %r1, %f1 : tensor<?x16xf32>
    %n2 = ds.rms_norm %x2, @n2a : tensor<?x16xf32>
    %a2 = ds.mla %n2, %pos {prefix = "a2", config = #mla, rope = #rope} : tensor<?x16xf32>, tensor<?xi32>
    %r2 = arith.addf %x2, %a2 : tensor<?x16xf32>
    %m2 = ds.rms_norm %r2, @n2b : tensor<?x16xf32>
    %f2 = ds.mlp %m2 {prefix = "f2", inter = 8} : tensor<?x16xf32>
    %x3 = arith.addf %r2, %f2 : tensor<?x16xf32>
    %h = ds.rms_norm %x3, @nf : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
  func.func @mtp_1(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %logits, %y = ds.mtp %h, %ids, %pos {prefix = "mtp", config = #ds.mtp<depth = 1>, embed = @emb, head = @head}
        : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
    ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
      ds.yield %x : tensor<?x16xf32>
    }
    return %logits, %y : tensor<?x32xf32>, tensor<?x16xf32>
  }
}
