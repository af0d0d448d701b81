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

import os
from collections.abc import Callable
from typing import Any

from websockets.frames import apply_mask
from websockets.protocol import SERVER, State

__all__ = ["FastFrames", "TextFramer", "simple_frames"]


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
        self._tail: bytes | memoryview = b""
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
        if type(data) is not bytes:
            data = bytes(data)
        tail = self._tail
        start = 0
        if tail:
            self._tail = b""
            end = _frame_end(tail)
            if end is None or end - len(tail) > len(data):  # (its header split, or the frame still incomplete)
                data = b"".join((tail, data))
            else:  # only the frame that straddled the reads is copied, not the whole read behind it
                start = end - len(tail)
                self._scan(b"".join((tail, memoryview(data)[:start])), 0)
                if not self.active:
                    self.ws_data_received(data[start:])
                    return
        self._scan(data, start)

    def _scan(self, data: bytes, pos: int) -> None:
        """Deliver the frames of ``data`` from ``pos``; keep a partial one for the next read."""
        view = memoryview(data)
        n = len(data)
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
            self._tail = view[pos:]  # (a view: the read stays alive until the frame completes, uncopied)

    def _give_up(self, data: bytes, pos: int, taken: int) -> None:
        self.frames += taken
        self.active = False
        self.ws_data_received(data[pos:] if pos else data)
        if self.resume_possible():  # e.g. one ping, answered by websockets, and nothing else queued
            self.active = True

    def maybe_resume(self) -> None:
        if not self.active and self.resume_possible():
            self.active = True


def _frame_end(head: bytes | memoryview) -> int | None:
    """The size of the WebSocket frame ``head`` starts with, once its header is all there."""
    n = len(head)
    if n < 2:
        return None
    length = head[1] & 0x7F
    size = 2 + (4 if head[1] & 0x80 else 0)
    if length == 126:
        if n < 4:
            return None
        length, size = (head[2] << 8) | head[3], size + 2
    elif length == 127:
        if n < 10:
            return None
        length, size = int.from_bytes(head[2:10], "big"), size + 8
    return size + length


class TextFramer:
    """Frames one tunnel message as websockets' ``send_text`` would (FIN, TEXT, no extension;
    masked when we are the client), without a ``Frame`` object, a ``BytesIO`` and a
    ``getrandom(2)`` per frame: mask keys come 4 bytes at a time from a pool of ``os.urandom``
    (RFC 6455 10.3 asks for keys a peer cannot predict, not for a system call each)."""

    __slots__ = ("_keys", "_at", "_mask_bit")

    POOL = 4096

    def __init__(self, masked: bool) -> None:
        self._mask_bit = 0x80 if masked else 0
        self._keys = b""
        self._at = self.POOL

    def frame(self, payload: bytes | memoryview, more: bytes | memoryview = b"") -> bytes:
        """The frame of one message: ``payload``, followed by ``more`` when given (a DATA
        header and its body, framed without first joining them: one copy of the body fewer)."""
        n = len(payload) + len(more)
        bit = self._mask_bit
        if n < 126:
            head = bytes((0x81, n | bit))
        elif n < 0x10000:
            head = bytes((0x81, 126 | bit, n >> 8, n & 0xFF))
        else:
            head = bytes((0x81, 127 | bit)) + n.to_bytes(8, "big")
        if not bit:
            return b"".join((head, payload, more)) if more else head + payload
        at = self._at
        if at >= self.POOL:
            self._keys, at = os.urandom(self.POOL), 0
        key = self._keys[at : at + 4]
        self._at = at + 4
        if not more:
            return head + key + apply_mask(payload, key)  # type: ignore[arg-type]  # (the C version takes any buffer)
        shift = len(payload) % 4  # ``more`` starts that far into the key's cycle
        return b"".join((head, key, apply_mask(payload, key),  # type: ignore[arg-type]
                         apply_mask(more, key[shift:] + key[:shift])))  # type: ignore[arg-type]


def simple_frames(data: bytes, masked: bool, max_size: int | None) -> tuple[list[bytes], int, bool]:
    """The messages of the complete, final, unfragmented TEXT/BINARY frames (no RSV bits, masked
    as given, at most ``max_size``) at the start of ``data``, unmasked; where they end; and
    whether parsing stopped at a frame that is not one of those (rather than at the end of
    ``data`` or an incomplete frame). What a peer sends almost always, cheaply; the caller hands
    anything else to websockets, from that frame boundary on."""
    messages: list[bytes] = []
    n, pos = len(data), 0
    view = memoryview(data)
    while n - pos >= 2:  # bounded: every turn takes one whole frame or leaves
        head1, head2 = data[pos], data[pos + 1]
        length, start = head2 & 0x7F, pos + 2
        if length == 126:
            if n - pos < 4:
                break
            length, start = (data[pos + 2] << 8) | data[pos + 3], pos + 4
        elif length == 127:
            if n - pos < 10:
                break
            length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        opcode = head1 & 0x0F
        if ((head1 & 0xF0) != 0x80 or (opcode != 1 and opcode != 2) or bool(head2 & 0x80) != masked
                or (max_size is not None and length > max_size)):
            return messages, pos, True
        end = start + 4 + length if masked else start + length
        if end > n:
            break
        messages.append(apply_mask(view[start + 4 : end], view[start : start + 4]) if masked  # type: ignore[arg-type]
                        else data[start:end])
        pos = end
    return messages, pos, False
