"""The bulk reader: ``logs -f`` streams read in their own process, byte-counted, no asyncio.

    python -m bench.reader --port P --pki DIR [--streams 1] [--stall 0] [--warmup 1] [--seconds 3]

Opens ``--streams`` TLS connections (the API server's kubelet-client certificate) with
``GET <path>`` (``--host`` names the node), plus ``--stall`` more that send the same request
and are never read, and counts each stream's body bytes (chunked framing parsed and not
counted) over ``--seconds`` after ``--warmup``. Prints one JSON object: per-stream bytes, the
window, MB/s. With ``--seconds 0`` it runs until killed and prints the aggregate MB/s once a
second (the bulk load beside an exec echo). Its own process, so the reading does not share the
measuring process's CPU (selectors + non-blocking ssl sockets: the cheapest reader Python has).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import ssl
import sys
import time
from pathlib import Path

from streamcerts import Layout, client_context


class Body:
    """Counts a response's body bytes: chunked (sizes parsed, framing not counted) or raw."""

    def __init__(self) -> None:
        self.head = b""
        self.in_head = True
        self.chunked = False
        self.left = 0  # body bytes left in the current chunk, then 2 for its CRLF
        self.pending = b""  # a partial chunk-size line

    def feed(self, data: bytes) -> int:
        if self.in_head:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return 0
            head, _, data = self.head.partition(b"\r\n\r\n")
            self.in_head = False
            self.chunked = b"chunked" in head.lower()
            if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        if not self.chunked:
            return len(data)
        counted, pos, size = 0, 0, len(data)
        while pos < size:
            if self.left > 2:
                take = min(self.left - 2, size - pos)
                counted += take
                self.left -= take
                pos += take
            elif self.left > 0:  # the chunk's CRLF
                take = min(self.left, size - pos)
                self.left -= take
                pos += take
            else:
                end = data.find(b"\n", pos)
                if end < 0:
                    self.pending += data[pos:]
                    break
                line = self.pending + data[pos:end]
                self.pending = b""
                pos = end + 1
                self.left = int(line.strip() or b"0", 16) + 2
        return counted


def open_stream(port: int, tls: ssl.SSLContext, path: str, host: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock = tls.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


def run(args: argparse.Namespace) -> dict[str, object]:
    layout = Layout(args.pki)
    tls = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
    tls.check_hostname = False
    streams = [open_stream(args.port, tls, args.path, args.host) for _ in range(args.streams)]
    stalled = [open_stream(args.port, tls, args.path, args.host) for _ in range(args.stall)]
    bodies = [Body() for _ in streams]
    counts = [0] * len(streams)
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(streams):
        sel.register(sock, selectors.EVENT_READ, i)
    began = time.monotonic()
    start = began + args.warmup
    stop = start + args.seconds if args.seconds > 0 else float("inf")
    tick, ticked = start, 0
    counting = False
    while True:
        now = time.monotonic()
        if now >= stop:
            break
        if not counting and now >= start:
            counting, counts = True, [0] * len(streams)
        if args.seconds <= 0 and now >= tick + 1.0:
            total = sum(counts)
            print(f"{(total - ticked) / (now - tick) / 1e6:.1f}", flush=True)
            tick, ticked = now, total
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            sock = streams[i]
            while True:  # until the socket and the TLS buffer are empty (bounded by the socket buffer)
                try:
                    data = sock.recv(1 << 18)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not data:
                    sel.unregister(sock)
                    break
                counts[i] += bodies[i].feed(data)
    elapsed = time.monotonic() - start
    for sock in streams + stalled:
        sock.close()
    return {"bytes": counts, "seconds": round(elapsed, 3), "MBps": round(sum(counts) / elapsed / 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--path", default="/containerLogs/default/bulk/app?follow=true")
    parser.add_argument("--host", default="bench-node")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--stall", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    print(json.dumps(run(parser.parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
