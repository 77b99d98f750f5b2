#!/usr/bin/env python3
"""Regenerates the small real-data subsets the tests load (stdlib only).

Reads the full datasets that scripts/fetch-data.sh puts under data/ and writes the first N
samples of each split as gzipped IDX files with the standard names:

    tests/data/mnist-100/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    tests/data/fashion-100/...

The gzip stream is written deterministically (mtime 0, no file name, level 9), so running this
again reproduces the checked-in files byte for byte.

Usage: scripts/make-data-subsets.py [N]     (default N = 100)
"""

import gzip
import io
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("SNN_DATA_DIR", os.path.join(ROOT, "data"))
SETS = [("mnist", "mnist-100"), ("fashion-mnist", "fashion-100")]
STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def read_idx(src_dir, stem):
    """The bytes of `stem` under any of the usual names, gunzipped if gzipped."""
    dotted = stem.replace("-idx", ".idx", 1)
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                raw = f.read()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    sys.exit(f"error: no {stem} in {src_dir} (run scripts/fetch-data.sh first)")


def head(data, n):
    """The first `n` items of an IDX file of unsigned bytes, with the count rewritten."""
    magic, count = struct.unpack(">II", data[:8])
    if magic >> 8 != 0x08:
        sys.exit(f"error: not an unsigned-byte IDX file (magic 0x{magic:08x})")
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4 : 4 + 4 * nd])
    item = 1
    for d in dims[1:]:
        item *= d
    n = min(n, count)
    hdr = struct.pack(">I", magic) + struct.pack(">" + "I" * nd, n, *dims[1:])
    return hdr + data[4 + 4 * nd : 4 + 4 * nd + n * item]


def gzip_bytes(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for src, dst in SETS:
        src_dir = os.path.join(DATA, src)
        dst_dir = os.path.join(ROOT, "tests", "data", dst)
        os.makedirs(dst_dir, exist_ok=True)
        for stem in STEMS:
            out = gzip_bytes(head(read_idx(src_dir, stem), n))
            path = os.path.join(dst_dir, stem + ".gz")
            with open(path, "wb") as f:
                f.write(out)
            print(f"{os.path.relpath(path, ROOT)}: {len(out)} bytes")


if __name__ == "__main__":
    main()
