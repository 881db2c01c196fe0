#!/usr/bin/env python3
"""Independent numpy reference forward pass of DeepSeek-V2/V3 (float32).

  reference.py --checkpoint PATH --prompt-ids 1,2,3 [--max-new-tokens N (8)]
               [--dump-logits FILE.npy] [--dump-decode-logits FILE.npy]
               [--mtp-logits FILE.npy]
               [--config CONFIG.json] [--quant fp8]

PATH is a checkpoint directory (config.json + safetensors, single file, sharded
with model.safetensors.index.json, or a directory of *.safetensors) or a
.safetensors file (config.json then comes from its directory or --config).
Weights are converted to float32 on load (FP8 dequantized with their 128x128
block scales). Prints `tokens: a b c ...`: N greedy tokens, each step
recomputing the full forward over prompt + generated tokens (no cache).
--dump-logits writes the prompt's logits [n, vocab] as float32 .npy;
--dump-decode-logits the last row of each later step's forward
[max(N - 1, 0), vocab]: row s is position n + s, the logits that chose new
token s + 1 (what a compiled model's --dump-decode-logits writes).

--mtp-logits (a checkpoint with num_nextn_predict_layers >= 1) writes the
logits [n, vocab] (float32 .npy) of the first MTP module run over the prompt's
positions 0..n-1: position i gets the main model's final-normed hidden state
h[i] and token t[i + 1], where t[n] is the first greedy token (see mtp()).

--quant fp8 emulates DeepSeek-V3's FP8 inference recipe (inference/kernel.py
act_quant / fp8_gemm, inference/model.py linear) in the linear layers that the
FP8 checkpoints quantize: attention q_proj, q_a_proj, q_b_proj,
kv_a_proj_with_mqa, o_proj and the gate/up/down_proj of dense MLPs, routed and
shared experts (see fp8_linear). F8_E4M3 weights of the checkpoint keep their
codes and block scales; float weights are quantized per 128x128 block first
(quant_weight). Everything else stays float32: embeddings, norms, the router
and its e_score_correction_bias, kv_b_proj (dequantized if the checkpoint has
it in FP8), lm_head and attention. Without --quant, FP8 weights are
dequantized and everything is computed in float32.

Semantics follow deepseek-ai/DeepSeek-V3 inference/model.py and the Hugging
Face modeling_deepseek.py (V2/V3) as described in the function docstrings;
where they differ this follows the HF code (the checkpoints' config fields).
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfconfig  # noqa: E402
import st  # noqa: E402

F32 = np.float32
MLA_NORM_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm: HF's RMSNorm default eps


class ReferenceError_(Exception):
    pass


# ---------------------------------------------------------------- primitives

def rms_norm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w, in float32."""
    x = x.astype(F32)
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    return (x / np.sqrt(var + F32(eps))).astype(F32) * w


def linear(x, w):
    """y = x W^T (HF / torch nn.Linear layout: W is [out, in]); an FP8Weight
    runs the emulated FP8 GEMM."""
    if isinstance(w, FP8Weight):
        return fp8_linear(x, w)
    return np.matmul(x, w.T).astype(F32)


# ---------------------------------------------------------------- FP8 emulation

QBLOCK = st.BLOCK  # 128: weight blocks are QBLOCK x QBLOCK, activation tiles 1 x QBLOCK
E4M3_MAX = F32(st.E4M3_MAX)  # 448
# Linear weights used in FP8 by --quant fp8 (the FP8 checkpoints also quantize
# kv_b_proj; the reference keeps that one in float32).
FP8_LINEAR = ("self_attn.q_proj.weight", "self_attn.q_a_proj.weight", "self_attn.q_b_proj.weight",
              "self_attn.kv_a_proj_with_mqa.weight", "self_attn.o_proj.weight",
              "gate_proj.weight", "up_proj.weight", "down_proj.weight")


