// RUN: ds-opt --split-input-file --verify-diagnostics --ds-lower-to-kernels="max-seq-len=64 max-batch=2" %s | FileCheck %s
// RUN: ds-opt --ds-lower-to-kernels="max-seq-len=64 max-batch=2" %ds_src_root/models/tiny.mlir | FileCheck %s --check-prefix=MTP
// RUN: ds-opt --split-input-file --verify-diagnostics --ds-lower-to-kernels="max-seq-len=64 max-batch=2" --mlir-print-debuginfo %s | FileCheck %s --check-prefix=LOC

// One MLA layer with a query LoRA and YaRN, one MoE layer (noaux_tc, shared
// expert), the head. Prefill takes MLA's naive form (kv_b_proj up-projects
// the latents, then attention); decode the absorbed form over the cache.
// Scale: 24^-0.5 * (0.1 * ln(4) + 1)^2 = 0.26464225796422675.

// CHECK: module attributes {dsk.model = #dsk.model<vocab = 32, hidden = 16, cache_layers = 1, kv_lora_rank = 8, qk_rope = 8, max_seq_len = 64>}
// CHECK-NOT: func.func @forward
// CHECK: func.func @prefill(%[[IDS:.+]]: memref<?xi32>, %[[POS:.+]]: memref<?xi32>, %[[LOGITS:.+]]: memref<?x32xf32>, %[[HIDDEN:.+]]: memref<?x16xf32>)
// CHECK-SAME: dsk.program = #dsk.program<kind = prefill, max_tokens = 64, arena_bytes = 0>
// CHECK: %[[N:.+]] = memref.dim %[[IDS]], %{{.+}} : memref<?xi32>
// CHECK: %[[X:.+]] = memref.alloc(%[[N]]) : memref<?x16xf32>
// CHECK: dsk.embedding %[[IDS]], %[[X]] {weight = @emb}
// CHECK: dsk.rms_norm %[[X]], %[[XN:.+]] {eps = {{.+}}, weight = @n0}
// CHECK: dsk.linear %[[XN]], %[[QA:.+]] {weight = @a.q_a_proj.weight} : memref<?x16xf32>, memref<?x4xf32>
// CHECK: dsk.linear %[[XN]], %[[KVA:.+]] {weight = @a.kv_a_proj_with_mqa.weight} : memref<?x16xf32>, memref<?x16xf32>
// CHECK: dsk.rms_norm %[[QA]], %[[QAN:.+]] {eps = {{.+}}, weight = @a.q_a_layernorm.weight}
// CHECK: dsk.linear %[[QAN]], %[[Q:.+]] {weight = @a.q_b_proj.weight} : memref<?x4xf32>, memref<?x48xf32>
// CHECK: %[[LAT_IN:.+]] = memref.subview %[[KVA]][0, 0] [%[[N]], 8] [1, 1]
// CHECK: dsk.rms_norm %[[LAT_IN]], %[[LAT:.+]] {eps = {{.+}}, weight = @a.kv_a_layernorm.weight}
// CHECK: %[[KROPE:.+]] = memref.subview %[[KVA]][0, 8] [%[[N]], 8] [1, 1]
// CHECK: dsk.rope %[[Q]], %[[POS]] {config = #{{.+}}, dim = 8 : i64, head_stride = 24 : i64, heads = 2 : i64, offset = 16 : i64}
// CHECK: dsk.rope %[[KROPE]], %[[POS]] {config = #{{.+}}, dim = 8 : i64, head_stride = 8 : i64, heads = 1 : i64, offset = 0 : i64}
// CHECK: dsk.kv_cache_write %[[LAT]], %[[KROPE]], %[[POS]] {layer = 0 : i64}
// CHECK: dsk.linear %[[LAT]], %[[KV:.+]] {weight = @a.kv_b_proj.weight} : memref<?x8xf32>, memref<?x64xf32>
// CHECK: dsk.mla_attention_naive %[[Q]], %[[KV]], %[[KROPE]], %[[ATT:.+]] {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.26464225796422675 : f64, v_head = 16 : i64}
// CHECK: dsk.linear %[[ATT]], %[[O:.+]] {weight = @a.o_proj.weight} : memref<?x32xf32>, memref<?x16xf32>
// CHECK: dsk.add %[[X]], %[[O]], %[[R:.+]] :
// CHECK: dsk.linear %{{.+}}, %[[RL:.+]] {weight = @m.gate.weight} : memref<?x16xf32>, memref<?x4xf32>
// CHECK: dsk.moe_route %[[RL]], %[[IDX:.+]], %[[W:.+]] {bias = @m.gate.e_score_correction_bias, config = #{{.+}}} : memref<?x4xf32>, memref<?x2xi32>, memref<?x2xf32>
// CHECK: dsk.moe_experts %[[H:.+]], %[[IDX]], %[[W]], %[[E:.+]] {experts = 4 : i64, inter = 8 : i64, prefix = "m"}
// CHECK: dsk.linear %[[H]], %{{.+}} {weight = @m.shared_experts.gate_proj.weight}
// CHECK: dsk.linear %[[H]], %{{.+}} {weight = @m.shared_experts.up_proj.weight}
// CHECK: dsk.swiglu
// CHECK: dsk.linear %{{.+}}, %[[S:.+]] {weight = @m.shared_experts.down_proj.weight}
// CHECK: dsk.add %[[E]], %[[S]], %[[E]]
// The final norm writes the hidden-state output (the MTP module's input).
// CHECK: dsk.rms_norm %{{.+}}, %[[HIDDEN]] {eps = {{.+}}, weight = @nf}
// CHECK: dsk.linear %[[HIDDEN]], %[[LOGITS]] {weight = @head}
// CHECK: return
// CHECK-LABEL: func.func @decode(
// No MTP module: a decode step takes max-batch tokens.
// CHECK-SAME: dsk.program = #dsk.program<kind = decode, max_tokens = 2, arena_bytes = 0>
// CHECK-NOT: dsk.mla_attention_naive
// CHECK-NOT: @a.kv_b_proj.weight} : memref<?x8xf32>
// CHECK: dsk.kv_cache_write
// CHECK: dsk.mla_attention_absorbed %{{.+}}, %{{.+}}, %{{.+}} {heads = 2 : i64, kv_b = @a.kv_b_proj.weight, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.26464225796422675 : f64, v_head = 16 : i64}
#rope = #ds.rope<theta = 10000.0, yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 16, beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0>>
#moe = #ds.moe<experts = 4, shared = 1, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 2.5>
module {
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

// Without a query LoRA MLA reads q_proj; V2 greedy routing has no bias; a
// dense MLP is gate/up GEMMs, SwiGLU, down GEMM. Other model-level functions
// are dropped.
// CHECK-LABEL: func.func @prefill
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @a.q_proj.weight} : memref<?x16xf32>, memref<?x48xf32>
// CHECK: dsk.mla_attention_naive {{.+}} scale = 0.20412414523193154 : f64
// CHECK: dsk.moe_route %{{.+}}, %{{.+}}, %{{.+}} {config = #{{.+}}} :
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @d.gate_proj.weight}
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @d.up_proj.weight}
// CHECK: dsk.swiglu
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @d.down_proj.weight}
// CHECK-NOT: @helper
module {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @a.q_proj.weight : tensor<48x16xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_layernorm.weight : tensor<8xf32>
  ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
  ds.weight @a.o_proj.weight : tensor<16x32xf32>
  ds.weight @m.gate.weight : tensor<2x16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x8xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x8xf32>
  ds.weight @d.gate_proj.weight : tensor<8x16xf32>
  ds.weight @d.up_proj.weight : tensor<8x16xf32>
  ds.weight @d.down_proj.weight : tensor<16x8xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %a = ds.mla %x, %pos {prefix = "a", config = #ds.mla<heads = 2, q_lora_rank = 0, kv_lora_rank = 8, qk_nope = 16, qk_rope = 8, v_head = 16>, rope = #ds.rope<theta = 10000.0>} : tensor<?x16xf32>, tensor<?xi32>
    %f = ds.moe %a {prefix = "m", config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 8, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : tensor<?x16xf32>
    %d = ds.mlp %f {prefix = "d", inter = 8 : i64} : tensor<?x16xf32>
    %l = ds.lm_head %d, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %d : tensor<?x32xf32>, tensor<?x16xf32>
  }
  func.func @helper(%h: tensor<?x16xf32>) -> tensor<?x16xf32> {
    return %h : tensor<?x16xf32>
  }
}

// -----

// expected-error @+1 {{ds-lower-to-kernels: the module has no @forward}}
module {
}

// -----

module {
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    // expected-error @+1 {{'arith.constant' op is not supported by ds-lower-to-kernels yet}}
    %c = arith.constant 2 : index
    %e = tensor.empty(%c) : tensor<?x32xf32>
    %h = tensor.empty(%c) : tensor<?x16xf32>
    return %e, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
}

// -----

module {
  ds.weight @emb : tensor<32x16xf32>
  // expected-error @+1 {{'func.func' op must be @forward(ids, positions) -> (logits, hidden)}}
  func.func @forward(%ids: tensor<?xi32>) -> (tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    return %x : tensor<?x16xf32>
  }
}

// -----

module {
  ds.weight @emb : tensor<32x16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x16xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    // expected-error @+1 {{'func.return' op must return the ds.lm_head (or ds.mtp) logits first}}
    return %x, %x : tensor<?x16xf32>, tensor<?x16xf32>
  }
}

