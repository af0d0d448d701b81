"""The CRI log reader: format, every kubelet log option, follow, rotation (no containerd)."""

from __future__ import annotations

import asyncio
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgestream.backends.cri_log_lines import (
    CriLine,
    find_tail_start,
    format_timestamp,
    parse_cri_line,
    parse_timestamp_ns,
)
from edgestream.backends.cri_logs import stream_log_file
from edgestream.logs_options import LogOptions
from streamproto.tunnel import NotFound
from tests.unit.edgestream.fakes import FakeStream

T0 = datetime(2026, 11, 24, 19, 19, 13, tzinfo=UTC).timestamp()


def ts(i: float) -> str:
    """A containerd-style RFC3339Nano timestamp i seconds after T0 (trailing zeros trimmed, as Go)."""
    whole = int(T0 + i)
    nanos = round((T0 + i - whole) * 1e9)
    base = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return base + (("." + frac) if frac else "") + "Z"


def cri(i: float, stream: str, content: str, tag: str = "F") -> bytes:
    return f"{ts(i)} {stream} {tag} {content}\n".encode()


def write(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


async def run(path: Path, query: str = "", **kw: object) -> FakeStream:
    stream = FakeStream("/containerLogs/ns/pod/c", query)
    await stream_log_file(stream, str(path), LogOptions.from_query(query), **kw)  # type: ignore[arg-type]
    return stream


# ------------------------------------------------------------------------- format


def test_parse_cri_line() -> None:
    assert parse_cri_line(b"2026-11-24T19:19:13.963979983Z stdout F line 0\n") == CriLine(
        b"2026-11-24T19:19:13.963979983Z", b"stdout", False, b"line 0"
    )
    assert parse_cri_line(b"2026-11-24T19:19:13Z stderr P abc") == CriLine(
        b"2026-11-24T19:19:13Z", b"stderr", True, b"abc"
    )
    # extra tags after a colon (forward compatible), empty content, content with spaces
    assert parse_cri_line(b"t stdout P:x  two  spaces\n").content == b" two  spaces"  # type: ignore[union-attr]
    assert parse_cri_line(b"t stdout P:x y\n").partial is True  # type: ignore[union-attr]
    assert parse_cri_line(b"t stdout F \n").content == b""  # type: ignore[union-attr]
    assert parse_cri_line(b"t stdout F\n") == CriLine(b"t", b"stdout", False, b"")
    for bad in (b"", b"garbage", b"t stdin F x\n", b"t stdout  x\n", b" stdout F x\n", b"t stdoutF x"):
        assert parse_cri_line(bad) is None, bad


def test_timestamps_are_fixed_width_like_kubelet() -> None:
    assert format_timestamp(b"2026-11-24T19:19:13.963979983Z") == b"2026-11-24T19:19:13.963979983Z"
    assert format_timestamp(b"2026-11-24T19:19:13.9639Z") == b"2026-11-24T19:19:13.963900000Z"
    assert format_timestamp(b"2026-11-24T19:19:13Z") == b"2026-11-24T19:19:13.000000000Z"
    assert format_timestamp(b"2026-11-24T20:19:13.5+01:00") == b"2026-11-24T20:19:13.500000000+01:00"
    a = parse_timestamp_ns(b"2026-11-24T19:19:13.5Z")
    assert a == int(T0) * 10**9 + 500_000_000
    assert parse_timestamp_ns(b"2026-11-24T20:19:13.500000000+01:00") == a
    assert parse_timestamp_ns(b"2026-11-24T19:19:13.000000001Z") == int(T0) * 10**9 + 1
    assert parse_timestamp_ns(b"not a time at all!!") is None


# ------------------------------------------------------------------------- options


async def test_all_lines_and_stream_selection(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "out 1"), cri(1, "stderr", "err 1"), cri(2, "stdout", "out 2"), b"junk line\n")
    s = await run(log)
    assert s.status == (200, "")
    assert s.body == b"out 1\nerr 1\nout 2\n"
    assert (await run(log, "stream=Stdout")).body == b"out 1\nout 2\n"
    assert (await run(log, "stream=Stderr")).body == b"err 1\n"


