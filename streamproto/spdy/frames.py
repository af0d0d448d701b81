"""SPDY/3.1 frames: types, the byte layout, and the header-block codec with its zlib contexts.

Layout (draft 3.1, section 2.2)::

    control: |1| version(15) | type(16) | flags(8) | length(24) | data
    data:    |0| stream id(31)          | flags(8) | length(24) | data

Header blocks (2.6.10) are ``uint32 count`` then ``uint32 len, name, uint32 len, value`` per
pair, names lower case, several values of one name joined by NUL, the whole block deflated
with one zlib context per direction, primed with SPDY/3's dictionary and sync-flushed after
every block (so the peer can inflate it at once). A failed or oversized inflate leaves that
context unusable: it is a session error, never a stream error.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field

from streamproto.tunnel.errors import FrameError, LimitExceeded

from .dictionary import DICTIONARY

__all__ = [
    "CONTROL_TYPES",
    "DATA_FIN",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "MAX_LENGTH",
    "VERSION",
    "FrameType",
    "GoAwayStatus",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Headers",
    "RstStatus",
    "Setting",
    "control_header",
    "data_header",
    "decode_header_block",
    "encode_header_block",
]

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
DATA_FIN = 0x01
MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1

Headers = tuple[tuple[str, str], ...]
"""Header pairs in order; a name given twice is sent as one NUL-joined value."""


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


CONTROL_TYPES = frozenset(int(t) for t in FrameType)


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class Setting(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


def control_header(kind: int, flags: int, length: int) -> bytes:
    if not 0 <= length <= MAX_LENGTH:
        raise LimitExceeded(f"control frame of {length} bytes exceeds SPDY's 24-bit length", remote=False)
    return (0x80000000 | VERSION << 16 | kind).to_bytes(4, "big") + (flags << 24 | length).to_bytes(4, "big")


def data_header(stream_id: int, flags: int, length: int) -> bytes:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise FrameError(f"data frame for invalid stream id {stream_id}", remote=False)
    if not 0 <= length <= MAX_LENGTH:
        raise LimitExceeded(f"data frame of {length} bytes exceeds SPDY's 24-bit length", remote=False)
    return stream_id.to_bytes(4, "big") + (flags << 24 | length).to_bytes(4, "big")


def encode_header_block(headers: Headers | list[tuple[str, str]]) -> bytes:
    """The uncompressed block; names lower-cased, repeated names NUL-joined in order."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(value)
    out = [len(merged).to_bytes(4, "big")]
    for name, values in merged.items():
        if not name:
            raise FrameError("empty header name", remote=False)
        raw_name, raw_value = name.encode("latin-1"), "\x00".join(values).encode("latin-1")
        out += [len(raw_name).to_bytes(4, "big"), raw_name, len(raw_value).to_bytes(4, "big"), raw_value]
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    """Parse an inflated block; a malformed one raises ``FrameError`` (a session error)."""
    view = memoryview(block)
    if len(view) < 4:
        raise FrameError("header block shorter than its pair count")
    count = int.from_bytes(view[:4], "big")
    if count > len(view) // 8:  # every pair takes at least 8 bytes: no allocation on a lie
        raise FrameError(f"header block claims {count} pairs in {len(view)} bytes")
    pos, seen = 4, set[str]()
    pairs: list[tuple[str, str]] = []
    for _ in range(count):
        fields = []
        for what in ("name", "value"):
            if pos + 4 > len(view):
                raise FrameError(f"header block ends inside a {what} length")
            size = int.from_bytes(view[pos : pos + 4], "big")
            pos += 4
            if pos + size > len(view):
                raise FrameError(f"header {what} of {size} bytes overruns the block")
            fields.append(bytes(view[pos : pos + size]).decode("latin-1"))
            pos += size
        name, value = fields
        if not name:
            raise FrameError("empty header name")
        if name != name.lower():
            raise FrameError(f"header name {name[:40]!r} is not lower case")
        if name in seen:
            raise FrameError(f"header {name[:40]!r} appears twice")
        seen.add(name)
        pairs.extend((name, v) for v in value.split("\x00"))
    if pos != len(view):
        raise FrameError(f"{len(view) - pos} bytes after the last header pair")
    return tuple(pairs)


@dataclass(slots=True)
class HeaderCompressor:
    """One direction's deflate context (level 9, as Go's framer)."""

    _z: "zlib._Compress" = field(default_factory=lambda: zlib.compressobj(9, zlib.DEFLATED, 15, 9, zdict=DICTIONARY))

    def compress(self, headers: Headers | list[tuple[str, str]]) -> bytes:
        block = encode_header_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


@dataclass(slots=True)
class HeaderDecompressor:
    """One direction's inflate context, bounded: at most ``max_size`` inflated bytes per block."""

    max_size: int = 64 * 1024
    _z: "zlib._Decompress" = field(default_factory=lambda: zlib.decompressobj(15, zdict=DICTIONARY))

    def decompress(self, data: bytes | memoryview) -> Headers:
        try:
            block = self._z.decompress(data, self.max_size + 1)
        except zlib.error as exc:
            raise FrameError(f"header block does not inflate: {exc}") from None
        if len(block) > self.max_size or self._z.unconsumed_tail:
            raise LimitExceeded(f"header block inflates past {self.max_size} bytes")
        if self._z.eof:
            raise FrameError("header block ended the zlib stream")
        return decode_header_block(block)
