"""One tunnel WebSocket driven through a ``Mux``: the reader loop and the sender.

Both sides use it: the cloud's ``EdgeSession`` and the edge's agent session subclass it and
implement ``handle_event``. Every message goes out as a WebSocket TEXT frame carrying bytes
(a Go cloud drops the tunnel on anything else) and never empty.

Misbehaviour: a malformed message is dropped alone and spends the tunnel's ``Budget``; once
spent, the tunnel is closed (code 1008 and a reason the peer sees). Warnings go through a
``RateLimitedLog`` (one line, then one counted summary per interval), never one per message;
ignored messages (unknown IDs, repeats) are only counted. All of it happens off the DATA path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ..tunnel.budget import Budget, ViolationCounter
from ..tunnel.errors import TunnelClosed
from ..tunnel.events import Event, MessageIgnored, ProtocolViolation, StreamRemoved, WindowUpdate
from ..tunnel.messages import MessageType
from ..tunnel.mux import Mux
from .ratelog import RateLimitedLog

__all__ = ["POLICY_VIOLATION", "TunnelConnection"]

POLICY_VIOLATION = 1008
"""The WebSocket close code (RFC 6455 7.4.1) a tunnel closed over its misbehaviour budget gets."""


class TunnelConnection:
    def __init__(
        self,
        ws: Connection,
        mux: Mux,
        logger: logging.LoggerAdapter[Any] | logging.Logger,
        *,
        budget: Budget | None = None,
        warnings: RateLimitedLog | None = None,
        peer: str = "the peer",
    ) -> None:
        """``warnings`` may be shared by many tunnels (the cloud shares one across its edges,
        so a peer that redials after each close still gets one line per interval); ``peer``
        names the other side in those lines ("node edge-1")."""
        self.ws = ws
        self.mux = mux
        self.log = logger
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self.closed_reason: str | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.messages_ignored = 0
        self.violations = ViolationCounter(budget if budget is not None else Budget())
        self.over_budget = False
        """Set when we closed the tunnel because the peer spent its misbehaviour budget."""
        self.warnings = warnings if warnings is not None else RateLimitedLog(logger)
        self.peer = peer
        self._credit_waiters: dict[int, asyncio.Event] = {}

    async def send(self, message: bytes | memoryview) -> None:
        """Send one tunnel message. Returns once websockets copied it into its buffer and
        the transport is below its write limit (the backpressure point)."""
        if self.closed_reason is not None:
            raise TunnelClosed(self.closed_reason)
        try:
            await self.ws.send(message, text=True)
        except ConnectionClosed as exc:
            raise TunnelClosed(str(exc)) from exc
        self.messages_out += 1

    async def send_data(self, connect_id: int, payload: bytes | memoryview) -> None:
        """DATA for one stream, split to the mux's payload limit, each piece sent when the
        stream has credit for it (flow feature; always at once with a Go peer)."""
        limit = self.mux.max_payload
        view = memoryview(payload) if len(payload) > limit else payload
        for start in range(0, len(payload), limit):
            chunk = view[start : start + limit]
            await self.wait_credit(connect_id, len(chunk))
            header = self.mux.data_header(connect_id, len(chunk))
            await self.send(header + chunk)  # one copy: header and payload must be contiguous

    async def wait_credit(self, connect_id: int, length: int) -> None:
        """Wait until the peer granted room for ``length`` bytes. Returns at once when the
        stream or the tunnel is gone: the send that follows then raises StreamClosed."""
        mux = self.mux
        while mux.credit(connect_id) < length:
            stream = mux.streams.get(connect_id)
            if stream is None or stream.state.value != "open" or self.closed_reason is not None:
                return
            waiter = self._credit_waiters.setdefault(connect_id, asyncio.Event())
            waiter.clear()
            await waiter.wait()

    async def grant(self, connect_id: int, length: int) -> None:
        """Our consumer took ``length`` bytes of the stream: give the peer room for more."""
        message = self.mux.consumed(connect_id, length)
        if message is not None and self.closed_reason is None:
            try:
                await self.send(message)
            except TunnelClosed:
                pass

    def _wake(self, connect_id: int) -> None:
        waiter = self._credit_waiters.get(connect_id)
        if waiter is not None:
            waiter.set()
            if connect_id not in self.mux.streams:
                del self._credit_waiters[connect_id]

    async def run_reader(self) -> None:
        """Read until the tunnel closes; feed the mux and hand its events on."""
        ws, mux = self.ws, self.mux
        try:
            while True:
                data = await ws.recv(decode=False)
                self.messages_in += 1
                mux.receive_message(data)
                for event in mux.events_received():
                    if isinstance(event, ProtocolViolation):
                        if self._misbehaved(event):
                            await self._close_over_budget()
                            return
                    elif isinstance(event, MessageIgnored):
                        self.messages_ignored += 1
                        # A Go cloud repeats REMOVE_CONNECT by the thousand: the edge counts those.
                        if self.debug and event.kind != MessageType.REMOVE_CONNECT:
                            self.log.debug("< ignored message %s for stream %d: %s", event.kind, event.connect_id, event.reason)
                    elif isinstance(event, WindowUpdate):
                        self._wake(event.connect_id)
                        continue
                    elif isinstance(event, StreamRemoved):
                        self._wake(event.connect_id)
                    await self.handle_event(event)
        except ConnectionClosed as exc:
            self.closed_reason = _describe_close(exc)
        finally:
            if self.closed_reason is None:
                self.closed_reason = "tunnel reader stopped"
            for waiter in self._credit_waiters.values():  # nobody waits for credit on a dead tunnel
                waiter.set()
            self._credit_waiters.clear()

    def _misbehaved(self, event: ProtocolViolation) -> bool:
        """Count one malformed message (rate-limited warning); True when over budget."""
        self.warnings.event(
            ("malformed", self.peer), "! %s sent a malformed tunnel message, dropped: %s", self.peer, event.error
        )
        return self.violations.spend(time.monotonic())

    async def _close_over_budget(self) -> None:
        counter = self.violations
        reason = (
            f"{counter.in_window} malformed tunnel messages within {counter.budget.window:g} s "
            f"(at most {counter.budget.max_violations} tolerated)"
        )
        self.closed_reason = f"closed by us (code {POLICY_VIOLATION}): {reason}"
        self.over_budget = True
        self.warnings.event(
            ("over budget", self.peer),
            "! closing the tunnel of %s: %s; %d malformed messages in all", self.peer, reason, counter.total,
        )
        # RFC 6455 7.1.7 "fail the connection": queue the close frame, then close TCP once it is
        # flushed, on both sides. A graceful close would wait close_timeout for the peer's close
        # frame, which sits behind its flood in a receive queue nobody reads any more.
        ws = self.ws
        if ws.protocol.state is State.OPEN:
            ws.protocol.fail(POLICY_VIOLATION, reason[:120])  # a close reason is at most 123 bytes
            ws.send_data()
        ws.transport.close()
        try:
            async with asyncio.timeout(ws.close_timeout or 10):
                await ws.wait_closed()
        except TimeoutError:
            ws.transport.abort()

    async def handle_event(self, event: Event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _describe_close(exc: ConnectionClosed) -> str:
    if exc.rcvd is None and exc.sent is None:
        return "connection lost (no close frame)"
    frame = exc.rcvd or exc.sent
    assert frame is not None
    return f"closed with code {frame.code}" + (f": {frame.reason}" if frame.reason else "")
