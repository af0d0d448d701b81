"""testkit.link: the userspace link emulator, through real loopback sockets.

Timing checks have a firm side (the link never delivers early, never beats its rate by much) and a generous
side (a loaded 2-core machine may add latency or lose some throughput)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import pytest

from testkit.link import PROFILES, READ_SIZE, LinkProfile, LinkProxy

ROOT = Path(__file__).resolve().parents[3]
no_leaks = pytest.mark.usefixtures("no_leaks")


class Upstream:
    """A loopback TCP server; each accepted connection is handed to the test as (reader, writer)."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if not self.echo:
            self.accepted.put_nowait((reader, writer))
            return
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await asyncio.sleep(0.01)
        await self.server.wait_closed()


async def dial(link: LinkProxy, sndbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", link.port))
    return await asyncio.open_connection(sock=sock)


async def close(*writers: asyncio.StreamWriter) -> None:
    for w in writers:
        w.transport.abort()
    await asyncio.sleep(0.01)


async def ping_rtts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> list[float]:
    rtts = []
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(b"p")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"p"
        rtts.append(time.perf_counter() - t0)
    return rtts


def test_profiles_are_the_documented_links() -> None:
    wan = PROFILES["wan-50ms-100mbit"]
    assert (wan.one_way_delay, wan.rate, wan.rtt) == (0.025, 12.5e6, 0.05)
    assert wan.buffer == wan.bdp == 625_000
    sat = PROFILES["satellite-600ms-10mbit"]
    assert (sat.one_way_delay, sat.rate) == (0.3, 1.25e6)
    assert PROFILES["lan"].one_way_delay == 0 and PROFILES["lan"].rate is None
    with pytest.raises(ValueError, match="buffer"):
        LinkProfile("tiny", buffer=10)


@no_leaks
async def test_round_trip_is_twice_the_one_way_delay() -> None:
    profile = LinkProfile("t", one_way_delay=0.04, rate=None)
    async with Upstream(echo=True) as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        reader, writer = await dial(link)
        rtts = await ping_rtts(reader, writer, 8)
        await close(writer)
    assert min(rtts) >= 0.0795, rtts  # never early
    assert statistics.median(rtts) < 0.08 + 0.06, rtts  # generous: a loaded machine adds latency


@no_leaks
async def test_bulk_runs_at_the_rate_each_way_and_the_queue_stays_bounded() -> None:
    rate, total = 2_000_000, 2_400_000
    profile = LinkProfile("t", one_way_delay=0.01, rate=rate, buffer=96 * 1024)
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        c_reader, c_writer = await dial(link)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)

        async def send(writer: asyncio.StreamWriter) -> None:
            chunk = os.urandom(64 * 1024)
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                await writer.drain()

        async def receive(reader: asyncio.StreamReader) -> float:
            got, first, t_first = 0, 0, 0.0
            while got < total // 65536 * 65536:
                data = await reader.read(65536)
                assert data
                if not got:
                    first, t_first = len(data), time.perf_counter()
                got += len(data)
            return (got - first) / (time.perf_counter() - t_first)

        async with asyncio.timeout(20):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(send(c_writer))
                tg.create_task(send(s_writer))
                up_rate = tg.create_task(receive(s_reader))
                down_rate = tg.create_task(receive(c_reader))
        stats = link.stats
        await close(c_writer, s_writer)
    for measured in (up_rate.result(), down_rate.result()):
        assert 0.75 * rate <= measured <= 1.1 * rate, (measured, rate)
    assert stats.up.bytes_out == stats.down.bytes_out == total // 65536 * 65536
    for d in (stats.up, stats.down):
        assert d.full >= 1  # the sender outran the link and was held back
        assert d.max_queue <= profile.buffer + READ_SIZE, d
        assert d.max_held <= profile.buffer + profile.wire + READ_SIZE, d


