"""Ending an exec/attach that its tunnel cut: a ``metav1.Status`` on the error channel, then a close.

After the ``101`` cloudstream relays raw bytes, so when the edge dies the client would see a
bare TCP close: kubectl cannot tell a lost node from a command that ended. The kubelet ends a
failed exec by writing a Status on the error channel (channel 3) and closing, so we do the same,
when we can do it without corrupting the stream: this follows the edge -> client bytes just far
enough to know the 101's protocol and where each WebSocket frame ends (cheap: one header per
frame, nothing copied). If the cut fell inside a frame, or the edge already closed the
WebSocket, nothing is added.

SPDY (what kube-apiserver sends before 1.30, and for attach/exec from older kubectl) is not
covered: the error stream is one the *client* opened, its id is in a zlib-compressed
SYN_STREAM of the other direction, and a guessed frame in a binary session is worse than none.
"""

from __future__ import annotations

import base64
import struct

from streamproto.kube_status import status_json

__all__ = ["CutStatus"]

_STATUS_CHANNEL = {  # subprotocol -> (text frame + base64, payload is a Status, not plain text)
    "v5.channel.k8s.io": (False, True),
    "v4.channel.k8s.io": (False, True),
    "v4.base64.channel.k8s.io": (True, True),
    "channel.k8s.io": (False, False),
    "base64.channel.k8s.io": (True, False),
}
_MAX_HEAD = 16 * 1024
_HEAD, _FRAMES, _OFF = 0, 1, 2


class CutStatus:
    """Sans-I/O: ``feed`` every edge -> client chunk; ``ending(message)`` gives the bytes that end
    the client's stream properly after a cut, or ``b""`` when there is no safe way to."""

    __slots__ = ("_state", "_head", "_remaining", "_partial", "_protocol", "_closed")

    def __init__(self) -> None:
        self._state = _HEAD
        self._head = b""
        self._remaining = 0  # payload bytes of the current frame still to come
        self._partial = b""  # a frame header split across chunks
        self._protocol: str | None = None
        self._closed = False  # a close frame went by: the edge ended the WebSocket itself

    def feed(self, data: bytes | memoryview) -> None:
        if self._state == _OFF:
            return
        if self._state == _HEAD:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._state = _OFF
                return
            head, data = self._head[:end], self._head[end + 4:]
            self._head = b""
            self._protocol = _ws_protocol(head)
            if self._protocol not in _STATUS_CHANNEL:
                self._state = _OFF
                return
            self._state = _FRAMES
        self._frames(data)

    def _frames(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._remaining >= n and not self._partial:
            self._remaining -= n
            return
        view = memoryview(self._partial + data if self._partial else data)[self._remaining:]
        self._partial = b""
        self._remaining = 0
        i, n = 0, len(view)
        while i < n:
            if n - i < 2:
                self._partial = bytes(view[i:])
                return
            b0, b1 = view[i], view[i + 1]
            size, hdr = b1 & 0x7F, 2
            if size == 126:
                hdr = 4
            elif size == 127:
                hdr = 10
            if b1 & 0x80:
                hdr += 4
            if n - i < hdr:
                self._partial = bytes(view[i:])
                return
            if size == 126:
                size = struct.unpack_from("!H", view, i + 2)[0]
            elif size == 127:
                size = struct.unpack_from("!Q", view, i + 2)[0]
            if b0 & 0x0F == 0x8:
                self._closed = True
                self._state = _OFF
                return
            i += hdr + size
        self._remaining = i - n  # the last frame's payload runs past this chunk

    def ending(self, message: str) -> bytes:
        """The frames to write after a cut: Status (or text) on channel 3, then a close (1000: the
        failure is in the Status, as when the kubelet reports a failed command)."""
        if self._state != _FRAMES or self._remaining or self._partial or self._closed:
            return b""
        text_frame, as_status = _STATUS_CHANNEL[self._protocol or ""]
        payload = status_json(500, message).rstrip(b"\n") if as_status else message.encode()
        if text_frame:
            frame = _frame(0x1, b"3" + base64.b64encode(payload))
        else:
            frame = _frame(0x2, b"\x03" + payload)
        return frame + _frame(0x8, struct.pack("!H", 1000))


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked (server -> client) WebSocket frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _ws_protocol(head: bytes) -> str | None:
    """The subprotocol of a ``101`` that switched to WebSocket; None for anything else."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or parts[1] != b"101":
        return None
    upgrade = protocol = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"upgrade":
            upgrade = value.strip().lower()
        elif key == b"sec-websocket-protocol":
            protocol = value.strip().decode("latin-1")
    return protocol if upgrade == b"websocket" else None
