"""FLOPs of ds's CPU programs for a config.json, for bench/cpu/run.sh.

  flops.py CONFIG PROMPT NEW -> prints "prefill_flops N", "decode_flops N" and
  "decode_bytes N" (float32 weights and latent cache read by the decode steps)

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
    decode = 0
    dbytes = 0
    for t in range(1, new):  # the first new token comes from prefill
        ctx = n + t
        decode += 2 * (per_token + V * H) + L * 2 * h * ctx * (2 * kvl + rope)
        dbytes += 4 * (per_token + V * H + H) + 4 * L * ctx * (kvl + rope)
    print("prefill_flops", prefill)
    print("decode_flops", decode)
    print("decode_bytes", dbytes)


if __name__ == "__main__":
    main()
