"""The raw TLS relay baseline: the same topology as the tunnel, nothing but bytes.

    python -m bench.baselines.raw_relay edge  --pki DIR                  # the generator "edge"
    python -m bench.baselines.raw_relay relay --pki DIR --upstream H:P   # the 10003-like relay

client -TLS-> relay -TLS-> edge. The edge reads a request head: ``/exec...`` with a WebSocket
upgrade gets its ``101`` and an echo of each stdin message on stdout (k8s channel framing, the
client ours uses); ``/exec...`` without one gets ``HTTP/1.1 101`` and an echo of every byte;
anything else gets ``HTTP/1.1 200`` and 1 KiB log lines at full speed. The relay dials the edge once per client connection (no multiplexing, no
framing) and moves bytes with asyncio Protocols (``data_received`` -> ``transport.write``,
backpressure by pausing the other side's reading): the thinnest relay asyncio + uvloop
allow short of splice(2), which TLS on both hops rules out. Both print
``listening on 127.0.0.1:PORT`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sys
from pathlib import Path

from streamcerts import Layout, client_context, server_context

from .common import LINE_SIZE, log_block, parse_hostport, ready, run


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Pipe(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def relay(listen: tuple[str, int], upstream: tuple[str, int], layout: Layout) -> None:
    loop = asyncio.get_running_loop()
    downstream_tls = server_context(layout.stream_cert, layout.stream_key, layout.stream_ca)
    upstream_tls = client_context(layout.ca_cert)
    upstream_tls.check_hostname = False

    async def link(client: Pipe) -> None:
        try:
            _, server = await loop.create_connection(Pipe, *upstream, ssl=upstream_tls, server_hostname="localhost")
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        assert isinstance(server, Pipe)
        client.peer, server.peer = server, client
        for data in client.early:
            server.transport.write(data)  # type: ignore[union-attr]
        client.early.clear()

    def accept() -> Pipe:
        client = Pipe()
        loop.create_task(link(client))
        return client

    server = await loop.create_server(accept, *listen, ssl=downstream_tls)
    ready(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await server.serve_forever()


def ws_accept(head: bytes) -> bytes:
    """The 101 for a k8s WebSocket exec (RFC 6455 accept key, v5 or v4 channel protocol)."""
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + WS_GUID).digest())
    offered = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").split(b",")]
    protocol = next((p for p in (b"v5.channel.k8s.io", b"v4.channel.k8s.io") if p in offered), offered[0])
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + protocol + b"\r\n\r\n")


class Generator(asyncio.Protocol):
    """The "edge": log lines at full speed; for ``/exec`` an echo: of k8s WebSocket stdin
    messages (the same client as ours) or, without an upgrade to websocket, of raw bytes."""

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.head = b""
        self.mode = ""
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self.ws = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.mode == "echo":
            self.transport.write(data)
            return
        if self.mode == "ws":
            self.ws += data
            self.ws_echo()
            return
        if self.mode:
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, _, rest = self.head.partition(b"\r\n\r\n")
        if b" /exec" in head.split(b"\r\n", 1)[0] and b"websocket" in head.lower():
            self.mode = "ws"
            self.transport.write(ws_accept(head))
            self.ws = bytearray(rest)
            self.ws_echo()
        elif b" /exec" in head.split(b"\r\n", 1)[0]:
            self.mode = "echo"
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\n\r\n" + rest)
        else:
            self.mode = "logs"
            self.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
            self.produce()

    def ws_echo(self) -> None:
        """Echo every stdin (channel 0) message back on stdout (channel 1), k8s WebSocket framing."""
        assert self.transport is not None
        buf = self.ws
        while len(buf) >= 6:
            b0, b1 = buf[0], buf[1]
            size, pos = b1 & 0x7F, 2
            if size == 126:
                size, pos = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                size, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + 4 + size:
                return
            mask = buf[pos:pos + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[pos + 4:pos + 4 + size]))
            del buf[:pos + 4 + size]
            opcode = b0 & 0x0F
            if opcode == 8:
                self.transport.write(b"\x88\x02\x03\xe8")
                self.transport.close()
                return
            if opcode == 9:
                self.transport.write(bytes((0x8A, len(payload))) + payload)
            elif opcode == 2 and payload[:1] == b"\x00" and len(payload) > 1:
                out = b"\x01" + payload[1:]
                self.transport.write(bytes((0x82, len(out))) + out if len(out) < 126 else
                                     bytes((0x82, 126)) + len(out).to_bytes(2, "big") + out)

    def produce(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for _ in range(64):  # bounded; pause_writing stops it, resume_writing starts it again
            if self.paused:
                return
            transport.write(self.block)
        asyncio.get_running_loop().call_soon(self.produce)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.mode == "logs":
            self.produce()


async def edge(listen: tuple[str, int], layout: Layout, line_size: int) -> None:
    loop = asyncio.get_running_loop()
    block = log_block(line_size)
    tls = server_context(layout.server_cert, layout.server_key, None)
    server = await loop.create_server(lambda: Generator(block), *listen, ssl=tls)
    ready(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["relay", "edge"])
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--upstream", help="relay: the edge's host:port")
    parser.add_argument("--line-size", type=int, default=LINE_SIZE)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ns = parser.parse_args(argv)
    layout = Layout(ns.pki)
    if ns.role == "relay":
        run(relay(parse_hostport(ns.listen), parse_hostport(ns.upstream), layout), ns.loop)
    else:
        run(edge(parse_hostport(ns.listen), layout, ns.line_size), ns.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
