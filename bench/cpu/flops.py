"""FLOPs of ds's CPU programs for a config.json, for bench/cpu/run.sh.

  flops.py CONFIG PROMPT NEW -> prints "prefill_flops N", "decode_flops N" and
  "decode_bytes N" (weights and latent cache read by the decode steps: GEMM
  weights in bf16 when the config's torch_dtype is bfloat16 or float16, as
  ds keeps them, else float32; kv_b, the embedding row and the cache in
  float32; --quant=fp8 is not accounted for)

Counts 2*m*n*k for every GEMM the programs run (lm_head on the last prompt
position only, as a run without --dump-logits computes it; MoE at top_k
experts + shared) and the attention products:
prefill (naive MLA) causal QK^T and PV over the prompt; decode (absorbed MLA)
the W_UK/W_UV absorption plus scores and weighted sums over the latent cache.
Elementwise work (norms, RoPE, SwiGLU, routing) is not counted.
"""
import json
import sys


def main():
    cfg = json.load(open(sys.argv[1]))
    n, new = int(sys.argv[2]), int(sys.argv[3])
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    h, ql, kvl = cfg["num_attention_heads"], cfg.get("q_lora_rank") or 0, cfg["kv_lora_rank"]
    nope, rope, v = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    E, k, mi = cfg.get("n_routed_experts") or 0, cfg.get("num_experts_per_tok", 0), cfg["moe_intermediate_size"]
    shared, first, freq = cfg.get("n_shared_experts") or 0, cfg.get("first_k_dense_replace", 0), cfg.get("moe_layer_freq", 1)

    q = ql * H + h * (nope + rope) * ql if ql else h * (nope + rope) * H
    attn = q + (kvl + rope) * H + h * v * H  # q, kv_a, o_proj
    kvb = h * (nope + v) * kvl
    ffn = 0
    for i in range(L):
        if E and i >= first and i % freq == 0:
            ffn += E * H + (k + shared) * 3 * H * mi
        else:
            ffn += 3 * H * cfg["intermediate_size"]
    per_token = L * (attn + kvb) + ffn  # kv_b: up-projection (prefill) or absorption (decode)
    prefill = 2 * n * per_token + 2 * V * H
    pairs = n * (n + 1) // 2
    prefill += L * 2 * pairs * h * (nope + rope + v)
    # Bytes per element of the weights only GEMMs read (Weights.cpp keeps
    # them in bf16 for a BF16 model); kv_b feeds the absorbed attention and
    # stays float32.
    wbytes = 2 if cfg.get("torch_dtype") in ("bfloat16", "float16") else 4
    gemm_weights = L * attn + ffn + V * H
    decode = 0
    dbytes = 0
    for t in range(1, new):  # the first new token comes from prefill
        ctx = n + t
        decode += 2 * (per_token + V * H) + L * 2 * h * ctx * (2 * kvl + rope)
        dbytes += wbytes * gemm_weights + 4 * (L * kvb + H) + 4 * L * ctx * (kvl + rope)
    print("prefill_flops", prefill)
    print("decode_flops", decode)
    print("decode_bytes", dbytes)


if __name__ == "__main__":
    main()
