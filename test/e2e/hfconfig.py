"""Hugging Face DeepSeek-V2/V3 config.json -> normalized config, and the exact
list of checkpoint tensors (names, shapes) such a config implies.

Absent fields take the defaults of the configuration classes shipped with the
checkpoints (DeepseekV3Config / DeepseekV2Config, configuration_deepseek.py),
except num_nextn_predict_layers, which defaults to 0 (transformers'
DeepseekV3Config has no MTP layers).
"""

import json
import os

V3_DEFAULTS = dict(
    vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
    num_hidden_layers=61, num_nextn_predict_layers=0, num_attention_heads=128,
    n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512,
    q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
    topk_method="noaux_tc", n_group=8, topk_group=4, num_experts_per_tok=8, moe_layer_freq=1,
    first_k_dense_replace=3, norm_topk_prob=True, scoring_func="sigmoid",
    max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None, attention_bias=False, hidden_act="silu")

V2_DEFAULTS = dict(
    vocab_size=102400, hidden_size=4096, intermediate_size=11008, moe_intermediate_size=1407,
    num_hidden_layers=30, num_nextn_predict_layers=0, num_attention_heads=32,
    n_shared_experts=None, n_routed_experts=None, routed_scaling_factor=1.0, kv_lora_rank=512,
    q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
    topk_method="greedy", n_group=None, topk_group=None, num_experts_per_tok=None,
    moe_layer_freq=1, first_k_dense_replace=0, norm_topk_prob=False, scoring_func="softmax",
    max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None, attention_bias=False, hidden_act="silu")


class ConfigError(Exception):
    pass


def load(path):
    """path: a config.json or a directory holding one -> normalized dict."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        raw = json.load(f)
    return normalize(raw)


def normalize(raw):
    mt = raw.get("model_type")
    if mt == "deepseek_v3":
        c = dict(V3_DEFAULTS)
    elif mt == "deepseek_v2":
        c = dict(V2_DEFAULTS)
    else:
        raise ConfigError("model_type: unsupported value %r" % (mt,))
    for k in c:
        if k in raw:
            c[k] = raw[k]
    c["model_type"] = mt
    if c["topk_method"] == "gready":  # spelling used by DeepSeek-V2's own config class
        c["topk_method"] = "greedy"
    if c["q_lora_rank"] in (None, 0):
        c["q_lora_rank"] = None
    for k in ("n_group", "topk_group"):
        if c[k] is None:
            c[k] = 1
    if not c["n_routed_experts"]:
        c["n_routed_experts"] = 0
    if c["n_shared_experts"] is None:
        c["n_shared_experts"] = 0
    if c["num_nextn_predict_layers"] is None:
        c["num_nextn_predict_layers"] = 0
    if c["scoring_func"] not in ("sigmoid", "softmax"):
        raise ConfigError("scoring_func: unsupported value %r" % (c["scoring_func"],))
    if c["topk_method"] not in ("greedy", "group_limited_greedy", "noaux_tc"):
        raise ConfigError("topk_method: unsupported value %r" % (c["topk_method"],))
    if c["hidden_act"] != "silu":
        raise ConfigError("hidden_act: unsupported value %r" % (c["hidden_act"],))
    if c["attention_bias"]:
        raise ConfigError("attention_bias: unsupported value true")
    rs = c["rope_scaling"]
    if rs is not None:
        kind = rs.get("type", rs.get("rope_type"))
        if kind != "yarn":
            raise ConfigError("rope_scaling: unsupported type %r" % (kind,))
    if c["n_routed_experts"]:
        e, g = c["n_routed_experts"], c["n_group"]
        if e % g != 0:
            raise ConfigError("n_group: %d does not divide n_routed_experts %d" % (g, e))
        if not c["num_experts_per_tok"]:
            raise ConfigError("num_experts_per_tok: required with n_routed_experts")
    return c


def is_moe_layer(c, i):
    return (c["n_routed_experts"] > 0 and i >= c["first_k_dense_replace"]
            and i % c["moe_layer_freq"] == 0)


def layer_tensors(c, prefix, moe):
    """(name, shape) of one decoder layer (attention + MLP or MoE)."""
    H, nh = c["hidden_size"], c["num_attention_heads"]
    nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    kvl, ql = c["kv_lora_rank"], c["q_lora_rank"]
    t = [(prefix + ".input_layernorm.weight", (H,))]
    a = prefix + ".self_attn."
    if ql is None:
        t.append((a + "q_proj.weight", (nh * (nope + rope), H)))
    else:
        t += [(a + "q_a_proj.weight", (ql, H)),
              (a + "q_a_layernorm.weight", (ql,)),
              (a + "q_b_proj.weight", (nh * (nope + rope), ql))]
    t += [(a + "kv_a_proj_with_mqa.weight", (kvl + rope, H)),
          (a + "kv_a_layernorm.weight", (kvl,)),
          (a + "kv_b_proj.weight", (nh * (nope + vd), kvl)),
          (a + "o_proj.weight", (H, nh * vd)),
          (prefix + ".post_attention_layernorm.weight", (H,))]
    m = prefix + ".mlp."
    if not moe:
        I = c["intermediate_size"]
        t += [(m + "gate_proj.weight", (I, H)), (m + "up_proj.weight", (I, H)),
              (m + "down_proj.weight", (H, I))]
    else:
        E, I = c["n_routed_experts"], c["moe_intermediate_size"]
        t.append((m + "gate.weight", (E, H)))
        if c["topk_method"] == "noaux_tc":
            t.append((m + "gate.e_score_correction_bias", (E,)))
        for j in range(E):
            p = m + "experts.%d." % j
            t += [(p + "gate_proj.weight", (I, H)), (p + "up_proj.weight", (I, H)),
                  (p + "down_proj.weight", (H, I))]
        if c["n_shared_experts"]:
            S = c["n_shared_experts"] * I
            p = m + "shared_experts."
            t += [(p + "gate_proj.weight", (S, H)), (p + "up_proj.weight", (S, H)),
                  (p + "down_proj.weight", (H, S))]
    return t


def checkpoint_tensors(c, with_mtp=True):
    """(name, shape) of every tensor of the HF checkpoint, in a fixed order."""
    H, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    t = [("model.embed_tokens.weight", (V, H))]
    for i in range(L):
        t += layer_tensors(c, "model.layers.%d" % i, is_moe_layer(c, i))
    t.append(("model.norm.weight", (H,)))
    if not c["tie_word_embeddings"]:
        t.append(("lm_head.weight", (V, H)))
    if with_mtp:
        for k in range(c["num_nextn_predict_layers"]):
            i = L + k
            p = "model.layers.%d" % i
            t += [(p + ".embed_tokens.weight", (V, H)), (p + ".enorm.weight", (H,)),
                  (p + ".hnorm.weight", (H,)), (p + ".eh_proj.weight", (H, 2 * H))]
            t += layer_tensors(c, p, is_moe_layer(c, i))
            t += [(p + ".shared_head.norm.weight", (H,)), (p + ".shared_head.head.weight", (V, H))]
    return t
