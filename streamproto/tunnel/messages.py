"""Tunnel message codec: ``uvarint(connectID) ‖ uvarint(messageType) ‖ data``.

One tunnel message travels as one WebSocket message, always a TEXT frame although the
payload is binary (a Go cloudcore drops the tunnel on a binary frame).

Zero copy, both ways:

* ``decode`` returns the payload as a ``memoryview`` into the received message. A WebSocket
  library hands each message over as immutable ``bytes``, so the view stays valid for as
  long as somebody holds it.
* ``FrameBuffer`` lets the I/O layer read a chunk straight into a reusable buffer behind
  ``HEADROOM`` free bytes, then ``seal`` writes the header into that headroom and returns
  one contiguous view: header and payload go to the socket with no Python-level copy.
  A sealed view is valid until the next ``writable()``: the caller must have handed it to
  a sender that copies (websockets serialises synchronously inside ``send``) first.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .varint import MAX_VARINT_LEN, encode_uvarint, read_uvarint

__all__ = [
    "GO_MAX_DATA",
    "HEADROOM",
    "FrameBuffer",
    "Message",
    "MessageType",
    "decode",
    "encode",
    "encode_header",
]

GO_MAX_DATA = 1 << 20
"""A Go peer reads at most this much data per message and silently drops the rest."""

HEADROOM = 2 * MAX_VARINT_LEN
"""Bytes reserved in front of a payload for the largest possible header."""


class MessageType(enum.IntEnum):
    """KubeEdge's message types (Go iota order), then our negotiated extensions."""

    LOGS_CONNECT = 0
    EXEC_CONNECT = 1
    METRIC_CONNECT = 2
    DATA = 3
    REMOVE_CONNECT = 4
    CLOSE_CONNECT = 5
    ATTACH_CONNECT = 6
    # Extensions: sent only to a peer that announced them at dial time. A released Go
    # edge (v1.14-v1.23.1) panics and exits on any type >= 7.
    PORTFORWARD_CONNECT = 7
    """Upstream PR #7019's number and exec-shaped JSON for port-forward."""
    STATUS = 64
    """Edge -> cloud, first message of a logs/metrics stream: JSON {code, message}."""
    WINDOW = 65
    """Either way: uvarint(bytes) more credit for the stream (the ``flow`` feature)."""
    RENEW_REQUEST = 66
    """Edge -> cloud: a CSR for a renewed tunnel certificate (the ``renew`` feature, ``renewal.py``)."""
    RENEW_ANSWER = 67
    """Cloud -> edge: the signed chain or the reason for a refusal (``renew``)."""

    @property
    def is_connect(self) -> bool:
        return self in _CONNECT_TYPES

    @property
    def is_extension(self) -> bool:
        return self >= MessageType.PORTFORWARD_CONNECT


_CONNECT_TYPES = frozenset(
    {
        MessageType.LOGS_CONNECT,
        MessageType.EXEC_CONNECT,
        MessageType.METRIC_CONNECT,
        MessageType.ATTACH_CONNECT,
        MessageType.PORTFORWARD_CONNECT,
    }
)
_TYPES = {int(t): t for t in MessageType}
_MAX_LOG_SIZE = 48


class Message(NamedTuple):
    """A decoded tunnel message. ``kind`` is an int when the type number is unknown.

    A NamedTuple, not a frozen dataclass: it is built once per message on the hot path
    and a tuple is several times cheaper to construct.
    """

    connect_id: int
    kind: MessageType | int
    data: memoryview | bytes

    def __str__(self) -> str:
        name = self.kind.name if isinstance(self.kind, MessageType) else f"UNKNOWN({self.kind})"
        size = len(self.data)
        if size <= _MAX_LOG_SIZE:
            shown = bytes(self.data)
        else:  # elide the middle: never log whole payloads
            half = _MAX_LOG_SIZE // 2
            shown = bytes(self.data[:half]) + b"..." + bytes(self.data[-half:])
        return f"{name} id={self.connect_id} [{size} bytes] {shown!r}"


def decode(message: bytes | bytearray | memoryview) -> Message:
    """Decode one tunnel message. The payload is a view: no copy.

    Raises ``FrameError`` for what a Go peer also rejects (empty, truncated or over-long
    varints). Unknown type numbers decode fine (as Go's do): the multiplexer decides.
    """
    view = message if isinstance(message, memoryview) else memoryview(message)
    if len(view) >= 2:
        connect_id, raw_type = view[0], view[1]
        if connect_id < 0x80 and raw_type < 0x80:  # one-byte id and type: most messages
            return Message(connect_id, _TYPES.get(raw_type, raw_type), view[2:])
    connect_id, pos = read_uvarint(view, 0)
    raw_type, pos = read_uvarint(view, pos)
    return Message(connect_id, _TYPES.get(raw_type, raw_type), view[pos:])


def encode_header(connect_id: int, kind: MessageType | int) -> bytes:
    """Return the header bytes; the I/O layer decides how to join it with the payload."""
    if connect_id < 0x80 and kind < 0x80:
        return bytes((connect_id, kind))
    return encode_uvarint(connect_id) + encode_uvarint(int(kind))


def encode(connect_id: int, kind: MessageType | int, data: bytes | memoryview = b"") -> bytes:
    """Return a whole message (one copy of ``data``): for control messages and tests."""
    return encode_header(connect_id, kind) + data


class FrameBuffer:
    """A reusable buffer with headroom, for reading payloads in place.

    >>> fb = FrameBuffer(16)
    >>> fb.writable()[:2] = b"hi"
    >>> bytes(fb.seal(300, MessageType.DATA, 2))
    b'\\xac\\x02\\x03hi'
    """

    __slots__ = ("_buf", "_header", "_header_key", "_view", "capacity")

    def __init__(self, capacity: int) -> None:
        if not 0 < capacity < GO_MAX_DATA:
            raise ValueError("capacity must be between 1 byte and Go's 1 MiB read limit")
        self.capacity = capacity
        self._buf = bytearray(HEADROOM + capacity)
        self._view = memoryview(self._buf)
        self._header_key: tuple[int, int] = (-1, -1)
        self._header = b""

    def writable(self) -> memoryview:
        """The payload area: ``readinto``/``recv_into`` this."""
        return self._view[HEADROOM:]

    def seal(self, connect_id: int, kind: MessageType | int, length: int) -> memoryview:
        """Put the header in front of the first ``length`` payload bytes; return the message."""
        if not 0 <= length <= self.capacity:
            raise ValueError("length outside the buffer")
        buf = self._buf
        if connect_id < 0x80 and kind < 0x80:  # the common case: two bytes
            buf[HEADROOM - 1] = kind
            buf[HEADROOM - 2] = connect_id
            start = HEADROOM - 2
        else:  # a buffer serves one stream: build its header once
            if self._header_key != (connect_id, kind):
                self._header_key = (connect_id, int(kind))
                self._header = encode_uvarint(connect_id) + encode_uvarint(int(kind))
            start = HEADROOM - len(self._header)
            buf[start:HEADROOM] = self._header
        return self._view[start : HEADROOM + length]

