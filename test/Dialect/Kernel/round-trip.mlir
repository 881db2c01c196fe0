// RUN: ds-opt %s | ds-opt | FileCheck %s
// RUN: ds-opt --mlir-print-op-generic %s | ds-opt | FileCheck %s

// Every kernel-level op, printed and parsed back.
// CHECK: module attributes {dsk.model = #dsk.model<vocab = 8, hidden = 16, cache_layers = 1, kv_lora_rank = 8, qk_rope = 8, max_seq_len = 32>}
// CHECK: func.func @prefill({{.+}}) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 32, arena_bytes = 4096>}
// CHECK: dsk.arena : memref<4096xi8>
// CHECK: dsk.embedding %{{.+}}, %{{.+}} {weight = @emb} : memref<?xi32>, memref<?x16xf32>
// CHECK: dsk.rms_norm %{{.+}}, %{{.+}} {eps = 1.000000e-05 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @q} : memref<?x16xf32>, memref<?x48xf32>
// CHECK: dsk.add %{{.+}}, %{{.+}}, %{{.+}} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
// CHECK: dsk.swiglu %{{.+}}, %{{.+}}, %{{.+}} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
// CHECK: dsk.rope %{{.+}}, %{{.+}} {config = #{{.+}}, dim = 8 : i64, head_stride = 24 : i64, heads = 2 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
// CHECK: dsk.kv_cache_write %{{.+}}, %{{.+}}, %{{.+}} {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
// CHECK: dsk.mla_attention_naive %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 2.000000e-01 : f64, v_head = 16 : i64}
// CHECK: dsk.mla_attention_absorbed %{{.+}}, %{{.+}}, %{{.+}} {heads = 2 : i64, kv_b = @kvb, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 2.000000e-01 : f64, v_head = 16 : i64}
// CHECK: dsk.mla_attention_absorbed %{{.+}}, %{{.+}}, %{{.+}} rope(%{{.+}}, %{{.+}}) {eps = 9.9999999999999995E-7 : f64, heads = 2 : i64, kv_b = @kvb, kv_lora_rank = 8 : i64, layer = 0 : i64, norm = @nw, qk_nope = 16 : i64, qk_rope = 8 : i64, rope_config = #{{.+}}, scale = 2.000000e-01 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>)
// CHECK: dsk.moe_route %{{.+}}, %{{.+}}, %{{.+}} {bias = @bias, config = #{{.+}}} : memref<?x2xf32>, memref<?x1xi32>, memref<?x1xf32>
// CHECK: dsk.moe_experts %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {experts = 2 : i64, inter = 4 : i64, prefix = "m"} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
// CHECK: dsk.linear %{{.+}}, %{{.+}} {fp8, weight = @q}
// CHECK: dsk.moe_experts %{{.+}} {experts = 2 : i64, fp8, inter = 4 : i64, prefix = "m"}
// CHECK: dsk.add_rms_norm %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {eps = 1.000000e-05 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
// CHECK: dsk.rope_kv_cache_write %{{.+}}, %{{.+}}, %{{.+}} {config = #{{.+}}, layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
// CHECK: dsk.linear_pair %{{.+}}, %{{.+}}, %{{.+}} {fp8, weight_a = @q, weight_b = @w16} : memref<?x16xf32>, memref<?x48xf32>, memref<?x16xf32>
// CHECK: dsk.linear %{{.+}}, %{{.+}} {accumulate, weight = @w16}
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @w8} : memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32, strided<[16, 1], offset: 8>>
// CHECK: dsk.linear %{{.+}}, %{{.+}} norm(%{{.+}}, %{{.+}}, %{{.+}}) {eps = 9.9999999999999995E-7 : f64, norm = @norm, weight = @w16} : memref<?x16xf32>, memref<?x16xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
// CHECK: dsk.qk_rope_cache_write %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {config = #{{.+}}, head_stride = 24 : i64, heads = 2 : i64, layer = 0 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
// CHECK: dsk.qk_rope_cache_write %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {config = #{{.+}}, eps = 9.9999999999999995E-7 : f64, head_stride = 24 : i64, heads = 2 : i64, layer = 0 : i64, norm = @latnorm, offset = 16 : i64}
// CHECK: dsk.gated_up %{{.+}}, %{{.+}} {fp8, gate = @m.experts.0.gate_proj.weight, up = @m.experts.0.up_proj.weight} : memref<?x16xf32>, memref<?x4xf32>
// CHECK: dsk.moe_gate %{{.+}}, %{{.+}}, %{{.+}} {bias = @bias, config = #{{.+}}, weight = @router} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>
// CHECK: dsk.moe_experts %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {experts = 2 : i64, inter = 4 : i64, prefix = "m", shared_down = @m.experts.0.down_proj.weight, shared_gate = @m.experts.0.gate_proj.weight, shared_up = @m.experts.0.up_proj.weight} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x4xf32>
// CHECK: dsk.moe_experts %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} norm(%{{.+}}, %{{.+}}, %{{.+}}) {eps = 9.9999999999999995E-7 : f64, experts = 2 : i64, inter = 4 : i64, norm = @norm, prefix = "m", shared_down = @m.experts.0.down_proj.weight, shared_gate = @m.experts.0.gate_proj.weight, shared_up = @m.experts.0.up_proj.weight} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x4xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
module attributes {dsk.model = #dsk.model<vocab = 8, hidden = 16, cache_layers = 1, kv_lora_rank = 8, qk_rope = 8, max_seq_len = 32>} {
  ds.weight @emb : tensor<8x16xf32>
  ds.weight @norm : tensor<16xf32>
  ds.weight @latnorm : tensor<8xf32>
  ds.weight @w16 : tensor<16x16xf32>
  ds.weight @w8 : tensor<8x8xf32>
  ds.weight @q : tensor<48x16xf32>
  ds.weight @kvb : tensor<64x8xf32>
  ds.weight @nw : tensor<8xf32>
  ds.weight @bias : tensor<2xf32>
  ds.weight @router : tensor<2x16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x4xf32>
  func.func @prefill(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %q: memref<?x48xf32>,
                     %lat: memref<?x8xf32>, %kva: memref<?x16xf32>, %kv: memref<?x64xf32>, %o: memref<?x32xf32>,
                     %rl: memref<?x2xf32>, %idx: memref<?x1xi32>, %w: memref<?x1xf32>)
      attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 32, arena_bytes = 4096>} {
    %arena = dsk.arena : memref<4096xi8>
    dsk.embedding %ids, %x {weight = @emb} : memref<?xi32>, memref<?x16xf32>
    dsk.rms_norm %x, %x {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %x, %q {weight = @q} : memref<?x16xf32>, memref<?x48xf32>
    dsk.add %x, %x, %x : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.swiglu %x, %x, %x : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.rope %q, %pos {config = #ds.rope<theta = 10000.0>, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %kr = memref.subview %kva[0, 8] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 8>>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.mla_attention_naive %q, %kv, %kr, %o {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?x64xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?x32xf32>
    dsk.mla_attention_absorbed %q, %pos, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
    dsk.mla_attention_absorbed %q, %pos, %o rope(%lat, %kr) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 10000.0>, norm = @nw, eps = 1.0e-6 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>)
    dsk.moe_route %rl, %idx, %w {config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 4, scoring = sigmoid, topk_method = noaux_tc, n_group = 1, topk_group = 1, norm_topk = true, scale = 1.0>, bias = @bias} : memref<?x2xf32>, memref<?x1xi32>, memref<?x1xf32>
    dsk.moe_experts %x, %idx, %w, %x {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    dsk.linear %x, %q {weight = @q, fp8} : memref<?x16xf32>, memref<?x48xf32>
    dsk.moe_experts %x, %idx, %w, %x {prefix = "m", experts = 2 : i64, inter = 4 : i64, fp8} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    dsk.add_rms_norm %x, %x, %x, %x {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.rope_kv_cache_write %lat, %kr, %pos {config = #ds.rope<theta = 10000.0>, layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.linear_pair %x, %q, %kva {weight_a = @q, weight_b = @w16, fp8} : memref<?x16xf32>, memref<?x48xf32>, memref<?x16xf32>
    dsk.linear %x, %kva {weight = @w16, accumulate} : memref<?x16xf32>, memref<?x16xf32>
    // A GEMM between disjoint column views of one buffer.
    %kl = memref.subview %kva[0, 0] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1]>>
    dsk.linear %kl, %kr {weight = @w8} : memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32, strided<[16, 1], offset: 8>>
    dsk.linear %x, %kva norm(%x, %x, %x) {weight = @w16, norm = @norm, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x16xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
    dsk.qk_rope_cache_write %q, %lat, %kr, %pos {config = #ds.rope<theta = 10000.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.qk_rope_cache_write %q, %lat, %kr, %pos {config = #ds.rope<theta = 10000.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64, norm = @latnorm, eps = 1.0e-6 : f64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    %h = memref.alloc(%n) : memref<?x4xf32>
    dsk.gated_up %x, %h {gate = @m.experts.0.gate_proj.weight, up = @m.experts.0.up_proj.weight, fp8} : memref<?x16xf32>, memref<?x4xf32>
    dsk.moe_gate %x, %idx, %w {weight = @router, config = #ds.moe<experts = 2, shared = 0, top_k = 1, inter = 4, scoring = sigmoid, topk_method = noaux_tc, n_group = 1, topk_group = 1, norm_topk = true, scale = 1.0>, bias = @bias} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>
    dsk.moe_experts %x, %idx, %w, %kva, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @m.experts.0.gate_proj.weight, shared_up = @m.experts.0.up_proj.weight, shared_down = @m.experts.0.down_proj.weight} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x4xf32>
    %sum = memref.alloc(%n) : memref<?x16xf32>
    %normed = memref.alloc(%n) : memref<?x16xf32>
    dsk.moe_experts %x, %idx, %w, %kva, %h norm(%x, %sum, %normed) {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @m.experts.0.gate_proj.weight, shared_up = @m.experts.0.up_proj.weight, shared_down = @m.experts.0.down_proj.weight, norm = @norm, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x4xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
    // CHECK: dsk.all_reduce %{{.+}} {axis = #ds.axis<tp>} : memref<?x16xf32>
    // CHECK: dsk.all_gather %{{.+}}, %{{.+}} {axis = #ds.axis<tp>} : memref<?x16xf32>, memref<?x32xf32>
    %wide = memref.alloc(%n) : memref<?x32xf32>
    dsk.all_reduce %x {axis = #ds.axis<tp>} : memref<?x16xf32>
    dsk.all_gather %x, %wide {axis = #ds.axis<tp>} : memref<?x16xf32>, memref<?x32xf32>
    // CHECK: dsk.send %{{.+}} {stage = 1 : i64} : memref<?x16xf32>
    // CHECK: dsk.recv %{{.+}} {stage = 0 : i64} : memref<?x16xf32>
    dsk.send %x {stage = 1} : memref<?x16xf32>
    dsk.recv %x {stage = 0} : memref<?x16xf32>
    return
  }
}
