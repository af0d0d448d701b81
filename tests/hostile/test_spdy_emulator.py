"""Hostile SPDY peers against the emulator's kubelet-style SPDY server, through 10003 and the
tunnel: a zlib bomb, a stream flood, a stdin flood nobody reads. Each is refused or held back
by TCP with bounded memory; the emulated node still answers a normal exec afterwards, and the
fleet fixture checks that the bystander kept flowing and cloudstream leaked nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from streamproto.aio.spdy import SpdyConnection
from streamproto.spdy import GoAwayReceived, HeaderCompressor, Role, RstStatus, Session, StreamReset
from streamproto.spdy.frames import FrameType, control_header
from tests.conftest import MS
from tests.integration.framework import apiserver_tls, kubelet_request

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

SPDY = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "Content-Length": "0"}
EXEC = {**SPDY, "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
PF = {**SPDY, "X-Stream-Protocol-Version": "portforward.k8s.io"}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


async def read_events(resp, session: Session, until, timeout: float = 10.0) -> list:
    events: list = []
    async with asyncio.timeout(timeout * MS):
        while not until(events):
            data = await resp.reader.read(65536)
            if not data:
                break
            session.receive_data(data)
            events += session.events_received()
    return events


async def test_zlib_bomb_gets_goaway(fleet: Fleet) -> None:
    await fleet.edge("attacker")
    async with kubelet_request(fleet.stream_port, "/portForward/default/demo", host="attacker",
                               tls=apiserver_tls(fleet.layout), method="POST", headers=PF) as resp:
        assert resp.status == 101
        bomb = HeaderCompressor().compress([("x", "a" * 4_000_000)])
        body = (1).to_bytes(4, "big") + bytes(6) + bomb
        resp.writer.write(control_header(FrameType.SYN_STREAM, 0, len(body)) + body)
        session = Session(Role.CLIENT)
        events = await read_events(resp, session, lambda ev: any(isinstance(e, GoAwayReceived) for e in ev))
        assert GoAwayReceived(0, 1) in events  # PROTOCOL_ERROR, before inflating past 64 KiB
        assert await asyncio.wait_for(resp.reader.read(), 10 * MS) == b""  # and the session is closed


async def test_stream_flood_is_refused_past_the_limit(fleet: Fleet) -> None:
    await fleet.edge("attacker")
    async with kubelet_request(fleet.stream_port, "/portForward/default/demo", host="attacker",
                               tls=apiserver_tls(fleet.layout), method="POST", headers=PF) as resp:
        assert resp.status == 101
        session = Session(Role.CLIENT)
        for i in range(700):  # data streams that never get their error stream: pairs pile up
            session.open_stream([("streamtype", "data"), ("port", "80"), ("requestid", str(i))])
        resp.writer.write(session.data_to_send())
        refused = lambda ev: sum(isinstance(e, StreamReset) for e in ev) >= 700 - 256  # noqa: E731
        events = await read_events(resp, session, refused)
        resets = [e for e in events if isinstance(e, StreamReset)]
        assert len(resets) >= 700 - 256, len(resets)
        assert {e.status for e in resets} <= {RstStatus.CANCEL, RstStatus.REFUSED_STREAM}


async def test_stdin_nobody_reads_holds_the_client_back(fleet: Fleet) -> None:
    edge = await fleet.edge("attacker")
    before = rss_mb(edge.proc.pid)
    async with kubelet_request(fleet.stream_port, "/exec/default/demo/app?command=sleep&command=60&input=1&output=1",
                               host="attacker", tls=apiserver_tls(fleet.layout), method="POST", headers=EXEC) as resp:
        assert resp.status == 101
        session = Session(Role.CLIENT)
        for kind in ("error", "stdin", "stdout"):
            session.open_stream([("streamtype", kind)])
        resp.writer.write(session.data_to_send())
        chunk = bytes(1 << 20)
        sent = 0
        try:
            async with asyncio.timeout(5 * MS):
                while sent < (200 << 20):
                    session.send_data(3, chunk)  # stream 3 = stdin; windows ignored, as Go peers do
                    resp.writer.write(session.data_to_send())
                    await resp.writer.drain()
                    sent += len(chunk)
        except TimeoutError:
            pass
        grew = rss_mb(edge.proc.pid) - before
        assert sent < (200 << 20), "200 MB went into a stdin nobody reads: nothing held the client back"
        assert grew < 64, f"the edge grew {grew:.0f} MB buffering a stdin nobody reads"


async def test_the_node_still_answers_exec(fleet: Fleet) -> None:
    await fleet.edge("attacker")
    async with kubelet_request(fleet.stream_port, "/exec/default/demo/app?command=echo&command=ok&output=1",
                               host="attacker", tls=apiserver_tls(fleet.layout), method="POST", headers=EXEC) as resp:
        assert resp.status == 101

        async def read():
            return await resp.reader.read(65536) or None

        async def write(data):
            resp.writer.write(data)
            await resp.writer.drain()

        conn = SpdyConnection(Role.CLIENT, read, write)
        task = asyncio.create_task(conn.run())
        error, out = [await conn.open_stream([("streamtype", t)]) for t in ("error", "stdout")]
        async with asyncio.timeout(10 * MS):
            assert await out.read() == b"ok\n"
            status = await error.read()
        assert json.loads(status) == {"metadata": {}, "status": "Success"}
        await conn.goaway()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
