// A tiny DeepSeek-V3: the embedded default model of ds (demos, tests,
// benchmarks of the pipeline itself). Every feature of the V3 architecture at
// toy size: 3 layers (layer 0 dense, layers 1-2 DeepSeekMoE), MLA with a query
// LoRA, YaRN RoPE, 16 routed experts in 4 groups (sigmoid scores, noaux_tc
// bias, top-2-sum group scores, 2 groups kept, top-4) plus 1 shared expert, and
// one MTP module (checkpoint layer 3). Weights are named as in a Hugging Face
// DeepSeek-V3 checkpoint, so the same file runs with `--weights` on a
// checkpoint of this shape, or on deterministic random weights without.
//
//   vocab 1024, hidden 64, 4 heads (qk 16 + 8 rope, v 16), q_lora 32,
//   kv_lora 32, dense inter 128, expert inter 32, bf16 weights.

#mla = #ds.mla<heads = 4, q_lora_rank = 32, kv_lora_rank = 32, qk_nope = 16, qk_rope = 8, v_head = 16>
#moe = #ds.moe<experts = 16, shared = 1, top_k = 4, inter = 32, scoring = sigmoid, topk_method = noaux_tc,
               n_group = 4, topk_group = 2, norm_topk = true, scale = 2.5>
#yarn = #ds.yarn<factor = 4.0, original_max_position_embeddings = 128, beta_fast = 32.0, beta_slow = 1.0,
                 mscale = 1.0, mscale_all_dim = 1.0>
#rope = #ds.rope<theta = 10000.0, yarn = #yarn>