@no_leaks
async def test_stalled_reader_stops_the_proxy_reading_and_blocks_the_sender() -> None:
    profile = LinkProfile("t", one_way_delay=0.01, rate=20e6, buffer=128 * 1024)
    total = 16 * 1024 * 1024
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        c_reader, c_writer = await dial(link, sndbuf=32 * 1024)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        c_writer.write(b"x" * total)  # the upstream reads nothing
        last, stable_since = -1, time.monotonic()
        async with asyncio.timeout(10):
            while time.monotonic() - stable_since < 0.5:  # until the proxy stops taking bytes
                await asyncio.sleep(0.05)
                if link.stats.up.bytes_in != last:
                    last, stable_since = link.stats.up.bytes_in, time.monotonic()
        stats = link.stats
        assert stats.up.paused == 1 and stats.up.full >= 1
        assert stats.up.held <= profile.buffer + profile.wire + READ_SIZE, stats.up
        assert stats.up.bytes_in < 3 * 1024 * 1024, stats.up  # the rest is still with the sender
        assert c_writer.transport.get_write_buffer_size() > total - 4 * 1024 * 1024
        got = 0
        async with asyncio.timeout(15):  # the reader wakes up: everything arrives, and only it
            while got < total:
                data = await s_reader.read(1 << 20)
                assert data and data.count(b"x") == len(data)
                got += len(data)
        assert got == total and link.stats.up.paused == 0
        await close(c_writer, s_writer)


@no_leaks
async def test_blackhole_stops_both_ways_keeps_connections_then_resumes() -> None:
    profile = LinkProfile("t", one_way_delay=0.005)
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        c_reader, c_writer = await dial(link)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        link.blackhole(True)
        c_writer.write(b"up")
        s_writer.write(b"down")
        late_reader, late_writer = await dial(link)  # the kernel accepts, the link carries nothing
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s_reader.read(1), 0.3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c_reader.read(1), 0.05)
        assert up.accepted.empty() and link.stats.connections == 2
        link.blackhole(False)
        assert await asyncio.wait_for(s_reader.readexactly(2), 5) == b"up"
        assert await asyncio.wait_for(c_reader.readexactly(4), 5) == b"down"
        late_s_reader, late_s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        late_writer.write(b"hello")
        assert await asyncio.wait_for(late_s_reader.readexactly(5), 5) == b"hello"
        await close(c_writer, s_writer, late_writer, late_s_writer)


@no_leaks
async def test_reset_all_resets_both_sides() -> None:
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), PROFILES["lan"]) as link:
        c_reader, c_writer = await dial(link)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        c_writer.write(b"a")
        assert await asyncio.wait_for(s_reader.readexactly(1), 5) == b"a"
        assert link.reset_all() == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(c_reader.read(1), 5)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(s_reader.read(1), 5)
        await asyncio.sleep(0.05)
        assert link.stats.connections == 0 and link.stats.resets == 1
        await close(c_writer, s_writer)


@no_leaks
async def test_half_close_travels_with_the_delay_and_the_connection_ends() -> None:
    profile = LinkProfile("t", one_way_delay=0.05)
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        c_reader, c_writer = await dial(link)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        t0 = time.perf_counter()
        c_writer.write(b"request")
        c_writer.write_eof()
        assert await asyncio.wait_for(s_reader.read(), 5) == b"request"
        assert time.perf_counter() - t0 >= 0.0495
        s_writer.write(b"reply")
        s_writer.close()
        assert await asyncio.wait_for(c_reader.read(), 5) == b"reply"
        async with asyncio.timeout(5):
            while link.stats.connections:
                await asyncio.sleep(0.01)
        await close(c_writer, s_writer)


@no_leaks
async def test_unreachable_upstream_and_connection_cap_reset_the_client() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with LinkProxy(("127.0.0.1", dead), PROFILES["lan"]) as link:
        reader, writer = await dial(link)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 5)
        await close(writer)
        assert link.stats.failed == 1
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), max_connections=1) as link:
        _, first = await dial(link)
        second_reader, second = await dial(link)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(second_reader.read(1), 5)
        assert link.stats.refused == 1 and link.stats.connections == 1
        await close(first, second)


@no_leaks
async def test_set_profile_changes_the_delay_while_running() -> None:
    async with Upstream(echo=True) as up, LinkProxy(("127.0.0.1", up.port), PROFILES["lan"]) as link:
        reader, writer = await dial(link)
        fast = await ping_rtts(reader, writer, 3)
        link.set_profile(dataclasses.replace(PROFILES["lan"], one_way_delay=0.05))
        slow = await ping_rtts(reader, writer, 3)
        await close(writer)
    assert min(slow) >= 0.0995 and min(slow) > 10 * min(fast), (fast, slow)


