"""The CRI container log file's lines: their format (containerd's
``<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>``), kubelet's fixed-width timestamps, and
finding where the last N messages of a file start, reading it backwards (``cri_logs`` serves them)."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "EPOCH",
    "READ_SIZE",
    "STDERR",
    "STDOUT",
    "CriLine",
    "classify",
    "find_tail_start",
    "fixed_utc",
    "format_timestamp",
    "parse_cri_line",
    "parse_timestamp_ns",
]

READ_SIZE = 64 * 1024
"""Bytes per file read (one ``to_thread`` hop each)."""

STDOUT = b"stdout"
STDERR = b"stderr"
_SP = 0x20
_P = ord("P")
_COLON = ord(":")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- line format


@dataclass(frozen=True, slots=True)
class CriLine:
    timestamp: bytes
    stream: bytes
    """``b"stdout"`` or ``b"stderr"``."""
    partial: bool
    content: bytes
    """Without the line's newline."""


def classify(data: bytes | bytearray, a: int, b: int) -> tuple[bytes, bool, int, int] | None:
    """Split the CRI line ``data[a:b]`` (no newline): (stream, partial, end of timestamp, content start).

    None when the line is not in CRI format (kubelet skips such lines too).
    """
    sp1 = data.find(b" ", a, b)
    if sp1 <= a:
        return None
    s = sp1 + 1
    if data.startswith(STDOUT, s, b):
        stream = STDOUT
    elif data.startswith(STDERR, s, b):
        stream = STDERR
    else:
        return None
    t = s + 6  # the tag starts after "stdout " / "stderr "
    if t >= b or data[t] != _SP:
        return None
    t += 1
    sp3 = data.find(b" ", t, b)
    tag_end = b if sp3 < 0 else sp3
    if tag_end <= t:
        return None
    # Tags may carry more, colon-separated, after the first one (forward compatible, as kubelet).
    partial = data[t] == _P and (tag_end == t + 1 or data[t + 1] == _COLON)
    return stream, partial, sp1, (b if sp3 < 0 else sp3 + 1)


def parse_cri_line(line: bytes) -> CriLine | None:
    """Parse one CRI log line (trailing newline optional); None if it is not CRI format."""
    end = len(line) - 1 if line.endswith(b"\n") else len(line)
    parts = classify(line, 0, end)
    if parts is None:
        return None
    stream, partial, ts_end, content_start = parts
    return CriLine(line[:ts_end], stream, partial, line[content_start:end])


def format_timestamp(ts: bytes | bytearray | memoryview) -> bytes:
    """containerd's RFC3339Nano (trailing zeros trimmed) -> kubelet's fixed 9-digit form."""
    raw = bytes(ts)
    if len(raw) == 30 and raw[19:20] == b"." and raw[29:30] == b"Z":
        return raw  # already fixed-width UTC: the common case
    if len(raw) < 19:
        return raw
    frac, j = _fraction(raw)
    return raw[:19] + b"." + (frac + b"000000000")[:9] + raw[j:]


def _fraction(raw: bytes) -> tuple[bytes, int]:
    """The fraction digits of an RFC 3339 timestamp (after its 19 characters of date and time),
    and where its offset starts."""
    if raw[19:20] != b".":
        return b"", 19
    j = 20
    while j < len(raw) and 48 <= raw[j] <= 57:
        j += 1
    return raw[20:j], j


_SECONDS_CACHE: dict[bytes, int] = {}


