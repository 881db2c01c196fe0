"""Summarizes a DS_TRACE file: per span name, the count and the token counts.

Checks the Chrome trace event format on the way: complete events ("ph": "X")
with non-negative times, in start order, spans of one thread not
overlapping unless nested.
"""
import json
import sys

with open(sys.argv[1]) as f:
    trace = json.load(f)
events = trace["traceEvents"]
assert events, "no spans"
last = -1.0
for e in events:
    assert e["ph"] == "X" and e["ts"] >= 0 and e["dur"] >= 0, e
    assert e["ts"] >= last, "spans out of order"
    last = e["ts"]
programs = [e for e in events if e["cat"] == "program"]
for a, b in zip(programs, programs[1:]):
    assert a["ts"] + a["dur"] <= b["ts"] + 1e-3, "program spans overlap"
names = {}
for e in programs:
    names.setdefault(e["name"], []).append(e["args"]["tokens"])
for name in sorted(names):
    tokens = sorted(set(names[name]))
    print("%s x%d tokens %s" % (name, len(names[name]),
                                ",".join(str(t) for t in tokens)))
kernels = sorted({e["name"] for e in events if e["cat"] == "kernel"})
if kernels:
    print("kernels: " + ", ".join(kernels))
