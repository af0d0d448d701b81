"""Framing micro-benchmark: our zero-copy codec against a naive concatenating one.

Both read each payload from a source once (``readinto`` a reusable buffer vs ``read`` a new
bytes), build a tunnel message, and decode it on the other side. The naive codec does what
a first implementation does: ``header + payload`` (a copy) and ``message[pos:]`` (a copy).
Ours writes the header into headroom in front of the payload and decodes to a memoryview.
Measured in the same run; the ratio is what counts on these noisy 2-core machines.

    python -m bench.framing [--seconds 0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time

from streamproto.tunnel import FrameBuffer, MessageType, decode

SIZES = (256, 16 * 1024, 64 * 1024)


# ----------------------------------------------------------------------------- naive baseline


def naive_uvarint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes(((n & 0x7F) | 0x80,))
        n >>= 7
    return out + bytes((n,))


def naive_read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def naive_roundtrip(src: io.BytesIO, size: int, count: int, cid: int) -> int:
    moved = 0
    for _ in range(count):
        if src.tell() + size > len(src.getbuffer()):
            src.seek(0)
        payload = src.read(size)
        message = naive_uvarint(cid) + naive_uvarint(MessageType.DATA) + payload
        got_id, pos = naive_read_uvarint(message, 0)
        kind, pos = naive_read_uvarint(message, pos)
        data = message[pos:]
        moved += len(data)
    return moved


# ----------------------------------------------------------------------------- ours


def zero_copy_roundtrip(src: io.BytesIO, size: int, count: int, cid: int) -> int:
    frame = FrameBuffer(size)
    area = frame.writable()[:size]
    moved = 0
    for _ in range(count):
        if src.tell() + size > len(src.getbuffer()):
            src.seek(0)
        n = src.readinto(area)
        message = frame.seal(cid, MessageType.DATA, n)
        decoded = decode(message)
        moved += len(decoded.data)
    return moved


def measure(fn, size: int, seconds: float, cid: int) -> float:  # type: ignore[no-untyped-def]
    """Best-of-5 throughput in MB/s."""
    src = io.BytesIO(bytes(range(256)) * (4 * 1024 * 1024 // 256))
    count = max(10, int(200_000_000 / size / 50))
    fn(src, size, 10, cid)  # warm up
    best = 0.0
    for _ in range(5):
        began = time.perf_counter()
        moved = 0
        loops = 0
        while time.perf_counter() - began < seconds / 5:
            moved += fn(src, size, count // 20 or 1, cid)
            loops += 1
        best = max(best, moved / (time.perf_counter() - began) / 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    results = []
    print(f"framing round trip (read + encode + decode), python {platform.python_version()}, best of 5")
    print(f"{'payload':>9} {'connect id':>10} {'naive MB/s':>11} {'ours MB/s':>10} {'ratio':>7}")
    for size in SIZES:
        for cid in (5, 300_000):
            naive = measure(naive_roundtrip, size, args.seconds, cid)
            ours = measure(zero_copy_roundtrip, size, args.seconds, cid)
            ratio = ours / naive
            results.append({"payload": size, "connect_id": cid, "naive_mbps": naive, "ours_mbps": ours, "ratio": ratio})
            print(f"{size:>9} {cid:>10} {naive:>11.0f} {ours:>10.0f} {ratio:>6.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
