#!/usr/bin/env python3
"""Write a broken copy of a checkpoint, for error tests.

  corrupt.py KIND --from DIR --out DIR2

DIR is a single-file checkpoint (config.json + one .safetensors) as written by
make_checkpoint.py; DIR2 gets a copy with its .safetensors broken as KIND:
  missing-tensor   model.norm.weight dropped
  wrong-shape      model.norm.weight one element longer
  wrong-dtype      model.norm.weight stored as I64
  truncated        file cut in the middle of the data
  header-past-end  header length field larger than the file
  bad-json         header JSON made invalid (same length)
  overlap          two tensors' data_offsets overlap (sizes kept consistent)
Prints nothing on success.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

KINDS = ("missing-tensor", "wrong-shape", "wrong-dtype", "truncated", "header-past-end",
         "bad-json", "overlap")
NAME = "model.norm.weight"


def split_file(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8:8 + n], data[8 + n:]


def rewrite(path, fn):
    """Read every tensor raw, let fn edit the dict, write it back."""
    meta = st.read_metadata(path)
    tensors = {name: (dt, arr) for name, (dt, _, arr) in st.read_raw(path).items()}
    if NAME not in tensors:
        raise SystemExit("corrupt.py: %s has no tensor %s" % (path, NAME))
    fn(tensors)
    st.write(path, tensors, meta)


def corrupt(kind, path):
    if kind == "missing-tensor":
        rewrite(path, lambda t: t.pop(NAME))
    elif kind == "wrong-shape":
        def grow(t):
            dt, arr = t[NAME]
            t[NAME] = (dt, np.concatenate([arr, arr[:1]]))
        rewrite(path, grow)
    elif kind == "wrong-dtype":
        def to_i64(t):
            dt, arr = t[NAME]
            vals = st.raw_to_f32(dt, arr, NAME)
            t[NAME] = ("I64", np.rint(vals).astype(np.int64))
        rewrite(path, to_i64)
    elif kind == "truncated":
        header, data = split_file(path)
        with open(path, "r+b") as f:
            f.truncate(8 + len(header) + len(data) // 2)
    elif kind == "header-past-end":
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(struct.pack("<Q", size + 4096))
    elif kind == "bad-json":
        header, data = split_file(path)
        assert header[:1] == b"{"
        with open(path, "r+b") as f:
            f.seek(8)
            f.write(b"#")  # '{' -> '#': same length, no longer JSON
    elif kind == "overlap":
        header, data = split_file(path)
        h = json.loads(header)
        meta = h.pop("__metadata__", None)
        order = sorted(h, key=lambda k: h[k]["data_offsets"][0])
        prev, cur = order[0], order[1]
        pb, pe = h[prev]["data_offsets"]
        cb, ce = h[cur]["data_offsets"]
        item = max(st.RAW[h[prev]["dtype"]].itemsize, st.RAW[h[cur]["dtype"]].itemsize)
        shift = max(item, (min(pe - pb, ce - cb) // 2) // item * item)
        h[cur]["data_offsets"] = [cb - shift, ce - shift]  # starts inside `prev`, same size
        if meta is not None:
            h = dict([("__metadata__", meta)] + list(h.items()))
        new = json.dumps(h, separators=(",", ":")).encode()
        new += b" " * ((8 - len(new) % 8) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(new)) + new + data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    files = [f for f in os.listdir(args.src) if f.endswith(".safetensors")]
    if len(files) != 1:
        print("corrupt.py: %s: expected exactly one .safetensors file, found %d"
              % (args.src, len(files)), file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):  # leftovers of an earlier run
        if f.endswith(".safetensors") or f == "model.safetensors.index.json":
            os.remove(os.path.join(args.out, f))
    for f in os.listdir(args.src):
        if os.path.isfile(os.path.join(args.src, f)):
            shutil.copyfile(os.path.join(args.src, f), os.path.join(args.out, f))
    corrupt(args.kind, os.path.join(args.out, files[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
