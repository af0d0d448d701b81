"""One keepalive timer for every tunnel of a process, instead of one sleeping task each.

websockets gives each connection a ``keepalive`` task (``ping_interval``): 10,000 idle
tunnels cost 10,000 tasks, each waking every interval. ``Keepalive`` keeps one heap of
deadlines and one task that wakes every ``tick`` (0.5 s): when a tunnel's ping is due it sends the ping frame without waiting
(no ``drain()``: a stalled peer must not stall the others), and when its pong deadline
passes unanswered it fails that connection as websockets' own keepalive does (close code
1011, "keepalive ping timeout"), then aborts the TCP connection after ``close_timeout`` if
the close does not complete. Connections are added with ``ping_interval=None``.

It drives websockets' ``Connection`` through ``protocol``, ``send_data()`` and
``pending_pings`` (the map ``acknowledge_pings`` resolves when a pong arrives), the same
members ``Connection.ping()`` uses; checked against websockets 14-17.

The task starts with the first connection and ends when the last one is removed, so an
idle process holds no keepalive task at all.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import struct
from dataclasses import dataclass

from websockets.asyncio.connection import Connection
from websockets.frames import CloseCode
from websockets.protocol import State

__all__ = ["Keepalive", "shared_keepalive"]

logger = logging.getLogger(__name__)

_PING = 0
_PONG = 1


@dataclass(slots=True, eq=False)
class _Entry:
    interval: float
    timeout: float | None
    pings: int = 0


class Keepalive:
    """Pings every added connection each ``interval`` seconds (the first one after a random
    fraction of it, so that a thousand tunnels dialled together do not ping together)."""

    max_tick = 0.5
    """Seconds between wake-ups, at most; a tenth of the shortest interval when that is less."""

    def __init__(self, *, close_timeout: float = 2.0, max_batch: int = 1000) -> None:
        self.close_timeout = close_timeout
        self.max_batch = max_batch
        """Deadlines handled per wake-up before yielding to the loop (a bound, not a limit)."""
        self._entries: dict[Connection, _Entry] = {}
        self._heap: list[tuple[float, int, int, Connection, bytes]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._tick = self.max_tick
        self.pings_sent = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, ws: Connection, interval: float | None, timeout: float | None) -> None:
        """Keep ``ws`` alive (``interval`` None or <= 0: never ping it)."""
        if interval is None or interval <= 0:
            return
        loop = asyncio.get_running_loop()
        self._entries[ws] = _Entry(interval, timeout)
        self._tick = min(self._tick, interval / 10, (timeout or interval) / 10)
        first = loop.time() + interval * random.uniform(0.5, 1.0)
        self._push(first, _PING, ws)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="keepalive")

    def set_timeout(self, ws: Connection, timeout: float | None) -> None:
        entry = self._entries.get(ws)
        if entry is not None:
            entry.timeout = timeout

    def discard(self, ws: Connection) -> None:
        """Stop keeping ``ws`` alive; the last one out ends the task."""
        if self._entries.pop(ws, None) is None:
            return
        if not self._entries:
            self._heap.clear()
            self._tick = self.max_tick
            if self._task is not None:
                self._task.cancel()
                self._task = None

    def _push(self, when: float, kind: int, ws: Connection, payload: bytes = b"") -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, ws, payload))

    async def _run(self) -> None:
        """Wake once per ``tick`` (not once per deadline: a thousand tunnels would mean a hundred
        wake-ups a second) and handle everything due, a batch at a time."""
        loop = asyncio.get_running_loop()
        while self._heap:
            await asyncio.sleep(self._tick)
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                for _ in range(self.max_batch):
                    if not self._heap or self._heap[0][0] > now:
                        break
                    _, _, kind, ws, payload = heapq.heappop(self._heap)
                    entry = self._entries.get(ws)
                    if entry is None:
                        continue  # discarded: its heap entries die here
                    if ws.protocol.state is not State.OPEN:
                        self._entries.pop(ws, None)  # closing: websockets finishes it, no more pings
                        continue
                    if kind == _PING:
                        self._ping(ws, entry, now)
                    elif payload in ws.pending_pings:  # a pong acknowledges its ping and every earlier one
                        self._expire(ws, entry)
                await asyncio.sleep(0)  # never hold the loop for 10,000 pings

    def _ping(self, ws: Connection, entry: _Entry, now: float) -> None:
        entry.pings += 1
        payload = struct.pack("!II", id(entry) & 0xFFFFFFFF, entry.pings & 0xFFFFFFFF)
        if payload not in ws.pending_pings:
            ws.pending_pings[payload] = (ws.loop.create_future(), now)
            ws.protocol.send_ping(payload)
            try:
                ws.send_data()
            except Exception:  # the transport is gone: connection_lost() follows and ends the reader
                self._entries.pop(ws, None)
                return
            self.pings_sent += 1
            if entry.timeout is not None:
                self._push(now + entry.timeout, _PONG, ws, payload)
        self._push(now + entry.interval, _PING, ws)

    def _expire(self, ws: Connection, entry: _Entry) -> None:
        """No pong within the timeout: fail the connection as websockets' keepalive does."""
        self.timeouts += 1
        self._entries.pop(ws, None)
        if ws.debug:
            ws.logger.debug("- timed out waiting for keepalive pong")
        ws.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        try:
            ws.send_data()
        except Exception:
            pass
        # A blackholed peer never completes the close: abort after close_timeout, as send_context does.
        ws.loop.call_later(self.close_timeout, ws.transport.abort)


_SHARED: dict[asyncio.AbstractEventLoop, Keepalive] = {}


def shared_keepalive() -> Keepalive:
    """The running loop's ``Keepalive`` (one per loop: tests run many loops in one process)."""
    loop = asyncio.get_running_loop()
    found = _SHARED.get(loop)
    if found is None:
        for old in [old for old in _SHARED if old.is_closed()]:
            del _SHARED[old]
        found = _SHARED[loop] = Keepalive()
    return found
