// RUN: ds-opt --split-input-file --verify-diagnostics %s

// One case per verifier rule of the dsk dialect.

// rms_norm: eps must be positive.
ds.weight @n : tensor<16xf32>
func.func @f(%x: memref<?x16xf32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.rms_norm %x, %x {eps = 0.0 : f64, weight = @n} : memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// rms_norm: out has the input's width.
ds.weight @n : tensor<16xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{out must have 16 columns, got 'memref<?x8xf32>'}}
  dsk.rms_norm %x, %y {eps = 1.0e-6 : f64, weight = @n} : memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// linear: the weight is [out, in] of the buffers' widths.
ds.weight @w : tensor<16x8xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{weight 'w' has shape [16, 8] but the op implies [8, 16]}}
  dsk.linear %x, %y {weight = @w} : memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// linear: the norm epilogue's buffers and attributes go together.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %r: memref<?x8xf32>, %s: memref<?x8xf32>, %o: memref<?x8xf32>) {
  // expected-error @+1 {{the norm's residual, sum and normed buffers and its norm and eps attributes go together}}
  dsk.linear %x, %y norm(%r, %s, %o) {weight = @w, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x8xf32> norm(memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// linear: the norm epilogue's rows are out's width; eps > 0; no accumulate.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %r: memref<?x8xf32>, %s: memref<?x8xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{normed must have 8 columns}}
  dsk.linear %x, %y norm(%r, %s, %o) {weight = @w, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x8xf32> norm(memref<?x8xf32>, memref<?x8xf32>, memref<?x16xf32>)
  return
}

// -----

func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %r: memref<?x8xf32>, %s: memref<?x8xf32>, %o: memref<?x8xf32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.linear %x, %y norm(%r, %s, %o) {weight = @w, norm = @n, eps = -1.0 : f64} : memref<?x16xf32>, memref<?x8xf32> norm(memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %r: memref<?x8xf32>, %s: memref<?x8xf32>, %o: memref<?x8xf32>) {
  // expected-error @+1 {{a norm epilogue does not go with accumulate}}
  dsk.linear %x, %y norm(%r, %s, %o) {weight = @w, norm = @n, eps = 1.0e-6 : f64, accumulate} : memref<?x16xf32>, memref<?x8xf32> norm(memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// linear: every block reads the whole input while others write out.
func.func @f(%x: memref<?x16xf32>) {
  // expected-error @+1 {{out may overlap the input}}
  dsk.linear %x, %x {weight = @w} : memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// linear: column views of one buffer overlap unless their ranges are apart.
func.func @f(%b: memref<?x16xf32>, %n: index) {
  %in = memref.subview %b[0, 0] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1]>>
  %out = memref.subview %b[0, 4] [%n, 8] [1, 1] : memref<?x16xf32> to memref<?x8xf32, strided<[16, 1], offset: 4>>
  // expected-error @+1 {{out may overlap the input}}
  dsk.linear %in, %out {weight = @w} : memref<?x8xf32, strided<[16, 1]>>, memref<?x8xf32, strided<[16, 1], offset: 4>>
  return
}

// -----

// linear: a view with a column stride spans more columns than its width
// (columns 0, 2, 4, 6 here, then column 6 again).
func.func @f(%b: memref<?x16xf32>, %n: index) {
  %in = memref.subview %b[0, 0] [%n, 4] [1, 2] : memref<?x16xf32> to memref<?x4xf32, strided<[16, 2]>>
  %out = memref.subview %b[0, 6] [%n, 1] [1, 1] : memref<?x16xf32> to memref<?x1xf32, strided<[16, 1], offset: 6>>
  // expected-error @+1 {{out may overlap the input}}
  dsk.linear %in, %out {weight = @w} : memref<?x4xf32, strided<[16, 2]>>, memref<?x1xf32, strided<[16, 1], offset: 6>>
  return
}

// -----

// linear: the norm epilogue reads the residual after out is written.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %s: memref<?x8xf32>, %o: memref<?x8xf32>) {
  // expected-error @+1 {{the norm's residual may overlap out}}
  dsk.linear %x, %y norm(%y, %s, %o) {weight = @w, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x8xf32> norm(memref<?x8xf32>, memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// gated_up: out apart from the input, as for linear.
func.func @f(%b: memref<?x24xf32>, %n: index) {
  %in = memref.subview %b[0, 0] [%n, 16] [1, 1] : memref<?x24xf32> to memref<?x16xf32, strided<[24, 1]>>
  %out = memref.subview %b[0, 12] [%n, 8] [1, 1] : memref<?x24xf32> to memref<?x8xf32, strided<[24, 1], offset: 12>>
  // expected-error @+1 {{out may overlap the input}}
  dsk.gated_up %in, %out {gate = @g, up = @u} : memref<?x16xf32, strided<[24, 1]>>, memref<?x8xf32, strided<[24, 1], offset: 12>>
  return
}

// -----

// add: operands have one width.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{rhs must have 16 columns}}
  dsk.add %x, %y, %x : memref<?x16xf32>, memref<?x8xf32>, memref<?x16xf32>
  return
}

// -----

// add: out has the operands' width.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{out must have 16 columns}}
  dsk.add %x, %x, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// swiglu: gate and up have one width.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{up must have 16 columns}}
  dsk.swiglu %x, %y, %x : memref<?x16xf32>, memref<?x8xf32>, memref<?x16xf32>
  return
}

// -----

// swiglu: out has the operands' width.
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{out must have 16 columns}}
  dsk.swiglu %x, %x, %y : memref<?x16xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// rope: dims odd.
func.func @f(%x: memref<?x16xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{dim must be positive and even, got 3}}
  dsk.rope %x, %p {config = #ds.rope<theta = 1.0>, dim = 3 : i64, heads = 1 : i64, head_stride = 16 : i64, offset = 0 : i64} : memref<?x16xf32>, memref<?xi32>
  return
}

// -----

// rope: rotated columns fit the head.
func.func @f(%x: memref<?x16xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{rotated columns [4, 12) do not fit a head of 8 columns}}
  dsk.rope %x, %p {config = #ds.rope<theta = 1.0>, dim = 8 : i64, heads = 2 : i64, head_stride = 8 : i64, offset = 4 : i64} : memref<?x16xf32>, memref<?xi32>
  return
}

// -----

// rope: heads fit the buffer.
func.func @f(%x: memref<?x16xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{3 heads of 8 columns exceed the buffer's 16}}
  dsk.rope %x, %p {config = #ds.rope<theta = 1.0>, dim = 8 : i64, heads = 3 : i64, head_stride = 8 : i64, offset = 0 : i64} : memref<?x16xf32>, memref<?xi32>
  return
}

// -----

// mla_attention_naive: q is heads * (nope + rope) wide.
func.func @f(%q: memref<?x40xf32>, %kv: memref<?x64xf32>, %k: memref<?x8xf32>, %o: memref<?x32xf32>) {
  // expected-error @+1 {{q must have 48 columns}}
  dsk.mla_attention_naive %q, %kv, %k, %o {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x40xf32>, memref<?x64xf32>, memref<?x8xf32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_naive: kv is heads * (nope + v) wide.
func.func @f(%q: memref<?x48xf32>, %kv: memref<?x60xf32>, %k: memref<?x8xf32>, %o: memref<?x32xf32>) {
  // expected-error @+1 {{kv must have 64 columns}}
  dsk.mla_attention_naive %q, %kv, %k, %o {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?x60xf32>, memref<?x8xf32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_naive: the rope key is qk_rope wide.
func.func @f(%q: memref<?x48xf32>, %kv: memref<?x64xf32>, %k: memref<?x6xf32>, %o: memref<?x32xf32>) {
  // expected-error @+1 {{krope must have 8 columns}}
  dsk.mla_attention_naive %q, %kv, %k, %o {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?x64xf32>, memref<?x6xf32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_naive: out is heads * v wide.
func.func @f(%q: memref<?x48xf32>, %kv: memref<?x64xf32>, %k: memref<?x8xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{out must have 32 columns}}
  dsk.mla_attention_naive %q, %kv, %k, %o {heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?x64xf32>, memref<?x8xf32>, memref<?x16xf32>
  return
}

// -----

// mla_attention_absorbed: q is heads * (nope + rope) wide.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x40xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>) {
  // expected-error @+1 {{q must have 48 columns}}
  dsk.mla_attention_absorbed %q, %p, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x40xf32>, memref<?xi32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_absorbed: out is heads * v wide.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{out must have 32 columns}}
  dsk.mla_attention_absorbed %q, %p, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x16xf32>
  return
}

// -----

// mla_attention_absorbed: the rope prologue's operands need its rope table.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{rope operands and rope_config go together}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// mla_attention_absorbed: a rope table needs the prologue's operands.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{rope operands and rope_config go together}}
  dsk.mla_attention_absorbed %q, %p, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_absorbed: the latent's norm is the prologue's.
ds.weight @kvb : tensor<64x8xf32>
ds.weight @nw : tensor<8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{norm and eps need the rope prologue}}
  dsk.mla_attention_absorbed %q, %p, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, norm = @nw, eps = 1.0e-6 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
  return
}

// -----

// mla_attention_absorbed: the prologue's latent is kv_lora_rank wide.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{latent must have 8 columns}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l4, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x4xf32>, memref<?x8xf32>)
  return
}

// -----

// mla_attention_absorbed: the prologue's rope key is qk_rope wide.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{krope must have 8 columns}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %l4) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x4xf32>)
  return
}

// -----

// mla_attention_absorbed: norm and eps go together.
ds.weight @kvb : tensor<64x8xf32>
ds.weight @nw : tensor<8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{norm and eps go together}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>, norm = @nw} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// mla_attention_absorbed: eps is positive.
ds.weight @kvb : tensor<64x8xf32>
ds.weight @nw : tensor<8xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %l4: memref<?x4xf32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>, norm = @nw, eps = 0.0 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32>)
  return
}

// -----

// mla_attention_absorbed: the prologue rotates pairs: qk_rope is even.
ds.weight @kvb : tensor<66x8xf32>
func.func @f(%q: memref<?x46xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %k: memref<?x7xf32>) {
  // expected-error @+1 {{the rope prologue needs an even qk_rope, got 7}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 7 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>} : memref<?x46xf32>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x7xf32>)
  return
}

// -----

// mla_attention_absorbed: the query is rotated in place, apart from the
// prologue's latent and key.
ds.weight @kvb : tensor<64x8xf32>
func.func @f(%kv: memref<?x56xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>, %l: memref<?x8xf32>, %n: index) {
  %q = memref.subview %kv[0, 0] [%n, 48] [1, 1] : memref<?x56xf32> to memref<?x48xf32, strided<[56, 1]>>
  %k = memref.subview %kv[0, 48] [%n, 8] [1, 1] : memref<?x56xf32> to memref<?x8xf32, strided<[56, 1], offset: 48>>
  // expected-error @+1 {{the query shares a buffer with the latent or the rope key}}
  dsk.mla_attention_absorbed %q, %p, %o rope(%l, %k) {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64, rope_config = #ds.rope<theta = 1.0>} : memref<?x48xf32, strided<[56, 1]>>, memref<?xi32>, memref<?x32xf32> rope(memref<?x8xf32>, memref<?x8xf32, strided<[56, 1], offset: 48>>)
  return
}

// -----

// mla_attention_absorbed: kv_b is [heads * (nope + v), kv_lora_rank].
ds.weight @kvb : tensor<64x4xf32>
func.func @f(%q: memref<?x48xf32>, %p: memref<?xi32>, %o: memref<?x32xf32>) {
  // expected-error @+1 {{weight 'kvb' has shape [64, 4] but the op implies [64, 8]}}
  dsk.mla_attention_absorbed %q, %p, %o {kv_b = @kvb, layer = 0 : i64, kv_lora_rank = 8 : i64, heads = 2 : i64, qk_nope = 16 : i64, qk_rope = 8 : i64, v_head = 16 : i64, scale = 0.2 : f64} : memref<?x48xf32>, memref<?xi32>, memref<?x32xf32>
  return
}

// -----

// moe_route: one logit per expert.
func.func @f(%l: memref<?x3xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{logits must have 4 columns}}
  dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : memref<?x3xf32>, memref<?x2xi32>, memref<?x2xf32>
  return
}

// -----

// moe_route: top_k indices per token.
func.func @f(%l: memref<?x4xf32>, %i: memref<?x3xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{indices must have 2 columns}}
  dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : memref<?x4xf32>, memref<?x3xi32>, memref<?x2xf32>
  return
}

// -----

// moe_route: top_k weights per token.
func.func @f(%l: memref<?x4xf32>, %i: memref<?x2xi32>, %w: memref<?x1xf32>) {
  // expected-error @+1 {{weights must have 2 columns}}
  dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : memref<?x4xf32>, memref<?x2xi32>, memref<?x1xf32>
  return
}

// -----

// moe_route: noaux_tc needs its bias.
func.func @f(%l: memref<?x4xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{a correction bias goes with noaux_tc routing, and only with it}}
  dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 1.0>} : memref<?x4xf32>, memref<?x2xi32>, memref<?x2xf32>
  return
}

