#!/usr/bin/env python3
"""Document the error of the reference's FP8 emulation against its float32 run.

  fp8_error.py [CONFIG ...]     (default: v3 v3-nolora v2 v2-group tiny)

CONFIG is a name in test/e2e/Inputs (without .json) or a path to a config.json.
For each, a bf16 checkpoint (make_checkpoint.py --seed 1 --dtype bf16) is
written to a temporary directory and reference.py runs on a fixed 16-token
prompt with 8 greedy new tokens, once in float32 and once with --quant fp8.
Prints a markdown table: relative Frobenius error ||fp8 - f32|| / ||f32|| of
the prompt's logits, max abs error, rows whose argmax agree, and whether the
greedy continuations agree.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402

CONFIGS = ("v3", "v3-nolora", "v2", "v2-group", "tiny")
PROMPT = (17, 200, 5, 99, 42, 7, 130, 64, 250, 1, 88, 23, 177, 3, 145, 60)  # < every vocab (256)
NEW = 8


def script(name, *args):
    p = subprocess.run([sys.executable, os.path.join(HERE, name)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        sys.exit("fp8_error.py: %s %s failed:\n%s%s" % (name, " ".join(args), p.stdout, p.stderr))
    return p.stdout


def tokens(out):
    return [l for l in out.splitlines() if l.startswith("tokens:")][0].split()[1:]


def main(argv):
    names = argv or list(CONFIGS)
    print("| config | logits rel. Frobenius err | max abs err | argmax agree | greedy %d agree |" % NEW)
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg = name if name.endswith(".json") or os.sep in name else os.path.join(HERE, "Inputs", name + ".json")
            label = os.path.splitext(os.path.basename(cfg))[0]
            ck = os.path.join(tmp, label)
            script("make_checkpoint.py", "--config", cfg, "--out", ck, "--seed", "1", "--dtype", "bf16")
            ids = ",".join(str(t) for t in PROMPT)
            common = ["--checkpoint", ck, "--prompt-ids", ids, "--max-new-tokens", str(NEW)]
            t32 = tokens(script("reference.py", *(common + ["--dump-logits", ck + ".f32.npy"])))
            t8 = tokens(script("reference.py", *(common + ["--dump-logits", ck + ".fp8.npy", "--quant", "fp8"])))
            rel, mx, agree, rows = compare.metrics(np.load(ck + ".fp8.npy"), np.load(ck + ".f32.npy"))
            same = "yes" if t8 == t32 else "no: " + compare.tokens_agreement(t8, t32)[len("tokens "):]
            print("| %s | %.3e | %.3e | %d/%d | %s |" % (label, rel, mx, agree, rows, same))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
