// RUN: ds-opt --split-input-file --dsk-fuse %s | FileCheck %s

// Residual add then the norm of the sum -> one kernel; the sum is still
// written (the residual stream needs it).
// CHECK-LABEL: func.func @add_norm
// CHECK: dsk.add_rms_norm %[[A:.+]], %[[B:.+]], %[[S:.+]], %[[Y:.+]] {eps = 1.000000e-05 : f64, weight = @norm}
// CHECK-NOT: dsk.add %
// CHECK-NOT: dsk.rms_norm
// CHECK: dsk.linear %[[S]]
module {
  ds.weight @norm : tensor<16xf32>
  ds.weight @w : tensor<16x16xf32>
  func.func @add_norm(%ids: memref<?xi32>, %pos: memref<?xi32>, %a: memref<?x16xf32>, %b: memref<?x16xf32>, %o: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %s = memref.alloc(%n) : memref<?x16xf32>
    dsk.add %a, %b, %s : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %y = memref.alloc(%n) : memref<?x16xf32>
    dsk.rms_norm %s, %y {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %s, %o {weight = @w} : memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Not neighbours' data: a norm of something else, or a kernel in between.
// CHECK-LABEL: func.func @no_add_norm
// CHECK: dsk.add
// CHECK: dsk.rms_norm %{{.+}}, %{{.+}} {eps
// CHECK: dsk.add
// CHECK: dsk.linear
// CHECK: dsk.rms_norm
// CHECK-NOT: dsk.add_rms_norm
module {
  ds.weight @norm : tensor<16xf32>
  ds.weight @w : tensor<16x16xf32>
  func.func @no_add_norm(%ids: memref<?xi32>, %pos: memref<?xi32>, %a: memref<?x16xf32>, %b: memref<?x16xf32>, %s: memref<?x16xf32>, %y: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    dsk.add %a, %b, %s : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.rms_norm %a, %y {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add %a, %b, %s : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %a, %b {weight = @w} : memref<?x16xf32>, memref<?x16xf32>
    dsk.rms_norm %s, %y {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// RoPE of the shared rope key then its cache write -> one kernel; with the
// query's RoPE just before (same table and positions) -> the MLA prologue.
// The latent's norm stays: its output is read again (prefill's kv_b).
// CHECK-LABEL: func.func @rope_cache
// CHECK: dsk.rms_norm
// CHECK-NEXT: dsk.qk_rope_cache_write %{{.+}}, %[[NORMED:.+]], %{{.+}}, %{{.+}} {config = #{{.+}}, head_stride = 24 : i64, heads = 2 : i64, layer = 3 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
// CHECK-NEXT: dsk.linear %[[NORMED]]
// CHECK-NOT: dsk.rope
// CHECK-NOT: dsk.kv_cache_write
#rope = #ds.rope<theta = 10000.0>
module {
  ds.weight @norm : tensor<8xf32>
  ds.weight @kvb : tensor<16x8xf32>
  func.func @rope_cache(%ids: memref<?xi32>, %pos: memref<?xi32>, %q: memref<?x48xf32>, %raw: memref<?x8xf32>, %kr: memref<?x8xf32>, %kv: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %lat = memref.alloc(%n) : memref<?x8xf32>
    dsk.rms_norm %raw, %lat {eps = 1.0e-6 : f64, weight = @norm} : memref<?x8xf32>, memref<?x8xf32>
    dsk.rope %q, %pos {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 3 : i64} : memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    dsk.linear %lat, %kv {weight = @kvb} : memref<?x8xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Decode: only the cache reads the normalized latent, so the norm joins the
// prologue (the kv_a output's latent columns in, no normalized buffer).
// CHECK-LABEL: func.func @decode_prologue
// CHECK-NOT: memref.alloc
// CHECK-NOT: dsk.rms_norm
// CHECK: %[[LAT:.+]] = memref.subview %[[KV:.+]][0, 0] [%{{.+}}, 8] [1, 1]
// CHECK: %[[KR:.+]] = memref.subview %[[KV]][0, 8] [%{{.+}}, 8] [1, 1]
// CHECK: dsk.qk_rope_cache_write %{{.+}}, %[[LAT]], %[[KR]], %{{.+}} {config = #{{.+}}, eps = 9.9999999999999995E-7 : f64, head_stride = 24 : i64, heads = 2 : i64, layer = 0 : i64, norm = @norm, offset = 16 : i64}
// CHECK-NEXT: return
#rope = #ds.rope<theta = 10000.0>
module {
  ds.weight @norm : tensor<8xf32>
  func.func @decode_prologue(%ids: memref<?xi32>, %pos: memref<?xi32>, %q: memref<?x48xf32>, %kv: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %raw = memref.subview %kv[0, 0] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1]>>
    %kr = memref.subview %kv[0, 8] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 8>>
    %lat = memref.alloc(%n) : memref<?x8xf32>
    dsk.rms_norm %raw, %lat {eps = 1.0e-6 : f64, weight = @norm} : memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32>
    dsk.rope %q, %pos {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    return
  }
}

// -----

// Decode: the prologue, then the attention over the cache it wrote (its
// query, layer and positions) -> the attention with the prologue, whose
// buffers stay apart from out's only as far as the prologue needs.
// CHECK-LABEL: func.func @decode_attention
// CHECK: %[[LAT:.+]] = memref.subview %[[KV:.+]][0, 0] [%{{.+}}, 8] [1, 1]
// CHECK: %[[KR:.+]] = memref.subview %[[KV]][0, 8] [%{{.+}}, 8] [1, 1]
// CHECK-NOT: dsk.qk_rope_cache_write
// CHECK: dsk.mla_attention_absorbed %[[Q:[^,]+]], %[[POS:[^,]+]], %[[OUT:[^ ]+]] rope(%[[LAT]], %[[KR]]) {eps = 9.9999999999999995E-7 : f64, heads = 2 : i64, kv_b = @kv_b, kv_lora_rank = 8 : i64, layer = 0 : i64, norm = @norm, qk_nope = 16 : i64, qk_rope = 8 : i64, rope_config = #rope, scale = 2.500000e-01 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32, strided<[16, 1], offset: 8>>)
// CHECK-NEXT: return
#rope = #ds.rope<theta = 10000.0>
module {
  ds.weight @norm : tensor<8xf32>
  ds.weight @kv_b : tensor<64x8xf32>
  func.func @decode_attention(%ids: memref<?xi32>, %pos: memref<?xi32>, %q: memref<?x48xf32>, %kv: memref<?x16xf32>, %out: memref<?x32xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %raw = memref.subview %kv[0, 0] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1]>>
    %kr = memref.subview %kv[0, 8] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 8>>
    %lat = memref.alloc(%n) : memref<?x8xf32>
    dsk.rms_norm %raw, %lat {eps = 1.0e-6 : f64, weight = @norm} : memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32>
    dsk.rope %q, %pos {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.mla_attention_absorbed %q, %pos, %out {heads = 2 : i64, kv_b = @kv_b, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.25 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
    return
  }
}

// -----

// The attention keeps apart from a prologue that is not its own: another
// layer's cache, another query, another split of the query's heads.
// CHECK-LABEL: func.func @attention_not_prologue
// CHECK-COUNT-3: dsk.qk_rope_cache_write
// CHECK-NOT: rope(
#rope = #ds.rope<theta = 10000.0>
module {
  ds.weight @kv_b : tensor<64x8xf32>
  func.func @attention_not_prologue(%ids: memref<?xi32>, %pos: memref<?xi32>, %q: memref<?x48xf32>, %q2: memref<?x48xf32>, %lat: memref<?x8xf32>, %kr: memref<?x8xf32>, %out: memref<?x32xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    dsk.qk_rope_cache_write %q, %lat, %kr, %pos {config = #rope, head_stride = 24 : i64, heads = 2 : i64, layer = 1 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    dsk.mla_attention_absorbed %q, %pos, %out {heads = 2 : i64, kv_b = @kv_b, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.25 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
    dsk.qk_rope_cache_write %q2, %lat, %kr, %pos {config = #rope, head_stride = 24 : i64, heads = 2 : i64, layer = 0 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    dsk.mla_attention_absorbed %q, %pos, %out {heads = 2 : i64, kv_b = @kv_b, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.25 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
    dsk.qk_rope_cache_write %q, %lat, %kr, %pos {config = #rope, head_stride = 48 : i64, heads = 1 : i64, layer = 0 : i64, offset = 40 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    dsk.mla_attention_absorbed %q, %pos, %out {heads = 2 : i64, kv_b = @kv_b, kv_lora_rank = 8 : i64, layer = 0 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, scale = 0.25 : f64, v_head = 16 : i64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
    return
  }
}

// -----

// The norm stays apart when its input overlaps the rope key's columns (the
// prologue rotates the key before it reads the latent).
// CHECK-LABEL: func.func @norm_overlaps_key
// CHECK: dsk.rms_norm
// CHECK-NEXT: dsk.qk_rope_cache_write
// CHECK-NOT: norm = @norm
#rope = #ds.rope<theta = 10000.0>
module {
  ds.weight @norm : tensor<8xf32>
  func.func @norm_overlaps_key(%ids: memref<?xi32>, %pos: memref<?xi32>, %q: memref<?x48xf32>, %kv: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %raw = memref.subview %kv[0, 4] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 4>>
    %kr = memref.subview %kv[0, 8] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 8>>
    %lat = memref.alloc(%n) : memref<?x8xf32>
    dsk.rms_norm %raw, %lat {eps = 1.0e-6 : f64, weight = @norm} : memref<?x8xf32, strided<[16, 1], offset: 4>>, memref<?x8xf32>
    dsk.rope %q, %pos {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[16, 1], offset: 8>>, memref<?xi32>
    return
  }
}

// -----

// The query's RoPE stays apart when it is not the key's: other positions,
// another table, or a view of the key's own buffer.
// CHECK-LABEL: func.func @rope_not_prologue
// CHECK: dsk.rope %{{.+}}, %[[OTHER:[^ ]+]]
// CHECK-NEXT: dsk.rope_kv_cache_write
// CHECK-NEXT: dsk.rope %{{.+}}, %{{.+}} {config = #rope1,
// CHECK-NEXT: dsk.rope_kv_cache_write
// CHECK: dsk.rope %subview,
// CHECK-NEXT: dsk.rope_kv_cache_write
// CHECK-NOT: dsk.qk_rope_cache_write
#rope = #ds.rope<theta = 10000.0>
#other = #ds.rope<theta = 500.0>
module {
  func.func @rope_not_prologue(%ids: memref<?xi32>, %pos: memref<?xi32>, %pos2: memref<?xi32>, %q: memref<?x48xf32>, %lat: memref<?x8xf32>, %kr: memref<?x8xf32>, %qkr: memref<?x56xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    dsk.rope %q, %pos2 {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 0 : i64} : memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    dsk.rope %q, %pos {config = #other, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32>, memref<?xi32>
    dsk.rope %kr, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32>, memref<?xi32>
    dsk.kv_cache_write %lat, %kr, %pos {layer = 1 : i64} : memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
    %qv = memref.subview %qkr[0, 0] [%n, 48] [1, 1] : memref<?x56xf32> to memref<?x48xf32, strided<[56, 1]>>
    %kv = memref.subview %qkr[0, 48] [%n, 8] [1, 1] : memref<?x56xf32> to memref<?x8xf32, strided<[56, 1], offset: 48>>
    dsk.rope %qv, %pos {config = #rope, dim = 8 : i64, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64} : memref<?x48xf32, strided<[56, 1]>>, memref<?xi32>
    dsk.rope %kv, %pos {config = #rope, dim = 8 : i64, heads = 1 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x8xf32, strided<[56, 1], offset: 48>>, memref<?xi32>
    dsk.kv_cache_write %lat, %kv, %pos {layer = 2 : i64} : memref<?x8xf32>, memref<?x8xf32, strided<[56, 1], offset: 48>>, memref<?xi32>
    return
  }
}

// -----

// Gate and up GEMMs of one input, then SwiGLU -> one kernel; their buffers go.
// CHECK-LABEL: func.func @gated_up
// CHECK-NOT: memref.alloc(%{{.+}}) : memref<?x8xf32>
// CHECK: %[[H:.+]] = memref.alloc(%{{.+}}) : memref<?x4xf32>
// CHECK: dsk.gated_up %{{.+}}, %{{.+}} {gate = @g, up = @u} : memref<?x16xf32>, memref<?x8xf32>
// CHECK-NOT: dsk.swiglu
module {
  ds.weight @g : tensor<8x16xf32>
  ds.weight @u : tensor<8x16xf32>
  func.func @gated_up(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %h: memref<?x8xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %gate = memref.alloc(%n) : memref<?x8xf32>
    dsk.linear %x, %gate {weight = @g} : memref<?x16xf32>, memref<?x8xf32>
    %up = memref.alloc(%n) : memref<?x8xf32>
    dsk.linear %x, %up {weight = @u} : memref<?x16xf32>, memref<?x8xf32>
    %unrelated = memref.alloc(%n) : memref<?x4xf32>
    dsk.swiglu %gate, %up, %h : memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>
    return
  }
}

// -----

// The SwiGLU writes into the GEMMs' input (columns 0-7 of %x): fine one
// after the other, a race in one kernel (blocks read the input while others
// write out), so not gated_up.
// CHECK-LABEL: func.func @gated_up_into_input
// CHECK-NOT: dsk.gated_up
// CHECK: dsk.swiglu
module {
  ds.weight @g : tensor<8x16xf32>
  ds.weight @u : tensor<8x16xf32>
  func.func @gated_up_into_input(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %gate = memref.alloc(%n) : memref<?x8xf32>
    dsk.linear %x, %gate {weight = @g} : memref<?x16xf32>, memref<?x8xf32>
    %up = memref.alloc(%n) : memref<?x8xf32>
    dsk.linear %x, %up {weight = @u} : memref<?x16xf32>, memref<?x8xf32>
    %h = memref.subview %x[0, 0] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1]>>
    dsk.swiglu %gate, %up, %h : memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32, strided<[16, 1]>>
    return
  }
}

// -----

// The gate output is read again later: not gated_up; the two GEMMs of one
// input still become a pair.
// CHECK-LABEL: func.func @gate_reused
// CHECK: dsk.linear_pair %{{.+}}, %[[G:.+]], %[[U:.+]] {weight_a = @g, weight_b = @u}
// CHECK-NEXT: dsk.swiglu %[[G]], %[[U]]
// CHECK-NOT: dsk.gated_up
module {
  ds.weight @g : tensor<8x16xf32>
  ds.weight @u : tensor<8x16xf32>
  func.func @gate_reused(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %gate: memref<?x8xf32>, %up: memref<?x8xf32>, %h: memref<?x8xf32>, %o: memref<?x8xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    dsk.linear %x, %gate {weight = @g} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %x, %up {weight = @u} : memref<?x16xf32>, memref<?x8xf32>
    dsk.swiglu %gate, %up, %h : memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>
    dsk.add %gate, %h, %o : memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>
    return
  }
}

// -----

// A GEMM then the in-place residual add of its result -> the GEMM adds into
// the other operand itself (either operand order); its buffer goes.
// CHECK-LABEL: func.func @linear_add
// CHECK-NOT: memref.alloc
// CHECK: dsk.linear %[[H:[^,]+]], %[[Y:[^ ]+]] {accumulate, weight = @d} : memref<?x8xf32>, memref<?x16xf32>
// CHECK-NEXT: dsk.linear %[[H]], %[[Y]] {accumulate, weight = @d}
// CHECK-NOT: dsk.add
module {
  ds.weight @d : tensor<16x8xf32>
  func.func @linear_add(%ids: memref<?xi32>, %pos: memref<?xi32>, %h: memref<?x8xf32>, %y: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %t = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %h, %t {weight = @d} : memref<?x8xf32>, memref<?x16xf32>
    dsk.add %y, %t, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %u = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %h, %u {weight = @d} : memref<?x8xf32>, memref<?x16xf32>
    dsk.add %u, %y, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Not in place (the sum goes elsewhere), the product read again, or the GEMM
// reading the buffer it would add into: the add stays.
// CHECK-LABEL: func.func @linear_add_not
// CHECK-NOT: accumulate
// CHECK-COUNT-3: dsk.add
module {
  ds.weight @d : tensor<16x16xf32>
  func.func @linear_add_not(%ids: memref<?xi32>, %pos: memref<?xi32>, %h: memref<?x16xf32>, %y: memref<?x16xf32>, %z: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %t = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %h, %t {weight = @d} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add %y, %t, %z : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %u = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %h, %u {weight = @d} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add %y, %u, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %u, %z {weight = @d} : memref<?x16xf32>, memref<?x16xf32>
    %v = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %y, %v {weight = @d} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add %y, %v, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Adjacent GEMMs of one input -> linear_pair at the second's place (after
// its output's allocation); a third of the same input is left alone, as are
// two writing one buffer, and one writing into its own input's buffer.
// CHECK-LABEL: func.func @pairs
// CHECK: %[[KV:.+]] = memref.alloc
// CHECK-NEXT: dsk.linear_pair %[[X:[^,]+]], %[[Q:[^,]+]], %[[KV]] {weight_a = @q, weight_b = @kv}
// CHECK-NEXT: dsk.linear %[[X]], %{{.+}} {weight = @q}
// CHECK-NEXT: dsk.linear %[[Q]], %{{.+}} {weight = @kv}
// CHECK-NEXT: dsk.linear %[[Q]], %{{.+}} {weight = @kv}
// CHECK: dsk.linear %[[W:[^,]+]], %{{.+}} {weight = @w}
// CHECK-NEXT: dsk.linear %[[W]], %{{.+}} {weight = @w}
// CHECK-NOT: dsk.linear_pair
module {
  ds.weight @q : tensor<16x16xf32>
  ds.weight @kv : tensor<8x16xf32>
  ds.weight @w : tensor<8x16xf32>
  func.func @pairs(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %q: memref<?x16xf32>, %o: memref<?x16xf32>, %p: memref<?x8xf32>, %r: memref<?x8xf32>, %wide: memref<?x24xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    dsk.linear %x, %q {weight = @q} : memref<?x16xf32>, memref<?x16xf32>
    %kv = memref.alloc(%n) : memref<?x8xf32>
    dsk.linear %x, %kv {weight = @kv} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %x, %o {weight = @q} : memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %q, %p {weight = @kv} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %q, %p {weight = @kv} : memref<?x16xf32>, memref<?x8xf32>
    %in = memref.subview %wide[0, 0] [%n, 16] [1, 1] : memref<?x24xf32> to memref<?x16xf32, strided<[24, 1]>>
    %out = memref.subview %wide[0, 16] [%n, 8] [1, 1] : memref<?x24xf32> to memref<?x8xf32, strided<[24, 1], offset: 16>>
    dsk.linear %in, %out {weight = @w} : memref<?x16xf32, strided<[24, 1]>>, memref<?x8xf32, strided<[24, 1], offset: 16>>
    dsk.linear %in, %r {weight = @w} : memref<?x16xf32, strided<[24, 1]>>, memref<?x8xf32>
    return
  }
}

// -----

// The router GEMM then routing -> moe_gate; the logits buffer goes.
// CHECK-LABEL: func.func @router
// CHECK-NOT: memref<?x4xf32>
// CHECK: dsk.moe_gate %{{.+}}, %{{.+}}, %{{.+}} {bias = @b, config = #{{.+}}, weight = @r} : memref<?x16xf32>, memref<?x2xi32>, memref<?x2xf32>
// CHECK-NOT: dsk.moe_route
module {
  ds.weight @r : tensor<4x16xf32>
  ds.weight @b : tensor<4xf32>
  func.func @router(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 1, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %l = memref.alloc(%n) : memref<?x4xf32>
    dsk.linear %x, %l {weight = @r} : memref<?x16xf32>, memref<?x4xf32>
    dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 8, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 1.0>, bias = @b} : memref<?x4xf32>, memref<?x2xi32>, memref<?x2xf32>
    return
  }
}

// -----

// Functions that are not programs are left alone.
// CHECK-LABEL: func.func @helper
// CHECK: dsk.add
// CHECK: dsk.rms_norm
module {
  ds.weight @norm : tensor<16xf32>
  func.func @helper(%a: memref<?x16xf32>, %s: memref<?x16xf32>) {
    dsk.add %a, %a, %s : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.rms_norm %s, %a {eps = 1.0e-5 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// The routed experts, then the shared expert of the same input adding into
// their sum (gate/up, then the accumulating down GEMM) -> moe_experts with
// the shared expert, at the down GEMM's place (after the intermediate's
// allocation, which stays: the kernel's scratch).
// CHECK-LABEL: func.func @moe_shared
// CHECK-SAME: %[[X:[^:]+]]: memref<?x16xf32>, %[[I:[^:]+]]: memref<?x1xi32>, %[[W:[^:]+]]: memref<?x1xf32>, %[[Y:[^:]+]]: memref<?x16xf32>)
// CHECK: %[[H:.+]] = memref.alloc
// CHECK-NEXT: dsk.moe_experts %[[X]], %[[I]], %[[W]], %[[Y]], %[[H]] {experts = 2 : i64, inter = 4 : i64, prefix = "m", shared_down = @sd, shared_gate = @sg, shared_up = @su}
// CHECK-NOT: dsk.gated_up
// CHECK-NOT: dsk.linear
module {
  ds.weight @sg : tensor<8x16xf32>
  ds.weight @su : tensor<8x16xf32>
  ds.weight @sd : tensor<16x8xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x4xf32>
  func.func @moe_shared(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %x, %h {gate = @sg, up = @su} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h, %y {accumulate, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    return
  }
}

// -----

// The routed and shared experts, then the residual add + RMSNorm of their
// sum (with the sum on either side) -> the norm is the experts' epilogue.
// CHECK-LABEL: func.func @moe_norm
// CHECK-SAME: %[[X:[^:]+]]: memref<?x16xf32>, %[[I:[^:]+]]: memref<?x1xi32>, %[[W:[^:]+]]: memref<?x1xf32>, %[[Y:[^:]+]]: memref<?x16xf32>, %[[R:[^:]+]]: memref<?x16xf32>, %[[S:[^:]+]]: memref<?x16xf32>, %[[N:[^:]+]]: memref<?x16xf32>)
// CHECK: %[[H:.+]] = memref.alloc
// CHECK-NEXT: dsk.moe_experts %[[X]], %[[I]], %[[W]], %[[Y]], %[[H]] norm(%[[R]], %[[S]], %[[N]]) {eps = 9.9999999999999995E-7 : f64, experts = 2 : i64, inter = 4 : i64, norm = @nw, prefix = "m", shared_down = @sd, shared_gate = @sg, shared_up = @su}
// CHECK-NEXT: dsk.moe_experts %[[X]], %[[I]], %[[W]], %[[Y]], %[[H]] norm(%[[R]], %[[S]], %[[N]])
// CHECK-NOT: dsk.add_rms_norm
module {
  ds.weight @sg : tensor<8x16xf32>
  ds.weight @su : tensor<8x16xf32>
  ds.weight @sd : tensor<16x8xf32>
  ds.weight @nw : tensor<16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x4xf32>
  func.func @moe_norm(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %h = memref.alloc(%n) : memref<?x8xf32>
    dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.add_rms_norm %r, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.add_rms_norm %y, %r, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Left apart: experts without their shared expert; a norm of another sum;
// the sum doubled (both operands the experts' output); a kernel between.
// CHECK-LABEL: func.func @moe_norm_not
// CHECK-NOT: norm(
// CHECK-COUNT-4: dsk.add_rms_norm
module {
  ds.weight @sg : tensor<8x16xf32>
  ds.weight @su : tensor<8x16xf32>
  ds.weight @sd : tensor<16x8xf32>
  ds.weight @nw : tensor<16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x4xf32>
  func.func @moe_norm_not(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %h = memref.alloc(%n) : memref<?x8xf32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64, ep = 2 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.add_rms_norm %r, %x, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.add_rms_norm %y, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.add %x, %x, %r : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Left apart: experts over ep ranks; the shared expert of another input; its
// intermediate read again; its FP8 GEMMs with f32 experts; the routed sum
// overwriting the input the shared expert then reads.
// CHECK-LABEL: func.func @moe_shared_not
// CHECK-COUNT-5: dsk.gated_up
// CHECK-NOT: shared_gate
module {
  ds.weight @sg : tensor<8x16xf32>
  ds.weight @su : tensor<8x16xf32>
  ds.weight @sd : tensor<16x8xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.experts.1.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.1.down_proj.weight : tensor<16x4xf32>
  func.func @moe_shared_not(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %z: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %o: memref<?x8xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64, ep = 2 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %x, %h {gate = @sg, up = @su} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h, %y {accumulate, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h2 = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %z, %h2 {gate = @sg, up = @su} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h2, %y {accumulate, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h3 = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %x, %h3 {gate = @sg, up = @su} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h3, %y {accumulate, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    dsk.add %h3, %h3, %o : memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>
    dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h4 = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %x, %h4 {gate = @sg, up = @su, fp8} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h4, %y {accumulate, fp8, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    dsk.moe_experts %x, %i, %w, %x {prefix = "m", experts = 2 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
    %h5 = memref.alloc(%n) : memref<?x8xf32>
    dsk.gated_up %x, %h5 {gate = @sg, up = @su} : memref<?x16xf32>, memref<?x8xf32>
    dsk.linear %h5, %x {accumulate, weight = @sd} : memref<?x8xf32>, memref<?x16xf32>
    return
  }
}

// -----

// A GEMM, then the residual add + RMSNorm of its output (on either side)
// -> the norm is the GEMM's epilogue, placed where the norm was (after the
// allocation of its sum). Two such GEMMs of one input are no pair: a
// dsk.linear_pair has no epilogue.
// CHECK-LABEL: func.func @linear_norm
// CHECK-SAME: %[[X:[^:]+]]: memref<?x32xf32>, %[[R:[^:]+]]: memref<?x16xf32>, %[[S:[^:]+]]: memref<?x16xf32>, %[[N:[^:]+]]: memref<?x16xf32>)
// CHECK: %[[Y:.+]] = memref.alloc
// CHECK-NEXT: dsk.linear %[[X]], %[[Y]] norm(%[[R]], %[[S]], %[[N]]) {eps = 9.9999999999999995E-7 : f64, norm = @nw, weight = @w} : memref<?x32xf32>, memref<?x16xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
// CHECK-NEXT: %[[Y2:.+]] = memref.alloc
// CHECK-NEXT: %[[S2:.+]] = memref.alloc
// CHECK-NEXT: dsk.linear %[[X]], %[[Y2]] norm(%[[R]], %[[S2]], %[[N]]) {eps
// CHECK-NEXT: dsk.linear %[[S2]], %[[Y]] {weight = @v}
// CHECK-NOT: dsk.add_rms_norm
module {
  ds.weight @w : tensor<16x32xf32>
  ds.weight @v : tensor<16x16xf32>
  ds.weight @nw : tensor<16xf32>
  func.func @linear_norm(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x32xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %y = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %y {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %y2 = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %y2 {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    %s2 = memref.alloc(%n) : memref<?x16xf32>
    dsk.add_rms_norm %y2, %r, %s2, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %s2, %y {weight = @v} : memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// Not folded: a GEMM into the program's logits (a call may compute some of
// its rows only), one that accumulates, a norm of the output with itself,
// and a kernel in between.
// CHECK-LABEL: func.func @no_linear_norm
// CHECK: dsk.linear %{{[^ ]+}}, %{{[^ ]+}} {weight = @w}
// CHECK-NEXT: dsk.add_rms_norm
// CHECK: dsk.linear %{{[^ ]+}}, %{{[^ ]+}} {accumulate, weight = @w}
// CHECK-NEXT: dsk.add_rms_norm
// CHECK: dsk.linear %{{[^ ]+}}, %{{[^ ]+}} {weight = @w}
// CHECK-NEXT: dsk.add_rms_norm
// CHECK: dsk.linear %{{[^ ]+}}, %{{[^ ]+}} {weight = @w}
// CHECK-NEXT: dsk.rms_norm
// CHECK-NEXT: dsk.add_rms_norm
module {
  ds.weight @w : tensor<16x32xf32>
  ds.weight @nw : tensor<16xf32>
  func.func @no_linear_norm(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x32xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>, %logits: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    dsk.linear %x, %logits {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %logits, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %y = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %y {accumulate, weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %y, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %y2 = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %y2 {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %y2, %y2, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %y3 = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %y3 {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.rms_norm %r, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %y3, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}

// -----

// A GEMM with its norm epilogue is no part for the rules that rebuild a
// plain GEMM: no gated_up of it, no router of moe_gate, no accumulate.
// CHECK-LABEL: func.func @norm_linear_stays
// CHECK: dsk.linear %{{[^ ]+}}, %[[G:[^ ]+]] norm(
// CHECK-NEXT: %[[U:.+]] = memref.alloc
// CHECK-NEXT: dsk.linear %{{[^ ]+}}, %[[U]] {weight = @w}
// CHECK-NEXT: dsk.swiglu %[[G]], %[[U]]
// CHECK: dsk.linear %{{[^ ]+}}, %[[L:[^ ]+]] norm(
// CHECK-NEXT: dsk.moe_route %[[L]]
// CHECK: dsk.linear %{{[^ ]+}}, %[[T:[^ ]+]] norm(
// CHECK-NEXT: dsk.add %{{.+}}, %[[T]], %{{.+}}
#moe = #ds.moe<experts = 16, shared = 0, top_k = 1, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>
module {
  ds.weight @w : tensor<16x32xf32>
  ds.weight @nw : tensor<16xf32>
  func.func @norm_linear_stays(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x32xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>, %y: memref<?x16xf32>, %i: memref<?x1xi32>, %wt: memref<?x1xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %g = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %g {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %g, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %u = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %u {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.swiglu %g, %u, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    %l = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %l {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %l, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.moe_route %l, %i, %wt {config = #moe} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>
    %t = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %t {weight = @w} : memref<?x32xf32>, memref<?x16xf32>
    dsk.add_rms_norm %r, %t, %s, %o {eps = 1.0e-06 : f64, weight = @nw} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.add %y, %t, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    return
  }
}
