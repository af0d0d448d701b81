"""A userspace link between edge and cloud: one-way delay, rate and a bottleneck buffer per direction.

Kernel netem is absent on these machines, so this TCP proxy on 127.0.0.1 emulates the link the application
sees. Each direction is a model of a bottleneck followed by a wire:

- the bottleneck (rate and queue) of a direction is shared by every connection through the proxy, as on one
  real link; the delay applies to each. A chunk read at time ``t`` leaves the bottleneck at
  ``depart = max(t, previous depart) + len / rate`` (FIFO, paced; reads are cut into slices of a few
  milliseconds of the rate so pacing is smooth) and is written to the other side at
  ``depart + one_way_delay``. Timestamps are absolute, so the delay does not add up per read and
  throughput is the rate, not chunk / delay. Without a rate a chunk is written at ``t + one_way_delay``.
- the bottleneck queue (bytes not yet departed) is bounded by ``profile.buffer``: when it is full the proxy
  stops reading that side (``pause_reading``), so the sender sees TCP backpressure. The bytes on the wire
  (``rate * one_way_delay``) are held too, as a real wire holds them. If the receiver stops reading, delivered
  bytes pile up in the proxy and reading stops once ``buffer + rate * one_way_delay`` are held. Without a rate
  everything held counts against ``buffer`` (throughput is then at most ``buffer / one_way_delay``).
  Memory per direction per connection: at most that, plus one read (``READ_SIZE``) and the outgoing
  transport's write buffer (``WRITE_HIGH`` plus one batch of at most ``READ_SIZE``); the shared queue can
  overshoot ``buffer`` by one read per connection (each stops after the read that filled it).
- an EOF travels like data (after the bytes before it, half-close kept); an RST is not flow-controlled: it
  reaches the other side one delay after the proxy sees it (a socket not being read is polled for it every
  ``RST_POLL``), and the proxy resets that side too.

Residual kernel queueing, outside the emulated buffer: the proxy's own sockets get ``SO_RCVBUF`` and
``SO_SNDBUF`` of ``sock_buffer`` (the kernel doubles the value it is given; setting it also turns autotuning
off), so about 2 × ``sock_buffer`` can wait in the proxy's receive buffer before the proxy reads it, and as much
in its send buffer toward the receiver. The endpoints' own socket buffers (the sender's send buffer, the
receiver's receive buffer) are theirs to size (the tunnel bounds its unsent bytes with TCP_NOTSENT_LOWAT). When
the emulated queue is full, the bytes waiting in the proxy's receive buffer add up to ``2 * sock_buffer / rate``
of queueing delay (at most about 10 ms at 12.5 MB/s with the default 64 KiB; measured on wan-50ms-100mbit: a
ping beside a saturating bulk connection took 104.5 ms = 50 ms RTT + 50 ms full emulated queue + 4.5 ms); with
the link not saturated they add none. Below 48 KiB the loopback's 64 KiB MSS stalls the sender on a window
smaller than one segment (32 KiB carried 3.5 MB/s of a 12.5 MB/s link), so smaller values are refused.

The proxy splits TCP: it emulates application round trips (what credit windows see), not TCP's own congestion
window on a long path. Run it as its own process for benchmarks so its CPU does not share the measuring one::

    python -m testkit.link --listen 127.0.0.1:0 --upstream 127.0.0.1:PORT --profile wan-50ms-100mbit
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import sys
from typing import cast

from testkit.link_profiles import PROFILES, DirectionStats, LinkProfile, LinkStats

__all__ = ["PROFILES", "READ_SIZE", "DirectionStats", "LinkProfile", "LinkProxy", "LinkStats"]

READ_SIZE = 64 * 1024
"""The most one read takes from a socket."""
WRITE_HIGH = 64 * 1024
"""The outgoing transport's write-buffer high-water mark: above it the proxy stops writing (receiver is slow)."""
SOCK_BUFFER = 64 * 1024
"""Default SO_RCVBUF/SO_SNDBUF for the proxy's own sockets, so the queue that matters is the emulated one."""
PACING_SLICE = 0.004
"""Reads are cut into slices of this many seconds at the rate (between 4 and 64 KiB), so pacing is smooth."""
_EARLY = 0.0005
"""Deliver what is due within this much (the loop's timers fire about a millisecond late anyway)."""
RST_POLL = 0.02
"""How often a socket that is not being read is checked for a reset (an RST is not flow-controlled)."""


class _Direction:
    """One direction of the link, shared by every connection through it: the bottleneck's clock and counters."""

    __slots__ = ("last_depart", "bytes_in", "bytes_out", "max_held", "max_queue", "full")

    def __init__(self) -> None:
        self.last_depart = 0.0  # when the last byte queued at the bottleneck leaves it
        self.bytes_in = self.bytes_out = self.max_held = self.max_queue = self.full = 0


