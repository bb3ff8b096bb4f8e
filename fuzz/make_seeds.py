#!/usr/bin/env python3
"""Cuts fuzz seeds out of the recorded fixture: one file per distinct record
kind/size for `decode`, and the first records of the capture for `capture`."""
import os, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "..", "kindling-probe", "tests", "data", "loopback.kcap")
data = open(src, "rb").read()
assert data[:8] == b"KINDLING"
header_len = struct.unpack_from("<I", data, 14)[0]
off = 18 + header_len + 4
seen = set()
os.makedirs(os.path.join(here, "seeds", "decode"), exist_ok=True)
os.makedirs(os.path.join(here, "seeds", "capture"), exist_ok=True)
frames_end = []
while off + 8 <= len(data):
    length, crc = struct.unpack_from("<II", data, off)
    rec = data[off + 8: off + 8 + length]
    assert zlib.crc32(rec) == crc
    kind = struct.unpack_from("<H", rec, 0)[0]
    key = (kind, min(len(rec), 700) // 100)
    if key not in seen:
        seen.add(key)
        open(os.path.join(here, "seeds", "decode", f"kind{kind}-{len(rec)}"), "wb").write(rec)
    off += 8 + length
    frames_end.append(off)
open(os.path.join(here, "seeds", "capture", "first-records"), "wb").write(data[: frames_end[min(5, len(frames_end) - 1)]])
print(f"{len(seen)} decode seeds, 1 capture seed")
