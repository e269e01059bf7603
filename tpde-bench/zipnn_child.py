#!/usr/bin/env python3
"""ZipNN reference for tpde-bench (run as a child process by the harness).

Per tensor of a safetensors file, in data order:
  * float tensors (F32/BF16/F16) with a base counterpart of the same shape
    (same dtype, or BF16/F16 exactly widened to F32): ZipNN delta, i.e.
    ZipNN(delta_compressed_type="byte").compress(target, delta_second_data=base)
    (ZipNN XORs the two and compresses the XOR with its byte grouping);
  * other float tensors: plain ZipNN;
  * non-float tensors (ZipNN 0.5 refuses them): zstd level 3 via `zstandard`.
The 8-byte prefix + JSON header is stored zstd-19 compressed.

usage: zipnn_child.py pack   --target T [--base B] -o OUT --threads N
       zipnn_child.py unpack ARCHIVE   [--base B] -o OUT --threads N
Prints one JSON line: {"work_s": seconds after imports, "import_s": ...}.
"""
import argparse
import json
import struct
import sys
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import zstandard  # noqa: E402
from zipnn import ZipNN  # noqa: E402

T_IMPORT = time.perf_counter()
MAGIC = b"TBZNN1\0\0"
ZIPNN_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
KIND_ALONE, KIND_DELTA, KIND_ZSTD, KIND_EMPTY = 0, 1, 2, 3


def parse(buf):
    (n,) = struct.unpack_from("<Q", buf, 0)
    hdr = json.loads(bytes(buf[8 : 8 + n]))
    ts = []
    for name, v in hdr.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        ts.append((8 + n + s, 8 + n + e, name, v["dtype"], v["shape"]))
    ts.sort()
    return 8 + n, ts


def predictor(base, bmap, name, dtype, shape):
    """Base bytes as a predictor for the target tensor, or None."""
    if base is None or name not in bmap:
        return None
    s, e, bdtype, bshape = bmap[name]
    if bshape != shape:
        return None
    raw = base[s:e]
    if bdtype == dtype:
        return bytes(raw)
    if (bdtype, dtype) == ("BF16", "F32"):
        return (np.frombuffer(raw, "<u2").astype("<u4") << 16).tobytes()
    if (bdtype, dtype) == ("F16", "F32"):
        return np.frombuffer(raw, "<f2").astype("<f4").tobytes()
    return None


class Codecs:
    def __init__(self, threads):
        self.threads = threads
        self.cache = {}

    def get(self, dtype, delta):
        key = (dtype, delta)
        if key not in self.cache:
            kw = dict(input_format="byte", bytearray_dtype=ZIPNN_DTYPES[dtype], threads=self.threads)
            if delta:
                kw["delta_compressed_type"] = "byte"
            self.cache[key] = ZipNN(**kw)
        return self.cache[key]


def read_base(path):
    if path is None:
        return None, {}
    base = open(path, "rb").read()
    _, bts = parse(base)
    return base, {name: (s, e, d, shp) for s, e, name, d, shp in bts}


def pack(a):
    tgt = open(a.target, "rb").read()
    plen, ts = parse(tgt)
    base, bmap = read_base(a.base)
    codecs = Codecs(a.threads)
    zc = zstandard.ZstdCompressor(level=3)
    out = [MAGIC]
    prefix = zstandard.ZstdCompressor(level=19).compress(tgt[:plen])
    out.append(struct.pack("<Q", len(prefix)))
    out.append(prefix)
    at = plen
    for s, e, name, dtype, shape in ts:
        if s != at:
            sys.exit(f"tensor {name!r} does not follow the previous one")
        at = e
        data = tgt[s:e]
        if len(data) == 0:
            kind, blob = KIND_EMPTY, b""
        elif dtype in ZIPNN_DTYPES:
            pred = predictor(base, bmap, name, dtype, shape)
            if pred is not None:
                kind, blob = KIND_DELTA, codecs.get(dtype, True).compress(data, delta_second_data=pred)
            else:
                kind, blob = KIND_ALONE, codecs.get(dtype, False).compress(data)
        else:
            kind, blob = KIND_ZSTD, zc.compress(data)
        out.append(struct.pack("<BQ", kind, len(blob)))
        out.append(bytes(blob))
    if at != len(tgt):
        sys.exit("bytes after the last tensor")
    with open(a.out, "wb") as f:
        f.write(b"".join(out))


def unpack(a):
    buf = memoryview(open(a.archive, "rb").read())
    if bytes(buf[:8]) != MAGIC:
        sys.exit("not a ZipNN reference archive")
    (n,) = struct.unpack_from("<Q", buf, 8)
    prefix = zstandard.ZstdDecompressor().decompress(bytes(buf[16 : 16 + n]))
    at = 16 + n
    plen, ts = parse(prefix)
    base, bmap = read_base(a.base)
    codecs = Codecs(a.threads)
    zd = zstandard.ZstdDecompressor()
    with open(a.out, "wb") as f:
        f.write(prefix)
        for s, e, name, dtype, shape in ts:
            kind, ln = struct.unpack_from("<BQ", buf, at)
            at += 9
            blob = bytes(buf[at : at + ln])
            at += ln
            if kind == KIND_EMPTY:
                data = b""
            elif kind == KIND_ZSTD:
                data = zd.decompress(blob, max_output_size=e - s)
            elif kind == KIND_DELTA:
                pred = predictor(base, bmap, name, dtype, shape)
                data = codecs.get(dtype, True).decompress(blob, delta_second_data=pred)
            else:
                data = codecs.get(dtype, False).decompress(blob)
            if len(data) != e - s:
                sys.exit(f"tensor {name!r}: decoded {len(data)} bytes, want {e - s}")
            f.write(data)
    if at != len(buf):
        sys.exit("trailing bytes")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--target", required=True)
    pk.add_argument("--base")
    pk.add_argument("-o", dest="out", required=True)
    pk.add_argument("--threads", type=int, required=True)
    up = sub.add_parser("unpack")
    up.add_argument("archive")
    up.add_argument("--base")
    up.add_argument("-o", dest="out", required=True)
    up.add_argument("--threads", type=int, required=True)
    a = p.parse_args()
    t = time.perf_counter()
    (pack if a.cmd == "pack" else unpack)(a)
    print(json.dumps({"work_s": time.perf_counter() - t, "import_s": T_IMPORT - T0}))


if __name__ == "__main__":
    main()
