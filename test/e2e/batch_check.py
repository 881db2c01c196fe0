"""Checks a --requests output file against single runs.

  batch_check.py OUT.jsonl DIR ID:FILE...

Each ID (a string, or an integer if it parses as one) must have exactly one
output line whose "tokens" equal the `tokens:` line in DIR/FILE.
"""
import json
import os
import sys


def main():
    out, d = sys.argv[1], sys.argv[2]
    results = {}
    with open(out) as f:
        for n, line in enumerate(f, 1):
            r = json.loads(line)
            key = json.dumps(r["id"])
            if key in results:
                sys.exit("batch_check: %s:%d: id %s twice" % (out, n, key))
            results[key] = r["tokens"]
    for spec in sys.argv[3:]:
        rid, name = spec.split(":")
        key = json.dumps(int(rid)) if rid.isdigit() else json.dumps(rid)
        want = open(os.path.join(d, name)).read().split()[1:]
        want = [int(t) for t in want]
        if key not in results:
            sys.exit("batch_check: %s: no result for id %s" % (out, key))
        if results[key] != want:
            sys.exit("batch_check: %s: id %s: tokens %s, alone %s" % (out, key, results[key], want))
    print("batch_check: %d requests match their single runs" % (len(sys.argv) - 3))


if __name__ == "__main__":
    main()
