#!/usr/bin/env python3
"""Per-kernel time and DRAM traffic of profiled decode steps, from Nsight
Compute's CSV (`ncu --import R.ncu-rep --csv --page raw`, or `--page
details`), as bench/gpu/run.sh takes it: the kernels of STEPS decode steps
(DS_CUDA_PROFILE_STEPS opens the profiler's window around them), each run
alone by ncu with L2 flushed before it, so that the sum is the step's
kernel time without launch gaps or overlap, and bytes / time is how close
each kernel comes to the copy rate.

  ncu_summary.py CSV --steps N [--label TEXT] [--copy-gbps G]
                 [--step-ms MS] [--top K]
"""

import argparse
import csv
import re
import sys
from collections import OrderedDict

# SI prefixes as ncu prints them (byte, Kbyte, Mbyte; nsecond, usecond...).
_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "n": 1e-9, "u": 1e-6, "m": 1e-3}
TIME = "gpu__time_duration.sum"
READ = "dram__bytes_read.sum"
WRITE = "dram__bytes_write.sum"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
REGISTERS = "launch__registers_per_thread"


def fail(msg):
    sys.exit("ncu_summary.py: " + msg)


def value(text, unit, what):
    """A metric's value in base units (seconds, bytes, percent)."""
    text = text.replace(",", "").strip()
    try:
        v = float(text)
    except ValueError:
        fail("%s: not a number: '%s'" % (what, text))
    unit = unit.strip()
    base = {TIME: "second", READ: "byte", WRITE: "byte"}.get(what)
    if base is None:  # a percentage or a count: as it is
        return v
    prefix = unit[: -len(base)] if unit.endswith(base) else None
    if prefix not in _SCALE:
        fail("%s: unknown unit '%s'" % (what, unit))
    return v * _SCALE[prefix]


def short_name(name):
    """'void ns::k<(bool)1, __nv_bfloat16>(Args<float>)' -> 'k<1,bf16>'."""
    name = name.strip()
    name = re.sub(r"^void ", "", name)
    # Drop the parameter list: the last balanced (...) at the end.
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    name = re.sub(r"\([a-z ]+\)(-?\d)", r"\1", name)  # (bool)1 -> 1
    name = name.replace("__nv_bfloat16", "bf16").replace(" ", "")
    name = re.sub(r"[A-Za-z_][A-Za-z_0-9]*::", "", name)
    return name


