// RUN: ds-opt --ds-lower-to-kernels="max-seq-len=64" --dsk-fuse --dsk-quantize %s | FileCheck %s
// RUN: ds-opt --ds-lower-to-kernels="max-seq-len=64" --dsk-quantize %s | FileCheck %s --check-prefix=UNFUSED
// RUN: ds-opt --dsk-quantize %S/Inputs/quantize-pair.mlir | FileCheck %s --check-prefix=PAIR

// A pair is two GEMMs: its input is quantized for the FP8 one even when the
// other weight stays f32 (the runtimes quantize per weight), as unpaired.
// PAIR-DAG: ds.weight @a.q_proj.weight : tensor<16x16xf8E4M3FN>
// Experts with their shared expert likewise: FP8 if any part's weights are.
// PAIR-DAG: ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
// PAIR-DAG: ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xf8E4M3FN>
// PAIR-DAG: ds.weight @m.shared_experts.down_proj.weight : tensor<16x8xf32>
// PAIR: dsk.linear_pair %{{.+}} {fp8, weight_a = @a.q_proj.weight, weight_b = @a.kv_a_proj_with_mqa.weight}
// PAIR: dsk.moe_experts %{{.+}} {experts = 1 : i64, fp8, inter = 4 : i64

// Which GEMMs run in FP8 is the pass's decision: the linear-layer weights of
// DeepSeek-V3's FP8 checkpoint (q_a/q_b, kv_a_proj_with_mqa, o_proj, experts,
// shared experts) become f8E4M3FN with block-scale companions and their
// GEMMs quantize activations (`fp8`); the router, lm_head, norms, RoPE and
// attention stay f32, and so does kv_b_proj, which absorbed decode attention
// reads as a float matrix (so its prefill up-projection stays f32 too).

// CHECK: module attributes {ds.quantization = #ds.fp8<block = [128, 128]>
// CHECK-DAG: ds.weight @a.q_a_proj.weight : tensor<4x16xf8E4M3FN>
// CHECK-DAG: ds.weight @a.q_a_proj.weight_scale_inv : tensor<1x1xf32>
// CHECK-DAG: ds.weight @a.kv_b_proj.weight : tensor<64x8xf32>
// CHECK-DAG: ds.weight @m.gate.weight : tensor<4x16xf32>
// CHECK-DAG: ds.weight @head : tensor<32x16xf32>
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight : tensor<16x8xf8E4M3FN>
// CHECK-DAG: ds.weight @m.experts.3.down_proj.weight_scale_inv : tensor<1x1xf32>
// CHECK-DAG: ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf8E4M3FN>
// CHECK-DAG: ds.weight @n1 : tensor<16xf32>
// CHECK-LABEL: func.func @prefill
// CHECK: dsk.linear_pair %{{.+}}, %{{.+}}, %{{.+}} {fp8, weight_a = @a.q_a_proj.weight, weight_b = @a.kv_a_proj_with_mqa.weight}
// CHECK: dsk.linear %{{.+}}, %{{.+}} {fp8, weight = @a.q_b_proj.weight}
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @a.kv_b_proj.weight}
// CHECK: dsk.mla_attention_naive
// The norm epilogue's weight is no GEMM operand: the GEMM is FP8 still.
// CHECK: dsk.linear %{{.+}}, %{{.+}} norm(%{{.+}}) {eps = {{.+}}, fp8, norm = @n1, weight = @a.o_proj.weight}
// CHECK: dsk.moe_gate %{{.+}} {bias = @m.gate.e_score_correction_bias, config = #{{.+}}, weight = @m.gate.weight}
// CHECK: dsk.moe_experts %{{.+}} norm(%{{.+}}) {eps = {{.+}}, experts = 4 : i64, fp8, inter = 8 : i64, norm = @nf, prefix = "m", shared_down = @m.shared_experts.down_proj.weight, shared_gate = @m.shared_experts.gate_proj.weight, shared_up = @m.shared_experts.up_proj.weight}
// CHECK: dsk.linear %{{.+}}, %{{.+}} {weight = @head}
// CHECK-LABEL: func.func @decode
// CHECK: dsk.mla_attention_absorbed %{{.+}} kv_b = @a.kv_b_proj.weight

// Without fusion the router is a plain f32 GEMM.
// UNFUSED: dsk.linear %{{.+}}, %{{.+}} {weight = @m.gate.weight}
// UNFUSED: dsk.moe_route
// UNFUSED: dsk.linear %{{.+}}, %{{.+}} {fp8, weight = @m.shared_experts.gate_proj.weight}
// UNFUSED: dsk.swiglu

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

