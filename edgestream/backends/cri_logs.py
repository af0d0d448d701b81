"""Serve a CRI container log file the way kubelet does (``kubectl logs``).

containerd writes one line per chunk of container output::

    <RFC3339Nano timestamp> <stdout|stderr> <P|F>[:more tags] <content>\\n

``P`` (partial) chunks belong to the same output line as the chunks that follow on that stream,
up to and including the next ``F`` (full) chunk; containerd splits lines longer than 16 KiB
this way. A *message* below is one full output line: its P chunks plus its F chunk, stamped
with the timestamp of its first chunk.

Every kubelet ``PodLogOptions`` field is honoured:

* ``stream`` Stdout/Stderr/All selects lines by their stream;
* ``tail_lines`` N: the last N messages (of the selected streams), found by reading the file
  backwards in 64 KiB blocks (never the whole file);
* ``since_seconds`` / ``since_time``: messages stamped earlier are skipped;
* ``timestamps``: each message is prefixed with its timestamp (RFC 3339 with 9 fraction digits,
  kubelet's ``RFC3339NanoFixed``, offset kept) and a space;
* ``limit_bytes``: output stops after that many bytes (timestamps included), even when following;
* ``follow``: poll for growth, reopen on rotation (the path now names another inode, or the file
  shrank), and end once the container is no longer running and the file is read to its end;
* ``previous`` is the caller's business (it picks which container's log file to read).

Where the bytes go (copies): the file is ``readinto`` a reusable read buffer (kernel copy); the
content of each message is copied once, from that buffer into the payload area of a
``FrameBuffer`` (``stream.frame()``), which ``stream.send_frame`` seals in place (no copy in our
code; websockets then copies it into its transport buffer). Only P chunks are copied one more
time, into a per-stream join buffer, because their message is not complete yet.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Protocol

from streamproto.tunnel import FrameBuffer, NotFound

from ..logs_options import LogOptions

__all__ = [
    "CriLine",
    "LogSink",
    "find_tail_start",
    "format_timestamp",
    "parse_cri_line",
    "parse_timestamp_ns",
    "stream_log_file",
]

READ_SIZE = 64 * 1024
"""Bytes per file read (one ``to_thread`` hop each)."""
POLL_INTERVAL = 0.2
"""Seconds between growth checks while following an idle file."""
STATUS_INTERVAL = 1.0
"""Seconds between container-state checks while following an idle file."""

_STDOUT = b"stdout"
_STDERR = b"stderr"
_SP = 0x20
_P = ord("P")
_Z = ord("Z")
_COLON = ord(":")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogSink(Protocol):
    """What ``stream_log_file`` needs from an ``EdgeStream``."""

    async def answer(self, code: int = 200, message: str = "") -> None: ...

    def frame(self, capacity: int | None = None) -> FrameBuffer: ...

    async def send_frame(self, frame: FrameBuffer, length: int) -> None: ...


# --------------------------------------------------------------------------- line format


@dataclass(frozen=True, slots=True)
class CriLine:
    timestamp: bytes
    stream: bytes
    """``b"stdout"`` or ``b"stderr"``."""
    partial: bool
    content: bytes
    """Without the line's newline."""


def _classify(data: bytes | bytearray, a: int, b: int) -> tuple[bytes, bool, int, int] | None:
    """Split the CRI line ``data[a:b]`` (no newline): (stream, partial, end of timestamp, content start).

    None when the line is not in CRI format (kubelet skips such lines too).
    """
    sp1 = data.find(b" ", a, b)
    if sp1 <= a:
        return None
    s = sp1 + 1
    if data.startswith(_STDOUT, s, b):
        stream = _STDOUT
    elif data.startswith(_STDERR, s, b):
        stream = _STDERR
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
    parts = _classify(line, 0, end)
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
    j = 19
    if raw[19:20] == b".":
        j = 20
        while j < len(raw) and 48 <= raw[j] <= 57:
            j += 1
        frac = raw[20:j]
    else:
        frac = b""
    return raw[:19] + b"." + (frac + b"000000000")[:9] + raw[j:]


