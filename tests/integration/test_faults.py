"""Fault tests, in-process so that they can end by asserting nothing leaked: no task, no file
descriptor, no stream state left on either side (the asyncio counterpart of goleak)."""

from __future__ import annotations

import asyncio
import ssl
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from websockets.asyncio.client import connect

from streamcerts import Layout, client_context
from cloudstream.app import Running, serve
from cloudstream.config import CloudConfig
from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EdgeConfig, EmulatorConfig
from edgestream.session import AgentSession
from edgestream.tunnel_client import run_tunnel
from tests.conftest import MS

from .framework import apiserver_tls, kubelet_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def cloud_config(layout: Layout, **overrides: object) -> CloudConfig:
    base = CloudConfig(
        tunnel_address="127.0.0.1", tunnel_port=0, stream_address="127.0.0.1", stream_port=0,
        tls_tunnel_ca_file=layout.ca_cert, tls_tunnel_cert_file=layout.server_cert,
        tls_tunnel_private_key_file=layout.server_key, tls_stream_ca_file=layout.stream_ca,
        tls_stream_cert_file=layout.stream_cert, tls_stream_private_key_file=layout.stream_key,
        shutdown_timeout=2,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_cloud(layout: Layout, **overrides: object):
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(cloud_config(layout, **overrides), ready.set_result, stop))
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def running_edge(layout: Layout, node: str, tunnel_port: int, rate: float = 50.0):
    config = EdgeConfig(
        server=f"localhost:{tunnel_port}", node_name=node, node_ip="127.0.0.1",
        tls_tunnel_ca_file=layout.ca_cert, tls_tunnel_cert_file=layout.edge_cert(node),
        tls_tunnel_private_key_file=layout.edge_key(node),
        emulator=EmulatorConfig(pods=(("default", "demo", "app"),), log_rate=rate, line_size=200 if rate == 0 else 0),
        reconnect_initial=0.05, reconnect_max=0.2,
    )
    sessions: list[AgentSession | None] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_tunnel(config, EmulatorBackend(config.emulator), stop, sessions.append))
    try:
        for _ in range(200):
            if sessions and sessions[-1] is not None:
                break
            await asyncio.sleep(0.02)
        yield sessions
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout * MS):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_client_leaving_a_follow_frees_both_sides(lab_pki, no_leaks) -> None:
    async with running_cloud(lab_pki) as cloud, running_edge(lab_pki, "edge-1", cloud.tunnel_port) as sessions:
        tls = apiserver_tls(lab_pki)
        for _ in range(3):
            async with kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls) as resp:
                assert resp.status == 200
                chunks = resp.chunks()
                await chunks.__anext__()
                await chunks.aclose()
        edge = sessions[-1]
        session = cloud.registry.get("edge-1")
        assert session is not None and edge is not None
        await wait_until(lambda: not session.streams and not session.mux.streams and not edge.streams and not edge.mux.streams)


async def test_edge_dropping_mid_stream_fails_the_stream_and_leaks_nothing(lab_pki, no_leaks) -> None:
    async with running_cloud(lab_pki) as cloud:
        tls = apiserver_tls(lab_pki)
        async with running_edge(lab_pki, "edge-1", cloud.tunnel_port) as sessions:
            resp_cm = kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls)
            resp = await resp_cm.__aenter__()
            chunks = resp.chunks()
            await chunks.__anext__()
            edge = sessions[-1]
            assert edge is not None
            edge.ws.transport.abort()  # the network goes away under the tunnel
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
                async with asyncio.timeout(10 * MS):
                    async for _ in chunks:
                        pass
            await resp_cm.__aexit__(None, None, None)
            # the edge redials by itself and the node serves again
            await wait_until(lambda: len(sessions) >= 3 and sessions[-1] is not None)
            async with kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?tailLines=1", host="edge-1", tls=tls) as again:
                assert again.status == 200 and b"line" in await again.body()


async def test_malformed_messages_do_not_break_the_tunnel(lab_pki, no_leaks) -> None:
    """A misbehaving edge: garbage, binary frames, unknown types and ids. The cloud drops each
    bad message alone (a Go cloud drops the tunnel) and keeps serving the node."""
    async with running_cloud(lab_pki) as cloud:
        tls = client_context(lab_pki.ca_cert, lab_pki.edge_cert("edge-2"), lab_pki.edge_key("edge-2"))
        async with connect(
            f"wss://localhost:{cloud.tunnel_port}/v1/kubeedge/connect", ssl=tls,
            additional_headers={"SessionHostNameOverride": "edge-2", "SessionInternalIP": "10.1.1.1"},
        ) as fake_edge:
            for bad in (b"\x80", b"\x01", b"\xff" * 11 + b"\x03", b"\x63\x07{}", b"\x63\x03x", b"\x63\x04", b"\x00\x05bye"):
                await fake_edge.send(bad, text=True)
            await fake_edge.send(b"\x63\x03binary", text=False)
            async with kubelet_request(
                cloud.stream_port, "/containerLogs/a/b/c", host="edge-2", tls=apiserver_tls(lab_pki)
            ) as resp:
                assert resp.status == 200  # KubeEdge mode: no status extension
                connect_msg = await fake_edge.recv(decode=False)
                cid = connect_msg[0]
                await fake_edge.send(bytes([cid, 3]) + b"still here\n", text=True)
                await fake_edge.send(bytes([cid, 4]), text=True)
                await fake_edge.send(bytes([cid, 4]), text=True)  # a duplicate REMOVE: ignored
                assert await resp.body() == b"still here\n"
            session = cloud.registry.get("edge-2")
            assert session is not None
            await wait_until(lambda: not session.streams and not session.mux.streams)


