"""A fast path in front of websockets' frame parser, for the tunnel's common case.

A Go edge sends every 256-byte tunnel message as its own WebSocket frame; websockets parses
each through a chain of generator coroutines, builds a ``Frame``, queues it for ``recv`` and
wakes a reader task: most of the cloud's CPU per message. ``FastFrames`` sits in the
connection's ``data_received``: complete, final, unfragmented TEXT/BINARY frames with no
RSV bits, masked as the side requires and within ``max_size``, are unmasked here and offered
to ``deliver``; while every frame is accepted, websockets never sees them.

At the first frame it does not take (a control frame, a fragment, anything odd, or a message
``deliver`` refuses because it would have to wait), it hands that frame and everything after
it to websockets, untouched: websockets then sees a stream that starts on a frame boundary,
as if the frames before it had never existed, and keeps its own checks and close handling.
The fast path comes back only when websockets' parser is idle at a frame boundary with an
empty buffer, no fragmented message open and the connection OPEN (``resume_possible``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.frames import apply_mask
from websockets.protocol import SERVER, State

__all__ = ["FastFrames"]


class FastFrames:
    __slots__ = ("_tail", "active", "deliver", "frames", "masked", "max_size", "ready", "ws", "ws_data_received")

    def __init__(self, ws: Any, deliver: Callable[[bytes | memoryview], bool], ready: Callable[[], bool]) -> None:
        self.ws = ws
        self.deliver = deliver
        """Takes one tunnel message; False: it must go the slow way (nothing was done)."""
        self.ready = ready
        """False while older messages still wait for the reader task (order must hold)."""
        protocol = ws.protocol
        self.masked = protocol.side is SERVER  # a client masks, a server does not (RFC 6455 5.1)
        self.max_size = protocol.max_message_size
        self.ws_data_received = ws.data_received
        self._tail = b""
        self.frames = 0
        """Frames taken by the fast path (for tests and measurements)."""
        self.active = self.resume_possible()
        ws.data_received = self.data_received

    def resume_possible(self) -> bool:
        """websockets' parser waits at a frame boundary with nothing buffered (internals of
        websockets 17, checked defensively: anything unexpected keeps the fast path off)."""
        protocol = self.ws.protocol
        if not self.ready() or protocol.state is not State.OPEN or protocol.reader.buffer or protocol.current_size is not None:
            return False
        waiting = protocol.parser  # the innermost generator it waits in (a server's parse() wraps the base one)
        for _ in range(8):
            inner = getattr(waiting, "gi_yieldfrom", None)
            if inner is None:
                break
            waiting = inner
        code = getattr(waiting, "gi_code", None)
        return code is not None and code.co_name == "at_eof"

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.ws_data_received(data)
            return
        if self._tail:
            data = self._tail + data
            self._tail = b""
        elif type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        n = len(data)
        pos = 0
        masked, max_size, deliver = self.masked, self.max_size, self.deliver
        taken = 0
        while n - pos >= 2:  # bounded: every turn consumes one whole frame or leaves
            head1 = data[pos]
            head2 = data[pos + 1]
            length = head2 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            opcode = head1 & 0x0F
            if (
                (head1 & 0xF0) != 0x80  # FIN and no RSV bits
                or (opcode != 1 and opcode != 2)
                or bool(head2 & 0x80) != masked
                or (max_size is not None and length > max_size)
            ):
                return self._give_up(data, pos, taken)
            if masked:
                end = start + 4 + length
                if end > n:
                    break
                message: bytes | memoryview = apply_mask(view[start + 4 : end], view[start : start + 4])  # type: ignore[arg-type]  # websockets' C apply_mask takes any buffer
            else:
                end = start + length
                if end > n:
                    break
                message = view[start:end]
            if not deliver(message):
                return self._give_up(data, pos, taken)
            taken += 1
            pos = end
        self.frames += taken
        if pos < n:
            self._tail = data[pos:]

    def _give_up(self, data: bytes, pos: int, taken: int) -> None:
        self.frames += taken
        self.active = False
        self.ws_data_received(data[pos:] if pos else data)
        if self.resume_possible():  # e.g. one ping, answered by websockets, and nothing else queued
            self.active = True

    def maybe_resume(self) -> None:
        if not self.active and self.resume_possible():
            self.active = True
