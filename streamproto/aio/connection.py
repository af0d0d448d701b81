"""One tunnel WebSocket driven through a ``Mux``: the reader loop and the sender.

Both sides use it: the cloud's ``EdgeSession`` and the edge's agent session subclass it and
implement ``handle_event``. Every message goes out as a WebSocket TEXT frame carrying bytes
(a Go cloud drops the tunnel on anything else) and never empty.

Misbehaviour: a malformed message is dropped alone and spends the tunnel's ``Budget``; once
spent, the tunnel is closed (code 1008 and a reason the peer sees). Warnings go through a
``RateLimitedLog`` (one line, then one counted summary per interval), never one per message;
ignored messages (unknown IDs, repeats) are only counted. All of it happens off the DATA path.

Sending: while nothing is queued and the transport is under its write limit, a message is
framed and written at once, in the caller (no task, no await). Otherwise it joins a
``SendQueue`` (urgent: control and exec/attach/port-forward; bulk: logs/metrics, byte-fair
among streams) and its sender waits; one pump task per backlog period writes the queue out
in that order each time the transport drains. So the order in which bytes reach the kernel
(whose unsent queue ``TCP_NOTSENT_LOWAT`` keeps short) is decided here, not by who came first.

Receive windows (flow): a ``BdpEstimator`` pings once per round trip while data flows and
sets the mux's window target (the path's bandwidth-delay product, shared by the streams that
carry data) and grant step; a ``Pacer`` sizes our DATA messages to the rate grants come back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, State

from ..tunnel.bdp import BdpEstimator, Pacer
from ..tunnel.budget import Budget, ViolationCounter
from ..tunnel.errors import TunnelClosed
from ..tunnel.events import DataReceived, Event, MessageIgnored, ProtocolViolation, StreamRemoved, WindowUpdate
from ..tunnel.features import FLOW_WINDOW, Feature
from ..tunnel.messages import MessageType
from ..tunnel.mux import Mux
from ..tunnel.sched import SendQueue
from .fastframes import FastFrames, TextFramer
from .ratelog import RateLimitedLog

__all__ = ["POLICY_VIOLATION", "TunnelConnection"]

POLICY_VIOLATION = 1008
"""The WebSocket close code (RFC 6455 7.4.1) a tunnel closed over its misbehaviour budget gets."""

_BULK_KINDS = frozenset({MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT})

# One queued message: [message or None once its sender gave up, the sender's future].
_Entry = list[Any]


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
        self.credit_stalls = 0
        """Times a sender waited for the peer's credit (flow feature)."""
        self.violations = ViolationCounter(budget if budget is not None else Budget())
        self.over_budget = False
        """Set when we closed the tunnel because the peer spent its misbehaviour budget."""
        self.warnings = warnings if warnings is not None else RateLimitedLog(logger)
        self.peer = peer
        self._credit_waiters: dict[int, asyncio.Event] = {}
        self._grants: set[asyncio.Future[None]] = set()
        """WINDOW sends ``grant_nowait`` had to leave to a task (the tunnel was busy)."""
        self._queue: SendQueue[_Entry] = SendQueue(mux.max_payload)
        self._pump: asyncio.Task[None] | None = None
        self._bdp: BdpEstimator | None = None
        self.pacer = Pacer(mux.max_payload)
        """The largest DATA message now: ``max_payload``, less on a slow path (flow feature)."""
        if Feature.FLOW in mux.features:
            self._bdp = BdpEstimator(FLOW_WINDOW, FLOW_WINDOW + mux.window_budget)
        self._pong: asyncio.Future[float] | None = None
        self._slow = False
        """Messages wait in websockets' queue for the reader: the fast path must not overtake them."""
        self._ws_process_event = getattr(ws, "process_event", None)
        self._fast: FastFrames | None = None
        if self._ws_process_event is not None:  # (unit tests build sessions without a socket)
            # Messages that came before us wait in websockets' queue: the reader goes first.
            self._slow = bool(ws.recv_messages.frames)
            ws.process_event = self._process_event  # type: ignore[method-assign,assignment]  # a connection hands only Frames
            self._fast = FastFrames(ws, self._deliver_now, lambda: not self._slow)
        self._framer: TextFramer | None = None
        if self._fast is not None and not ws.protocol.extensions:
            self._framer = TextFramer(masked=ws.protocol.side is CLIENT)

    # ------------------------------------------------------------------ receiving, fast path

    def data_nowait(self, connect_id: int, payload: memoryview) -> bool:
        """Deliver one DATA payload now if that needs no waiting (room in the stream's
        buffer); False sends the message the slow way, through the reader task."""
        return False

    def _deliver_now(self, data: bytes | memoryview) -> bool:
        """One tunnel message from ``FastFrames``: True when it was delivered at once."""
        if self._slow:
            return False
        stream = self.mux.open_data_stream(data)
        if stream is None:
            return False
        payload = memoryview(data)[2:]
        if not self.data_nowait(stream.connect_id, payload):
            return False
        stream.bytes_in += len(payload)
        self.messages_in += 1
        if self._bdp is not None:
            self._probe(self._bdp, len(data), stream.connect_id)
        return True

    def _process_event(self, event: Frame) -> None:
        """websockets hands every received frame here, inside ``data_received``. A complete
        DATA message for an open stream whose buffer has room is delivered on the spot: no
        queue, no reader wake-up, no event object (a Go edge sends 256-byte messages, so
        this is most of the cloud's per-message work). Anything else, or anything while
        older messages still wait for the reader, takes the ordinary path."""
        if not self._slow and event.fin and (event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY):
            data = event.data
            stream = self.mux.open_data_stream(data)
            if stream is not None:
                payload = memoryview(data)[2:]
                if self.data_nowait(stream.connect_id, payload):
                    stream.bytes_in += len(payload)
                    self.messages_in += 1
                    if self._bdp is not None:
                        self._probe(self._bdp, len(data), stream.connect_id)
                    return
        if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
            self._slow = True
        self._ws_process_event(event)  # type: ignore[misc]

    # ------------------------------------------------------------------ sending

    async def send(self, message: bytes | memoryview, bulk: int | None = None) -> None:
        """Send one tunnel message (``bulk``: the connect ID when it is bulk DATA). Returns
        once websockets framed it into the transport: at once when nothing waits and the
        transport is under its limit, else when the scheduler's turn came."""
        if self.closed_reason is not None:
            raise TunnelClosed(self.closed_reason)
        if not self._queue and not self.ws.paused:
            self._write(message)
            return
        entry: _Entry = [message, asyncio.get_running_loop().create_future()]
        if bulk is None:
            self._queue.push_urgent(entry)
        else:
            self._queue.push_bulk(bulk, entry, len(message))
        if self._pump is None:
            self._pump = asyncio.create_task(self._run_pump(), name="tunnel-writer")
        try:
            await entry[1]
        except asyncio.CancelledError:
            entry[0] = None  # not written yet: never (a sealed frame's buffer is the caller's again)
            raise

    def can_send_now(self) -> bool:
        """Nothing queued, the transport under its limit, the tunnel open: a write goes now."""
        return self.closed_reason is None and not self._queue and not self.ws.paused

    def send_now(self, message: bytes | memoryview) -> bool:
        """``send`` without waiting: True when the message went to websockets now (nothing
        queued, the transport under its limit), False when the caller must ``send``. Lets a
        protocol callback relay a keystroke with no task in between."""
        if not self.can_send_now():
            return False
        self._write(message)
        return True

    def can_send_data_now(self, connect_id: int, length: int) -> bool:
        """Credit for ``length`` bytes of ``connect_id``, and a tunnel ``send_now`` takes them."""
        return self.mux.credit(connect_id) >= length and self.can_send_now()

    def data_header_now(self, connect_id: int, length: int) -> bytes | None:
        """The DATA header for ``length`` bytes of ``connect_id`` (their credit taken) when they
        can go now (``can_send_data_now``); else None, nothing taken."""
        return self.mux.data_header(connect_id, length) if self.can_send_data_now(connect_id, length) else None

    def deliver_direct(self, direct: Callable[[memoryview], bool] | None, buffered: int, connect_id: int,
                       payload: memoryview) -> bool:
        """A stream whose reader waits with nothing ``buffered`` may take a payload in this
        callback (its ``direct``); the grant follows at once. False: deliver it the usual way."""
        if direct is None or buffered or not direct(payload):
            return False
        self.grant_nowait(connect_id, len(payload))  # a keystroke with no task in between
        return True

    def is_bulk(self, connect_id: int) -> int | None:
        """``connect_id`` when its stream is logs/metrics (for ``send``'s ``bulk``)."""
        stream = self.mux.streams.get(connect_id)
        return connect_id if stream is not None and stream.kind in _BULK_KINDS else None

    def _plain_framer(self) -> TextFramer | None:
        """Our framer, when a message may be framed by it now (what send_text + send_data do,
        for less): an open connection, no fragmented message under way."""
        framer, protocol = self._framer, self.ws.protocol
        if framer is not None and protocol.state is State.OPEN and not protocol.expect_continuation_frame:
            return framer
        return None

    def _write_data(self, header: bytes, payload: bytes | memoryview) -> bool:
        """``send``'s fast path for a DATA header and its payload, framed without joining them
        first (a `logs -f` is mostly this: one copy of every byte fewer). False: nothing done."""
        framer = self._plain_framer() if self.can_send_now() else None
        if framer is None:
            return False
        self.ws.transport.write(framer.frame(header, payload))
        self.messages_out += 1
        return True

    def _write(self, message: bytes | memoryview) -> None:
        ws = self.ws
        protocol = ws.protocol
        framer = self._plain_framer()
        if framer is not None:
            ws.transport.write(framer.frame(message))
            self.messages_out += 1
            return
        try:
            protocol.send_text(message)
        except InvalidState as exc:
            raise TunnelClosed(self.closed_reason or f"tunnel not open: {exc}") from exc
        ws.send_data()
        self.messages_out += 1

    async def _run_pump(self) -> None:
        """Write the queue out, in its order, as fast as the transport drains; end when empty."""
        ws, queue = self.ws, self._queue
        try:
            while queue:
                await ws.drain()
                if self.closed_reason is not None:
                    break
                while queue and not ws.paused:
                    entry = queue.pop()
                    assert entry is not None
                    message, done = entry
                    if message is None or done.done():
                        continue
                    try:
                        self._write(message)
                    except TunnelClosed as exc:
                        done.set_exception(exc)
                        raise
                    done.set_result(None)
        except (ConnectionClosed, OSError, TunnelClosed) as exc:
            self.closed_reason = self.closed_reason or f"tunnel write failed: {exc}"
        finally:
            self._pump = None
            if self.closed_reason is not None:
                self._fail_queued()

    def _fail_queued(self) -> None:
        for _, done in self._queue.drain():
            if not done.done():
                done.set_exception(TunnelClosed(self.closed_reason or "tunnel closed"))

    async def send_data(self, connect_id: int, payload: bytes | memoryview) -> None:
        """DATA for one stream, split to the pacer's piece (the mux's payload limit, or less on a
        slow path), each piece sent when the stream has credit for it (flow feature; always at
        once with a Go peer)."""
        limit = self.pacer.piece
        view = memoryview(payload) if len(payload) > limit else payload
        for start in range(0, len(payload), limit):
            chunk = view[start : start + limit]
            await self.wait_credit(connect_id, len(chunk))
            header = self.mux.data_header(connect_id, len(chunk))
            if not self._write_data(header, chunk):  # (else one copy: header and payload must be contiguous)
                await self.send(header + chunk, self.is_bulk(connect_id))

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
            self.credit_stalls += 1  # only when a sender must wait (the admin port's metrics)
            await waiter.wait()

    async def grant(self, connect_id: int, length: int) -> None:
        """Our consumer took ``length`` bytes of the stream: give the peer room for more."""
        message = self.mux.consumed(connect_id, length)
        if message is not None and self.closed_reason is None:
            try:
                await self.send(message)
            except TunnelClosed:
                pass

    def grant_nowait(self, connect_id: int, length: int) -> None:
        """``grant`` from a protocol callback: the WINDOW goes now, or (tunnel busy) from a task."""
        message = self.mux.consumed(connect_id, length)
        if message is None or self.closed_reason is not None:
            return
        try:
            if self.send_now(message):
                return
        except TunnelClosed:
            return
        task = asyncio.ensure_future(self.send(message))
        self._grants.add(task)
        task.add_done_callback(self._granted)

    def _granted(self, task: asyncio.Future[None]) -> None:
        self._grants.discard(task)
        if not task.cancelled():
            task.exception()  # a closed tunnel: nothing to grant to

    def _wake(self, connect_id: int) -> None:
        waiter = self._credit_waiters.get(connect_id)
        if waiter is not None:
            waiter.set()
            if connect_id not in self.mux.streams:
                del self._credit_waiters[connect_id]

    async def run_reader(self) -> None:
        """Read until the tunnel closes; feed the mux and hand its events on."""
        ws, mux, bdp = self.ws, self.mux, self._bdp
        try:
            while True:
                data = await ws.recv(decode=False)
                self.messages_in += 1
                mux.receive_message(data)
                if bdp is not None:  # (the stream: a DATA message's one-byte ID, the common case)
                    self._probe(bdp, len(data), data[0] if len(data) > 1 and data[1] == 3 and data[0] < 0x80 else -1)
                for event in mux.events_received():
                    if isinstance(event, DataReceived):
                        await self.handle_event(event)
                        continue
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
                        self.pacer.granted(event.increment, time.monotonic())
                        self._wake(event.connect_id)
                        continue
                    elif isinstance(event, StreamRemoved):
                        self._wake(event.connect_id)
                    await self.handle_event(event)
                if not ws.recv_messages.frames:  # caught up: the fast paths may deliver again
                    self._slow = False
                    if self._fast is not None:
                        self._fast.maybe_resume()
        except ConnectionClosed as exc:
            self.closed_reason = _describe_close(exc)
        finally:
            if self.closed_reason is None:
                self.closed_reason = "tunnel reader stopped"
            for waiter in self._credit_waiters.values():  # nobody waits for credit on a dead tunnel
                waiter.set()
            self._credit_waiters.clear()
            self._fail_queued()
            if self._pump is not None:
                self._pump.cancel()
            if self._pong is not None:
                self._pong.cancel()

    def _probe(self, bdp: BdpEstimator, length: int, stream: int) -> None:
        """One BDP sample per round trip: a WebSocket ping out, bytes counted until its pong
        is seen here, in the reader (so both ends of the sample are in message order)."""
        now = time.monotonic()
        pong = self._pong
        if pong is not None and pong.done():
            self._pong = None
            if not pong.cancelled() and pong.exception() is None:
                # (a stalled stream's full window says nothing of the others': only those of the sample)
                bdp.acknowledged(now, self.mux.waiting(bdp.carrying))
            self.mux.window_target = bdp.stream_target
            self.mux.grant_step = bdp.grant_step
        if bdp.received(length, now, stream):
            ws = self.ws
            payload = b"bdp%d" % bdp.samples
            try:
                # What ws.ping() does, minus its drain(): the reader must not wait on our writes.
                pong = ws.loop.create_future()
                ws.pending_pings[payload] = (pong, ws.loop.time())
                ws.protocol.send_ping(payload)
                ws.send_data()
                self._pong = pong
            except (InvalidState, TypeError, AttributeError):
                ws.pending_pings.pop(payload, None)
                bdp.abandon()

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
