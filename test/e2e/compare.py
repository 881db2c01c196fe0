#!/usr/bin/env python3
"""Compare two logits files (and optionally two `tokens:` lines).

  compare.py A.npy B.npy [--rtol 1e-4] [--tokens A.txt B.txt]

Checks: same shape; relative Frobenius error ||A - B|| / ||B|| < rtol (all
values finite); argmax over the last axis equal at every row; with --tokens,
the `tokens:` lines of the two text files are equal. B is the reference.
Prints what it checked, exits 1 with a message on any mismatch.
"""

import argparse
import sys

import numpy as np


def fail(msg):
    print("compare.py: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def tokens_line(path):
    try:
        with open(path) as f:
            lines = [l.strip() for l in f if l.strip().startswith("tokens:")]
    except OSError as e:
        fail("cannot read %s: %s" % (path, e))
    if len(lines) != 1:
        fail("%s: expected one 'tokens:' line, found %d" % (path, len(lines)))
    return lines[0][len("tokens:"):].split()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--tokens", nargs=2, metavar=("A.txt", "B.txt"))
    args = ap.parse_args(argv)
    try:
        a = np.load(args.a)
        b = np.load(args.b)
    except (OSError, ValueError) as e:
        fail("cannot load: %s" % e)
    if a.shape != b.shape:
        fail("shape %s (%s) != %s (%s)" % (list(a.shape), args.a, list(b.shape), args.b))
    if a.size == 0:
        fail("empty arrays")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for arr, name in ((a64, args.a), (b64, args.b)):
        if not np.all(np.isfinite(arr)):
            fail("%s has %d non-finite values" % (name, int(np.sum(~np.isfinite(arr)))))
    nb = np.linalg.norm(b64)
    diff = np.linalg.norm(a64 - b64)
    rel = diff / nb if nb > 0 else diff
    if not rel < args.rtol:
        fail("rel_err %.3e >= %.0e (max abs diff %.3e)"
             % (rel, args.rtol, float(np.max(np.abs(a64 - b64)))))
    a2 = a64.reshape(-1, a.shape[-1]) if a.ndim > 0 else a64.reshape(1, 1)
    b2 = b64.reshape(-1, b.shape[-1]) if b.ndim > 0 else b64.reshape(1, 1)
    am, bm = np.argmax(a2, axis=-1), np.argmax(b2, axis=-1)
    rows = a2.shape[0]
    if np.any(am != bm):
        bad = np.nonzero(am != bm)[0]
        r = int(bad[0])
        fail("rel_err %.3e < %.0e but argmax differs at %d/%d positions (first: row %d: %d vs %d)"
             % (rel, args.rtol, len(bad), rows, r, int(am[r]), int(bm[r])))
    msg = "rel_err %.1e < %.0e, argmax equal at %d/%d positions" % (rel, args.rtol, rows, rows)
    if args.tokens:
        ta, tb = tokens_line(args.tokens[0]), tokens_line(args.tokens[1])
        if ta != tb:
            fail("%s; tokens differ: '%s' vs '%s'" % (msg, " ".join(ta), " ".join(tb)))
        msg += ", tokens equal (%d)" % len(ta)
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
