"""The raw TLS relay baseline: the same topology as the tunnel, nothing but bytes.

    python -m bench.baselines.raw_relay edge  --pki DIR                  # the generator "edge"
    python -m bench.baselines.raw_relay relay --pki DIR --upstream H:P   # the 10003-like relay

client -TLS-> relay -TLS-> edge. The edge reads a request head: ``/exec...`` gets
``HTTP/1.1 101`` and an echo of every byte; anything else gets ``HTTP/1.1 200`` and 1 KiB log
lines at full speed. The relay dials the edge once per client connection (no multiplexing, no
framing) and moves bytes with asyncio Protocols (``data_received`` -> ``transport.write``,
backpressure by pausing the other side's reading): the thinnest relay asyncio + uvloop
allow short of splice(2), which TLS on both hops rules out. Both print
``listening on 127.0.0.1:PORT`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from certs import Layout, client_context, server_context

from .common import LINE_SIZE, log_block, parse_hostport, ready, run


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


class Generator(asyncio.Protocol):
    """The "edge": log lines at full speed, or an echo for ``/exec``."""

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.head = b""
        self.mode = ""
        self.paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.mode == "echo":
            self.transport.write(data)
            return
        if self.mode:
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, _, rest = self.head.partition(b"\r\n\r\n")
        if b" /exec" in head.split(b"\r\n", 1)[0]:
            self.mode = "echo"
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\n\r\n" + rest)
        else:
            self.mode = "logs"
            self.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
            self.produce()

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
