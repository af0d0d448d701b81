"""The edge's side of one tunnel: dispatches streams to the backend, owns their tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

from streamproto.aio import TunnelConnection
from streamproto.tunnel import (
    CloseRequested,
    DataReceived,
    FLOW_WINDOW,
    Event,
    Feature,
    MessageIgnored,
    MessageType,
    Mux,
    RenewalAnswer,
    RenewalAnswered,
    Role,
    StreamOpened,
    StreamRemoved,
    TunnelClosed,
    TunnelError,
)

from .backends.base import Backend
from .config import EdgeConfig
from .stream import EdgeStream

__all__ = ["AgentSession", "NodeDraining"]


class NodeDraining(TunnelError):
    """The edge is shutting down and takes no new streams."""

    error_status_hint = 503

logger = logging.getLogger(__name__)


class AgentSession(TunnelConnection):
    def __init__(self, ws: ClientConnection, config: EdgeConfig, features: frozenset[Feature], backend: Backend) -> None:
        # A window never outgrows a stream's inbound buffer (EdgeStream: 16 payloads).
        mux = Mux(Role.EDGE, features=features, max_payload=config.max_payload,
                  stream_window_max=max(FLOW_WINDOW, config.max_payload * 16))
        super().__init__(ws, mux, logging.LoggerAdapter(logger, {"node": config.node_name}))
        self.config = config
        self.features = features
        self.backend = backend
        self.streams: dict[int, EdgeStream] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.close_requested: str | None = None
        self.draining = False
        """Set on the first SIGTERM: new streams are refused, running ones finish."""
        self.idle = asyncio.Event()
        self.idle.set()
        self.removes_repeated = 0
        """REMOVE_CONNECTs for streams already closed (closes that crossed ours; a Go cloud repeats them until it sees ours)."""
        self.on_renewal_answer: Callable[[int, RenewalAnswer], None] | None = None
        """Set by the certificate renewal (``cert_renewal``) while it waits for an answer."""

    async def run(self) -> None:
        """Serve until the tunnel ends; then cancel every stream task and wait for them."""
        try:
            await self.run_reader()
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks.values()), timeout=self.config.drain_timeout)
            if self.removes_repeated:
                self.log.info("x ignored %d REMOVE_CONNECTs for streams already closed (both sides ended a "
                              "stream at once, or a Go cloudcore re-sent them until ours arrived)", self.removes_repeated)

    async def _send_quietly(self, message: bytes) -> None:
        if self.closed_reason is None:
            try:
                await self.send(message)
            except TunnelError:
                pass

    def data_nowait(self, connect_id: int, payload: memoryview) -> bool:
        stream = self.streams.get(connect_id)
        if stream is None:
            return False
        inbound = stream.inbound
        if self.deliver_direct(stream.direct, inbound.size, connect_id, payload):
            return True
        if inbound.size + len(payload) > inbound.high:
            return False  # the reader task waits for the backend (stall policy)
        inbound.feed(payload)
        return True

    async def handle_event(self, event: Event) -> None:
        match event:
            case StreamOpened(connect_id=cid, kind=kind, request=request):
                stream = EdgeStream(self, cid, kind, request)
                self.streams[cid] = stream
                self.idle.clear()
                serve = self._refuse_draining(stream) if self.draining else self._serve(stream)
                self._tasks[cid] = asyncio.create_task(serve, name=f"stream-{cid}")
            case DataReceived(connect_id=cid, data=data):
                known = self.streams.get(cid)
                if known is not None and known.inbound.feed(data):
                    await self._wait_for_slow_backend(known)
            case StreamRemoved(connect_id=cid):
                # Answer before the backend is torn down (cancel() only schedules; our REMOVE
                # goes out before that task runs again): a Go cloudcore re-sends its
                # REMOVE_CONNECT in a tight loop until it sees ours (spec kubeedge-tunnel §3.4 6b).
                answer = self.mux.close_stream(cid)
                known = self.streams.get(cid)
                if known is not None:
                    known.removed_by_peer = True
                    known.inbound.feed_eof()
                    task = self._tasks.get(cid)
                    if task is not None:  # the cloud is done with it: stop producing at once
                        task.cancel()
                if answer is not None:
                    await self._send_quietly(answer)
            case RenewalAnswered(request_id=rid, answer=answer):
                if self.on_renewal_answer is not None:
                    self.on_renewal_answer(rid, answer)
            case MessageIgnored(kind=MessageType.REMOVE_CONNECT):
                self.removes_repeated += 1  # a Go cloud's repeats: counted, never logged one by one
            case CloseRequested(reason=reason):
                self.close_requested = reason
                self.log.warning("! the cloud closed the tunnel: %s", reason)
                await self.ws.close()
            case _:
                pass

    async def _refuse_draining(self, stream: EdgeStream) -> None:
        await self._serve(stream, refuse=f"node {self.config.node_name} is draining: edgestream is shutting down")

    async def _wait_for_slow_backend(self, stream: EdgeStream) -> None:
        """The stream's inbound buffer is full: wait (this holds the tunnel reader, as a Go
        edge does) but only up to ``stall_timeout``; then end that stream alone."""
        try:
            async with asyncio.timeout(self.config.stall_timeout):
                await stream.inbound.wait_drained()
        except TimeoutError:
            self.log.warning(
                "! stream %d: the backend consumed nothing for %.0f s; ending that stream only",
                stream.connect_id, self.config.stall_timeout,
            )
            stream.inbound.feed_eof()
            task = self._tasks.get(stream.connect_id)
            if task is not None:
                task.cancel()

    async def _serve(self, stream: EdgeStream, refuse: str | None = None) -> None:
        cid = stream.connect_id
        outcome = "ok"
        try:
            if refuse is not None:
                raise NodeDraining(refuse)
            await self.backend.serve(stream)
        except asyncio.CancelledError:
            outcome = "cancelled by the cloud" if stream.removed_by_peer else "cancelled"
            if not stream.removed_by_peer:
                raise
        except TunnelClosed as exc:
            outcome = str(exc)
        except TunnelError as exc:
            outcome = f"error: {exc}"
            try:
                if not stream.answered:
                    await stream.answer(exc.error_status_hint, str(exc))
            except TunnelError:
                pass
        except Exception as exc:  # a backend bug must not take the tunnel down
            outcome = f"crash: {exc!r}"
            self.log.exception("! stream %d: backend crashed", cid)
            try:
                if not stream.answered:
                    await stream.answer(500, f"edgestream backend error: {exc}")
            except TunnelError:
                pass
        finally:
            self.streams.pop(cid, None)
            self._tasks.pop(cid, None)
            if not self._tasks:
                self.idle.set()
            message = self.mux.close_stream(cid)  # None when it was answered to the cloud's REMOVE
            if message is not None:
                await self._send_quietly(message)
            self.log.info(
                "stream %d %s %s: %s, %d bytes out, %.3fs",
                cid, stream.kind.name, _printable(stream.request.path), outcome, stream.bytes_out,
                time.monotonic() - stream.started,
            )


def _printable(text: str, limit: int = 300) -> str:
    """A peer-supplied string for one log line: control characters escaped, length capped."""
    if text.isprintable() and len(text) <= limit:
        return text
    return text[:limit].encode("unicode_escape").decode("ascii") + ("..." if len(text) > limit else "")
