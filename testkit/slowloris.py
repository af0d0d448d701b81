"""A slowloris the hostile tests and ``bench.hostile`` share: connections that each send a TLS
ClientHello a byte at a time and reconnect when the server closes them, so that ``count``
connections stay open (pending, unauthenticated) for as long as it runs."""

from __future__ import annotations

import asyncio
import errno
import socket

__all__ = ["PARTIAL_HELLO", "Trickle"]

PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01"
"""The start of a TLS ClientHello record: enough to make the server start a TLS handshake."""


class Trickle:
    """``count`` connections spread over ``ports`` and source addresses ``sources`` (other
    loopback addresses than the API server's and the edges', as attackers come from elsewhere),
    one byte every ``every`` seconds."""

    def __init__(self, ports: list[int], sources: list[str], count: int, every: float = 0.5) -> None:
        self.targets = [(sources[i % len(sources)], ports[i % len(ports)]) for i in range(count)]
        self.every = every
        self.socks: list[tuple[socket.socket, int] | None] = [None] * count
        self.reconnects = 0
        self.task: asyncio.Task[None] | None = None

    def _open(self, i: int) -> None:
        source, port = self.targets[i]
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            sock.close()
            return
        self.socks[i] = (sock, 0)

    def _lost(self, i: int, sock: socket.socket) -> None:
        sock.close()
        self.reconnects += 1
        self._open(i)

    def tick(self) -> None:
        """One round: (re)open what is closed, send each open connection its next byte."""
        for i, entry in enumerate(self.socks):
            if entry is None:
                self._open(i)
                continue
            sock, sent = entry
            try:
                if sock.recv(1024, socket.MSG_DONTWAIT) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                self._lost(i, sock)
                continue
            try:
                if sent < len(PARTIAL_HELLO):
                    sock.send(PARTIAL_HELLO[sent : sent + 1])
                    self.socks[i] = (sock, sent + 1)
            except BlockingIOError:
                pass
            except OSError:
                self._lost(i, sock)

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.close()

    def close(self) -> None:
        for entry in self.socks:
            if entry is not None:
                entry[0].close()
        self.socks = [None] * len(self.socks)