_SECONDS_CACHE: dict[bytes, int] = {}


def parse_timestamp_ns(ts: bytes | bytearray | memoryview) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp; None if it does not parse."""
    raw = bytes(ts)
    if len(raw) < 20:
        return None
    j = 19
    frac = 0
    if raw[19:20] == b".":
        j = 20
        while j < len(raw) and 48 <= raw[j] <= 57:
            j += 1
        digits = raw[20:j]
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
        seconds = (dt - _EPOCH) // timedelta(seconds=1)
        if len(_SECONDS_CACHE) > 4096:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[key] = seconds
    return seconds * 1_000_000_000 + frac


def _since_ns(options: LogOptions, now: float) -> int | None:
    if options.since_time is not None:
        dt = options.since_time
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    if options.since_seconds is not None:
        whole = int(now)  # split first: now * 1e9 as a float would lose ~256 ns
        return whole * 1_000_000_000 + round((now - whole) * 1e9) - options.since_seconds * 1_000_000_000
    return None


def _fixed_utc(ns: int) -> bytes | None:
    """``ns`` as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (None outside years 1..9999)."""
    try:
        whole = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1000 <= whole.year <= 9999:
        return None
    return (whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z").encode()


def _wanted(options: LogOptions) -> frozenset[bytes]:
    if options.stream == "Stdout":
        return frozenset((_STDOUT,))
    if options.stream == "Stderr":
        return frozenset((_STDERR,))
    return frozenset((_STDOUT, _STDERR))


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
                parts = _classify(buf, start, lim - 1)
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
    fd: int, size: int, lines: int, wanted: frozenset[bytes] = frozenset((_STDOUT, _STDERR))
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


# --------------------------------------------------------------------------- output


class _Emitter:
    """Turns CRI lines into kubelet output, written straight into a ``FrameBuffer``."""

    def __init__(self, sink: LogSink, options: LogOptions, since_ns: int | None) -> None:
        self.sink = sink
        self.frame = sink.frame()
        self.view = self.frame.writable()
        self.capacity = len(self.view)
        self.fill = 0
        self.remaining = options.limit_bytes if options.limit_bytes is not None else -1
        self.done = False
        self.timestamps = options.timestamps
        self.since_ns = since_ns
        self.since_raw = _fixed_utc(since_ns) if since_ns is not None else None
        """``since`` as containerd writes UTC stamps with 9 digits, to compare bytes."""
        self.wanted = _wanted(options)
        self.partials: dict[bytes, tuple[bytes, bytearray]] = {}
        self.lines_out = 0
        self.emit_from = 0
        """File offset: a message whose F line starts before it is dropped (see find_tail_start)."""

    async def flush(self) -> None:
        if self.fill:
            n, self.fill = self.fill, 0
            await self.sink.send_frame(self.frame, n)

    async def put(self, src: bytes | bytearray | memoryview) -> None:
        n = len(src)
        if self.remaining >= 0 and n >= self.remaining:
            src = src[: self.remaining]
            n = len(src)
            self.done = True
        if self.remaining >= 0:
            self.remaining -= n
        off = 0
        while off < n:
            k = min(n - off, self.capacity - self.fill)
            self.view[self.fill : self.fill + k] = src[off : off + k]  # the one copy of the content
            self.fill += k
            off += k
            if self.fill == self.capacity:
                await self.flush()

    async def message(self, ts: bytes | memoryview, content: bytes | bytearray | memoryview, newline: bool) -> None:
        if self.since_ns is not None:
            stamp = parse_timestamp_ns(ts)
            if stamp is not None and stamp < self.since_ns:
                return
        if self.timestamps:
            await self.put(format_timestamp(ts) + b" ")
            if self.done:
                return
        await self.put(content)
        if newline and not self.done:
            await self.put(b"\n")
        self.lines_out += 1

    async def lines(self, data: bytearray, end: int, base: int = 0) -> int:
        """Emit every complete line in ``data[:end]`` (file offset ``base`` on); return how many
        bytes were consumed."""
        start = 0
        view, capacity, wanted, partials, since_raw = (
            self.view,
            self.capacity,
            self.wanted,
            self.partials,
            self.since_raw,
        )
        # The common case (a full line, no timestamps, no limit) is copied right here, with no
        # await; anything else goes through line()/message()/put().
        fast = not self.timestamps and self.remaining < 0 and (self.since_ns is None or since_raw is not None)
        with memoryview(data) as mv:
            while not self.done:
                nl = data.find(b"\n", start, end)
                if nl < 0:
                    break
                if fast and not self.emit_from:
                    parts = _classify(data, start, nl)
                    if parts is None or parts[0] not in wanted:
                        start = nl + 1
                        continue
                    stream, partial, ts_end, content = parts
                    if not partial and stream not in partials:
                        if since_raw is not None:
                            if ts_end - start != 30 or data[ts_end - 1] != _Z:
                                await self.line(data, mv, start, nl, base)  # not fixed-width UTC: parse it
                                start = nl + 1
                                continue
                            if data[start:ts_end] < since_raw:  # same format: bytes order is time order
                                start = nl + 1
                                continue
                        n = nl + 1 - content
                        fill = self.fill
                        if fill + n <= capacity:
                            view[fill : fill + n] = mv[content : nl + 1]  # content and newline: the one copy
                            self.fill = fill + n
                            self.lines_out += 1
                            start = nl + 1
                            continue
                await self.line(data, mv, start, nl, base)
                start = nl + 1
        return start

    async def line(self, data: bytearray, mv: memoryview, a: int, b: int, base: int = 0) -> None:
        parts = _classify(data, a, b)
        if parts is None:
            return  # not CRI format: skipped, as kubelet does
        stream, partial, ts_end, content = parts
        if stream not in self.wanted:
            return
        if self.emit_from and not partial:
            if base + a < self.emit_from:
                self.partials.pop(stream, None)  # completed before the tail: not shown
                return
            self.emit_from = 0
        if partial:
            pending = self.partials.get(stream)
            if pending is None:
                self.partials[stream] = (bytes(mv[a:ts_end]), bytearray(mv[content:b]))
            else:
                pending[1].extend(mv[content:b])
            return
        pending = self.partials.pop(stream, None)
        if pending is None:
            await self.message(mv[a:ts_end], mv[content:b], True)
        else:
            pending[1].extend(mv[content:b])
            await self.message(pending[0], pending[1], True)

    async def finish_partials(self) -> None:
        """The log ended inside a split line: show what there is, with no newline (as kubelet)."""
        partials, self.partials = self.partials, {}
        for ts, content in partials.values():
            if self.done:
                break
            await self.message(ts, content, False)


# --------------------------------------------------------------------------- file reading


def _readinto(f: IO[bytes], buf: bytearray, start: int, size: int) -> int:
    with memoryview(buf) as mv:
        return f.readinto(mv[start : start + size]) or 0  # type: ignore[attr-defined]


class _Reader:
    """A CRI log file read forwards in 64 KiB blocks, lines handed to an ``_Emitter``."""

    def __init__(self, path: str, emitter: _Emitter) -> None:
        self.path = path
        self.emitter = emitter
        self.buf = bytearray(2 * READ_SIZE)
        self.fill = 0  # bytes of an incomplete line kept at the front of buf
        self.f: IO[bytes] | None = None
        self.pos = 0  # file offset of the next read
        self.stop_at: int | None = None
        """Non-follow reads stop at the size the file had when the request came (a snapshot:
        ``tailLines=N`` gives N lines even while the container writes)."""

    def open(self, offset: int = 0) -> None:
        f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        try:
            if offset:
                f.seek(offset)
        except BaseException:
            f.close()
            raise
        self.close()
        self.f = f
        self.pos = offset
        self.fill = 0
        self.emitter.emit_from = 0  # a tail boundary only applies to the file it was found in

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    async def pump(self) -> int:
        """Read and emit until the end of the file; return how many bytes were read."""
        total = 0
        assert self.f is not None
        while not self.emitter.done:
            room = len(self.buf) - self.fill
            if room < READ_SIZE // 2:  # a line longer than the buffer: grow it
                self.buf.extend(bytes(len(self.buf)))
                room = len(self.buf) - self.fill
            want = min(room, READ_SIZE)
            if self.stop_at is not None:
                want = min(want, self.stop_at - self.pos)
                if want <= 0:
                    break
            n = await asyncio.to_thread(_readinto, self.f, self.buf, self.fill, want)
            if n <= 0:
                break
            total += n
            self.pos += n
            end = self.fill + n
            used = await self.emitter.lines(self.buf, end, self.pos - end)
            rest = end - used
            if used and rest:
                self.buf[:rest] = self.buf[used:end]  # only an incomplete line moves
            self.fill = rest
        return total

    async def finish_line(self) -> None:
        """Emit a last line that has no newline (kubelet does when the log ends)."""
        if self.fill and not self.emitter.done:
            self.buf[self.fill : self.fill + 1] = b"\n"
            await self.emitter.lines(self.buf, self.fill + 1, self.pos - self.fill)
        self.fill = 0

    def rotated(self) -> str | None:
        """Why the file must be reopened from its start, or None."""
        assert self.f is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # renamed, new one not created yet: keep the old one
        mine = os.fstat(self.f.fileno())
        if (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev):
            return "rotated"
        if st.st_size < self.pos:
            return "truncated"
        return None


async def stream_log_file(
    stream: LogSink,
    path: str,
    options: LogOptions,
    *,
    is_running: Callable[[], Awaitable[bool]] | None = None,
    poll_interval: float = POLL_INTERVAL,
    status_interval: float = STATUS_INTERVAL,
    now: Callable[[], float] = time.time,
) -> None:
    """Send the log at ``path`` to ``stream`` according to ``options``.

    Answers 200 once the file is open (a missing file raises ``NotFound`` before that).
    When following, ``is_running`` says whether the container may still write; without it the
    follow ends only when the stream is cancelled or ``limit_bytes`` is reached.
    """
    emitter = _Emitter(stream, options, _since_ns(options, now()))
    reader = _Reader(path, emitter)
    try:
        reader.open()
    except FileNotFoundError:
        raise NotFound(f"log file {path} does not exist") from None
    except OSError as exc:
        raise NotFound(f"cannot open log file {path}: {exc.strerror}") from None
    try:
        assert reader.f is not None
        if not options.follow:
            reader.stop_at = os.fstat(reader.f.fileno()).st_size
        if options.tail_lines is not None:
            fd = reader.f.fileno()
            size = reader.stop_at if reader.stop_at is not None else os.fstat(fd).st_size
            start, emitter.emit_from = await asyncio.to_thread(
                find_tail_start, fd, size, options.tail_lines, emitter.wanted
            )
            reader.f.seek(start)
            reader.pos = start
        await stream.answer(200)
        if options.tail_lines == 0 and not options.follow:
            return
        last_status = -1e9
        while True:
            await reader.pump()
            if emitter.done:
                break
            if not options.follow:
                await reader.finish_line()
                await emitter.finish_partials()
                break
            await emitter.flush()
            reason = reader.rotated()
            if reason is not None:
                if reason == "rotated":
                    await reader.pump()  # what was written to the old file before the switch
                    await reader.finish_line()
                try:
                    reader.open()
                except FileNotFoundError:
                    pass  # gone between stat and open: retry on the next poll
                continue
            t = time.monotonic()
            if is_running is not None and t - last_status >= status_interval:
                last_status = t
                if not await is_running():
                    # Exited: read what is left (the copier may have been a little behind), then end.
                    await reader.pump()
                    if reader.rotated() == "rotated":
                        reader.open()
                        await reader.pump()
                    await reader.finish_line()
                    await emitter.finish_partials()
                    break
                continue  # the status call took time: look for growth at once
            await asyncio.sleep(poll_interval)
        await emitter.flush()
    finally:
        reader.close()