// -----

// moe_route: other methods take no bias.
ds.weight @b : tensor<4xf32>
func.func @f(%l: memref<?x4xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{a correction bias goes with noaux_tc routing, and only with it}}
  dsk.moe_route %l, %i, %w {config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>, bias = @b} : memref<?x4xf32>, memref<?x2xi32>, memref<?x2xf32>
  return
}

// -----

// moe_experts: indices and weights agree on top_k.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x2xi32>, %w: memref<?x1xf32>) {
  // expected-error @+1 {{indices and weights differ in top_k}}
  dsk.moe_experts %x, %i, %w, %x {prefix = "m", experts = 1 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x2xi32>, memref<?x1xf32>, memref<?x16xf32>
  return
}

// -----

// moe_experts: out has the input's width.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{out must have 16 columns}}
  dsk.moe_experts %x, %i, %w, %y {prefix = "m", experts = 1 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x8xf32>
  return
}

// -----

// moe_experts: a shared expert has all three weights and its buffer.
ds.weight @sg : tensor<8x16xf32>
ds.weight @su : tensor<8x16xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>) {
  // expected-error @+1 {{shared_gate, shared_up, shared_down and the shared_hidden buffer go together}}
  dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// moe_experts: the shared expert is fused on one expert-parallel rank only.
ds.weight @sg : tensor<8x16xf32>
ds.weight @su : tensor<8x16xf32>
ds.weight @sd : tensor<16x8xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>) {
  // expected-error @+1 {{a shared expert needs ep = 1, got ep = 2}}
  dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 2 : i64, inter = 4 : i64, ep = 2 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// moe_experts: the shared expert's intermediate is a buffer of its own.
ds.weight @sg : tensor<16x16xf32>
ds.weight @su : tensor<16x16xf32>
ds.weight @sd : tensor<16x16xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>) {
  // expected-error @+1 {{shared_hidden must be a buffer of its own}}
  dsk.moe_experts %x, %i, %w, %y, %y {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// moe_experts: with a shared expert, the sum does not overwrite the input.
ds.weight @sg : tensor<8x16xf32>
ds.weight @su : tensor<8x16xf32>
ds.weight @sd : tensor<16x8xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %h: memref<?x8xf32>) {
  // expected-error @+1 {{with a shared expert, out must not share a buffer with the input}}
  dsk.moe_experts %x, %i, %w, %x, %h {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// moe_experts: the shared expert's weights have its intermediate's width.
ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
ds.weight @sg : tensor<4x16xf32>
ds.weight @su : tensor<8x16xf32>
ds.weight @sd : tensor<16x8xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>) {
  // expected-error @+1 {{weight 'sg' has shape [4, 16] but the op implies [8, 16]}}
  dsk.moe_experts %x, %i, %w, %y, %h {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// moe_experts: the norm epilogue's buffers and attributes go together.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{the norm's residual, sum and normed buffers and its norm and eps attributes go together}}
  dsk.moe_experts %x, %i, %w, %y, %h norm(%r, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
  return
}

// -----

// moe_experts: the norm epilogue comes with the shared expert.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{a norm epilogue needs the shared expert}}
  dsk.moe_experts %x, %i, %w, %y norm(%r, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
  return
}

// -----

// moe_experts: the norm epilogue's rows are the hidden width; eps > 0.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>, %r: memref<?x16xf32>, %s: memref<?x8xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{sum must have 16 columns}}
  dsk.moe_experts %x, %i, %w, %y, %h norm(%r, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32> norm(memref<?x16xf32>, memref<?x8xf32>, memref<?x16xf32>)
  return
}

// -----

func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>, %r: memref<?x16xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.moe_experts %x, %i, %w, %y, %h norm(%r, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd, norm = @n, eps = 0.0 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
  return
}

// -----

// moe_experts: the combine writes the norm's rows while other blocks read
// the routing.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>, %r: memref<?x16xf32>, %o: memref<?x16xf32>, %b: memref<?x17xf32>, %n: index) {
  %w = memref.subview %b[0, 0] [%n, 1] [1, 1] : memref<?x17xf32> to memref<?x1xf32, strided<[17, 1]>>
  %s = memref.subview %b[0, 0] [%n, 16] [1, 1] : memref<?x17xf32> to memref<?x16xf32, strided<[17, 1]>>
  // expected-error @+1 {{the norm's sum and normed buffers may overlap the routing indices or weights}}
  dsk.moe_experts %x, %i, %w, %y, %h norm(%r, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32, strided<[17, 1]>>, memref<?x16xf32>, memref<?x8xf32> norm(memref<?x16xf32>, memref<?x16xf32, strided<[17, 1]>>, memref<?x16xf32>)
  return
}

// -----

// moe_experts: the norm's residual is read after out is written.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>, %y: memref<?x16xf32>, %h: memref<?x8xf32>, %s: memref<?x16xf32>, %o: memref<?x16xf32>) {
  // expected-error @+1 {{the norm's residual may overlap out}}
  dsk.moe_experts %x, %i, %w, %y, %h norm(%y, %s, %o) {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @sg, shared_up = @su, shared_down = @sd, norm = @n, eps = 1.0e-6 : f64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32> norm(memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>)
  return
}

// -----

// moe_experts: every expert's weights exist.
func.func @f(%x: memref<?x16xf32>, %i: memref<?x1xi32>, %w: memref<?x1xf32>) {
  // expected-error @+1 {{weight 'm.experts.0.gate_proj.weight' is not defined by a ds.weight}}
  dsk.moe_experts %x, %i, %w, %x {prefix = "m", experts = 1 : i64, inter = 4 : i64} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>
  return
}

// -----

// add_rms_norm: eps must be positive.
ds.weight @n : tensor<16xf32>
func.func @f(%x: memref<?x16xf32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.add_rms_norm %x, %x, %x, %x {eps = 0.0 : f64, weight = @n} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// add_rms_norm: one width throughout.
ds.weight @n : tensor<16xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{sum must have 16 columns}}
  dsk.add_rms_norm %x, %x, %y, %x {eps = 1.0e-6 : f64, weight = @n} : memref<?x16xf32>, memref<?x16xf32>, memref<?x8xf32>, memref<?x16xf32>
  return
}

// -----

// add_rms_norm: the norm weight matches the width.
ds.weight @n : tensor<8xf32>
func.func @f(%x: memref<?x16xf32>) {
  // expected-error @+1 {{weight 'n' has shape [8] but the op implies [16]}}
  dsk.add_rms_norm %x, %x, %x, %x {eps = 1.0e-6 : f64, weight = @n} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// rope_kv_cache_write: the rope key has an even width.
func.func @f(%l: memref<?x8xf32>, %k: memref<?x7xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{the rope key must have an even width, got 'memref<?x7xf32>'}}
  dsk.rope_kv_cache_write %l, %k, %p {config = #ds.rope<theta = 1.0>, layer = 0 : i64} : memref<?x8xf32>, memref<?x7xf32>, memref<?xi32>
  return
}

// -----

// linear_pair: each weight is [out, in] of its own output.
ds.weight @a : tensor<8x16xf32>
ds.weight @b : tensor<8x16xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>, %z: memref<?x4xf32>) {
  // expected-error @+1 {{weight 'b' has shape [8, 16] but the op implies [4, 16]}}
  dsk.linear_pair %x, %y, %z {weight_a = @a, weight_b = @b} : memref<?x16xf32>, memref<?x8xf32>, memref<?x4xf32>
  return
}

// -----

// linear_pair: two outputs, neither the input.
ds.weight @a : tensor<16x16xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x16xf32>) {
  // expected-error @+1 {{the outputs and the input must be different buffers}}
  dsk.linear_pair %x, %y, %y {weight_a = @a, weight_b = @a} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
  return
}

// -----

// qk_rope_cache_write: the query is rotated in place, apart from the latent
// and the key it stores.
func.func @f(%kv: memref<?x56xf32>, %l: memref<?x8xf32>, %p: memref<?xi32>, %n: index) {
  %q = memref.subview %kv[0, 0] [%n, 48] [1, 1] : memref<?x56xf32> to memref<?x48xf32, strided<[56, 1]>>
  %k = memref.subview %kv[0, 48] [%n, 8] [1, 1] : memref<?x56xf32> to memref<?x8xf32, strided<[56, 1], offset: 48>>
  // expected-error @+1 {{the query shares a buffer with the latent or the rope key}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64} : memref<?x48xf32, strided<[56, 1]>>, memref<?x8xf32>, memref<?x8xf32, strided<[56, 1], offset: 48>>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: the rope key has an even width.
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x7xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{the rope key must have an even width, got 'memref<?x7xf32>'}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x7xf32>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: the query's rope columns fit its heads.
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{query columns [20, 28) do not fit a head of 24 columns}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 20 : i64, layer = 0 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: the heads fit the query.
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{3 heads of 24 columns exceed the query's 48}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 3 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: a norm weight needs its eps.
ds.weight @n : tensor<8xf32>
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{norm and eps go together}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64, norm = @n} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: eps is positive.
ds.weight @n : tensor<8xf32>
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{eps must be positive}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64, norm = @n, eps = 0.0 : f64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
  return
}

// -----

// qk_rope_cache_write: the norm weight matches the latent.
ds.weight @n : tensor<16xf32>
func.func @f(%q: memref<?x48xf32>, %l: memref<?x8xf32>, %k: memref<?x8xf32>, %p: memref<?xi32>) {
  // expected-error @+1 {{weight 'n' has shape [16] but the op implies [8]}}
  dsk.qk_rope_cache_write %q, %l, %k, %p {config = #ds.rope<theta = 1.0>, heads = 2 : i64, head_stride = 24 : i64, offset = 16 : i64, layer = 0 : i64, norm = @n, eps = 1.0e-6 : f64} : memref<?x48xf32>, memref<?x8xf32>, memref<?x8xf32>, memref<?xi32>
  return
}

// -----

// gated_up: gate and up are [inter, in].
ds.weight @g : tensor<8x16xf32>
ds.weight @u : tensor<8x8xf32>
func.func @f(%x: memref<?x16xf32>, %y: memref<?x8xf32>) {
  // expected-error @+1 {{weight 'u' has shape [8, 8] but the op implies [8, 16]}}
  dsk.gated_up %x, %y {gate = @g, up = @u} : memref<?x16xf32>, memref<?x8xf32>
  return
}

// -----

// moe_gate: top_k indices per token.
ds.weight @r : tensor<4x16xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x3xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{indices must have 2 columns}}
  dsk.moe_gate %x, %i, %w {weight = @r, config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : memref<?x16xf32>, memref<?x3xi32>, memref<?x2xf32>
  return
}

// -----

// moe_gate: noaux_tc needs its bias.
ds.weight @r : tensor<4x16xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{a correction bias goes with noaux_tc routing, and only with it}}
  dsk.moe_gate %x, %i, %w {weight = @r, config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = sigmoid, topk_method = noaux_tc, n_group = 2, topk_group = 1, norm_topk = true, scale = 1.0>} : memref<?x16xf32>, memref<?x2xi32>, memref<?x2xf32>
  return
}

// -----

// moe_gate: the router is [experts, hidden].
ds.weight @r : tensor<8x16xf32>
func.func @f(%x: memref<?x16xf32>, %i: memref<?x2xi32>, %w: memref<?x2xf32>) {
  // expected-error @+1 {{weight 'r' has shape [8, 16] but the op implies [4, 16]}}
  dsk.moe_gate %x, %i, %w {weight = @r, config = #ds.moe<experts = 4, shared = 0, top_k = 2, inter = 4, scoring = softmax, topk_method = greedy, n_group = 1, topk_group = 1, norm_topk = false, scale = 1.0>} : memref<?x16xf32>, memref<?x2xi32>, memref<?x2xf32>
  return
}

// -----

func.func @f(%x: memref<?x16xf32>, %y: memref<?x24xf32>) {
  // expected-error @+1 {{'dsk.all_gather' op out width (24) must be a multiple of the input's (16)}}
  dsk.all_gather %x, %y {axis = #ds.axis<tp>} : memref<?x16xf32>, memref<?x24xf32>
  return
}