_EOF = object()
_RESET = struct.pack("ii", 1, 0)


def _rst(transport: asyncio.BaseTransport | None) -> None:
    """Close with an RST (SO_LINGER 0), as a peer that crashed or a middlebox that reset the path."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    cast(asyncio.Transport, transport).abort()


class _Pipe:
    """One direction of one connection: its chunks in order with their delivery times, and delivery on time.
    The bottleneck's clock is the direction's (``_Direction``), shared by every connection, as on a real link."""

    def __init__(self, link: LinkProxy, direction: _Direction, src: _Side, dst: _Side) -> None:
        self.link, self.dir, self.src, self.dst = link, direction, src, dst
        self.queue: collections.deque[tuple[float, object]] = collections.deque()
        self.held = 0
        self.last_deliver = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.resume_timer: asyncio.TimerHandle | None = None
        self.full = False
        self.done = False  # EOF delivered (or the receiving side is gone)

    def queue_bytes(self, now: float) -> int:
        rate = self.link.profile.rate
        return int((self.dir.last_depart - now) * rate) if rate and self.dir.last_depart > now else 0

    def feed(self, data: bytes) -> None:
        loop, p = self.link.loop, self.link.profile
        now = loop.time()
        n = len(data)
        self.dir.bytes_in += n
        if self.dst.gone:
            return
        if p.rate:
            step = max(4096, min(READ_SIZE, int(p.rate * PACING_SLICE)))
            view = memoryview(data)
            for i in range(0, n, step):
                piece = view[i : i + step]
                self.dir.last_depart = max(now, self.dir.last_depart) + len(piece) / p.rate
                self._append(self.dir.last_depart + p.one_way_delay, piece)
        else:
            self._append(now + p.one_way_delay, data)
        self.held += n
        c = self.dir
        c.max_held = max(c.max_held, self.held)
        c.max_queue = max(c.max_queue, self.queue_bytes(now))
        self._check_full(now)
        if self.timer is None and self.queue[0][0] <= now + _EARLY:
            self.deliver()  # lan fast path: no loop iteration per read
        else:
            self.arm()

    def feed_eof(self) -> None:
        if self.dst.gone:
            return
        self._append(self.link.loop.time() + self.link.profile.one_way_delay, _EOF)
        self.arm()

    def _append(self, at: float, item: object) -> None:
        at = max(at, self.last_deliver)  # FIFO even when the delay shrinks (set_profile)
        self.last_deliver = at
        self.queue.append((at, item))

    def _limits(self) -> tuple[int, int]:
        p = self.link.profile
        return p.buffer, p.buffer + p.wire

    def _check_full(self, now: float) -> None:
        buffer, hold = self._limits()
        if not self.full and (self.queue_bytes(now) >= buffer or self.held >= hold):
            self.full = True
            self.dir.full += 1
            self.src.pause("full")
        if self.full:
            self._maybe_resume(now)

    def _maybe_resume(self, now: float) -> None:
        buffer, hold = self._limits()
        slack = min(READ_SIZE, buffer // 4)  # hysteresis: not one pause/resume per read
        queued = self.queue_bytes(now)
        if queued <= buffer - slack and self.held <= hold - slack:
            self.full = False
            self.src.resume("full")
            return
        rate = self.link.profile.rate
        if queued > buffer - slack and rate and self.resume_timer is None:  # the queue drains on its own
            at = self.dir.last_depart - (buffer - slack) / rate
            self.resume_timer = self.link.loop.call_at(at, self._on_resume_timer)

    def _on_resume_timer(self) -> None:
        self.resume_timer = None
        if self.full:
            self._maybe_resume(self.link.loop.time())

    def arm(self) -> None:
        dst = self.dst  # one still connecting has no transport yet: its connection_made delivers
        ready = dst.transport is not None and not dst.write_paused and not self.link.blackholed
        if self.timer is None and self.queue and ready:
            self.timer = self.link.loop.call_at(self.queue[0][0], self.deliver)

    def deliver(self) -> None:
        """Write what is due, in batches of at most one read, while the receiving side takes it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.link.blackholed or self.dst.gone:
            return
        now = self.link.loop.time()
        queue, transport = self.queue, self.dst.transport
        while queue and queue[0][0] <= now + _EARLY and not self.dst.write_paused and transport is not None:
            batch: list = []
            size = 0
            while queue and queue[0][0] <= now + _EARLY and size < READ_SIZE:
                item = queue[0][1]
                if item is _EOF:
                    break
                queue.popleft()
                batch.append(item)
                size += len(item)  # type: ignore[arg-type]
            if batch:
                transport.write(batch[0] if len(batch) == 1 else b"".join(batch))
                self.held -= size
                self.dir.bytes_out += size
                continue
            queue.popleft()  # the EOF, after everything before it
            self.done = True
            if transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()
            self.src.conn.maybe_finish()
            return
        if self.full:
            self._maybe_resume(now)
        self.arm()

    def close(self) -> None:
        for t in (self.timer, self.resume_timer):
            if t is not None:
                t.cancel()
        self.timer = self.resume_timer = None
        self.queue.clear()
        self.held = 0