def parse_timestamp_ns(ts: bytes | bytearray | memoryview) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp; None if it does not parse."""
    raw = bytes(ts)
    if len(raw) < 20:
        return None
    digits, j = _fraction(raw)
    frac = int((digits + b"000000000")[:9]) if digits else 0
    key = raw[:19] + raw[j:]
    seconds = _SECONDS_CACHE.get(key)
    if seconds is None:
        offset = raw[j:].decode("ascii", "replace")
        if offset in ("Z", "z"):
            offset = "+00:00"
        try:
            dt = datetime.fromisoformat(raw[:19].decode("ascii") + offset)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        seconds = (dt - EPOCH) // timedelta(seconds=1)
        if len(_SECONDS_CACHE) > 4096:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[key] = seconds
    return seconds * 1_000_000_000 + frac


def fixed_utc(ns: int) -> bytes | None:
    """``ns`` as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (None outside years 1..9999)."""
    try:
        whole = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1000 <= whole.year <= 9999:
        return None
    return (whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z").encode()


# --------------------------------------------------------------------------- tail


def _lines_backwards(fd: int, size: int) -> Generator[tuple[int, int, bytes | None, bool], None, None]:
    """(start, end, stream, partial) of each complete line before ``size``, the last first.

    ``end`` is just after the newline; ``stream`` is None for a line not in CRI format. A
    trailing line with no newline yet is skipped. Reads 64 KiB blocks with ``os.pread``.
    """
    pos = size
    buf = b""  # file bytes from ``pos`` on that are not examined yet (cut at ``lim``)
    lim = 0  # once started: buf[:lim] is unexamined and ends with a newline
    started = False  # found the last newline (what follows it is an incomplete line)
    while True:
        if not started:
            idx = buf.rfind(b"\n")
            if idx >= 0:
                started = True
                lim = idx + 1
        if started:
            while lim > 0:
                prev = buf.rfind(b"\n", 0, lim - 1)
                if prev < 0 and pos > 0:
                    break  # this line starts in an earlier block
                start = prev + 1
                parts = classify(buf, start, lim - 1)
                if parts is None:
                    yield pos + start, pos + lim, None, False
                else:
                    yield pos + start, pos + lim, parts[0], parts[1]
                lim = start
        if pos == 0:
            return
        k = min(READ_SIZE, pos)
        pos -= k
        block = os.pread(fd, k, pos)
        if len(block) != k:  # the file shrank under us
            raise FileNotFoundError("the log file was truncated while reading it")
        if started:
            buf = block + buf[:lim]
            lim += k
        else:
            buf = block + buf


UNDECIDED_SCAN = 1 << 20
"""How far before the tail boundary to look for the last line of a stream not seen yet."""


def find_tail_start(
    fd: int, size: int, lines: int, wanted: frozenset[bytes] = frozenset((STDOUT, STDERR))
) -> tuple[int, int]:
    """Where to start reading for the last ``lines`` messages of the ``wanted`` streams.

    Returns ``(start, boundary)``: messages complete (their F line) before ``boundary`` are
    not shown; reading starts at ``start`` <= ``boundary`` so that the earlier P chunks of a
    message completed after the boundary are there (a split line of one stream interleaved
    with lines of the other). Reads backwards from ``size`` in 64 KiB blocks (blocking: run
    it in a thread); never reads the whole file unless the tail needs it. A stream with no
    line in the last MiB before the boundary is taken as having no split line open there.
    """
    if lines < 0:
        return 0, 0
    backwards = _lines_backwards(fd, size)
    found = 0
    boundary = -1
    boundary_stream = b""
    try:
        for _start, end, stream, partial in backwards:
            if stream in wanted and not partial:
                found += 1
                if found == lines + 1:
                    boundary, boundary_stream = end, stream
                    break
        else:
            return 0, 0
        undecided = set(wanted) - {boundary_stream}
        open_streams: set[bytes] = set()
        start = boundary
        if not undecided:
            return start, boundary
        for line_start, end, stream, partial in backwards:
            if undecided and boundary - line_start > UNDECIDED_SCAN:
                undecided.clear()
            if stream in undecided:
                undecided.discard(stream)
                if partial:
                    open_streams.add(stream)
            elif stream in open_streams and not partial:
                open_streams.discard(stream)
                start = min(start, end)
            if not undecided and not open_streams:
                return start, boundary
        return (0 if open_streams else start), boundary
    except FileNotFoundError:
        return 0, 0
    finally:
        backwards.close()