// The MTP module of models/tiny.mlir (checkpoint layer 3) is its own program
// on cache layer 3, after the main model's 0-2: x = eh_proj([enorm(embed(next
// token)), hnorm(hidden)]) with both norms writing halves of one buffer, its
// decoder block with absorbed MLA, shared_head.norm and head. With MTP, a
// decode step takes 2 tokens per sequence (speculative verification).
// MTP: dsk.model = #dsk.model<vocab = 1024, hidden = 64, cache_layers = 4, kv_lora_rank = 32, qk_rope = 8, max_seq_len = 64>
// MTP-LABEL: func.func @decode
// MTP-SAME: max_tokens = 4
// MTP: func.func @mtp(%[[HIN:.+]]: memref<?x64xf32>, %[[IDS:.+]]: memref<?xi32>, %[[POS:.+]]: memref<?xi32>, %[[LOGITS:.+]]: memref<?x1024xf32>, %[[HOUT:.+]]: memref<?x64xf32>)
// MTP-SAME: kind = mtp, max_tokens = 64
// MTP: dsk.embedding %[[IDS]], %[[EMB:.+]] {weight = @model.layers.3.embed_tokens.weight}
// MTP: %[[CAT:.+]] = memref.alloc(%{{.+}}) : memref<?x128xf32>
// MTP: %[[LO:.+]] = memref.subview %[[CAT]][0, 0] [%{{.+}}, 64] [1, 1]
// MTP: dsk.rms_norm %[[EMB]], %[[LO]] {eps = {{.+}}, weight = @model.layers.3.enorm.weight}
// MTP: %[[HI:.+]] = memref.subview %[[CAT]][0, 64] [%{{.+}}, 64] [1, 1]
// MTP: dsk.rms_norm %[[HIN]], %[[HI]] {eps = {{.+}}, weight = @model.layers.3.hnorm.weight}
// MTP: dsk.linear %[[CAT]], %{{.+}} {weight = @model.layers.3.eh_proj.weight} : memref<?x128xf32>, memref<?x64xf32>
// MTP: dsk.kv_cache_write {{.+}} {layer = 3 : i64}
// MTP: dsk.mla_attention_absorbed {{.+}} layer = 3 : i64
// MTP: dsk.moe_experts {{.+}} prefix = "model.layers.3.mlp"
// MTP: dsk.add %{{.+}}, %{{.+}}, %[[HOUT]]
// MTP: dsk.rms_norm %[[HOUT]], %[[N:.+]] {eps = {{.+}}, weight = @model.layers.3.shared_head.norm.weight}
// MTP: dsk.linear %[[N]], %[[LOGITS]] {weight = @model.layers.3.shared_head.head.weight}

// -----

// Kernels keep their source op's location (the embedding writes the hidden
// output %arg3 here only).
// LOC: dsk.embedding %arg0, %arg3 {{.+}} loc([[EMB:#loc[0-9]*]])
// LOC-NEXT: dsk.linear %arg3, %arg2 {{.+}} loc([[HEAD:#loc[0-9]*]])
// LOC-DAG: [[EMB]] = loc("embed")
// LOC-DAG: [[HEAD]] = loc("head")
module {
  ds.weight @emb : tensor<32x16xf32>
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32> loc("embed")
    %l = ds.lm_head %x, @emb : (tensor<?x16xf32>) -> tensor<?x32xf32> loc("head")
    return %l, %x : tensor<?x32xf32>, tensor<?x16xf32>
  }
}