def read_rows(path):
    """One dict per profiled kernel: name, time (s), bytes, occupancy."""
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')),
                 None)
    if start is None:
        fail("%s: no ncu CSV header (a line starting with \"ID\")" % path)
    table = list(csv.reader(lines[start:]))
    head = table[0]
    name_col = next((c for c in ("Kernel Name", "Function Name",
                                 "Demangled Name") if c in head), None)
    if name_col is None:
        fail("%s: no kernel name column in %s" % (path, head))
    ni, ii = head.index(name_col), head.index("ID")
    kernels = OrderedDict()

    def kernel(row):
        return kernels.setdefault(row[ii], {"name": row[ni]})

    if "Metric Name" in head:  # --page details: a row per metric
        mi, ui, vi = (head.index("Metric Name"), head.index("Metric Unit"),
                      head.index("Metric Value"))
        for row in table[1:]:
            if len(row) == len(head):
                kernel(row)[row[mi]] = value(row[vi], row[ui], row[mi])
    else:  # --page raw: a row per kernel, a row of units first
        if TIME not in head:
            fail("%s: no %s column" % (path, TIME))
        units, body = (table[1], table[2:]) if len(table) > 1 else ([], [])
        if len(units) != len(head) or units[ii] != "":  # no units row
            units, body = [""] * len(head), table[1:]
        for row in body:
            if len(row) != len(head):
                continue
            k = kernel(row)
            for c, metric in enumerate(head):
                if "__" in metric and row[c] != "":
                    k[metric] = value(row[c], units[c], metric)
    out = []
    for k in kernels.values():
        if TIME not in k:
            fail("%s: kernel '%s' has no %s" % (path, k["name"], TIME))
        out.append({"name": short_name(k["name"]),
                    "time": k[TIME],
                    "bytes": k.get(READ, 0.0) + k.get(WRITE, 0.0),
                    "occupancy": k.get(OCCUPANCY),
                    "registers": k.get(REGISTERS)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, required=True,
                    help="decode steps in the profiler's window")
    ap.add_argument("--label", default="decode")
    ap.add_argument("--copy-gbps", type=float, default=0.0,
                    help="the measured copy rate, for a %% column")
    ap.add_argument("--step-ms", type=float, default=0.0,
                    help="the step's time in a graph replay, timed alone")
    ap.add_argument("--top", type=int, default=25,
                    help="kernels listed (the rest summed)")
    a = ap.parse_args()
    if a.steps < 1:
        fail("--steps must be 1 or more")
    rows = read_rows(a.csv)
    if not rows:
        fail("%s: no kernels (did the profiler's window open?)" % a.csv)
    by = OrderedDict()
    for r in rows:
        k = by.setdefault(r["name"], {"calls": 0, "time": 0.0, "bytes": 0.0,
                                      "occ": [], "regs": r["registers"]})
        k["calls"] += 1
        k["time"] += r["time"]
        k["bytes"] += r["bytes"]
        if r["occupancy"] is not None:
            k["occ"].append(r["occupancy"])
    total_t = sum(k["time"] for k in by.values())
    total_b = sum(k["bytes"] for k in by.values())
    s = float(a.steps)
    pct = (lambda gbps: " %5.1f%%" % (100.0 * gbps / a.copy_gbps)) \
        if a.copy_gbps > 0 else (lambda gbps: "")
    gbps = lambda b, t: b / t / 1e9 if t > 0 else 0.0
    copy = (" (%.1f%% of the copy rate)"
            % (100.0 * gbps(total_b, total_t) / a.copy_gbps)
            if a.copy_gbps > 0 else "")
    print("%s: %d kernels a step, %.3f ms of kernel time a step (each kernel "
          "alone, L2 flushed), %.1f MB of DRAM traffic, %.0f GB/s%s"
          % (a.label, round(len(rows) / s), 1e3 * total_t / s,
             total_b / s / 1e6, gbps(total_b, total_t), copy))
    if a.step_ms > 0:
        print("  a step's graph replay takes %.3f ms: %.3f ms more than its "
              "kernels alone (launch gaps and kernel boundaries, less the "
              "overlap of programmatic launches and warm L2)"
              % (a.step_ms, a.step_ms - 1e3 * total_t / s))
    print("  %-44s %6s %9s %6s %9s %7s%s %5s %4s"
          % ("kernel", "calls", "us/step", "time", "MB/step", "GB/s",
             " %copy" if a.copy_gbps > 0 else "", "occ", "regs"))
    order = sorted(by.items(), key=lambda kv: -kv[1]["time"])
    rest = order[a.top:]
    for name, k in order[: a.top]:
        occ = ("%4.0f%%" % (sum(k["occ"]) / len(k["occ"]))) if k["occ"] \
            else "    -"
        regs = "%4d" % k["regs"] if k["regs"] is not None else "   -"
        print("  %-44s %6.1f %9.1f %5.1f%% %9.2f %7.0f%s %5s %4s"
              % (name[:44], k["calls"] / s, 1e6 * k["time"] / s,
                 100.0 * k["time"] / total_t, k["bytes"] / s / 1e6,
                 gbps(k["bytes"], k["time"]), pct(gbps(k["bytes"], k["time"])),
                 occ, regs))
    if rest:
        t = sum(k["time"] for _, k in rest)
        b = sum(k["bytes"] for _, k in rest)
        print("  %-44s %6.1f %9.1f %5.1f%% %9.2f %7.0f%s"
              % ("(%d more kernels)" % len(rest),
                 sum(k["calls"] for _, k in rest) / s, 1e6 * t / s,
                 100.0 * t / total_t, b / s / 1e6, gbps(b, t),
                 pct(gbps(b, t))))


if __name__ == "__main__":
    main()
