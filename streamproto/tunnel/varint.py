"""Unsigned LEB128 varints, exactly as Go's ``encoding/binary`` reads and writes them.

Go's ``binary.ReadUvarint`` accepts non-minimal encodings (``80 00`` is 0) and rejects
an 11th byte or a 10th byte above 1 ("varint overflows a 64-bit integer"). We match it,
so a message a Go peer accepts, we accept, and the other way round.
"""

from __future__ import annotations

from .errors import FrameError

__all__ = ["MAX_VARINT_LEN", "encode_uvarint", "read_uvarint", "write_uvarint_into"]

MAX_VARINT_LEN = 10
_MAX_U64 = (1 << 64) - 1


def encode_uvarint(value: int) -> bytes:
    """Return the minimal encoding of ``value`` (0 <= value < 2**64)."""
    if value < 0x80:
        if value < 0:
            raise ValueError("uvarint must not be negative")
        return bytes((value,))
    if value > _MAX_U64:
        raise ValueError("uvarint must fit in 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_uvarint_into(buf: bytearray | memoryview, end: int, value: int) -> int:
    """Write ``value`` so that its last byte sits at ``end - 1``; return its first index.

    Used to put a header into the headroom in front of a payload already in ``buf``.
    """
    encoded = encode_uvarint(value)
    start = end - len(encoded)
    if start < 0:
        raise ValueError("not enough headroom for the varint")
    buf[start:end] = encoded
    return start


def read_uvarint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``. Raises FrameError."""
    n = len(data)
    if pos >= n:
        raise FrameError("EOF: message ends before the varint")
    byte = data[pos]
    if byte < 0x80:  # the common case: ids < 128 and every message type
        return byte, pos + 1
    value = 0
    shift = 0
    for i in range(MAX_VARINT_LEN):
        if pos >= n:
            raise FrameError("unexpected EOF inside a varint")
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            if i == MAX_VARINT_LEN - 1 and byte > 1:
                raise FrameError("varint overflows a 64-bit integer")
            return value | (byte << shift), pos
        value |= (byte & 0x7F) << shift
        shift += 7
    raise FrameError("varint overflows a 64-bit integer")
