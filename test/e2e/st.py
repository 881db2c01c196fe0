"""A small, independent safetensors reader/writer in numpy.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
unsigned header length N, then N bytes of JSON (may be padded with spaces),
then the data buffer. The JSON maps each tensor name to
{"dtype": ..., "shape": [...], "data_offsets": [begin, end]} with offsets
relative to the start of the data buffer; the optional "__metadata__" entry
maps strings to strings. All values are little-endian.

API:
  write(path, tensors, metadata=None)   tensors: name -> (dtype_str, ndarray of raw values)
  read(path)            -> name -> np.float32 array (F32, F64, BF16, F16, F8_E4M3)
  read_raw(path)        -> name -> (dtype_str, shape, np.ndarray in that dtype)
  read_checkpoint(path) -> name -> np.float32 array, for a file or a directory,
                           with FP8 weights dequantized by their weight_scale_inv
  read_checkpoint_raw(path) -> name -> (dtype_str, shape, raw array) over all files
  f32_to_bf16_bits / bf16_bits_to_f32, f32_to_e4m3_bits / e4m3_bits_to_f32,
  to_dtype(array, dtype_str) -> raw array for write()
"""

import json
import os
import struct

import numpy as np

# Raw storage dtype of each safetensors dtype. BF16 is carried as uint16 bits,
# F8_E4M3 (e4m3fn) as uint8 codes.
RAW = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3")
BLOCK = 128  # FP8 weight_scale_inv block size (rows and columns)


class SafetensorsError(Exception):
    pass


# ---------------------------------------------------------------- conversions

def f32_to_bf16_bits(x):
    """float32 -> bfloat16 bits (uint16), round to nearest even; NaN stays NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    b = x.view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)  # quiet NaN, keep sign
    return out


def bf16_bits_to_f32(bits):
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _e4m3_table():
    """float32 value of each of the 256 e4m3fn codes (S.EEEE.MMM, bias 7)."""
    codes = np.arange(256, dtype=np.uint32)
    s = (codes >> 7) & 1
    e = (codes >> 3) & 0xF
    m = codes & 7
    mag = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * 2.0 ** (e.astype(np.float64) - 7))
    val = np.where(s == 1, -mag, mag)
    val[(e == 15) & (m == 7)] = np.nan  # S.1111.111 is NaN; there are no infinities
    return val.astype(np.float32)


E4M3_TABLE = _e4m3_table()
E4M3_MAX = 448.0


def e4m3_bits_to_f32(codes):
    return E4M3_TABLE[np.asarray(codes, dtype=np.uint8)]


def f32_to_e4m3_bits(x):
    """float32 -> e4m3fn codes, round to nearest even, saturating at +-448; NaN -> 0x7F."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x).astype(np.float64).ravel()
    pos = E4M3_TABLE[:127].astype(np.float64)  # codes 0x00..0x7E, increasing
    idx = np.searchsorted(pos, a, side="left")  # pos[idx-1] < a <= pos[idx]
    idx = np.clip(idx, 1, 126)
    lo, hi = pos[idx - 1], pos[idx]
    pick_hi = (a - lo > hi - a) | ((a - lo == hi - a) & (idx % 2 == 0))
    code = np.where(pick_hi, idx, idx - 1)
    code = np.where(a <= 0.0, 0, code)
    code = np.where(a >= E4M3_MAX, 126, code).astype(np.uint8)
    code = code | (np.signbit(x.ravel()).astype(np.uint8) << 7)
    code[np.isnan(x.ravel())] = 0x7F
    return code.reshape(x.shape)


def to_dtype(x, dtype):
    """Values (any float array) -> raw array of safetensors dtype `dtype`."""
    x = np.asarray(x)
    if dtype == "BF16":
        return f32_to_bf16_bits(x.astype(np.float32))
    if dtype == "F8_E4M3":
        return f32_to_e4m3_bits(x.astype(np.float32))
    if dtype not in RAW:
        raise SafetensorsError("unsupported dtype %s" % dtype)
    return x.astype(RAW[dtype])


def raw_to_f32(dtype, raw, name="?"):
    if dtype == "F32":
        return np.asarray(raw, dtype=np.float32)
    if dtype in ("F64", "F16"):
        return raw.astype(np.float32)
    if dtype == "BF16":
        return bf16_bits_to_f32(raw)
    if dtype == "F8_E4M3":
        return e4m3_bits_to_f32(raw)
    raise SafetensorsError("tensor '%s': dtype %s is not a floating-point type" % (name, dtype))


# ---------------------------------------------------------------- write

def write(path, tensors, metadata=None):
    """tensors: dict name -> (dtype_str, np.ndarray of raw values in that dtype).

    BF16 arrays are uint16 bit patterns and F8_E4M3 arrays uint8 codes (use
    to_dtype() to convert from floats). Tensors are laid out in insertion order.
    """
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, (dtype, arr) in tensors.items():
        if dtype not in RAW:
            raise SafetensorsError("tensor '%s': unsupported dtype %s" % (name, dtype))
        arr = np.asarray(arr)
        raw = np.ascontiguousarray(arr.astype(RAW[dtype], copy=False)).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------- read