class FP8Weight:
    """A [out, in] weight as e4m3fn codes (uint8) and float32 block scales
    scale[i // 128, j // 128] (the checkpoints' weight_scale_inv: w ~= e4m3(codes) * scale)."""

    def __init__(self, codes, scale):
        self.codes = np.asarray(codes, dtype=np.uint8)
        self.scale = np.asarray(scale, dtype=F32)
        self.shape = self.codes.shape
        r, c = self.shape
        if self.scale.shape != (-(-r // QBLOCK), -(-c // QBLOCK)):
            raise ReferenceError_("FP8 weight %s: scale shape %s" % (list(self.shape), list(self.scale.shape)))

    def dequant(self):
        return st.dequant_fp8(self.codes, self.scale)


def _scales(amax):
    """amax / 448 in float32; an all-zero block or tile gets scale 1."""
    amax = np.asarray(amax, dtype=F32)
    return np.where(amax > 0, amax / E4M3_MAX, F32(1)).astype(F32)


def quant_weight(w):
    """float [out, in] -> FP8Weight: per 128x128 block (partial at the edges)
    scale = amax(|block|) / 448 (all-zero block: 1), codes = e4m3(w / scale),
    w / scale in float32, rounded to nearest even and saturated to +-448."""
    w = np.asarray(w, dtype=F32)
    r, c = w.shape
    R, C = -(-r // QBLOCK), -(-c // QBLOCK)
    pad = np.zeros((R * QBLOCK, C * QBLOCK), dtype=F32)
    pad[:r, :c] = w
    amax = np.abs(pad).reshape(R, QBLOCK, C, QBLOCK).max(axis=(1, 3))
    scale = _scales(amax)
    full = np.repeat(np.repeat(scale, QBLOCK, 0), QBLOCK, 1)[:r, :c]
    return FP8Weight(st.f32_to_e4m3_bits((w / full).astype(F32)), scale)


def act_quant(x):
    """float [n, in] -> (codes uint8 [n, in], scales float32 [n, ceil(in/128)]):
    per row and 128-column tile (partial last tile) s = amax(|tile|) / 448
    (all-zero tile: 1), codes = e4m3(x / s) (float32 division, RNE, saturating)."""
    x = np.asarray(x, dtype=F32)
    n, k = x.shape
    T = -(-k // QBLOCK)
    pad = np.zeros((n, T * QBLOCK), dtype=F32)
    pad[:, :k] = x
    pad = pad.reshape(n, T, QBLOCK)
    s = _scales(np.abs(pad).max(axis=-1))
    codes = st.f32_to_e4m3_bits((pad / s[..., None]).astype(F32)).reshape(n, T * QBLOCK)[:, :k]
    return codes, s


def fp8_gemm(xc, xs, w):
    """y[m, o] = sum over k tiles t (ascending) of
         float32(sum_{j in t} e4m3(xc[m, j]) * e4m3(w.codes[o, j])) * xs[m, t] * w.scale[o // 128, t]
    with the products, the scaling and the accumulation in float32 as in
    fp8_gemm_kernel (accumulator += dot(a, b) * a_s * b_s). The per-tile dot is
    computed in float64, where it is exact: e4m3 values are multiples of 2^-9
    with 4 significant bits, so every product is a multiple of 2^-18 and
    |tile sum| <= 128 * 448^2 < 2^25, 43 bits in all; it is then rounded once
    to float32 (tensor cores' limited-precision accumulation is not modelled)."""
    n, k = xc.shape
    o = w.shape[0]
    if w.shape[1] != k:
        raise ReferenceError_("fp8_gemm: x has %d columns, weight %s" % (k, list(w.shape)))
    xv = st.E4M3_TABLE[xc].astype(np.float64)
    wv = st.E4M3_TABLE[w.codes].astype(np.float64)
    ws = np.repeat(w.scale, QBLOCK, axis=0)[:o]  # [out, k tiles]
    acc = np.zeros((n, o), dtype=F32)
    for t in range(-(-k // QBLOCK)):
        cols = slice(t * QBLOCK, min((t + 1) * QBLOCK, k))
        dot = np.matmul(xv[:, cols], wv[:, cols].T).astype(F32)
        acc += (dot * xs[:, t:t + 1]) * ws[None, :, t]
    return acc


def fp8_linear(x, w):
    """inference/model.py linear() with an FP8 weight: act_quant, then fp8_gemm."""
    x = np.asarray(x, dtype=F32)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    xc, xs = act_quant(x2)
    return fp8_gemm(xc, xs, w).reshape(lead + (w.shape[0],))


def sigmoid(x):
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(F32)


def swiglu(x, W, prefix):
    """down(silu(gate(x)) * up(x))."""
    g = linear(x, W[prefix + "gate_proj.weight"])
    u = linear(x, W[prefix + "up_proj.weight"])
    return linear(g * sigmoid(g) * u, W[prefix + "down_proj.weight"])


# ---------------------------------------------------------------- RoPE / YaRN

def yarn_get_mscale(scale, mscale):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_params(c):
    """-> (inv_freq [rope/2] float64, cos/sin multiplier, softmax scale).

    Plain RoPE: inv_freq = 1 / theta^(arange(0, dim, 2) / dim).
    YaRN (rope_scaling type/rope_type yarn; applied always, as in HF):
      low/high = correction range of beta_fast/beta_slow over
      original_max_position_embeddings (floor/ceil, clamped to [0, dim-1]);
      smooth = 1 - linear_ramp(low, high, dim/2) (high += 0.001 when equal);
      inv_freq = inv_freq / factor * (1 - smooth) + inv_freq * smooth;
      cos and sin are multiplied by yarn_get_mscale(factor, mscale) /
      yarn_get_mscale(factor, mscale_all_dim) (HF; 1 when they are equal);
      softmax scale (nope + rope)^-0.5 * yarn_get_mscale(factor, mscale_all_dim)^2
      when mscale_all_dim is set (nonzero).
    """
    dim = c["qk_rope_head_dim"]
    base = float(c["rope_theta"])
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scale = (c["qk_nope_head_dim"] + c["qk_rope_head_dim"]) ** -0.5
    attn_factor = 1.0
    rs = c["rope_scaling"]
    if rs is not None:
        factor = float(rs["factor"])
        orig = float(rs.get("original_max_position_embeddings", 4096))
        beta_fast = float(rs.get("beta_fast", 32))
        beta_slow = float(rs.get("beta_slow", 1))
        mscale = float(rs.get("mscale", 1))
        mscale_all_dim = float(rs.get("mscale_all_dim", 0) or 0)

        def corr_dim(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr_dim(beta_fast)), 0)
        high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        smooth = 1.0 - ramp
        inv_freq = inv_freq / factor * (1 - smooth) + inv_freq * smooth
        attn_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        if mscale_all_dim:
            m = yarn_get_mscale(factor, mscale_all_dim)
            scale = scale * m * m
    return inv_freq, attn_factor, scale


def rope_tables(c, n):
    inv_freq, attn_factor, _ = rope_params(c)
    ang = np.outer(np.arange(n, dtype=np.float64), inv_freq)
    return (np.cos(ang) * attn_factor).astype(F32), (np.sin(ang) * attn_factor).astype(F32)


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (2i, 2i+1) of the last dim as complex numbers
    (inference/model.py: view_as_complex of the last dim viewed as [-1, 2]).
    x: [n, ..., dim]; cos, sin: [n, dim/2]."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (cos.shape[1],)
    c, s = cos.reshape(shape), sin.reshape(shape)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


# ---------------------------------------------------------------- blocks

def mla(c, W, p, x, cos, sin):
    """Multi-head latent attention (naive form), causal, over all n tokens."""
    n = x.shape[0]
    nh = c["num_attention_heads"]
    nope, rope, vd, kvl = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    if c["q_lora_rank"] is None:
        q = linear(x, W[p + "q_proj.weight"])
    else:
        q = linear(rms_norm(linear(x, W[p + "q_a_proj.weight"]), W[p + "q_a_layernorm.weight"],
                            MLA_NORM_EPS), W[p + "q_b_proj.weight"])
    q = q.reshape(n, nh, nope + rope)
    q_nope, q_pe = q[..., :nope], apply_rope(q[..., nope:], cos, sin)
    kv = linear(x, W[p + "kv_a_proj_with_mqa.weight"])
    latent, k_pe = kv[:, :kvl], apply_rope(kv[:, kvl:], cos, sin)  # k_pe [n, rope], shared by heads
    kvb = linear(rms_norm(latent, W[p + "kv_a_layernorm.weight"], MLA_NORM_EPS),
                 W[p + "kv_b_proj.weight"]).reshape(n, nh, nope + vd)
    k_nope, v = kvb[..., :nope], kvb[..., nope:]
    _, _, scale = rope_params(c)
    scores = (np.einsum("shd,thd->hst", q_nope, k_nope) +
              np.einsum("shr,tr->hst", q_pe, k_pe)).astype(F32) * F32(scale)
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    scores = np.where(mask[None], F32(-np.inf), scores)
    probs = softmax(scores, axis=-1)
    out = np.einsum("hst,thd->shd", probs, v).astype(F32).reshape(n, nh * vd)
    return linear(out, W[p + "o_proj.weight"])


def topk_idx(scores, k):
    """Indices of the k largest per row (ties: lower index first)."""
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def route(c, W, p, x):
    """-> (expert indices [n, k], weights [n, k]).

    scores = sigmoid or softmax(x @ gate^T) in float32; selection scores add
    e_score_correction_bias for noaux_tc. With topk_method != greedy and
    n_group > 1, groups are scored by the sum of their top-2 selection scores
    (noaux_tc) or their max (group_limited_greedy); the topk_group best are
    kept, the others masked to -inf (inference/model.py; HF's code fills 0.0,
    which differs only when a kept expert's biased score is negative and ranks
    below k). Top-k of the selection scores (ties: lower index); the weights
    are the unbiased scores, divided by their sum if norm_topk_prob, then
    multiplied by routed_scaling_factor.
    """
    E, k = c["n_routed_experts"], c["num_experts_per_tok"]
    logits = linear(x.astype(F32), W[p + "gate.weight"])
    scores = sigmoid(logits) if c["scoring_func"] == "sigmoid" else softmax(logits, axis=-1)
    sel = scores
    if c["topk_method"] == "noaux_tc":
        sel = scores + W[p + "gate.e_score_correction_bias"][None, :]
    G = c["n_group"]
    if c["topk_method"] != "greedy" and G > 1:
        n = x.shape[0]
        grouped = sel.reshape(n, G, E // G)
        if c["topk_method"] == "noaux_tc":
            top2 = -np.sort(-grouped, axis=-1)[..., :min(2, E // G)]
            gscore = top2.sum(axis=-1)
        else:
            gscore = grouped.max(axis=-1)
        keep = np.zeros((n, G), dtype=bool)
        np.put_along_axis(keep, topk_idx(gscore, c["topk_group"]), True, axis=-1)
        sel = np.where(np.repeat(keep, E // G, axis=1), sel, F32(-np.inf))
    idx = topk_idx(sel, k)
    w = np.take_along_axis(scores, idx, axis=-1)
    if c["norm_topk_prob"]:
        w = w / w.sum(axis=-1, keepdims=True)
    w = (w * F32(c["routed_scaling_factor"])).astype(F32)
    return idx, w


def moe(c, W, p, x):
    idx, w = route(c, W, p, x)
    y = np.zeros_like(x)
    for e in np.unique(idx):
        rows, slot = np.nonzero(idx == e)
        y[rows] += swiglu(x[rows], W, p + "experts.%d." % e) * w[rows, slot][:, None]
    if c["n_shared_experts"]:
        y = y + swiglu(x, W, p + "shared_experts.")
    return y.astype(F32)


def decoder_layer(c, W, i, h, cos, sin):
    """Checkpoint layer i (model.layers.i) on h [n, hidden] at positions
    0..n-1: h + attn(input_layernorm(h)), then + MoE or dense MLP of
    post_attention_layernorm(.) (MoE per hfconfig.is_moe_layer(c, i))."""
    eps = c["rms_norm_eps"]
    p = "model.layers.%d." % i
    h = h + mla(c, W, p + "self_attn.", rms_norm(h, W[p + "input_layernorm.weight"], eps), cos, sin)
    hn = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
    if hfconfig.is_moe_layer(c, i):
        return h + moe(c, W, p + "mlp.", hn)
    return h + swiglu(hn, W, p + "mlp.")


def forward_hidden(c, W, ids):
    """Final-normed hidden states [n, hidden] (model.norm's output, the input
    of lm_head) for token ids [n] at positions 0..n-1."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    cos, sin = rope_tables(c, n)
    h = W["model.embed_tokens.weight"][ids].astype(F32)
    for i in range(c["num_hidden_layers"]):
        h = decoder_layer(c, W, i, h, cos, sin)
    return rms_norm(h, W["model.norm.weight"], c["rms_norm_eps"])


def lm_head(c, W, h):
    head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
    return linear(h, head)


def forward(c, W, ids):
    """Logits [n, vocab] for token ids [n] at positions 0..n-1."""
    return lm_head(c, W, forward_hidden(c, W, ids))


def mtp(c, W, h, next_ids, k=1):
    """Logits [n, vocab] of MTP module k (checkpoint layer
    L = num_hidden_layers + k - 1) at positions 0..n-1, fed the previous
    depth's hidden states h [n, hidden] (for k = 1 the main model's
    final-normed ones) and the token ids next_ids [n] (position i: the token
    at i + k). As vLLM / SGLang's DeepSeek MTP layer (deepseek_mtp.py) and the
    DeepSeek-V3 paper (section 2.2):
      e = model.layers.L.embed_tokens.weight[next_ids]
      x = eh_proj(concat(enorm(e), hnorm(h)))  (enorm first), RMSNorm eps
          rms_norm_eps
      y = decoder_layer(L, x): attention causal over these n positions, RoPE
          at positions 0..n-1, MoE or dense by the main model's rule for L
      logits = shared_head.head(shared_head.norm(y))
    (vLLM also zeroes the embedding at position 0; this does not.)"""
    L = c["num_hidden_layers"] + k - 1
    p = "model.layers.%d." % L
    eps = c["rms_norm_eps"]
    h = np.asarray(h, dtype=F32)
    next_ids = np.asarray(next_ids, dtype=np.int64)
    n = len(next_ids)
    if h.shape[0] != n:
        raise ReferenceError_("mtp: %d hidden rows for %d tokens" % (h.shape[0], n))
    cos, sin = rope_tables(c, n)
    e = W[p + "embed_tokens.weight"][next_ids].astype(F32)
    cat = np.concatenate([rms_norm(e, W[p + "enorm.weight"], eps),
                          rms_norm(h, W[p + "hnorm.weight"], eps)], axis=-1)
    x = linear(cat, W[p + "eh_proj.weight"])
    y = decoder_layer(c, W, L, x, cos, sin)
    return linear(rms_norm(y, W[p + "shared_head.norm.weight"], eps),
                  W[p + "shared_head.head.weight"])


def mtp_prompt_logits(c, W, ids):
    """The first MTP module over the prompt: position i gets the main model's
    final-normed hidden state h[i] and token t[i + 1], t[n] being the first
    greedy token (argmax of the last prompt logits). -> [n, vocab]."""
    h = forward_hidden(c, W, ids)
    first = int(np.argmax(lm_head(c, W, h)[-1]))
    return mtp(c, W, h, list(ids[1:]) + [first], k=1)


# ---------------------------------------------------------------- driver

def load(checkpoint, config=None, quant=None, with_mtp=False):
    """-> (normalized config, weights name -> float32 array). With quant="fp8"
    the FP8_LINEAR weights are FP8Weight: the checkpoint's own codes and
    weight_scale_inv when it stores them as F8_E4M3, else quant_weight().
    with_mtp: also check (and quantize) the MTP layers' tensors; the config
    must have num_nextn_predict_layers >= 1."""
    if config is None:
        d = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
        config = os.path.join(d, "config.json")
    c = hfconfig.load(config)
    if with_mtp and c["num_nextn_predict_layers"] < 1:
        raise ReferenceError_("--mtp-logits: the checkpoint has no MTP module "
                              "(num_nextn_predict_layers = %d)" % c["num_nextn_predict_layers"])
    raw = st.read_checkpoint_raw(checkpoint)
    W = st.read_checkpoint(checkpoint, raw)
    tensors = hfconfig.checkpoint_tensors(c, with_mtp=with_mtp)
    for name, shape in tensors:
        if name not in W:
            raise ReferenceError_("missing tensor '%s'" % name)
        if tuple(W[name].shape) != tuple(shape):
            raise ReferenceError_("tensor '%s' has shape %s, expected %s"
                                  % (name, list(W[name].shape), list(shape)))
    if quant not in (None, "fp8"):
        raise ReferenceError_("--quant: unsupported value %r" % (quant,))
    if quant == "fp8":
        for name, _ in tensors:
            if not name.endswith(FP8_LINEAR):
                continue
            dtype, _, codes = raw[name]
            if dtype == "F8_E4M3" and name + "_scale_inv" in raw:
                sdtype, _, sarr = raw[name + "_scale_inv"]
                W[name] = FP8Weight(codes, st.raw_to_f32(sdtype, sarr, name + "_scale_inv"))
            else:
                W[name] = quant_weight(W[name])
    return c, W


def generate(c, W, ids, max_new_tokens):
    """-> (logits of the prompt [n, vocab], greedy new tokens, the last row
    of each later step [max(max_new_tokens - 1, 0), vocab]), each step
    recomputing the full forward over prompt + generated tokens (no cache)."""
    logits = prompt_logits = forward(c, W, ids)
    seq, new, rows = list(ids), [], []
    for step in range(max_new_tokens):
        if step > 0:
            logits = forward(c, W, seq)
            rows.append(logits[-1])
        t = int(np.argmax(logits[-1]))
        new.append(t)
        seq.append(t)
    decode = np.stack(rows) if rows else np.zeros((0, c["vocab_size"]), F32)
    return prompt_logits, new, decode


def save_npy(path, a):
    """Writes float32 `a` to `path` whole or not at all."""
    tmp = path + ".tmp.npy"
    np.save(tmp, np.asarray(a).astype(F32))
    os.replace(tmp, path)


def parse_ids(s):
    try:
        return [int(t) for t in s.split(",") if t.strip() != ""]
    except ValueError:
        raise ReferenceError_("--prompt-ids: not a comma-separated list of integers: %r" % s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", help="config.json (default: next to the checkpoint)")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--dump-logits", metavar="FILE.npy",
                    help="write the prompt's logits [n, vocab]")
    ap.add_argument("--dump-decode-logits", metavar="FILE.npy",
                    help="write each later step's last logits row "
                         "[max-new-tokens - 1, vocab]")
    ap.add_argument("--mtp-logits", metavar="FILE.npy",
                    help="write the first MTP module's logits over the prompt "
                         "(needs num_nextn_predict_layers >= 1)")
    ap.add_argument("--quant", choices=["fp8"],
                    help="emulate DeepSeek-V3's FP8 GEMMs in the linear layers")
    args = ap.parse_args(argv)
    try:
        ids = parse_ids(args.prompt_ids)
        if not ids:
            raise ReferenceError_("--prompt-ids: empty prompt")
        if args.max_new_tokens < 0:
            raise ReferenceError_("--max-new-tokens must be >= 0")
        c, W = load(args.checkpoint, args.config, args.quant, with_mtp=bool(args.mtp_logits))
        V = c["vocab_size"]
        for t in ids:
            if not 0 <= t < V:
                raise ReferenceError_("token id %d out of range [0, %d)" % (t, V))
        logits, new, decode = generate(c, W, ids, args.max_new_tokens)
        if args.dump_logits:
            save_npy(args.dump_logits, logits)
        if args.dump_decode_logits:
            save_npy(args.dump_decode_logits, decode)
        if args.mtp_logits:
            save_npy(args.mtp_logits, mtp_prompt_logits(c, W, ids))
    except (OSError, ValueError, KeyError, st.SafetensorsError, hfconfig.ConfigError,
            ReferenceError_) as e:
        print("reference.py: error: %s" % e, file=sys.stderr)
        return 1
    print("tokens:" + "".join(" %d" % t for t in new))
    return 0


if __name__ == "__main__":
    sys.exit(main())
