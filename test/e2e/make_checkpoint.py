#!/usr/bin/env python3
"""Write a random DeepSeek-V2/V3 checkpoint in the Hugging Face layout.

  make_checkpoint.py --config CFG.json --out DIR [--seed N (0)] [--dtype f32|bf16|f16|fp8 (f32)]
                     [--shards K]

DIR/config.json is a byte copy of CFG. Tensors are named and shaped exactly as
in the published checkpoints (see hfconfig.checkpoint_tensors), including the
MTP layers model.layers.{num_hidden_layers + i} when num_nextn_predict_layers > 0.

Values (numpy default_rng(seed), drawn in checkpoint order): 2-D weights
uniform(-a, a) with a = sqrt(3 / in_features) (embeddings: a = 1), norm weights
1 + uniform(-0.1, 0.1), e_score_correction_bias uniform(-0.05, 0.05) (always
F32, as published). bf16 rounds to nearest even.

--dtype fp8 mimics the published DeepSeek-V3 FP8 checkpoint: the linear
weights of attention, MLPs and experts are F8_E4M3 with F32 `weight_scale_inv`
per 128x128 block (scale = block amax / 448); embeddings, norms, the router,
eh_proj and the heads are BF16.

--shards K writes model-0000i-of-0000K.safetensors and
model.safetensors.index.json; otherwise a single model.safetensors.
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfconfig  # noqa: E402
import st  # noqa: E402

ST_DTYPE = {"f32": "F32", "bf16": "BF16", "f16": "F16", "fp8": "BF16"}
FP8_LINEAR = ("q_proj.weight", "q_a_proj.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight",
              "kv_b_proj.weight", "o_proj.weight", "gate_proj.weight", "up_proj.weight",
              "down_proj.weight")


def random_tensor(rng, name, shape):
    if name.endswith("e_score_correction_bias"):
        return rng.uniform(-0.05, 0.05, size=shape).astype(np.float32)
    if len(shape) == 1:
        return (1.0 + rng.uniform(-0.1, 0.1, size=shape)).astype(np.float32)
    a = 1.0 if name.endswith("embed_tokens.weight") else math.sqrt(3.0 / shape[1])
    return rng.uniform(-a, a, size=shape).astype(np.float32)


def quantize_fp8(w):
    """-> (e4m3 codes, F32 scale_inv [ceil(r/128), ceil(c/128)])."""
    rows, cols = w.shape
    B = st.BLOCK
    sr, sc = -(-rows // B), -(-cols // B)
    scale = np.ones((sr, sc), dtype=np.float32)
    for bi in range(sr):
        for bj in range(sc):
            amax = float(np.abs(w[bi * B:(bi + 1) * B, bj * B:(bj + 1) * B]).max())
            if amax > 0:
                scale[bi, bj] = np.float32(amax / st.E4M3_MAX)
    full = np.repeat(np.repeat(scale, B, 0), B, 1)[:rows, :cols]
    return st.f32_to_e4m3_bits(w / full), scale


def build(cfg, seed, dtype):
    """-> ordered dict name -> (st dtype, raw array)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in hfconfig.checkpoint_tensors(cfg):
        val = random_tensor(rng, name, shape)
        if name.endswith("e_score_correction_bias"):
            out[name] = ("F32", val)
        elif dtype == "fp8" and len(shape) == 2 and name.endswith(FP8_LINEAR):
            codes, scale = quantize_fp8(val)
            out[name] = ("F8_E4M3", codes)
            out[name + "_scale_inv"] = ("F32", scale)
        else:
            sd = ST_DTYPE[dtype]
            out[name] = (sd, st.to_dtype(val, sd))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(ST_DTYPE), default="f32")
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        cfg = hfconfig.load(args.config)
    except (OSError, ValueError, hfconfig.ConfigError) as e:
        print("make_checkpoint.py: %s: %s" % (args.config, e), file=sys.stderr)
        return 1
    tensors = build(cfg, args.seed, args.dtype)
    if not 1 <= args.shards <= len(tensors):
        print("make_checkpoint.py: --shards must be in [1, %d]" % len(tensors), file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):  # stale weights would be read with the new ones
        if f.endswith(".safetensors") or f == "model.safetensors.index.json":
            os.remove(os.path.join(args.out, f))
    shutil.copyfile(args.config, os.path.join(args.out, "config.json"))
    meta = {"format": "pt"}
    if args.shards == 1:
        st.write(os.path.join(args.out, "model.safetensors"), tensors, meta)
        return 0
    names = list(tensors)
    K = args.shards
    weight_map, total = {}, 0
    for k, chunk in enumerate(np.array_split(np.arange(len(names)), K)):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, K)
        part = {names[i]: tensors[names[i]] for i in chunk}
        st.write(os.path.join(args.out, fname), part, meta)
        for n, (sd, arr) in part.items():
            weight_map[n] = fname
            total += arr.size * st.RAW[sd].itemsize
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