def read_header(path):
    """-> (header dict without __metadata__, metadata dict, data start offset, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError("%s: file too short for a safetensors header" % path)
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise SafetensorsError("%s: header length %d runs past the end of the file (%d bytes)"
                                   % (path, n, size))
        hbytes = f.read(n)
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError("%s: invalid JSON header: %s" % (path, e))
    if not isinstance(header, dict):
        raise SafetensorsError("%s: header is not a JSON object" % path)
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    data_len = size - data_start
    spans = []
    for name, info in header.items():
        try:
            dtype = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            b, e = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError("%s: tensor '%s': malformed header entry" % (path, name))
        if dtype not in RAW:
            raise SafetensorsError("%s: tensor '%s': unknown dtype %s" % (path, name, dtype))
        if any(d < 0 for d in shape):
            raise SafetensorsError("%s: tensor '%s': negative dimension" % (path, name))
        nbytes = int(np.prod(shape, dtype=np.int64)) * RAW[dtype].itemsize
        if not (0 <= b <= e <= data_len):
            raise SafetensorsError("%s: tensor '%s': data_offsets [%d, %d] outside the data (%d bytes)"
                                   % (path, name, b, e, data_len))
        if e - b != nbytes:
            raise SafetensorsError("%s: tensor '%s': data_offsets span %d bytes but %s%s needs %d"
                                   % (path, name, e - b, dtype, shape, nbytes))
        spans.append((b, e, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError("%s: tensors '%s' and '%s' overlap" % (path, n0, n1))
    return header, metadata, data_start, size


def read_raw(path):
    """-> dict name -> (dtype_str, shape tuple, np.ndarray of raw values)."""
    header, _, data_start, _ = read_header(path)
    out = {}
    with open(path, "rb") as f:
        buf = f.read()
    for name, info in header.items():
        dtype = info["dtype"]
        shape = tuple(int(d) for d in info["shape"])
        b, e = info["data_offsets"]
        arr = np.frombuffer(buf, dtype=RAW[dtype], count=(e - b) // RAW[dtype].itemsize,
                            offset=data_start + b).reshape(shape).copy()
        out[name] = (dtype, shape, arr)
    return out


def read(path):
    """-> dict name -> np.float32 array (floating-point dtypes only)."""
    return {name: raw_to_f32(dtype, arr, name) for name, (dtype, _, arr) in read_raw(path).items()}


def read_metadata(path):
    return read_header(path)[1]


def checkpoint_files(path):
    """The safetensors files of a checkpoint: a file, a directory with
    model.safetensors.index.json, or a directory of *.safetensors."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SafetensorsError("%s: no such file or directory" % path)
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError) as e:
                raise SafetensorsError("%s: bad index: %s" % (index, e))
        files = []
        for fname in weight_map.values():
            if fname not in files:
                files.append(fname)
        return [os.path.join(path, fname) for fname in sorted(files)]
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise SafetensorsError("%s: no .safetensors files" % path)
    return [os.path.join(path, f) for f in files]


def dequant_fp8(codes, scale_inv):
    """w[i, j] = e4m3(codes[i, j]) * scale_inv[i // 128, j // 128]."""
    w = e4m3_bits_to_f32(codes)
    rows, cols = w.shape
    sr, sc = -(-rows // BLOCK), -(-cols // BLOCK)
    if tuple(scale_inv.shape) != (sr, sc):
        raise SafetensorsError("scale shape %s does not match weight %s (expected %s)"
                               % (list(scale_inv.shape), [rows, cols], [sr, sc]))
    s = np.repeat(np.repeat(scale_inv.astype(np.float32), BLOCK, 0), BLOCK, 1)[:rows, :cols]
    return (w * s).astype(np.float32)


def read_checkpoint_raw(path):
    """-> dict name -> (dtype_str, shape, raw ndarray) over all files of a checkpoint."""
    raw = {}
    for fpath in checkpoint_files(path):
        for name, entry in read_raw(fpath).items():
            if name in raw:
                raise SafetensorsError("tensor '%s' appears in more than one file" % name)
            raw[name] = entry
    return raw


def read_checkpoint(path, raw=None):
    """-> dict name -> np.float32 array over all files; FP8 `X.weight` tensors with a
    companion `X.weight_scale_inv` are dequantized and the scales dropped. `raw`:
    the checkpoint's read_checkpoint_raw(path), when the caller already has it."""
    if raw is None:
        raw = read_checkpoint_raw(path)
    out = {}
    for name, (dtype, shape, arr) in raw.items():
        if name.endswith("_scale_inv") and name[:-len("_scale_inv")] in raw:
            continue
        scale_name = name + "_scale_inv"
        if dtype == "F8_E4M3" and scale_name in raw:
            sdtype, _, sarr = raw[scale_name]
            if len(shape) != 2:
                raise SafetensorsError("tensor '%s': FP8 block scales need a 2-D weight" % name)
            try:
                out[name] = dequant_fp8(arr, raw_to_f32(sdtype, sarr, scale_name))
            except SafetensorsError as e:
                raise SafetensorsError("tensor '%s': %s" % (name, e))
        else:
            out[name] = raw_to_f32(dtype, arr, name)
    return out
