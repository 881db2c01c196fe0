#!/usr/bin/env python3
"""Compare two logits files (and optionally two `tokens:` lines).

  compare.py A.npy B.npy [--rtol 1e-4] [--tokens A.txt B.txt] [--no-argmax]
             [--same-inputs] [--outlier-frac F] [--report]

Checks: same shape; relative Frobenius error ||A - B|| / ||B|| < rtol (all
values finite); argmax over the last axis equal at every row; with --tokens,
the `tokens:` lines of the two text files are equal. B is the reference.
Prints what it checked, exits 1 with a message on any mismatch (past rtol,
with the median and the worst rows' relative errors).

For bf16 against float32 on random weights, where near-ties flip discrete
choices (an argmax, a token, a routed expert):
--no-argmax counts the rows whose argmax agree without requiring all.
--same-inputs (with --tokens; for --dump-decode-logits files, whose row s
is fed generated token s) compares only the rows before the first token
that differs, whose inputs are the same, instead of failing on the tokens.
--outlier-frac F applies rtol to the rows left after dropping the
floor(F * rows) farthest off (a flipped routing decision moves a few rows a
lot), and names the dropped rows.

--report only measures (to document an expected error, e.g. FP8 vs float32):
it prints `rel_err E, max_abs_err M, argmax equal at k/n positions` (and with
--tokens `, tokens equal (n)` or `, tokens differ from position i (a/b equal)`)
and exits 0 whatever the values; --rtol is ignored. Unreadable files, a shape
mismatch or non-finite values still fail.
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


def metrics(a, b):
    """-> (||a - b|| / ||b|| (Frobenius; ||a - b|| if b is 0), max |a - b|,
    rows whose argmax over the last axis agree, rows), in float64."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nb = np.linalg.norm(b64)
    diff = np.linalg.norm(a64 - b64)
    rel = diff / nb if nb > 0 else diff
    last = a64.shape[-1] if a64.ndim > 0 else 1
    am = np.argmax(a64.reshape(-1, last), axis=-1)
    bm = np.argmax(b64.reshape(-1, last), axis=-1)
    return float(rel), float(np.max(np.abs(a64 - b64))), int(np.sum(am == bm)), len(am)


def row_errors(a2, b2):
    """Each row's ||a - b|| / ||b|| (||a - b|| where b is 0), [rows, n] in."""
    nb = np.linalg.norm(b2, axis=-1)
    return np.linalg.norm(a2 - b2, axis=-1) / np.where(nb > 0, nb, 1.0)


def rows_summary(a2, b2):
    """'rows: median rel_err M, worst: row r E, ...' of [rows, n] arrays: a few
    outlier rows (a routing decision flipped by a near-tie) read differently
    from an error spread over every row."""
    r = row_errors(a2, b2)
    worst = np.argsort(-r, kind="stable")[:3]
    return "rows: median rel_err %.1e, worst: %s" % (
        float(np.median(r)), ", ".join("row %d %.1e" % (int(i), float(r[i])) for i in worst))


def first_difference(ta, tb):
    """Index of the first differing token (the shorter length if one list
    extends the other)."""
    return next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))


def tokens_agreement(ta, tb):
    """'tokens equal (n)' or 'tokens differ from position i (k/n equal)'."""
    if ta == tb:
        return "tokens equal (%d)" % len(ta)
    first = first_difference(ta, tb)
    same = sum(x == y for x, y in zip(ta, tb))
    return "tokens differ from position %d (%d/%d equal)" % (first, same, max(len(ta), len(tb)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--tokens", nargs=2, metavar=("A.txt", "B.txt"))
    ap.add_argument("--no-argmax", action="store_true",
                    help="do not fail on rows whose argmax differ (count them)")
    ap.add_argument("--same-inputs", action="store_true",
                    help="decode-step logits: compare the rows before the first "
                         "differing token only (needs --tokens)")
    ap.add_argument("--outlier-frac", type=float, default=0.0,
                    help="drop this fraction of rows, the farthest off, before rtol")
    ap.add_argument("--report", action="store_true",
                    help="print rel_err, max abs error and argmax agreement; no threshold")
    args = ap.parse_args(argv)
    if args.same_inputs and not args.tokens:
        fail("--same-inputs needs --tokens")
    if not 0.0 <= args.outlier_frac < 1.0:
        fail("--outlier-frac must be in [0, 1), got %g" % args.outlier_frac)
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
    if args.report:
        rel, mx, agree, rows = metrics(a64, b64)
        msg = "rel_err %.3e, max_abs_err %.3e, argmax equal at %d/%d positions" % (rel, mx, agree, rows)
        if args.tokens:
            msg += ", " + tokens_agreement(tokens_line(args.tokens[0]), tokens_line(args.tokens[1]))
        print(msg)
        return 0
    a2 = a64.reshape(-1, a.shape[-1]) if a.ndim > 0 else a64.reshape(1, 1)
    b2 = b64.reshape(-1, b.shape[-1]) if b.ndim > 0 else b64.reshape(1, 1)
    suffix = ""
    ta = tb = None
    if args.tokens:
        ta, tb = tokens_line(args.tokens[0]), tokens_line(args.tokens[1])
    if args.same_inputs and ta != tb:
        first = first_difference(ta, tb)
        suffix = ", %s: rows 0..%d compared (their inputs agree)" % (
            tokens_agreement(ta, tb), first - 1)
        if first == 0:
            print("no row has the same inputs (%s)" % tokens_agreement(ta, tb))
            return 0
        a2, b2 = a2[:first], b2[:first]
        ta = tb = None  # differences past the compared rows are expected
    keep = np.arange(a2.shape[0])
    drop = int(args.outlier_frac * a2.shape[0])
    if drop:
        order = np.argsort(-np.linalg.norm(a2 - b2, axis=-1), kind="stable")
        keep = np.sort(order[drop:])
        rel_rows = row_errors(a2, b2)
        suffix += ", excluding %d outlier rows (%s)" % (drop, ", ".join(
            "row %d %.1e" % (int(r), float(rel_rows[r])) for r in np.sort(order[:drop])))
    nb = np.linalg.norm(b2[keep])
    diff = np.linalg.norm(a2[keep] - b2[keep])
    rel = diff / nb if nb > 0 else diff
    if not rel < args.rtol:
        fail("rel_err %.3e >= %.0e (max abs diff %.3e; %s)%s"
             % (rel, args.rtol, float(np.max(np.abs(a2[keep] - b2[keep]))),
                rows_summary(a2[keep], b2[keep]), suffix))
    am, bm = np.argmax(a2, axis=-1), np.argmax(b2, axis=-1)
    rows = a2.shape[0]
    agree = int(np.sum(am == bm))
    if np.any(am != bm) and not args.no_argmax:
        bad = np.nonzero(am != bm)[0]
        r = int(bad[0])
        fail("rel_err %.3e < %.0e but argmax differs at %d/%d positions (first: row %d: %d vs %d)"
             % (rel, args.rtol, len(bad), rows, r, int(am[r]), int(bm[r])))
    msg = "rel_err %.1e < %.0e, argmax equal at %d/%d positions" % (rel, args.rtol, agree, rows)
    if ta is not None:
        if ta != tb:
            fail("%s; tokens differ: '%s' vs '%s'" % (msg, " ".join(ta), " ".join(tb)))
        msg += ", tokens equal (%d)" % len(ta)
    print(msg + suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