class _Side(asyncio.BufferedProtocol):
    """One of the proxy's two sockets for a connection (``client`` or ``upstream``)."""

    def __init__(self, conn: _Conn, name: str) -> None:
        self.conn, self.name = conn, name
        self.transport: asyncio.Transport | None = None
        self.view = memoryview(bytearray(READ_SIZE))
        self.out: _Pipe  # data read here
        self.inp: _Pipe  # data written here
        self.write_paused = False
        self.reasons: set[str] = set()  # why this side is not read: "full", "blackhole"
        self.made = self.gone = False

    def pause(self, reason: str) -> None:
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.conn.link._watch(self)
        self.reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.conn.link._paused.discard(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no subclass)
        self.transport, self.made = stream, True
        stream.set_write_buffer_limits(high=WRITE_HIGH)
        if self.reasons:
            stream.pause_reading()
            self.conn.link._watch(self)
        self.conn.side_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.out.feed(bytes(self.view[:nbytes]))

    def eof_received(self) -> bool:
        self.out.feed_eof()
        return True  # half-close: keep writing the other direction

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.inp.deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone, self.transport = True, None
        self.conn.link._paused.discard(self)
        self.inp.close()
        self.conn.side_lost(self, exc)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _rst(transport)


class _Conn:
    """A proxied connection: the client's socket, the upstream socket, a pipe each way."""

    def __init__(self, link: LinkProxy) -> None:
        self.link = link
        self.client, self.upstream = _Side(self, "client"), _Side(self, "upstream")
        self.up = _Pipe(link, link._up, self.client, self.upstream)
        self.down = _Pipe(link, link._down, self.upstream, self.client)
        self.client.out = self.upstream.inp = self.up
        self.client.inp = self.upstream.out = self.down
        self.task: asyncio.Task[None] | None = None
        self.lost: asyncio.TimerHandle | None = None  # a side failed: the reset is on its way to the other
        self.lost_arrived = False  # ... and reached a blackholed link: it passes when the link comes back
        self.closing = False
        self.finished: asyncio.Future[None] = link.loop.create_future()
        if link.blackholed:
            self.client.pause("blackhole")
            self.upstream.pause("blackhole")

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.task = self.link.loop.create_task(self._connect())
            self.task.add_done_callback(lambda _t: self._check_finished())
        else:
            self.up.deliver()

    async def _connect(self) -> None:
        link = self.link
        try:
            await link._open.wait()  # a blackholed link does not carry the SYN either
            async with asyncio.timeout(link.connect_timeout):
                host, port = link.upstream
                infos = await link.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, _, _, _, addr = infos[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    link._size_buffers(sock)
                    sock.setblocking(False)
                    await link.loop.sock_connect(sock, addr)
                    await link.loop.create_connection(lambda: self.upstream, sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except (OSError, TimeoutError):
            link.failed += 1
            self.abort(rst=True)  # as the upstream's refusal would reach the client

    def maybe_finish(self) -> None:
        if self.up.done and self.down.done and not self.closing:
            self.closing = True
            for side in (self.client, self.upstream):
                if side.transport is not None:
                    side.transport.close()  # both FINs went through: close once written

    def abort(self, *, rst: bool) -> None:
        self.closing = True
        if self.lost is not None:
            self.lost.cancel()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        for side in (self.client, self.upstream):
            side.inp.close()
            if rst:
                _rst(side.transport)
            elif side.transport is not None:
                side.transport.abort()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if not self.closing:
            other = self.upstream if side is self.client else self.client
            if self.task is not None and not self.task.done():
                self.task.cancel()
                _rst(other.transport)
            elif self.lost is None:  # an RST is not flow-controlled: one delay later, whatever is queued
                loop = self.link.loop
                self.lost = loop.call_at(loop.time() + self.link.profile.one_way_delay, self.lost_arrives)
        self._check_finished()

    def lost_arrives(self) -> None:
        self.lost_arrived = True
        if not self.link.blackholed:
            self.abort(rst=True)

    def _check_finished(self) -> None:
        up = self.upstream
        if self.client.gone and (up.gone or (not up.made and (self.task is None or self.task.done()))):
            if not self.finished.done():
                self.finished.set_result(None)
                if self.lost is not None:
                    self.lost.cancel()
                self.up.close()
                self.down.close()
                self.link._conns.discard(self)


class LinkProxy:
    """The link: ``async with LinkProxy(upstream=(host, port), profile=PROFILES["wan-50ms-100mbit"]) as link``,
    then dial ``127.0.0.1:link.port`` instead of the upstream."""

    def __init__(
        self,
        upstream: tuple[str, int],
        profile: LinkProfile | None = None,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        max_connections: int = 256,
        sock_buffer: int | None = SOCK_BUFFER,
        connect_timeout: float = 10.0,
    ) -> None:
        if sock_buffer is not None and sock_buffer < 48 * 1024:
            raise ValueError(f"sock_buffer {sock_buffer} B: below 48 KiB loopback's 64 KiB segments stall")
        self.upstream = upstream
        self.profile = profile or PROFILES["lan"]
        self.listen = listen
        self.max_connections = max_connections
        self.sock_buffer = sock_buffer
        self.connect_timeout = connect_timeout
        self.blackholed = False
        self.accepted = self.refused = self.failed = self.resets = 0
        self._up, self._down = _Direction(), _Direction()
        self._conns: set[_Conn] = set()
        self._paused: set[_Side] = set()  # sides not being read: polled for a reset
        self._poller: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        assert self._server is not None, "LinkProxy not started"
        return int(self._server.sockets[0].getsockname()[1])

    def _size_buffers(self, sock: socket.socket) -> None:
        if self.sock_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.sock_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sock_buffer)

    async def start(self) -> LinkProxy:
        host, port = self.listen
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._size_buffers(sock)  # accepted sockets inherit them, before the window scale is agreed
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
            self._server = await self.loop.create_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            raise
        return self

    def _watch(self, side: _Side) -> None:
        self._paused.add(side)
        if self._poller is None:
            self._poller = self.loop.call_later(RST_POLL, self._poll)

    def _poll(self) -> None:
        """A paused transport does not read, so it would not see its peer's RST: ask the socket."""
        self._poller = None
        for side in list(self._paused):
            sock = side.transport.get_extra_info("socket") if side.transport is not None else None
            if sock is None:
                self._paused.discard(side)
            elif sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._paused.discard(side)
                side.transport.abort()  # type: ignore[union-attr]  # connection_lost passes the reset on
        if self._paused:
            self._poller = self.loop.call_later(RST_POLL, self._poll)

    def _accept(self) -> asyncio.BaseProtocol:
        if len(self._conns) >= self.max_connections or self._server is None or not self._server.is_serving():
            self.refused += 1
            return _Refused()
        self.accepted += 1
        conn = _Conn(self)
        self._conns.add(conn)
        return conn.client

    def set_profile(self, profile: LinkProfile) -> None:
        """Applies to bytes read from now on; bytes already queued keep their times."""
        self.profile = profile
        now = self.loop.time()
        for conn in list(self._conns):
            for pipe in (conn.up, conn.down):
                if pipe.full:
                    pipe._maybe_resume(now)
                else:
                    pipe._check_full(now)

    def blackhole(self, on: bool = True) -> None:
        """Stop forwarding both ways (reads stop, queued bytes wait, new connections are not carried to the
        upstream) but keep every socket open; ``blackhole(False)`` resumes where it stopped."""
        if on == self.blackholed:
            return
        self.blackholed = on
        sides = [s for c in list(self._conns) for s in (c.client, c.upstream)]
        if on:
            self._open.clear()
            for s in sides:
                s.pause("blackhole")
            for s in sides:
                if s.inp.timer is not None:
                    s.inp.timer.cancel()
                    s.inp.timer = None
        else:
            self._open.set()
            for s in sides:
                s.resume("blackhole")
            for s in sides:
                s.inp.deliver()
            for conn in list(self._conns):
                if conn.lost_arrived and not conn.closing:
                    conn.abort(rst=True)

    def reset_all(self) -> int:
        """RST every proxied connection (both sockets, SO_LINGER 0); returns how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.abort(rst=True)
        self.resets += len(conns)
        return len(conns)

    def _direction(self, c: _Direction, pipes: list[_Pipe]) -> DirectionStats:
        return DirectionStats(
            c.bytes_in, c.bytes_out, sum(p.held for p in pipes), c.max_held, c.max_queue, c.full,
            sum(1 for p in pipes if p.full),
        )

    @property
    def stats(self) -> LinkStats:
        conns = list(self._conns)
        return LinkStats(
            self._direction(self._up, [c.up for c in conns]),
            self._direction(self._down, [c.down for c in conns]),
            len(conns), self.accepted, self.refused, self.failed, self.resets,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        conns = list(self._conns)
        for conn in conns:
            conn.abort(rst=False)
        if conns:
            await asyncio.wait([c.finished for c in conns], timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> LinkProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


if __name__ == "__main__":  # python -m testkit.link: the CLI lives beside, to keep this module the model
    from testkit.link_cli import main

    sys.exit(main())