async def test_stalled_client_fails_only_its_own_stream(lab_pki, no_leaks) -> None:
    """A client that stops reading a fast `logs -f`: after stall_timeout only its stream ends;
    another stream on the same node keeps working."""
    async with running_cloud(lab_pki, stall_timeout=1.0, stream_buffer=64 * 1024) as cloud, running_edge(
        lab_pki, "edge-1", cloud.tunnel_port, rate=0
    ):
        tls = apiserver_tls(lab_pki)
        stalled_cm = kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls)
        stalled = await stalled_cm.__aenter__()
        assert stalled.status == 200  # and now never read
        try:
            await asyncio.sleep(1.5 * MS)
            async with kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?tailLines=3", host="edge-1", tls=tls) as other:
                assert other.status == 200
                assert (await other.body()).count(b"\n") == 3
            session = cloud.registry.get("edge-1")
            assert session is not None
            await wait_until(lambda: not session.streams)  # the stalled stream was ended
        finally:
            stalled.writer.transport.abort()
            await stalled_cm.__aexit__(None, None, None)


async def test_exec_relay_on_asyncio_and_client_abort_leaks_nothing(lab_pki, no_leaks) -> None:
    """The zero-copy upgrade relay on the plain asyncio loop (subprocess tests run uvloop):
    bytes arrive exact, and a client vanishing mid-exec frees everything."""
    import os

    from .k8s_ws import open_ws, run_exec

    async with running_cloud(lab_pki) as cloud, running_edge(lab_pki, "edge-1", cloud.tunnel_port) as sessions:
        tls = apiserver_tls(lab_pki)
        payload = os.urandom(200_000)
        ws = await open_ws(cloud.stream_port, "/exec/default/demo/app?command=cat&input=1&output=1", node="edge-1", tls=tls)
        result = await run_exec(ws, stdin=[payload[i : i + 9000] for i in range(0, len(payload), 9000)])
        assert result.stdout == payload and result.exit_code == 0
        ws = await open_ws(cloud.stream_port, "/exec/default/demo/app?command=cat&input=1&output=1", node="edge-1", tls=tls)
        await ws.send(b"\x00hello")
        assert await ws.recv() in (b"\x01", b"\x01hello")  # the server's channel-open frame or the echo
        ws.transport.abort()  # the API server goes away mid-exec
        session = cloud.registry.get("edge-1")
        edge = sessions[-1]
        assert session is not None and edge is not None
        await wait_until(lambda: not session.streams and not session.mux.streams and not edge.streams)


async def test_a_stalled_reader_costs_other_streams_nothing(lab_pki, no_leaks) -> None:
    """Flow control (both sides kubeedge-stream): a client that stops reading a full-speed
    `logs -f` holds back its own stream only. Exec round trips on the same node stay fast, the
    stalled stream is not killed, its buffer stays within the window, and when the client
    reads again every line arrives, in order."""
    import time as _time

    from streamproto.aio.sockets import NOTSENT_LOWAT
    from streamproto.tunnel import FLOW_WINDOW

    from .k8s_ws import open_ws

    async with running_cloud(lab_pki, stall_timeout=2.0) as cloud, running_edge(
        lab_pki, "edge-1", cloud.tunnel_port, rate=0
    ):
        tls = apiserver_tls(lab_pki)
        stalled_cm = kubelet_request(cloud.stream_port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls)
        stalled = await stalled_cm.__aenter__()
        try:
            assert stalled.status == 200
            ws = await open_ws(cloud.stream_port, "/exec/default/demo/app?command=cat&input=1&output=1", node="edge-1", tls=tls)
            worst = 0.0
            began = _time.monotonic()
            while _time.monotonic() - began < 3.0:  # longer than stall_timeout: nothing may be killed
                t = _time.perf_counter()
                await ws.send(b"\x00x")
                while (await ws.recv()) != b"\x01x":
                    pass
                worst = max(worst, _time.perf_counter() - t)
                await asyncio.sleep(0.01)
            await ws.close()
            assert worst < 0.5, f"an exec round trip took {worst * 1000:.0f} ms beside the stalled stream"
            session = cloud.registry.get("edge-1")
            assert session is not None
            (stream,) = [s for s in session.streams.values() if s.kind.name == "LOGS_CONNECT"]
            # bounded by the stream's window (which may have grown with the measured BDP), not by a timeout
            window = session.mux.streams[stream.connect_id].recv_window
            assert stream.buffer.size <= window <= session.mux.stream_window_max
            # and the cloud's kernel holds a short unsent queue for it (TCP_NOTSENT_LOWAT), not the
            # megabytes Linux queues for a reader that stopped: a long link carries each such byte
            client = stalled.writer.get_extra_info("sockname")[1]
            queued = _send_queue(cloud.stream_port, client)
            assert queued <= NOTSENT_LOWAT + 128 * 1024, f"{queued} bytes queued by the cloud for a reader that stopped"
            # the client reads again: the lines continue without a gap
            buf = b""
            async with asyncio.timeout(10):
                async for chunk in stalled.chunks():
                    buf += chunk
                    if len(buf) > 2 * FLOW_WINDOW:
                        break
            numbers = [int(line.split(b" line ")[1].split()[0]) for line in buf.split(b"\n")[:-1]]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        finally:
            stalled.writer.transport.abort()
            await stalled_cm.__aexit__(None, None, None)


def _send_queue(local_port: int, remote_port: int) -> int:
    """Send-Q (bytes not yet acknowledged) of the loopback TCP socket local_port -> remote_port,
    from /proc/net/tcp (its tx_queue: unsent plus in flight, and nothing flies into a closed window)."""
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
            if (int(local, 16), int(remote, 16)) == (local_port, remote_port):
                return int(fields[4].split(":")[0], 16)
    raise AssertionError(f"no TCP socket 127.0.0.1:{local_port} -> :{remote_port}")