module {
  // Embedding.
  ds.weight @model.embed_tokens.weight : tensor<1024x64xbf16>

  // Layer 0 (dense).
  ds.weight @model.layers.0.input_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.0.mlp.down_proj.weight : tensor<64x128xbf16>
  ds.weight @model.layers.0.mlp.gate_proj.weight : tensor<128x64xbf16>
  ds.weight @model.layers.0.mlp.up_proj.weight : tensor<128x64xbf16>
  ds.weight @model.layers.0.post_attention_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.0.self_attn.kv_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.0.self_attn.kv_a_proj_with_mqa.weight : tensor<40x64xbf16>
  ds.weight @model.layers.0.self_attn.kv_b_proj.weight : tensor<128x32xbf16>
  ds.weight @model.layers.0.self_attn.o_proj.weight : tensor<64x64xbf16>
  ds.weight @model.layers.0.self_attn.q_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.0.self_attn.q_a_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.0.self_attn.q_b_proj.weight : tensor<96x32xbf16>

  // Layer 1 (MoE).
  ds.weight @model.layers.1.input_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.1.mlp.gate.weight : tensor<16x64xbf16>
  ds.weight @model.layers.1.mlp.gate.e_score_correction_bias : tensor<16xf32>
  ds.weight @model.layers.1.mlp.experts.0.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.0.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.0.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.1.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.1.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.1.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.2.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.2.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.2.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.3.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.3.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.3.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.4.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.4.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.4.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.5.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.5.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.5.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.6.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.6.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.6.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.7.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.7.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.7.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.8.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.8.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.8.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.9.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.9.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.9.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.10.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.10.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.10.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.11.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.11.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.11.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.12.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.12.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.12.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.13.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.13.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.13.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.14.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.14.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.14.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.15.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.experts.15.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.experts.15.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.shared_experts.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.1.mlp.shared_experts.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.mlp.shared_experts.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.post_attention_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.1.self_attn.kv_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.1.self_attn.kv_a_proj_with_mqa.weight : tensor<40x64xbf16>
  ds.weight @model.layers.1.self_attn.kv_b_proj.weight : tensor<128x32xbf16>
  ds.weight @model.layers.1.self_attn.o_proj.weight : tensor<64x64xbf16>
  ds.weight @model.layers.1.self_attn.q_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.1.self_attn.q_a_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.1.self_attn.q_b_proj.weight : tensor<96x32xbf16>

  // Layer 2 (MoE).
  ds.weight @model.layers.2.input_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.2.mlp.gate.weight : tensor<16x64xbf16>
  ds.weight @model.layers.2.mlp.gate.e_score_correction_bias : tensor<16xf32>
  ds.weight @model.layers.2.mlp.experts.0.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.0.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.0.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.1.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.1.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.1.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.2.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.2.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.2.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.3.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.3.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.3.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.4.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.4.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.4.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.5.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.5.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.5.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.6.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.6.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.6.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.7.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.7.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.7.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.8.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.8.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.8.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.9.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.9.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.9.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.10.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.10.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.10.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.11.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.11.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.11.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.12.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.12.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.12.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.13.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.13.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.13.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.14.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.14.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.14.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.15.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.experts.15.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.experts.15.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.shared_experts.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.2.mlp.shared_experts.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.mlp.shared_experts.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.post_attention_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.2.self_attn.kv_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.2.self_attn.kv_a_proj_with_mqa.weight : tensor<40x64xbf16>
  ds.weight @model.layers.2.self_attn.kv_b_proj.weight : tensor<128x32xbf16>
  ds.weight @model.layers.2.self_attn.o_proj.weight : tensor<64x64xbf16>
  ds.weight @model.layers.2.self_attn.q_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.2.self_attn.q_a_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.2.self_attn.q_b_proj.weight : tensor<96x32xbf16>

  // MTP module 1 (checkpoint layer 3): its own embedding and head copies, enorm/hnorm/eh_proj, one MoE block.
  ds.weight @model.layers.3.embed_tokens.weight : tensor<1024x64xbf16>
  ds.weight @model.layers.3.enorm.weight : tensor<64xbf16>
  ds.weight @model.layers.3.hnorm.weight : tensor<64xbf16>
  ds.weight @model.layers.3.eh_proj.weight : tensor<64x128xbf16>
  ds.weight @model.layers.3.input_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.3.mlp.gate.weight : tensor<16x64xbf16>
  ds.weight @model.layers.3.mlp.gate.e_score_correction_bias : tensor<16xf32>
  ds.weight @model.layers.3.mlp.experts.0.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.0.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.0.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.1.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.1.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.1.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.2.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.2.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.2.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.3.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.3.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.3.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.4.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.4.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.4.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.5.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.5.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.5.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.6.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.6.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.6.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.7.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.7.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.7.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.8.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.8.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.8.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.9.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.9.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.9.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.10.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.10.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.10.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.11.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.11.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.11.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.12.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.12.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.12.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.13.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.13.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.13.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.14.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.14.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.14.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.15.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.experts.15.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.experts.15.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.shared_experts.down_proj.weight : tensor<64x32xbf16>
  ds.weight @model.layers.3.mlp.shared_experts.gate_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.mlp.shared_experts.up_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.post_attention_layernorm.weight : tensor<64xbf16>
  ds.weight @model.layers.3.self_attn.kv_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.3.self_attn.kv_a_proj_with_mqa.weight : tensor<40x64xbf16>
  ds.weight @model.layers.3.self_attn.kv_b_proj.weight : tensor<128x32xbf16>
  ds.weight @model.layers.3.self_attn.o_proj.weight : tensor<64x64xbf16>
  ds.weight @model.layers.3.self_attn.q_a_layernorm.weight : tensor<32xbf16>
  ds.weight @model.layers.3.self_attn.q_a_proj.weight : tensor<32x64xbf16>
  ds.weight @model.layers.3.self_attn.q_b_proj.weight : tensor<96x32xbf16>
  ds.weight @model.layers.3.shared_head.norm.weight : tensor<64xbf16>
  ds.weight @model.layers.3.shared_head.head.weight : tensor<1024x64xbf16>

  // Final norm and output head.
  ds.weight @model.norm.weight : tensor<64xbf16>
  ds.weight @lm_head.weight : tensor<1024x64xbf16>

  // The main model on a sequence of tokens at the given positions. Returns
  // the logits and the final-normed hidden state that feeds the MTP module.
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x1024xf32>, tensor<?x64xf32>) {
    %x0 = ds.embedding %ids, @model.embed_tokens.weight : (tensor<?xi32>) -> tensor<?x64xf32>

    // Layer 0: MLA + dense SwiGLU.
    %n0 = ds.rms_norm %x0, @model.layers.0.input_layernorm.weight : tensor<?x64xf32>
    %a0 = ds.mla %n0, %pos {prefix = "model.layers.0.self_attn", config = #mla, rope = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %r0 = arith.addf %x0, %a0 : tensor<?x64xf32>
    %m0 = ds.rms_norm %r0, @model.layers.0.post_attention_layernorm.weight : tensor<?x64xf32>
    %f0 = ds.mlp %m0 {prefix = "model.layers.0.mlp", inter = 128 : i64} : tensor<?x64xf32>
    %x1 = arith.addf %r0, %f0 : tensor<?x64xf32>

    // Layer 1: MLA + MoE.
    %n1 = ds.rms_norm %x1, @model.layers.1.input_layernorm.weight : tensor<?x64xf32>
    %a1 = ds.mla %n1, %pos {prefix = "model.layers.1.self_attn", config = #mla, rope = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %r1 = arith.addf %x1, %a1 : tensor<?x64xf32>
    %m1 = ds.rms_norm %r1, @model.layers.1.post_attention_layernorm.weight : tensor<?x64xf32>
    %f1 = ds.moe %m1 {prefix = "model.layers.1.mlp", config = #moe} : tensor<?x64xf32>
    %x2 = arith.addf %r1, %f1 : tensor<?x64xf32>

    // Layer 2: MLA + MoE.
    %n2 = ds.rms_norm %x2, @model.layers.2.input_layernorm.weight : tensor<?x64xf32>
    %a2 = ds.mla %n2, %pos {prefix = "model.layers.2.self_attn", config = #mla, rope = #rope} : tensor<?x64xf32>, tensor<?xi32>
    %r2 = arith.addf %x2, %a2 : tensor<?x64xf32>
    %m2 = ds.rms_norm %r2, @model.layers.2.post_attention_layernorm.weight : tensor<?x64xf32>
    %f2 = ds.moe %m2 {prefix = "model.layers.2.mlp", config = #moe} : tensor<?x64xf32>
    %x3 = arith.addf %r2, %f2 : tensor<?x64xf32>

    %h = ds.rms_norm %x3, @model.norm.weight : tensor<?x64xf32>
    %logits = ds.lm_head %h, @lm_head.weight : (tensor<?x64xf32>) -> tensor<?x1024xf32>
    return %logits, %h : tensor<?x1024xf32>, tensor<?x64xf32>
  }

  // MTP module 1: from the main model's hidden state at position i and token
  // i+1, predicts token i+2.
  func.func @mtp_1(%h: tensor<?x64xf32>, %next: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x1024xf32>, tensor<?x64xf32>) {
    %logits, %y = ds.mtp %h, %next, %pos {prefix = "model.layers.3", config = #ds.mtp<depth = 1>,
                                          embed = @model.layers.3.embed_tokens.weight,
                                          head = @model.layers.3.shared_head.head.weight}
        : tensor<?x64xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x1024xf32>, tensor<?x64xf32> {
    ^bb0(%x: tensor<?x64xf32>, %p: tensor<?xi32>):
      %n = ds.rms_norm %x, @model.layers.3.input_layernorm.weight : tensor<?x64xf32>
      %a = ds.mla %n, %p {prefix = "model.layers.3.self_attn", config = #mla, rope = #rope} : tensor<?x64xf32>, tensor<?xi32>
      %r = arith.addf %x, %a : tensor<?x64xf32>
      %m = ds.rms_norm %r, @model.layers.3.post_attention_layernorm.weight : tensor<?x64xf32>
      %f = ds.moe %m {prefix = "model.layers.3.mlp", config = #moe} : tensor<?x64xf32>
      %out = arith.addf %r, %f : tensor<?x64xf32>
      ds.yield %out : tensor<?x64xf32>
    }
    return %logits, %y : tensor<?x1024xf32>, tensor<?x64xf32>
  }
}