async def test_partial_lines_are_joined(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(
        log,
        cri(0, "stdout", "aaa", "P"),
        cri(1, "stderr", "E1", "P"),  # another stream's split line, interleaved
        cri(2, "stdout", "bbb", "P"),
        cri(3, "stderr", "E2"),
        cri(4, "stdout", "ccc"),
        cri(5, "stdout", "next"),
    )
    assert (await run(log)).body == b"E1E2\naaabbbccc\nnext\n"
    # the timestamp of a joined message is that of its first chunk
    body = (await run(log, "timestamps=true&stream=Stdout")).body
    assert body == (format_timestamp(ts(0).encode()) + b" aaabbbccc\n" + format_timestamp(ts(5).encode()) + b" next\n")


async def test_incomplete_last_line_and_dangling_partial(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "one"), f"{ts(1)} stdout F two".encode())  # no newline yet
    assert (await run(log)).body == b"one\ntwo\n"
    log2 = tmp_path / "1.log"
    write(log2, cri(0, "stdout", "one"), cri(1, "stdout", "half", "P"))
    assert (await run(log2)).body == b"one\nhalf"


async def test_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "a"), cri(0.25, "stderr", "b"))
    assert (await run(log, "timestamps=true")).body == (
        b"2026-11-24T19:19:13.000000000Z a\n2026-11-24T19:19:13.250000000Z b\n"
    )


async def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, *(cri(i, "stdout" if i % 3 else "stderr", f"line {i}") for i in range(10)))
    assert (await run(log, "tailLines=3")).body == b"line 7\nline 8\nline 9\n"
    assert (await run(log, "tailLines=0")).body == b""
    assert (await run(log, "tailLines=100")).body == b"".join(f"line {i}\n".encode() for i in range(10))
    # tail counts the selected stream's lines
    assert (await run(log, "tailLines=2&stream=Stderr")).body == b"line 6\nline 9\n"
    assert (await run(log, "tailLines=2&stream=Stdout")).body == b"line 7\nline 8\n"


