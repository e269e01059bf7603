#!/usr/bin/env python3
"""An independent reader for `.tpde` v1.0 to v1.7 archives, written only
from spec/FORMAT.md (section numbers below refer to it). Python 3.11, standard
library plus `zstandard` (pip install zstandard). Nothing here comes from the
Rust implementation.

    python3 spec/reader/tpde_read.py ARCHIVE [--base FILE_OR_DIR ...] [--out DIR] [--json]

It checks the header (§2), the header+index CRC, the minor version (§8.2),
decodes the bincode index by hand (§4.0), applies every validation rule of
§3-§5.1, §8.2 and the limits of §7, reconstructs every target tensor (§5, §6,
§9; per-plane streams §5.3, rANS planes §5.6, widened bases §6.2 and
row-mapped bases §6.3 and sliced bases §6.3.4 included) checking chunk CRCs, chunk SHA-256s (v1.7) and tensor SHA-256s, reconstructs every target file and checks its SHA-256 (§10), and
with --out writes the files (and extra files) into DIR. Exit status 0 when
everything checked, 1 when the archive (or the given base) is bad, 2 on usage
errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

try:
    import zstandard
except ImportError:  # pragma: no cover - reported to the user
    sys.stderr.write("tpde_read: the zstandard module is missing: pip install zstandard\n")
    sys.exit(2)


class FormatError(Exception):
    """The archive (or a supplied base) breaks a rule of the spec."""


# ---- §1, §2: constants -------------------------------------------------------

MAGIC = b"\x89TPDE\r\n\x1a"
HEADER_LEN = 64
ALIGN = 64
REQUIRED_FLAGS = 0x0000FFFF
FLAG_INDEX_ZSTD = 0x1  # §8.3 (v1.3): the index is stored as one zstd frame
KNOWN_REQUIRED_FLAGS = FLAG_INDEX_ZSTD
KNOWN_MINOR = 7  # §8.2: the newest minor this reader implements

# §4.1: code -> (safetensors name, width)
DTYPES = [
    ("BOOL", 1), ("U8", 1), ("I8", 1), ("F8_E4M3", 1), ("F8_E5M2", 1),
    ("I16", 2), ("U16", 2), ("F16", 2), ("BF16", 2),
    ("I32", 4), ("U32", 4), ("F32", 4),
    ("I64", 8), ("U64", 8), ("F64", 8),
]
KINDS = ["zero", "dense", "sparse"]  # §5.2
OPS = ["xor", "add", "replace", "add-zigzag", "replace-rot"]  # §6.1 (AddZigzag v1.1, ReplaceRot v1.4)
CODECS = ["raw", "zstd", "planes"]  # §5.3 ("planes" = PerPlane, v1.1)
PLANE_CODECS = ["raw", "zstd", "rans", "rans-base",
                "rans32", "rans-base32"]  # §5.3 (v1.1; "rans": §5.6; "rans-base": v1.2, §5.7; "...32": v1.6, §5.6.4)
# §5.6.4: interleaved rANS states of each rANS plane codec.
RANS_LANES = {"rans": 4, "rans-base": 4, "rans32": 32, "rans-base32": 32}
BASE_KINDS = ["none", "inline", "external", "inline_widened", "external_widened",
              "inline_rows", "external_rows",
              "inline_dequant", "external_dequant",
              "inline_slices", "external_slices"]  # §4.5 (5-8: v1.2; 9-10: v1.5)
SCALE_AXES = ["tensor", "rows", "columns"]  # §6.4 (v1.2)

# §7: the reference defaults.
LIMITS = {
    "max_index_bytes": 1 << 30,
    "max_tensors": 10_000_000,
    "max_chunk_raw_bytes": 1 << 30,
    "max_tensor_bytes": 1 << 40,
    "max_total_output": 1 << 44,
}
MAX_CHUNK_ELEMS = 1 << 32  # §4.6.2
U64_MAX = (1 << 64) - 1


def align_up(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


# ---- §2: header --------------------------------------------------------------

def parse_header(data: bytes) -> dict:
    if len(data) < HEADER_LEN or data[0:8] != MAGIC:
        raise FormatError("not a tpde archive (short file or bad magic)")
    (major,) = struct.unpack_from("<H", data, 8)
    if major != 1:  # §8.1: nothing after `major` is interpreted
        raise FormatError(f"unsupported major version {major}")
    minor, flags, file_len, index_offset, index_len, align = struct.unpack_from("<HIQQQI", data, 10)
    (crc,) = struct.unpack_from("<I", data, 60)
    if align != ALIGN or any(data[44:60]):
        raise FormatError("header: align must be 64 and reserved bytes 44..60 zero")
    if file_len != len(data):
        raise FormatError(f"file is {len(data)} bytes but the header says {file_len}")
    if index_offset < HEADER_LEN or index_offset + index_len != file_len:
        raise FormatError("header: the index must run from index_offset to the end of the file")
    if index_len > LIMITS["max_index_bytes"]:
        raise FormatError(f"limit max_index_bytes exceeded: {index_len}")
    computed = zlib.crc32(data[index_offset:], zlib.crc32(data[0:60]))
    if computed != crc:
        raise FormatError(f"header/index CRC mismatch: stored {crc:#010x}, computed {computed:#010x}")
    # §2.2 step 8, after the CRC: a damaged minor or flags word is damage,
    # not a newer file.
    if minor > KNOWN_MINOR:
        raise FormatError(f"unsupported minor version 1.{minor}: this reader knows 1.0 to 1.{KNOWN_MINOR}, "
                          "a newer reader is needed")
    unknown = flags & REQUIRED_FLAGS & ~KNOWN_REQUIRED_FLAGS
    if unknown:
        raise FormatError(f"unknown required flags {unknown:#06x}")
    if flags & FLAG_INDEX_ZSTD and minor < 3:  # §8.2.3: the flag belongs to minor 3
        raise FormatError("flag 0x1 (zstd index) in a file whose header says minor 0 to 2")
    return {
        "major": major, "minor": minor, "flags": flags, "file_len": file_len,
        "index_offset": index_offset, "index_len": index_len, "crc32": crc,
    }


# ---- §4.0: bincode (fixint, little-endian) by hand ---------------------------

class Cursor:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            raise FormatError(f"index: needs {n} bytes at index byte {self.pos}, only {len(self.buf) - self.pos} remain")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def digest(self) -> bytes:
        return self.take(32)

    def string(self) -> str:
        n = self.u64()
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"index: string is not UTF-8: {e}") from None

    def byte_vec(self) -> bytes:
        return self.take(self.u64())

    def vec(self, elem, min_size: int) -> list:
        n = self.u64()
        # §4.0.2: never allocate for a count the remaining bytes cannot hold.
        if n * min_size > len(self.buf) - self.pos:
            raise FormatError(f"index: {n} elements cannot fit in the {len(self.buf) - self.pos} bytes left")
        return [elem() for _ in range(n)]

    def variant(self, names: list, what: str) -> int:
        v = self.u32()
        if v >= len(names):
            raise FormatError(f"index: {what} variant {v} unknown")
        return v


def read_plane(c: Cursor) -> dict:  # §4.0.4 (v1.1): 12 bytes
    return {"stored_len": c.u64(), "codec": PLANE_CODECS[c.variant(PLANE_CODECS, "plane codec")]}


def read_stream(c: Cursor) -> dict:
    s = {"stored_len": c.u64(), "raw_len": c.u64(), "codec": CODECS[c.variant(CODECS, "codec")]}
    if s["codec"] == "planes":
        s["planes"] = c.vec(lambda: read_plane(c), 12)
    return s


def read_chunk(c: Cursor) -> dict:
    return {
        "offset": c.u64(),
        "stored_len": c.u64(),
        "crc32": c.u32(),
        "elem_start": c.u64(),
        "elem_count": c.u64(),
        "kind": KINDS[c.variant(KINDS, "chunk kind")],
        "op": OPS[c.variant(OPS, "op")],
        "changed": c.u64(),
        "positions": read_stream(c),
        "values": read_stream(c),
    }


def read_rows(c: Cursor) -> list:  # §4.0.5 (v1.2): RowRun, 24 bytes
    return c.vec(lambda: [c.u64(), c.u64(), c.u64()], 24)


def read_tensor(c: Cursor) -> dict:
    name = c.string()
    code = c.variant(DTYPES, "dtype")
    shape = c.vec(c.u64, 8)
    sha = c.digest()
    b = BASE_KINDS[c.variant(BASE_KINDS, "base")]
    if b == "none":
        base = {"kind": b}
    elif b in ("inline", "inline_widened"):
        base = {"kind": b, "index": c.u32()}
    elif b == "external":
        base = {"kind": b, "file": c.u32(), "name": c.string(), "sha256": c.digest()}
    elif b == "external_widened":
        base = {"kind": b, "file": c.u32(), "name": c.string(), "sha256": c.digest(),
                "dtype": DTYPES[c.variant(DTYPES, "base dtype")][0]}
    elif b == "inline_rows":  # §4.0.5 (v1.2)
        base = {"kind": b, "index": c.u32(), "rows": read_rows(c)}
    elif b == "inline_slices":  # §4.0.8 (v1.5)
        base = {"kind": b, "index": c.u32(), "row_elems": c.u64(), "rows": read_rows(c)}
    elif b == "external_slices":
        base = {"kind": b, "file": c.u32(), "name": c.string(), "sha256": c.digest(),
                "shape": c.vec(c.u64, 8), "row_elems": c.u64(), "rows": read_rows(c)}
    elif b == "inline_dequant":
        base = {"kind": b, "q": c.u32(), "scale": c.u32(),
                "axis": SCALE_AXES[c.variant(SCALE_AXES, "scale axis")]}
    elif b == "external_dequant":
        base = {"kind": b, "file": c.u32(), "q_name": c.string(), "q_sha256": c.digest(),
                "q_dtype": DTYPES[c.variant(DTYPES, "codes dtype")][0],
                "scale_name": c.string(), "scale_sha256": c.digest(),
                "scale_shape": c.vec(c.u64, 8),
                "axis": SCALE_AXES[c.variant(SCALE_AXES, "scale axis")]}
    else:  # external_rows
        base = {"kind": b, "file": c.u32(), "name": c.string(), "sha256": c.digest(),
                "shape": c.vec(c.u64, 8), "rows": read_rows(c)}
    p = c.variant(["plain", "chunked", "chunked_digests"], "payload")
    if p == 0:
        payload = {"kind": "plain", "offset": c.u64(), "len": c.u64(), "crc32": c.u32()}
    else:
        payload = {"kind": "chunked", "chunk_elems": c.u64(), "chunks": c.vec(lambda: read_chunk(c), 92)}
        if p == 2:  # (v1.7) §4.6.3: one SHA-256 per chunk
            payload["chunk_sha256"] = c.vec(c.digest, 32)
    return {
        "name": name, "dtype": DTYPES[code][0], "width": DTYPES[code][1], "shape": shape,
        "sha256": sha, "base": base, "payload": payload,
    }


def index_bytes(data: bytes, header: dict) -> bytes:
    """§4.0 (v1.3): the bincode index, unpacked from its zstd frame when
    header flag 0x1 says so. The frame must declare its content size, at most
    max_index_bytes; then it decodes like any zstd stream of §5.3."""
    stored = data[header["index_offset"]:]
    if not header["flags"] & FLAG_INDEX_ZSTD:
        return stored
    if stored[:4] != b"\x28\xb5\x2f\xfd":  # a zstd frame, not a skippable one
        raise FormatError("index: not a zstd frame")
    try:
        size = zstandard.get_frame_parameters(stored).content_size
    except zstandard.ZstdError as e:
        raise FormatError(f"index: zstd frame header is corrupt: {e}") from None
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        raise FormatError("index: the zstd frame does not declare its size")
    if size > LIMITS["max_index_bytes"]:
        raise FormatError(f"limit max_index_bytes exceeded: the zstd index declares {size} bytes")
    if size > max(64 * len(stored), 1 << 24):  # §4.0.5: at most 64x, or 16 MiB
        raise FormatError(f"index: the zstd frame declares {size} bytes from {len(stored)}: "
                          "more than 64 bytes per stored byte")
    return decode_zstd(stored, size)


def parse_index(buf: bytes) -> dict:
    c = Cursor(buf)
    files = c.vec(lambda: {
        "name": c.string(), "size": c.u64(), "sha256": c.digest(),
        "header": c.byte_vec(), "tensors": c.vec(c.u32, 4),
    }, 8 + 8 + 32 + 8 + 8)
    extra = c.vec(lambda: {"name": c.string(), "sha256": c.digest(), "contents": c.byte_vec()}, 8 + 32 + 8)
    base_files = c.vec(lambda: {"name": c.string(), "size": c.u64(), "sha256": c.digest()}, 8 + 8 + 32)
    # Smallest TensorRecord: name 8 + dtype 4 + shape 8 + sha256 32 + base 4
    # + payload 4 + Chunked with no chunks 16 = 76 bytes.
    bases = c.vec(lambda: read_tensor(c), 76)
    tensors = c.vec(lambda: read_tensor(c), 76)
    if c.pos != len(buf):
        raise FormatError(f"index: {len(buf) - c.pos} trailing bytes")
    return {"files": files, "extra_files": extra, "base_files": base_files, "bases": bases, "tensors": tensors}


# ---- §3, §4, §5.1, §7: validation -------------------------------------------

def elem_count(t: dict) -> int:
    n = 1
    for d in t["shape"]:
        n *= d
        if n > U64_MAX:
            raise FormatError(f"tensor {t['name']!r}: element count overflows")
    if n * t["width"] > U64_MAX:
        raise FormatError(f"tensor {t['name']!r}: byte length overflows")
    return n


def safe_file_name(name: str) -> bool:  # §4.3
    raw = name.encode("utf-8")
    if name in ("", ".", "..") or len(raw) > 255:
        return False
    if any(ch in "/\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name):
        return False
    return not (len(raw) >= 2 and raw[1:2] == b":")


def check_stream(s: dict, where: str, values_width: int | None) -> None:
    """§5.1.2 rule 3. `values_width` is the element width for a values
    stream, None for a positions stream."""
    if s["codec"] == "raw" and s["stored_len"] != s["raw_len"]:
        raise FormatError(f"{where}: raw stream stored and raw lengths differ")
    if s["codec"] == "zstd" and (s["stored_len"] == 0 or s["raw_len"] == 0):
        raise FormatError(f"{where}: empty zstd stream")
    if s["codec"] == "planes":
        w = values_width
        if w is None or w < 2:
            raise FormatError(f"{where}: per-plane codec on a positions stream or on 1-byte values")
        planes = s["planes"]
        if len(planes) != w or s["raw_len"] == 0 or s["raw_len"] % w != 0:
            raise FormatError(f"{where}: per-plane stream needs one plane per element byte")
        m = s["raw_len"] // w
        for k, p in enumerate(planes):
            if p["codec"] == "raw" and p["stored_len"] != m:
                raise FormatError(f"{where}: raw plane {k} is not {m} bytes")
            if p["codec"] == "zstd" and p["stored_len"] == 0:
                raise FormatError(f"{where}: empty zstd plane {k}")
            if p["codec"] in RANS_LANES and p["stored_len"] == 0:
                raise FormatError(f"{where}: empty rans plane {k}")
        if sum(p["stored_len"] for p in planes) != s["stored_len"]:
            raise FormatError(f"{where}: plane lengths do not add up to the stream's stored length")


def check_tensor(t: dict, where: str, is_base: bool) -> int:
    n = elem_count(t)
    w = t["width"]
    nbytes = n * w
    if nbytes > LIMITS["max_tensor_bytes"]:
        raise FormatError(f"{where}: limit max_tensor_bytes exceeded")
    p = t["payload"]
    if p["kind"] == "plain":
        if p["len"] != nbytes:
            raise FormatError(f"{where}: plain payload length differs from the tensor size")
        if p["len"] == 0 and p["offset"] != 0:
            raise FormatError(f"{where}: empty plain payload must have offset 0")
        if t["base"]["kind"] != "none":
            raise FormatError(f"{where}: a plain payload cannot have a base")
        return nbytes
    if "chunk_sha256" in p:  # (v1.7) §4.6.3
        if is_base:
            raise FormatError(f"{where}: an inline base cannot have chunk digests")
        if len(p["chunk_sha256"]) != len(p["chunks"]):
            raise FormatError(f"{where}: chunk digest count differs from the chunk count")
    ce = p["chunk_elems"]
    if not 1 <= ce <= MAX_CHUNK_ELEMS:
        raise FormatError(f"{where}: chunk_elems must be in 1..=2^32")
    if ce * w > LIMITS["max_chunk_raw_bytes"]:
        raise FormatError(f"{where}: limit max_chunk_raw_bytes exceeded")
    chunks = p["chunks"]
    if len(chunks) != -(-n // ce):
        raise FormatError(f"{where}: chunk count differs from ceil(elements / chunk_elems)")
    for i, c in enumerate(chunks):
        cw = f"{where} chunk {i}"
        start = i * ce
        if c["elem_start"] != start or c["elem_count"] != min(ce, n - start):
            raise FormatError(f"{cw}: element range is not the chunk's slot")
        pos, val = c["positions"], c["values"]
        if pos["stored_len"] + val["stored_len"] != c["stored_len"]:
            raise FormatError(f"{cw}: stored length differs from the sum of its streams")
        if c["stored_len"] == 0 and c["offset"] != 0:
            raise FormatError(f"{cw}: empty chunk must have offset 0")
        check_stream(pos, cw, None)
        check_stream(val, cw, w)
        k, ch, cnt = c["kind"], c["changed"], c["elem_count"]
        if k == "zero":
            if c["stored_len"] != 0 or ch != 0:
                raise FormatError(f"{cw}: zero chunk must store nothing")
        elif k == "dense":
            if pos != {"stored_len": 0, "raw_len": 0, "codec": "raw"}:
                raise FormatError(f"{cw}: dense chunk has a positions stream")
            if val["raw_len"] != cnt * w:
                raise FormatError(f"{cw}: dense values length differs from elements x width")
            if ch > cnt:
                raise FormatError(f"{cw}: more changed elements than elements")
        else:
            if not 1 <= ch <= cnt:
                raise FormatError(f"{cw}: sparse chunk needs 1..=elements positions")
            if val["raw_len"] != ch * w:
                raise FormatError(f"{cw}: sparse values length differs from positions x width")
            if not ch <= pos["raw_len"] <= 5 * ch:
                raise FormatError(f"{cw}: positions length impossible for the position count")
    return nbytes


def tname(t: dict, base: bool) -> str:
    return f"{'base tensor' if base else 'tensor'} {t['name']!r}"


def validate(data: bytes, header: dict, idx: dict) -> None:
    tensors, bases = idx["tensors"], idx["bases"]
    if len(tensors) + len(bases) > LIMITS["max_tensors"]:
        raise FormatError("limit max_tensors exceeded")
    # §4.4.2 names.
    for table, is_base in ((tensors, False), (bases, True)):
        seen = set()
        for t in table:
            if t["name"] in seen:
                raise FormatError(f"{tname(t, is_base)}: duplicate name")
            seen.add(t["name"])
    # §4.3 file names.
    seen = set()
    for f in idx["files"] + idx["extra_files"]:
        if not safe_file_name(f["name"]):
            raise FormatError(f"file {f['name']!r}: not a single plain path component")
        if f["name"] in seen:
            raise FormatError(f"file {f['name']!r}: duplicate file name")
        seen.add(f["name"])
    # §4.5, §4.6 tensors.
    for t in bases:
        if t["base"]["kind"] != "none":
            raise FormatError(f"{tname(t, True)}: an inline base must not have a base")
        check_tensor(t, tname(t, True), True)
    total = 0
    for t in tensors:
        where = tname(t, False)
        total += check_tensor(t, where, False)
        b = t["base"]
        if b["kind"] in ("inline", "inline_widened"):
            if b["index"] >= len(bases):
                raise FormatError(f"{where}: inline base index out of range")
            bt = bases[b["index"]]
            if bt["shape"] != t["shape"]:
                raise FormatError(f"{where}: inline base shape differs")
            if b["kind"] == "inline" and bt["dtype"] != t["dtype"]:
                raise FormatError(f"{where}: inline base dtype differs")
            if b["kind"] == "inline_widened" and (bt["dtype"], t["dtype"]) not in WIDENINGS:
                raise FormatError(f"{where}: a {bt['dtype']} inline base cannot be widened to {t['dtype']}")
            if (bt["payload"]["kind"] == "chunked" and t["payload"]["kind"] == "chunked"
                    and bt["payload"]["chunk_elems"] > t["payload"]["chunk_elems"]):
                raise FormatError(f"{where}: inline base has larger chunks than the tensor")
        elif b["kind"] in ("inline_rows", "inline_slices"):  # §4.5, §6.3 (v1.2), §6.3.4 (v1.5)
            if b["index"] >= len(bases):
                raise FormatError(f"{where}: inline base index out of range")
            bt = bases[b["index"]]
            if bt["dtype"] != t["dtype"]:
                raise FormatError(f"{where}: {map_kind(b)} inline base dtype differs")
            r = check_base_map(t, bt["shape"], b, where)
            if (bt["payload"]["kind"] == "chunked" and t["payload"]["kind"] == "chunked"
                    and bt["payload"]["chunk_elems"] > t["payload"]["chunk_elems"]):
                raise FormatError(f"{where}: inline base has larger chunks than the tensor")
            # §6.3.1, §6.3.4: the base work of a row map counts against the
            # output limit (for a sliced map, every run counts, base chunks
            # visited again included).
            if bt["payload"]["kind"] == "chunked":
                bce = bt["payload"]["chunk_elems"]
                k = sum(((b0 + cnt) * r - 1) // bce - (b0 * r) // bce + 1
                        for _, b0, cnt in b["rows"] if cnt > 0 and r > 0)
                c = len(t["payload"]["chunks"]) if t["payload"]["kind"] == "chunked" else 1
                total += (k + c) * bce * t["width"]
            else:
                total += elem_count(bt) * bt["width"]
        elif b["kind"] == "inline_dequant":  # §4.5, §6.4 (v1.2)
            if b["q"] >= len(bases) or b["scale"] >= len(bases):
                raise FormatError(f"{where}: inline base index out of range")
            qt, st = bases[b["q"]], bases[b["scale"]]
            check_dequant(t, qt["dtype"], qt["shape"], st["dtype"], st["shape"], b["axis"], where)
            for bt in (qt, st):
                if (bt["payload"]["kind"] == "chunked" and t["payload"]["kind"] == "chunked"
                        and bt["payload"]["chunk_elems"] > t["payload"]["chunk_elems"]):
                    raise FormatError(f"{where}: inline base has larger chunks than the tensor")
        elif b["kind"] == "external_dequant":
            if b["file"] >= len(idx["base_files"]):
                raise FormatError(f"{where}: external base file index out of range")
            n = 4
            for d in b["scale_shape"]:
                n *= d
            if n > U64_MAX or n > LIMITS["max_tensor_bytes"]:
                raise FormatError(f"{where}: limit max_tensor_bytes exceeded by the scales")
            check_dequant(t, b["q_dtype"], t["shape"], "F32", b["scale_shape"], b["axis"], where)
        elif b["kind"] in ("external_rows", "external_slices"):  # §4.5 (v1.2; v1.5)
            if b["file"] >= len(idx["base_files"]):
                raise FormatError(f"{where}: external base file index out of range")
            n = 1
            for d in b["shape"]:
                n *= d
            if n * t["width"] > U64_MAX:
                raise FormatError(f"{where}: base element count overflows")
            if n * t["width"] > LIMITS["max_tensor_bytes"]:
                raise FormatError(f"{where}: limit max_tensor_bytes exceeded by the base")
            check_base_map(t, b["shape"], b, where)
            total += n * t["width"]  # §6.3.1, §6.3.4: the base is hashed whole
        elif b["kind"] in ("external", "external_widened"):
            if b["file"] >= len(idx["base_files"]):
                raise FormatError(f"{where}: external base file index out of range")
            if b["kind"] == "external_widened" and (b["dtype"], t["dtype"]) not in WIDENINGS:
                raise FormatError(f"{where}: a {b['dtype']} external base cannot be widened to {t['dtype']}")
    if total > LIMITS["max_total_output"]:
        raise FormatError("limit max_total_output exceeded")
    # §4.2 files.
    owner = [False] * len(tensors)
    for f in idx["files"]:
        size = 8 + len(f["header"])
        for ti in f["tensors"]:
            if ti >= len(tensors):
                raise FormatError(f"file {f['name']!r}: tensor index out of range")
            if owner[ti]:
                raise FormatError(f"file {f['name']!r}: tensor listed more than once")
            owner[ti] = True
            size += elem_count(tensors[ti]) * tensors[ti]["width"]
        if size != f["size"]:
            raise FormatError(f"file {f['name']!r}: size differs from header plus tensor bytes")
    for ti, o in enumerate(owner):
        if not o:
            raise FormatError(f"{tname(tensors[ti], False)}: belongs to no file")
    check_minor_features(header, idx)
    check_layout(data, header, idx)


def map_kind(b: dict) -> str:
    return "sliced" if b["kind"].endswith("_slices") else "row-mapped"


def check_base_map(t: dict, bshape: list, b: dict, where: str) -> int:
    """The map of a row-mapped (§6.3.1) or sliced (§6.3.4, v1.5) base `b`
    of shape `bshape`, predicting target `t`, is valid; returns the row
    length in elements."""
    tshape = t["shape"]
    if b["kind"].endswith("_rows"):  # §6.3.1 rule 1: rows along the first dimension
        if not tshape or len(tshape) != len(bshape) or tshape[1:] != bshape[1:]:
            raise FormatError(f"{where}: row-mapped base shape {bshape} does not fit {tshape}")
        check_runs(b["rows"], tshape[0], bshape[0], True, where)
        return row_elems(tshape)
    # §6.3.4 rule 1: rows of R consecutive elements; R divides both counts.
    r = b["row_elems"]
    n, m = elem_count(t), 1
    for d in bshape:
        m *= d
    if r < 1:
        raise FormatError(f"{where}: sliced base row_elems 0 (must be at least 1)")
    if n % r:
        raise FormatError(f"{where}: sliced base row_elems {r} does not divide the tensor's {n} elements")
    if m % r:
        raise FormatError(f"{where}: sliced base row_elems {r} does not divide the base's {m} elements")
    # Rules 2 and 3: bounds as §6.3.1; increasing in the target only.
    check_runs(b["rows"], n // r, m // r, False, where)
    return r


def check_runs(rows: list, t_rows: int, b_rows: int, base_ordered: bool, where: str) -> None:
    """§6.3.1 rules 2 and 3 over a target of `t_rows` rows and a base of
    `b_rows`; with `base_ordered` false (a sliced base, §6.3.4 rule 3) the
    base rows may come in any order and repeat."""
    t_next = b_next = 0
    for start, base_start, count in rows:
        if count < 1:
            raise FormatError(f"{where}: empty row run")
        if start + count > U64_MAX or base_start + count > U64_MAX:
            raise FormatError(f"{where}: row run overflows")
        if start < t_next or (base_ordered and base_start < b_next):
            raise FormatError(f"{where}: row runs overlap or are out of order")
        if start + count > t_rows:
            raise FormatError(f"{where}: row run past the last row of the tensor ({t_rows} rows)")
        if base_start + count > b_rows:
            raise FormatError(f"{where}: row run past the last row of the base ({b_rows} rows)")
        t_next, b_next = start + count, base_start + count


def row_elems(shape: list) -> int:
    r = 1
    for d in shape[1:]:
        r *= d
    return r


def check_dequant(t: dict, q_dtype: str, q_shape: list, s_dtype: str, s_shape: list,
                  axis: str, where: str) -> None:  # §6.4.1
    if t["dtype"] != "F32":
        raise FormatError(f"{where}: a quantized base predicts only an F32 tensor")
    if q_dtype not in ("I8", "U8"):
        raise FormatError(f"{where}: quantized codes must be I8 or U8, not {q_dtype}")
    if q_shape != t["shape"]:
        raise FormatError(f"{where}: quantized codes have shape {q_shape}, not the tensor's")
    if s_dtype != "F32":
        raise FormatError(f"{where}: quantization scales must be F32, not {s_dtype}")
    count = 1
    for d in s_shape:
        count *= d
    if axis == "tensor":
        want = 1
    elif not t["shape"]:
        raise FormatError(f"{where}: scale axis {axis} needs a tensor with a dimension")
    else:
        want = t["shape"][0] if axis == "rows" else row_elems(t["shape"])
    if count != want:
        raise FormatError(f"{where}: {count} scales, axis {axis} needs {want}")


FLT_ROUNDS_TO_INF = (2.0 - 2.0 ** -24) * 2.0 ** 127  # §6.4.2: |x| from here rounds to ±inf


def f32_bits_of(x: float) -> int:
    """The binary32 pattern of the double `x`, rounded to nearest even."""
    if x != x:
        return 0x7FC00000  # §6.4.2: every NaN product is canonical
    if abs(x) >= FLT_ROUNDS_TO_INF:
        return 0xFF800000 if x < 0 else 0x7F800000
    return struct.unpack("<I", struct.pack("<f", x))[0]


def dequantize(t: dict, q: bytes, q_dtype: str, scales: bytes, axis: str) -> bytes:  # §6.4.2
    """The F32 predictor. float(q) × s is exact in a double (8 × 24 bits);
    rounding that double to binary32 is then the one binary32 multiply."""
    r = row_elems(t["shape"])
    s = struct.unpack(f"<{len(scales) // 4}f", scales)
    out = bytearray(len(q) * 4)
    for e, code in enumerate(q):
        if q_dtype == "I8" and code >= 128:
            code -= 256
        k = 0 if axis == "tensor" else (e // r if axis == "rows" else e % r)
        struct.pack_into("<I", out, 4 * e, f32_bits_of(float(code) * s[k]))
    return bytes(out)


def check_minor_features(header: dict, idx: dict) -> None:
    """§8.2: a file uses only variants that its `minor` defines."""
    if header["minor"] < 7:
        for table, is_base in ((idx["bases"], True), (idx["tensors"], False)):
            for t in table:
                if "chunk_sha256" in t["payload"]:
                    raise FormatError(f"{tname(t, is_base)}: chunk digests (v1.7) "
                                      f"in a minor {header['minor']} file")
    if header["minor"] < 6:
        for table, is_base in ((idx["bases"], True), (idx["tensors"], False)):
            for t in table:
                for i, c in enumerate(t["payload"].get("chunks", [])):
                    if any(p["codec"] in ("rans32", "rans-base32") for p in c["values"].get("planes", [])):
                        raise FormatError(f"{tname(t, is_base)} chunk {i}: a 32-state rans plane (v1.6) "
                                          f"in a minor {header['minor']} file")
    if header["minor"] < 5:
        for t in idx["tensors"]:
            if t["base"]["kind"] in ("inline_slices", "external_slices"):
                raise FormatError(f"{tname(t, False)}: a sliced base (v1.5) in a minor {header['minor']} file")
    if header["minor"] < 4:
        for table, is_base in ((idx["bases"], True), (idx["tensors"], False)):
            for t in table:
                for i, c in enumerate(t["payload"].get("chunks", [])):
                    if c["op"] == "replace-rot":
                        raise FormatError(f"{tname(t, is_base)} chunk {i}: op ReplaceRot (v1.4) "
                                          f"in a minor {header['minor']} file")
    if header["minor"] < 2:
        for t in idx["tensors"]:
            if t["base"]["kind"] in ("inline_rows", "external_rows",
                                     "inline_dequant", "external_dequant"):
                raise FormatError(f"{tname(t, False)}: a row-mapped or quantized base (v1.2) "
                                  f"in a minor {header['minor']} file")
        for table, is_base in ((idx["bases"], True), (idx["tensors"], False)):
            for t in table:
                for i, c in enumerate(t["payload"].get("chunks", [])):
                    if any(p["codec"] == "rans-base" for p in c["values"].get("planes", [])):
                        raise FormatError(f"{tname(t, is_base)} chunk {i}: a rans-base plane (v1.2) "
                                          f"in a minor {header['minor']} file")
    if header["minor"] >= 1:
        return
    for table, is_base in ((idx["bases"], True), (idx["tensors"], False)):
        for t in table:
            if t["base"]["kind"] in ("inline_widened", "external_widened"):
                raise FormatError(f"{tname(t, is_base)}: a widened base (v1.1) in a minor 0 file")
            p = t["payload"]
            for i, c in enumerate(p.get("chunks", [])):
                if "planes" in (c["positions"]["codec"], c["values"]["codec"]):
                    raise FormatError(f"{tname(t, is_base)} chunk {i}: a per-plane stream (v1.1) in a minor 0 file")
                if c["op"] == "add-zigzag":
                    raise FormatError(f"{tname(t, is_base)} chunk {i}: op AddZigzag (v1.1) in a minor 0 file")


def check_layout(data: bytes, header: dict, idx: dict) -> None:  # §3.3
    blobs = []
    for t in idx["bases"] + idx["tensors"]:
        p = t["payload"]
        if p["kind"] == "plain":
            if p["len"] > 0:
                blobs.append((p["offset"], p["len"]))
        else:
            blobs.extend((c["offset"], c["stored_len"]) for c in p["chunks"] if c["stored_len"] > 0)
    blobs.sort()
    cursor = HEADER_LEN

    def padding(cursor: int, nxt: int) -> None:
        if nxt < cursor:
            raise FormatError(f"layout: blob at {nxt} overlaps the previous blob or the header")
        if nxt != align_up(cursor):
            raise FormatError(f"layout: gap at {cursor}: next blob is not at the next 64-byte boundary")
        if nxt > len(data):
            raise FormatError(f"layout: blob at {nxt} past the end of the file")
        if any(data[cursor:nxt]):
            raise FormatError(f"layout: padding at {cursor} is not zero")

    for off, ln in blobs:
        padding(cursor, off)
        cursor = off + ln
        if cursor > header["index_offset"]:
            raise FormatError(f"layout: blob at {off} runs into the index")
    padding(cursor, header["index_offset"])


# ---- §5.3-§5.5, §6: codecs ----------------------------------------------------

def decode_stream(s: dict, stored: bytes, base_ctx: bytes | None = None) -> bytes:
    """`base_ctx`: the base context of §5.7 (v1.2), for "rans-base" planes."""
    raw_len = s["raw_len"]
    if s["codec"] == "raw":
        if len(stored) != raw_len:
            raise FormatError("raw stream length differs from its declared length")
        return bytes(stored)
    if s["codec"] == "zstd":
        return decode_zstd(stored, raw_len)
    # §5.3 (v1.1): planes stored one after another, each raw, one zstd
    # frame, or a rANS plane (§5.6) whose context is the decoded plane k-1.
    planes = s["planes"]
    m = raw_len // len(planes)
    out = bytearray()
    at = 0
    prev = None
    for k, p in enumerate(planes):
        piece = stored[at:at + p["stored_len"]]
        at += p["stored_len"]
        if len(piece) != p["stored_len"]:
            raise FormatError(f"plane {k} runs past the stream")
        if p["codec"] == "raw":
            if len(piece) != m:
                raise FormatError(f"raw plane {k} is not {m} bytes")
            plane = bytes(piece)
        else:
            try:
                if p["codec"] == "zstd":
                    plane = decode_zstd(piece, m)
                elif p["codec"] in ("rans-base", "rans-base32"):  # §5.7 (v1.2)
                    if base_ctx is None or len(base_ctx) != m:
                        raise FormatError("a rans-base plane needs the base context")
                    plane = decode_rans_plane(piece, m, base_ctx, RANS_LANES[p["codec"]])
                else:
                    plane = decode_rans_plane(piece, m, prev, RANS_LANES[p["codec"]])
            except FormatError as e:
                raise FormatError(f"plane {k}: {e}") from None
        out += plane
        prev = plane
    if at != len(stored):
        raise FormatError("bytes left after the last plane")
    return bytes(out)


def decode_zstd(stored: bytes, raw_len: int) -> bytes:
    """§5.3: exactly one zstd frame of exactly `raw_len` bytes."""
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd frame header is corrupt: {e}") from None
    if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, raw_len):
        raise FormatError("zstd frame declares a size other than the stream's raw length")
    # Feed the frame in small pieces so output can never run far past raw_len
    # (a zstd block expands at most to 128 KiB), and stop at the frame's end.
    d = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    step = 64
    try:
        for i in range(0, len(stored), step):
            out += d.decompress(stored[i:i + step])
            if len(out) > raw_len:
                raise FormatError("zstd frame is larger than declared")
            if d.eof:
                if d.unused_data or i + step < len(stored):
                    raise FormatError("bytes after the end of the zstd frame")
                break
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd frame is corrupt: {e}") from None
    if not d.eof:
        raise FormatError("zstd frame is truncated")
    if len(out) != raw_len:
        raise FormatError("zstd frame is shorter than declared")
    return bytes(out)


# ---- §5.6 (v1.1): rANS planes -------------------------------------------------

RANS_L = 1 << 16  # §5.6.5: the state interval's lower bound, and the final state
# What the rANS planes decoded so far used (reported under "rans" with --json,
# so the tests can see which paths of §5.6 this reader took).
RANS_STATS = {"planes": 0, "modes": {"0": 0, "1": 0, "2": 0}, "with_context": 0, "scales": [], "max_buckets": 0}


def decode_rans_plane(S: bytes, m: int, C: bytes | None, lanes: int = 4) -> bytes:
    """§5.6: a coded plane `S` decoded to exactly `m` bytes; `C` is the
    context plane (the decoded plane k-1 of the same stream), None for plane 0;
    `lanes` the interleaved states the plane codec says it has (§5.6.4)."""
    if len(S) == 0:  # §5.6.1 (the index already refuses stored_len 0)
        raise FormatError("empty rans plane")
    mode = S[0]
    if mode <= 2:
        RANS_STATS["planes"] += 1
        RANS_STATS["modes"][str(mode)] += 1
    if mode == 0:  # raw
        if len(S) - 1 != m:
            raise FormatError(f"raw-mode rans plane holds {len(S) - 1} bytes, not {m}")
        return bytes(S[1:])
    if mode == 1:  # constant
        if len(S) != 2:
            raise FormatError("constant-mode rans plane is not exactly one byte")
        return bytes(S[1:2]) * m
    if mode != 2:
        raise FormatError(f"rans plane mode {mode} unknown")
    pos = 1

    def byte() -> int:
        nonlocal pos
        if pos >= len(S):
            raise FormatError("rans plane ends inside its header or tables")
        v = S[pos]
        pos += 1
        return v

    # §5.6.2 header.
    scale = byte()
    if not 8 <= scale <= 15:
        raise FormatError(f"rans scale {scale} not in 8..=15")
    M = 1 << scale
    B = byte()
    if not 1 <= B <= 16:
        raise FormatError(f"rans bucket count {B} not in 1..=16")
    cuts = [0]
    for _ in range(B - 1):
        c = byte()
        if c <= cuts[-1]:
            raise FormatError("rans bucket cuts not strictly increasing")
        cuts.append(c)
    if B > 1 and (C is None or len(C) != m):
        raise FormatError("rans plane with context buckets but no context plane")
    if scale not in RANS_STATS["scales"]:
        RANS_STATS["scales"] = sorted(RANS_STATS["scales"] + [scale])
    RANS_STATS["max_buckets"] = max(RANS_STATS["max_buckets"], B)
    RANS_STATS["with_context"] += B > 1
    # Context byte -> bucket: the number of cuts <= the byte.
    bucket_of = [0] * 256
    for t, c in enumerate(cuts[1:], start=1):
        for v in range(c, 256):
            bucket_of[v] = t
    # §5.6.3: one table per bucket, laid end to end so that bucket t's
    # slot -> symbol map starts at t << scale and its symbol -> (f, start)
    # entries at t << 8.
    sym_all = bytearray()
    freq_all: list[int] = []
    start_all: list[int] = []
    for _ in range(B):
        R = byte()
        if not 1 <= R <= 128:
            raise FormatError(f"rans table run count {R} not in 1..=128")
        present: list[int] = []
        p = 0
        for r in range(R):
            gap = byte()
            len1 = byte()
            if r > 0 and gap == 0:
                raise FormatError("rans table runs not separated by an absent symbol")
            p += gap
            if p + len1 + 1 > 256:
                raise FormatError("rans table run past symbol 255")
            present.extend(range(p, p + len1 + 1))
            p += len1 + 1
        f = [0] * 256
        if len(present) == 1:
            f[present[0]] = M
        else:
            k = byte()
            if k > 14:
                raise FormatError(f"rans exp-Golomb order {k} > 14")
            acc = 0  # §5.6.3.3: bits, least significant first
            nbits = 0

            def bits(w: int) -> int:
                nonlocal acc, nbits
                while nbits < w:
                    acc |= byte() << nbits
                    nbits += 8
                v = acc & ((1 << w) - 1)
                acc >>= w
                nbits -= w
                return v

            total = 0
            for s in present[:-1]:
                q = 0
                while bits(1) == 1:
                    q += 1
                    if q > scale:
                        raise FormatError("rans frequency code too long")
                u = (1 << q) + bits(q)
                v = ((u - 1) << k) + bits(k)
                total += v + 1
                if total >= M:
                    raise FormatError("rans frequencies reach the table total before the last symbol")
                f[s] = v + 1
            if acc != 0:
                raise FormatError("rans table padding bits not zero")
            f[present[-1]] = M - total
        start = [0] * 256
        acc_f = 0
        for s in range(256):
            start[s] = acc_f
            acc_f += f[s]
        sym_all += b"".join(bytes((s,)) * f[s] for s in present)
        freq_all += f
        start_all += start
    # §5.6.4 states and words.
    if pos + 4 * lanes > len(S):
        raise FormatError("rans plane ends inside its states")
    xs = list(struct.unpack_from(f"<{lanes}I", S, pos))
    pos += 4 * lanes
    if min(xs) < RANS_L:
        raise FormatError("rans state below 2^16")
    if (len(S) - pos) % 2:
        raise FormatError("rans plane has an odd number of word bytes")
    nw = (len(S) - pos) // 2
    words = struct.unpack_from(f"<{nw}H", S, pos)
    # §5.6.5 decoding, `lanes` interleaved lanes (the 4-lane loop is
    # unrolled for speed; 32 lanes take the general loop). Each step is
    #   slot = x & mask; s = symbol of slot; x = f[s] * (x >> scale) + slot - start[s]
    #   and, if x < L, x = (x << 16) | next word.
    mask = M - 1
    L = RANS_L
    out = bytearray(m)
    wp = 0
    if B > 1:
        soff = [bucket_of[c] << scale for c in range(256)]
        ioff = [bucket_of[c] << 8 for c in range(256)]
    else:
        soff = ioff = [0] * 256
        C = bytes(m)
    sym, fr, st = sym_all, freq_all, start_all
    try:
        full = m - m % 4 if lanes == 4 else 0
        x0, x1, x2, x3 = xs[:4]
        for i in range(0, full, 4):
            c = C[i]
            slot = x0 & mask
            s = sym[soff[c] | slot]
            e = ioff[c] | s
            out[i] = s
            x0 = fr[e] * (x0 >> scale) + slot - st[e]
            if x0 < L:
                x0 = (x0 << 16) | words[wp]
                wp += 1
            c = C[i + 1]
            slot = x1 & mask
            s = sym[soff[c] | slot]
            e = ioff[c] | s
            out[i + 1] = s
            x1 = fr[e] * (x1 >> scale) + slot - st[e]
            if x1 < L:
                x1 = (x1 << 16) | words[wp]
                wp += 1
            c = C[i + 2]
            slot = x2 & mask
            s = sym[soff[c] | slot]
            e = ioff[c] | s
            out[i + 2] = s
            x2 = fr[e] * (x2 >> scale) + slot - st[e]
            if x2 < L:
                x2 = (x2 << 16) | words[wp]
                wp += 1
            c = C[i + 3]
            slot = x3 & mask
            s = sym[soff[c] | slot]
            e = ioff[c] | s
            out[i + 3] = s
            x3 = fr[e] * (x3 >> scale) + slot - st[e]
            if x3 < L:
                x3 = (x3 << 16) | words[wp]
                wp += 1
        if lanes == 4:
            xs = [x0, x1, x2, x3]
        for i in range(full, m):
            j = i % lanes
            c = C[i]
            slot = xs[j] & mask
            s = sym[soff[c] | slot]
            e = ioff[c] | s
            out[i] = s
            x = fr[e] * (xs[j] >> scale) + slot - st[e]
            if x < L:
                x = (x << 16) | words[wp]
                wp += 1
            xs[j] = x
    except IndexError:  # words[wp] past the last word
        raise FormatError("rans plane runs out of words") from None
    if wp != nw:
        raise FormatError(f"rans plane has {nw - wp} unread words after the last symbol")
    if xs != [L] * lanes:
        raise FormatError("rans final states are not 2^16")
    return bytes(out)


# ---- §6.2 (v1.1): exact widening on bit patterns ------------------------------

# (exponent bits, mantissa bits) of the IEEE binary formats.
IEEE = {"F16": (5, 10), "F32": (8, 23), "F64": (11, 52)}
WIDENINGS = {("BF16", "F32"), ("F16", "F32"), ("BF16", "F64"), ("F16", "F64"), ("F32", "F64")}


def widen_ieee(x: int, narrow: str, wide: str) -> int:
    """§6.2.2: an IEEE binary value's bits to the wider format's bits."""
    e_bits, m_bits = IEEE[narrow]
    E_bits, M_bits = IEEE[wide]
    sign = (x >> (e_bits + m_bits)) << (E_bits + M_bits)
    e = (x >> m_bits) & ((1 << e_bits) - 1)
    m = x & ((1 << m_bits) - 1)
    dm = M_bits - m_bits
    dbias = ((1 << (E_bits - 1)) - 1) - ((1 << (e_bits - 1)) - 1)
    if e == 0 and m == 0:  # signed zero
        return sign
    if e == 0:  # subnormal: normalize
        shift = m_bits - (m.bit_length() - 1)
        return sign | ((dbias + 1 - shift) << M_bits) | (((m << shift) & ((1 << m_bits) - 1)) << dm)
    if e == (1 << e_bits) - 1:  # infinity or NaN: payload shifted, never quieted
        return sign | (((1 << E_bits) - 1) << M_bits) | (m << dm)
    return sign | ((e + dbias) << M_bits) | (m << dm)


def widen_one(x: int, frm: str, to: str) -> int:  # §6.2.1
    if frm == "BF16":
        x, frm = x << 16, "F32"
    elif frm == "F16":
        x, frm = widen_ieee(x, "F16", "F32"), "F32"
    return x if to == "F32" else widen_ieee(x, "F32", "F64")


def widen(data: bytes, frm: str, to: str) -> bytes:
    fw, tw = DTYPES_BY_NAME[frm], DTYPES_BY_NAME[to]
    n = len(data) // fw
    vals = struct.unpack(f"<{n}{WORD[fw]}", data)
    cache = {}
    out = []
    for v in vals:
        r = cache.get(v)
        if r is None:
            r = cache[v] = widen_one(v, frm, to)
        out.append(r)
    return struct.pack(f"<{n}{WORD[tw]}", *out)


def from_planes(planes: bytes, w: int, m: int) -> bytearray:  # §5.4
    natural = bytearray(m * w)
    for k in range(w):
        natural[w - 1 - k::w] = planes[k * m:(k + 1) * m]
    return natural


def decode_positions(raw: bytes, count: int, limit: int) -> list[int]:  # §5.5
    out = []
    i = 0
    nxt = 0
    for _ in range(count):
        gap = 0
        shift = 0
        length = 0
        while True:
            if i >= len(raw):
                raise FormatError("positions stream ends early")
            b = raw[i]
            i += 1
            length += 1
            if length > 5:
                raise FormatError("position varint longer than 5 bytes")
            gap |= (b & 0x7F) << shift
            shift += 7
            if b & 0x80 == 0:
                break
        p = nxt + gap
        if p >= limit:
            raise FormatError("position past the end of the chunk")
        out.append(p)
        nxt = p + 1
    if i != len(raw):
        raise FormatError("trailing bytes after the last position")
    return out


def unzigzag(v: int, mask: int) -> int:  # §6.1 (v1.1)
    return (v >> 1) ^ (-(v & 1) & mask)


def rotr1(v: int, w: int) -> int:  # §6.1 (v1.4): rotate a w-byte word right by one bit
    bits = 8 * w
    return (v >> 1) | ((v & 1) << (bits - 1))


def combine(op: str, base: int, value: int, mask: int) -> int:  # §6.1
    w = (mask.bit_length() + 7) // 8
    if op == "replace-rot":
        return rotr1(value, w)
    if op == "xor":
        return base ^ value
    if op == "add":
        return (base + value) & mask
    if op == "add-zigzag":
        return (base + unzigzag(value, mask)) & mask
    return value


WORD = {1: "B", 2: "H", 4: "I", 8: "Q"}
DTYPES_BY_NAME = dict(DTYPES)


def decode_chunk(c: dict, w: int, stored: bytes, out: bytearray) -> None:
    """§5.2: `out` holds the base range on entry and the target range on return."""
    pos_len = c["positions"]["stored_len"]
    p_bytes, v_bytes = stored[:pos_len], stored[pos_len:]
    kind, op, n = c["kind"], c["op"], c["elem_count"]
    mask = (1 << (8 * w)) - 1
    if kind == "zero":
        return
    if kind == "dense":
        # §5.7 (v1.2): the base's last (most significant) byte of each element.
        ctx = bytes(out[w - 1::w])
        raw = decode_stream(c["values"], v_bytes, ctx)
        if len(raw) != n * w:
            raise FormatError("dense values length differs from the element count")
        values = from_planes(raw, w, n)
        if op == "replace-rot":  # §6.1 (v1.4)
            fmt = f"<{n}{WORD[w]}"
            out[:] = struct.pack(fmt, *(rotr1(y, w) for y in struct.unpack(fmt, values)))
        elif op == "replace":
            out[:] = values
        elif op == "xor":
            x = int.from_bytes(out, "little") ^ int.from_bytes(values, "little")
            out[:] = x.to_bytes(n * w, "little")
        else:
            fmt = f"<{n}{WORD[w]}"
            b = struct.unpack(fmt, out)
            v = struct.unpack(fmt, values)
            if op == "add-zigzag":
                v = [unzigzag(y, mask) for y in v]
            out[:] = struct.pack(fmt, *((x + y) & mask for x, y in zip(b, v)))
        return
    raw = decode_stream(c["positions"], p_bytes)
    positions = decode_positions(raw, c["changed"], n)
    ctx = bytes(out[p * w + w - 1] for p in positions)  # §5.7 (v1.2)
    raw = decode_stream(c["values"], v_bytes, ctx)
    m = len(positions)
    if len(raw) != m * w:
        raise FormatError("sparse values length differs from the position count")
    values = from_planes(raw, w, m)
    for j, p in enumerate(positions):
        b = int.from_bytes(out[p * w:(p + 1) * w], "little")
        v = int.from_bytes(values[j * w:(j + 1) * w], "little")
        out[p * w:(p + 1) * w] = combine(op, b, v, mask).to_bytes(w, "little")


# ---- external bases: safetensors files given with --base ---------------------

class Bases:
    """Tensors of the safetensors files (or directories of them) given by the user."""

    def __init__(self, paths: list[str]):
        self.tensors = {}
        for p in paths:
            files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".safetensors")) \
                if os.path.isdir(p) else [p]
            for f in files:
                self._load(f)

    def _load(self, path: str) -> None:
        with open(path, "rb") as fh:
            data = fh.read()
        if len(data) < 8:
            raise FormatError(f"{path}: not a safetensors file")
        (n,) = struct.unpack_from("<Q", data, 0)
        try:
            header = json.loads(data[8:8 + n])
        except ValueError as e:
            raise FormatError(f"{path}: bad safetensors header: {e}") from None
        start = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            if start + b > len(data) or a > b:
                raise FormatError(f"{path}: tensor {name!r} runs past the end of the file")
            self.tensors[name] = (info["dtype"], [int(d) for d in info["shape"]], data[start + a:start + b])

    def get(self, name: str):
        return self.tensors.get(name)


# ---- §9, §10: reconstruction ---------------------------------------------------

class Reader:
    def __init__(self, data: bytes, bases: Bases):
        self.data = data
        self.header = parse_header(data)
        self.index = parse_index(index_bytes(data, self.header))
        validate(data, self.header, self.index)
        self.bases = bases
        self.inline_cache = {}
        self.tensor_cache = {}

    def blob(self, offset: int, length: int, crc: int, where: str) -> bytes:  # §5.1.3
        b = self.data[offset:offset + length]
        computed = zlib.crc32(b)
        if computed != crc:
            raise FormatError(f"{where}: CRC mismatch (stored {crc:#010x}, computed {computed:#010x})")
        return b

    def reconstruct(self, t: dict, base: bytes, where: str) -> bytes:
        p = t["payload"]
        if p["kind"] == "plain":
            return bytes(self.blob(p["offset"], p["len"], p["crc32"], where))
        w = t["width"]
        out = bytearray(base)
        for i, c in enumerate(p["chunks"]):
            cw = f"{where} chunk {i}"
            lo, hi = c["elem_start"] * w, (c["elem_start"] + c["elem_count"]) * w
            stored = self.blob(c["offset"], c["stored_len"], c["crc32"], cw)
            piece = bytearray(out[lo:hi])
            try:
                decode_chunk(c, w, stored, piece)
            except FormatError as e:
                raise FormatError(f"{cw}: {e}") from None
            if "chunk_sha256" in p:  # (v1.7) §4.6.3, §9
                got = hashlib.sha256(piece).digest()
                if got != p["chunk_sha256"][i]:
                    raise FormatError(f"{cw}: reconstructs to sha256 {got.hex()}, "
                                      f"the archive recorded {p['chunk_sha256'][i].hex()}")
            out[lo:hi] = piece
        return bytes(out)

    def base_of(self, t: dict) -> bytes:  # §4.5, §9 step 1
        b = t["base"]
        n = elem_count(t)
        nbytes = n * t["width"]
        if b["kind"] == "none":
            return bytes(nbytes)
        if b["kind"] == "inline":
            return self.inline_base(b["index"])
        if b["kind"] == "inline_widened":
            bt = self.index["bases"][b["index"]]
            return widen(self.inline_base(b["index"]), bt["dtype"], t["dtype"])
        if b["kind"] == "external":
            return self.external_base(t, b, t["dtype"], nbytes)
        if b["kind"] in ("inline_rows", "inline_slices"):  # §6.3.2 (v1.2), §6.3.4 (v1.5)
            return row_predictor(t, self.inline_base(b["index"]), b)
        if b["kind"] == "inline_dequant":  # §6.4.2 (v1.2)
            qt = self.index["bases"][b["q"]]
            return dequantize(t, self.inline_base(b["q"]), qt["dtype"],
                              self.inline_base(b["scale"]), b["axis"])
        if b["kind"] == "external_dequant":
            count = 1
            for d in b["scale_shape"]:
                count *= d
            q = self.external_base(t, {"file": b["file"], "name": b["q_name"], "sha256": b["q_sha256"]},
                                   b["q_dtype"], n)
            s = self.external_base(t, {"file": b["file"], "name": b["scale_name"], "sha256": b["scale_sha256"]},
                                   "F32", 4 * count, b["scale_shape"])
            return dequantize(t, q, b["q_dtype"], s, b["axis"])
        if b["kind"] in ("external_rows", "external_slices"):
            bn = 1
            for d in b["shape"]:
                bn *= d
            data = self.external_base(t, b, t["dtype"], bn * t["width"], b["shape"])
            return row_predictor(t, data, b)
        narrow = self.external_base(t, b, b["dtype"], n * DTYPES_BY_NAME[b["dtype"]])
        return widen(narrow, b["dtype"], t["dtype"])

    def inline_base(self, i: int) -> bytes:
        """Inline base `i` reconstructed against zeros (in its own dtype)."""
        if i not in self.inline_cache:
            bt = self.index["bases"][i]
            data = self.reconstruct(bt, bytes(elem_count(bt) * bt["width"]), tname(bt, True))
            # §4.5: optional for readers; this one checks it.
            if hashlib.sha256(data).digest() != bt["sha256"]:
                raise FormatError(f"{tname(bt, True)}: reconstructs to another sha256 than recorded")
            self.inline_cache[i] = data
        return self.inline_cache[i]

    def external_base(self, t: dict, b: dict, dtype: str, nbytes: int, shape=None) -> bytes:
        """The supplied base tensor, checked against the record (§4.5): its
        dtype (the recorded narrow dtype for a widened base), shape, byte
        length and SHA-256."""
        bf = self.index["base_files"][b["file"]]
        got = self.bases.get(b["name"])
        if got is None:
            raise FormatError(
                f"tensor {t['name']!r} needs base tensor {b['name']!r} of base file {bf['name']!r} "
                f"(sha256 {bf['sha256'].hex()}): pass it with --base")
        got_dtype, got_shape, data = got
        want_shape = t["shape"] if shape is None else shape
        if got_dtype != dtype or got_shape != want_shape or len(data) != nbytes \
                or hashlib.sha256(data).digest() != b["sha256"]:
            raise FormatError(
                f"base tensor {b['name']!r} is not the one the archive was packed against "
                f"(expected sha256 {b['sha256'].hex()}, got {hashlib.sha256(data).hexdigest()})")
        return data

    def tensor(self, i: int) -> bytes:  # §9
        if i not in self.tensor_cache:
            self.tensor_cache[i] = self._tensor(i)
        return self.tensor_cache[i]

    def _tensor(self, i: int) -> bytes:
        t = self.index["tensors"][i]
        out = self.reconstruct(t, self.base_of(t), tname(t, False))
        got = hashlib.sha256(out).digest()
        if got != t["sha256"]:
            raise FormatError(f"{tname(t, False)}: reconstructs to sha256 {got.hex()}, "
                              f"the archive recorded {t['sha256'].hex()}")
        return out

    def files(self):
        """Yields (name, bytes) of every target file (§10.2) and extra file (§10.3), digests checked."""
        for f in self.index["files"]:
            parts = [struct.pack("<Q", len(f["header"])), f["header"]]
            parts.extend(self.tensor(ti) for ti in f["tensors"])
            body = b"".join(parts)
            got = hashlib.sha256(body).digest()
            if got != f["sha256"]:
                raise FormatError(f"file {f['name']!r}: reconstructs to sha256 {got.hex()}, "
                                  f"the archive recorded {f['sha256'].hex()}")
            yield f["name"], body
        for x in self.index["extra_files"]:
            got = hashlib.sha256(x["contents"]).digest()
            if got != x["sha256"]:
                raise FormatError(f"extra file {x['name']!r}: sha256 {got.hex()}, "
                                  f"the archive recorded {x['sha256'].hex()}")
            yield x["name"], x["contents"]


def row_predictor(t: dict, base: bytes, b: dict) -> bytes:  # §6.3.2 (v1.2), §6.3.4 (v1.5)
    """The target-sized predictor of a row-mapped or sliced base `b`: mapped
    rows copied from the base, the rest zero."""
    r = b["row_elems"] if b["kind"].endswith("_slices") else row_elems(t["shape"])
    rb = r * t["width"]
    out = bytearray(elem_count(t) * t["width"])
    for start, base_start, count in b["rows"]:
        out[start * rb:(start + count) * rb] = base[base_start * rb:(base_start + count) * rb]
    return bytes(out)


def describe_stream(s: dict) -> list:
    d = [s["stored_len"], s["raw_len"], s["codec"]]
    if s["codec"] == "planes":
        d.append([[p["stored_len"], p["codec"]] for p in s["planes"]])
    return d


def describe_tensor(t: dict) -> dict:
    p = t["payload"]
    d = {
        "name": t["name"], "dtype": t["dtype"], "shape": t["shape"], "sha256": t["sha256"].hex(),
        "base": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in t["base"].items()},
        "payload": p["kind"],
    }
    if p["kind"] == "plain":
        d.update(offset=p["offset"], len=p["len"], crc32=p["crc32"])
    else:
        d["chunk_elems"] = p["chunk_elems"]
        d["chunks"] = [[c["offset"], c["stored_len"], c["crc32"], c["elem_start"], c["elem_count"],
                        c["kind"], c["op"], c["changed"],
                        describe_stream(c["positions"]), describe_stream(c["values"])]
                       for c in p["chunks"]]
        if "chunk_sha256" in p:
            d["chunk_sha256"] = [x.hex() for x in p["chunk_sha256"]]
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Independent .tpde v1.0-v1.7 reader (spec/FORMAT.md).")
    ap.add_argument("archive")
    ap.add_argument("--base", action="append", default=[],
                    help="external base: a .safetensors file or a directory of them (repeatable)")
    ap.add_argument("--out", help="directory to write the reconstructed files into (created; must not exist)")
    ap.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    args = ap.parse_args(argv)
    if args.out and os.path.exists(args.out):
        sys.stderr.write(f"tpde_read: {args.out} exists\n")
        return 2
    try:
        with open(args.archive, "rb") as fh:
            data = fh.read()
        r = Reader(data, Bases(args.base))
        tensor_digests = {}
        for i, t in enumerate(r.index["tensors"]):
            tensor_digests[t["name"]] = hashlib.sha256(r.tensor(i)).hexdigest()
        out_files = {}
        written = []
        tmp = args.out + ".partial" if args.out else None
        if tmp:
            os.makedirs(tmp)
        for name, body in r.files():
            out_files[name] = hashlib.sha256(body).hexdigest()
            if tmp:
                with open(os.path.join(tmp, name), "wb") as fh:
                    fh.write(body)
                written.append(name)
        if tmp:
            os.rename(tmp, args.out)  # only after every digest checked (§10.4)
    except FormatError as e:
        sys.stderr.write(f"tpde_read: error: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"tpde_read: {e}\n")
        return 2
    h = r.header
    report = {
        "format_version": f"{h['major']}.{h['minor']}",
        "flags": h["flags"],
        "file_len": h["file_len"],
        "index_offset": h["index_offset"],
        "index_len": h["index_len"],
        "tensors": tensor_digests,
        "files": out_files,
        "base_files": [{"name": b["name"], "size": b["size"], "sha256": b["sha256"].hex()}
                       for b in r.index["base_files"]],
        "index": {
            "files": [{"name": f["name"], "size": f["size"], "sha256": f["sha256"].hex(),
                       "header_len": len(f["header"]), "tensors": f["tensors"]} for f in r.index["files"]],
            "extra_files": [x["name"] for x in r.index["extra_files"]],
            "bases": [describe_tensor(t) for t in r.index["bases"]],
            "tensors": [describe_tensor(t) for t in r.index["tensors"]],
        },
        "written": written,
        "rans": RANS_STATS,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(f"tpde {report['format_version']}: {len(tensor_digests)} tensors, "
              f"{len(out_files)} files, all digests match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
