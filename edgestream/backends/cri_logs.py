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
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import IO, Protocol

from streamproto.tunnel import FrameBuffer, NotFound

from ..logs_options import LogOptions
from .cri_log_lines import (
    EPOCH,
    READ_SIZE,
    STDERR,
    STDOUT,
    classify,
    find_tail_start,
    fixed_utc,
    format_timestamp,
    parse_timestamp_ns,
)

__all__ = ["LogSink", "stream_log_file"]

POLL_INTERVAL = 0.2
"""Seconds between growth checks while following an idle file."""
STATUS_INTERVAL = 1.0
"""Seconds between container-state checks while following an idle file."""
_Z = ord("Z")

class LogSink(Protocol):
    """What ``stream_log_file`` needs from an ``EdgeStream``."""

    async def answer(self, code: int = 200, message: str = "") -> None: ...

    def frame(self, capacity: int | None = None) -> FrameBuffer: ...

    async def send_frame(self, frame: FrameBuffer, length: int) -> None: ...


def _since_ns(options: LogOptions, now: float) -> int | None:
    if options.since_time is not None:
        dt = options.since_time
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - EPOCH) // timedelta(microseconds=1) * 1000
    if options.since_seconds is not None:
        whole = int(now)  # split first: now * 1e9 as a float would lose ~256 ns
        return whole * 1_000_000_000 + round((now - whole) * 1e9) - options.since_seconds * 1_000_000_000
    return None


def _wanted(options: LogOptions) -> frozenset[bytes]:
    if options.stream == "Stdout":
        return frozenset((STDOUT,))
    if options.stream == "Stderr":
        return frozenset((STDERR,))
    return frozenset((STDOUT, STDERR))


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
        self.since_raw = fixed_utc(since_ns) if since_ns is not None else None
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
                    parts = classify(data, start, nl)
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
        parts = classify(data, a, b)
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