async def test_tail_counts_split_lines_once(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(
        log,
        cri(0, "stdout", "x"),
        cri(1, "stdout", "A", "P"),
        cri(2, "stdout", "B", "P"),
        cri(3, "stdout", "C"),
        cri(4, "stdout", "y"),
        cri(5, "stdout", "par", "P"),
    )  # an unfinished split line at the end
    assert (await run(log, "tailLines=2")).body == b"ABC\ny\npar"


async def test_tail_reads_backwards_in_blocks(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    lines = [cri(i / 1000, "stdout" if i % 2 else "stderr", f"{i} " + "x" * (i % 300)) for i in range(3000)]
    write(log, *lines)
    assert log.stat().st_size > 4 * 64 * 1024
    for n in (1, 5, 700, 1499, 1500, 2999, 5000):
        expect = b"".join(f"{i} ".encode() + b"x" * (i % 300) + b"\n" for i in range(max(0, 3000 - n), 3000))
        assert (await run(log, f"tailLines={n}")).body == expect, n
    fd = os.open(log, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        # the start offset is a line start, found without reading the whole file
        start = size - sum(len(x) for x in lines[-10:])
        assert find_tail_start(fd, size, 10) == (start, start)
        start = size - sum(len(x) for x in lines[-21:])  # after the 11th stderr line from the end
        assert find_tail_start(fd, size, 10, frozenset((b"stderr",))) == (start, start)
    finally:
        os.close(fd)


async def test_since_time_and_since_seconds(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, *(cri(i, "stdout", f"line {i}") for i in range(10)))
    since = datetime.fromtimestamp(T0 + 7, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await run(log, f"sinceTime={since}")).body == b"line 7\nline 8\nline 9\n"
    assert (await run(log, "sinceSeconds=3", now=lambda: T0 + 9.5)).body == b"line 7\nline 8\nline 9\n"
    # tail and since together: both apply
    assert (await run(log, f"sinceTime={since}&tailLines=5")).body == b"line 7\nline 8\nline 9\n"
    assert (await run(log, f"sinceTime={since}&tailLines=2")).body == b"line 8\nline 9\n"


async def test_limit_bytes(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, *(cri(i, "stdout", f"line {i}") for i in range(10)))
    assert (await run(log, "limitBytes=10")).body == b"line 0\nlin"
    assert (await run(log, "limitBytes=7")).body == b"line 0\n"
    body = (await run(log, "limitBytes=39&timestamps=true")).body
    assert body == b"2026-11-24T19:19:13.000000000Z line 0\n2"


async def test_large_output_goes_in_frames_of_the_stream_payload(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    big = "z" * 16384
    write(log, *(cri(i, "stdout", f"{i}{big}") for i in range(40)))
    s = await run(log)
    assert s.body == b"".join(f"{i}{big}\n".encode() for i in range(40))
    assert max(s.frames) == 64 * 1024 and len(s.frames) == -(-len(s.body) // (64 * 1024))


async def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await run(tmp_path / "nope.log")


# ------------------------------------------------------------------------- against a reference model


def reference(lines: list[tuple[float, str, str, str]], options: LogOptions, now: float) -> bytes:
    """kubelet's output computed the naive way: parse all, join partials, filter, tail, limit."""
    wanted = {"All": {"stdout", "stderr"}, "Stdout": {"stdout"}, "Stderr": {"stderr"}}[options.stream]
    messages: list[tuple[float, str, bytes, bool]] = []
    pending: dict[str, tuple[float, bytes]] = {}
    for t, stream, tag, content in lines:
        if stream not in wanted:
            continue
        if tag == "P":
            first, acc = pending.get(stream, (t, b""))
            pending[stream] = (first, acc + content.encode())
        else:
            first, acc = pending.pop(stream, (t, b""))
            messages.append((first, stream, acc + content.encode(), True))
    if options.tail_lines is not None:
        messages = messages[max(0, len(messages) - options.tail_lines) :] if options.tail_lines else []
    for stream, (first, acc) in pending.items():
        if options.tail_lines != 0:
            messages.append((first, stream, acc, False))
    since = None  # in ns
    if options.since_time is not None:
        since = int(options.since_time.timestamp()) * 10**9
    elif options.since_seconds is not None:
        since = int(now) * 10**9 + round((now - int(now)) * 1e9) - options.since_seconds * 10**9
    out = b""
    for first, _, content, nl in messages:
        if since is not None and parse_timestamp_ns(ts(first).encode()) < since:  # type: ignore[operator]
            continue
        if options.timestamps:
            out += format_timestamp(ts(first).encode()) + b" "
        out += content + (b"\n" if nl else b"")
    if options.limit_bytes is not None:
        out = out[: options.limit_bytes]
    return out


@pytest.mark.parametrize("seed", range(16))
async def test_random_logs_match_the_reference(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lines: list[tuple[float, str, str, str]] = []
    t = 0.0
    open_partial: dict[str, bool] = {"stdout": False, "stderr": False}
    for _ in range(rng.randrange(1, 400)):
        t += rng.choice((0.0, 0.001, 0.5, 1.0))
        stream = rng.choice(("stdout", "stdout", "stderr"))
        tag = "P" if rng.random() < 0.15 else "F"
        content = "".join(rng.choice("abc xyz") for _ in range(rng.randrange(0, 40 if rng.random() < 0.9 else 3000)))
        lines.append((t, stream, tag, content))
        open_partial[stream] = tag == "P"
    # odd seeds leave a split line unfinished at the end of the file (kubelet shows it, no newline)
    for stream, dangling in open_partial.items():
        if dangling and seed % 2 == 0:
            lines.append((t, stream, "F", "end"))
    log = tmp_path / "0.log"
    write(log, *(cri(*line[:2], line[3], line[2]) for line in lines))  # type: ignore[misc]
    queries = [
        "",
        "stream=Stdout",
        "stream=Stderr&timestamps=true",
        f"tailLines={rng.randrange(0, 50)}",
        f"tailLines={rng.randrange(0, 50)}&stream=Stderr",
        f"limitBytes={rng.randrange(1, 5000)}",
        f"sinceSeconds={rng.randrange(1, 60)}",
        f"tailLines={rng.randrange(1, 50)}&timestamps=1&limitBytes=900",
    ]
    now = T0 + int(t) + 0.25  # exact in binary
    for q in queries:
        options = LogOptions.from_query(q)
        got = (await run(log, q, now=lambda: now)).body
        assert got == reference(lines, options, now), (seed, q)


# ------------------------------------------------------------------------- follow


class Liveness:
    def __init__(self) -> None:
        self.running = True
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.running


async def test_follow_picks_up_new_lines_and_ends_when_the_container_exits(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "old 1"), cri(1, "stdout", "old 2"))
    alive = Liveness()
    stream = FakeStream("/containerLogs/ns/pod/c", "follow=true&tailLines=1")
    task = asyncio.create_task(
        stream_log_file(
            stream,
            str(log),
            LogOptions.from_query(stream.request.raw_query),
            is_running=alive,
            poll_interval=0.02,
            status_interval=0.1,
        )
    )
    await stream.wait_for(b"old 2\n", 5)
    assert stream.status == (200, "")
    write(log, cri(2, "stdout", "new", "P"))
    write(log, cri(3, "stdout", " line"))
    await stream.wait_for(b"new line\n", 5)
    assert not task.done()
    # the last words are written just before the container is seen exited: they still arrive
    write(log, cri(4, "stderr", "bye"))
    alive.running = False
    await asyncio.wait_for(task, 5)
    assert stream.body == b"old 2\nnew line\nbye\n"
    assert alive.calls >= 2


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "before 1"))
    alive = Liveness()
    stream = FakeStream("/containerLogs/ns/pod/c", "follow=true")
    task = asyncio.create_task(
        stream_log_file(
            stream, str(log), LogOptions(follow=True), is_running=alive, poll_interval=0.02, status_interval=0.1
        )
    )
    await stream.wait_for(b"before 1\n")
    # written to the old file after our last read, just before the rename: must not be lost
    write(log, cri(1, "stdout", "before 2"), cri(2, "stdout", "split ", "P"))
    os.rename(log, tmp_path / "0.log.20261124-191915")
    await asyncio.sleep(0.1)  # a moment with no file at the path at all
    write(log, cri(3, "stdout", "across rotation"), cri(4, "stdout", "after 1"))
    await stream.wait_for(b"after 1\n")
    # a second rotation, the kubelet way: rename then a new file
    os.rename(log, tmp_path / "0.log.20261124-191920")
    write(log, cri(5, "stdout", "after 2"))
    await stream.wait_for(b"after 2\n")
    alive.running = False
    await asyncio.wait_for(task, 5)
    assert stream.body == b"before 1\nbefore 2\nsplit across rotation\nafter 1\nafter 2\n"


async def test_follow_reopens_a_truncated_file(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "first generation, a long line"))
    alive = Liveness()
    stream = FakeStream("/containerLogs/ns/pod/c", "follow=true")
    task = asyncio.create_task(
        stream_log_file(
            stream, str(log), LogOptions(follow=True), is_running=alive, poll_interval=0.02, status_interval=0.1
        )
    )
    await stream.wait_for(b"long line\n")
    os.truncate(log, 0)
    await asyncio.sleep(0.1)
    write(log, cri(1, "stdout", "second"))
    await stream.wait_for(b"second\n")
    alive.running = False
    await asyncio.wait_for(task, 5)
    assert stream.body == b"first generation, a long line\nsecond\n"


async def test_follow_of_an_exited_container_ends_at_the_end_of_the_file(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "done"), cri(1, "stdout", "half", "P"))
    alive = Liveness()
    alive.running = False
    s = await asyncio.wait_for(run(log, "follow=true", is_running=alive, poll_interval=0.02), 5)
    assert s.body == b"done\nhalf"


async def test_follow_stops_at_limit_bytes(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "12345"))
    alive = Liveness()
    stream = FakeStream("/containerLogs/ns/pod/c", "follow=true&limitBytes=10")
    task = asyncio.create_task(
        stream_log_file(
            stream,
            str(log),
            LogOptions.from_query(stream.request.raw_query),
            is_running=alive,
            poll_interval=0.02,
            status_interval=0.1,
        )
    )
    await stream.wait_for(b"12345\n")
    write(log, cri(1, "stdout", "abcdef"))
    await asyncio.wait_for(task, 5)  # ends although the container still runs
    assert stream.body == b"12345\nabcd"