@no_leaks
async def test_cli_prints_its_port_forwards_and_stops_on_sigterm() -> None:
    async with Upstream(echo=True) as up:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "testkit.link", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{up.port}",
            "--profile", "wan-50ms-100mbit", "--delay-ms", "20",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            m = re.fullmatch(r"link listening on 127\.0\.0\.1:(\d+)\n", line)
            assert m, line
            reader, writer = await asyncio.open_connection("127.0.0.1", int(m[1]))
            rtts = await ping_rtts(reader, writer, 3)
            assert min(rtts) >= 0.0395, rtts
            await close(writer)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err
    assert b"link stats: up 3 B" in err, err


def test_under_uvloop_as_benchmarks_run_it() -> None:
    """uvloop's transports are no asyncio.Transport subclasses and its sockets are pseudo-sockets."""
    uvloop = pytest.importorskip("uvloop")
    from tests.conftest import _open_fds

    async def scenario() -> None:
        profile = LinkProfile("t", one_way_delay=0.02, rate=8e6, buffer=64 * 1024)
        async with Upstream(echo=True) as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
            reader, writer = await dial(link)
            assert min(await ping_rtts(reader, writer, 3)) >= 0.0395
            writer.write(b"z" * 1_000_000)
            assert await asyncio.wait_for(reader.readexactly(1_000_000), 10) == b"z" * 1_000_000
            assert link.stats.up.full >= 1 and link.stats.up.max_queue <= profile.buffer + READ_SIZE
            assert link.reset_all() == 1
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), 5)
            await close(writer)
        assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    uvloop.run(asyncio.sleep(0))  # uvloop's one process-wide pipe, opened on first use
    before = _open_fds()
    uvloop.run(scenario())
    assert not _open_fds() - before, sorted(_open_fds() - before)


@no_leaks
async def test_connections_share_the_bottleneck() -> None:
    """The rate is the link's, per direction, not each connection's."""
    rate, each = 2_000_000, 1_200_000
    profile = LinkProfile("t", one_way_delay=0.005, rate=rate, buffer=64 * 1024)
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        pairs = []
        for _ in range(2):
            _, c_writer = await dial(link)
            s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
            pairs.append((c_writer, s_reader, s_writer))

        async def flow(c_writer: asyncio.StreamWriter, s_reader: asyncio.StreamReader) -> float:
            c_writer.write(b"b" * each)
            await s_reader.readexactly(each)
            return time.perf_counter()

        t0 = time.perf_counter()
        async with asyncio.timeout(20):
            ends = await asyncio.gather(*(flow(c, r) for c, r, _ in pairs))
        total_rate = 2 * each / (max(ends) - t0)
        await close(*(w for c, _, s in pairs for w in (c, s)))
    assert 0.75 * rate <= total_rate <= 1.1 * rate, total_rate
    assert max(ends) - min(ends) < 0.25 * (max(ends) - t0), ends  # both got a share, neither waited for the other


@no_leaks
async def test_a_reset_crosses_a_full_link_one_delay_later() -> None:
    """An RST is not flow-controlled: it reaches a receiver that reads nothing, past the queued bytes."""
    profile = LinkProfile("t", one_way_delay=0.05, rate=4e6, buffer=64 * 1024)
    async with Upstream() as up, LinkProxy(("127.0.0.1", up.port), profile) as link:
        c_reader, c_writer = await dial(link)
        s_reader, s_writer = await asyncio.wait_for(up.accepted.get(), 5)
        c_writer.write(b"q" * 4_000_000)  # the upstream reads nothing: the link fills up to it
        last, stable_since = -1, time.monotonic()
        async with asyncio.timeout(10):
            while time.monotonic() - stable_since < 0.3 or not link.stats.up.paused:
                await asyncio.sleep(0.02)
                if link.stats.up.bytes_out != last:
                    last, stable_since = link.stats.up.bytes_out, time.monotonic()
        assert link.stats.up.held > 0
        t0 = time.perf_counter()
        linger0 = struct.pack("ii", 1, 0)
        c_writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        c_writer.transport.abort()
        async with asyncio.timeout(5):
            while link.stats.connections:
                await asyncio.sleep(0.005)
        assert time.perf_counter() - t0 >= 0.045
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                while await s_reader.read(1 << 20):
                    pass
        await close(s_writer)