async def test_follow_cancelled_by_the_cloud_closes_the_file(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(log, cri(0, "stdout", "x"))
    before = set(os.listdir("/proc/self/fd"))
    stream = FakeStream("/containerLogs/ns/pod/c", "follow=true")
    task = asyncio.create_task(
        stream_log_file(stream, str(log), LogOptions(follow=True), is_running=Liveness(), poll_interval=0.02)
    )
    await stream.wait_for(b"x\n")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leaked = {fd for fd in set(os.listdir("/proc/self/fd")) - before if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not any(os.readlink(f"/proc/self/fd/{fd}") == str(log) for fd in leaked)


async def test_since_with_fixed_width_offset_and_trimmed_stamps(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write(
        log,
        b"2026-11-24T19:19:13.999999999Z stdout F a\n",  # fixed width: compared as bytes
        b"2026-11-24T19:19:14.000000001Z stdout F b\n",
        b"2026-11-24T20:19:13.9+01:00 stdout F c\n",  # an offset: parsed (= 19:19:13.9Z)
        b"2026-11-24T20:19:14.5+01:00 stdout F d\n",
        b"2026-11-24T19:19:14Z stderr F e\n",  # trimmed: parsed
        b"2026-11-24T19:19:13.5Z stderr F f\n",
    )
    assert (await run(log, "sinceTime=2026-11-24T19:19:14Z")).body == b"b\nd\ne\n"
    assert (await run(log, "sinceTime=2026-11-24T19:19:14Z&timestamps=true")).body == (
        b"2026-11-24T19:19:14.000000001Z b\n2026-11-24T20:19:14.500000000+01:00 d\n2026-11-24T19:19:14.000000000Z e\n"
    )
