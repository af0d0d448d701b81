"""Our edge facing a Go cloudcore: a WebSocket server that behaves as KubeEdge's does (no
feature header, Go's JSON, TEXT frames, CLOSE_CONNECT on registration failure) and checks
what our edge sends back, byte for byte where it matters."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamcerts import Layout, server_context
from edgestream.backends.base import BaseBackend
from edgestream.config import EdgeConfig
from edgestream.session import AgentSession
from edgestream.stream import EdgeStream
from edgestream.tunnel_client import run_tunnel
from streamproto.tunnel import MessageType, decode, encode
from tests.conftest import SHARED

from .test_faults import running_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GOLDEN = json.loads((SHARED / "spec" / "kubeedge-golden.json").read_text()) if SHARED.exists() else None


class GoCloud:
    """Accepts one edge at a time and hands its connection to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue(maxsize=10)
        self.dial_headers: list[dict[str, str]] = []

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.dial_headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        await self.connections.put(ws)
        await ws.wait_closed()


@pytest.fixture
async def go_cloud(lab_pki):
    cloud = GoCloud()
    tls = server_context(lab_pki.server_cert, lab_pki.server_key, lab_pki.ca_cert, require_client_cert=True)
    async with serve(cloud.handler, "127.0.0.1", 0, ssl=tls, compression=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield cloud, port


async def recv_message(ws: ServerConnection, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            data = await ws.recv(decode=False)
            message = decode(data)
            return message, data


@pytest.mark.skipif(GOLDEN is None, reason="golden vectors absent")
async def test_our_edge_serves_a_go_cloud(go_cloud, lab_pki, no_leaks) -> None:
    cloud, port = go_cloud
    async with running_edge(lab_pki, "edge-1", port):
        ws = await asyncio.wait_for(cloud.connections.get(), 10)
        headers = cloud.dial_headers[-1]
        assert headers["sessionhostnameoverride"] == "edge-1" and headers["sessioninternalip"] == "127.0.0.1"
        assert "origin" not in headers and "sec-websocket-extensions" not in headers
        assert "sec-websocket-protocol" not in headers

        # Go's own bytes for a LOGS_CONNECT (golden), retargeted at an emulated container.
        case = next(c for c in GOLDEN["connect_messages"] if c["name"] == "logs_follow_tail")
        payload = case["json"].replace("/containerLogs/default/nginx/nginx", "/containerLogs/default/demo/app")
        payload = payload.replace("follow=true\\u0026tailLines=10", "tailLines=2")
        await ws.send(encode(7, MessageType.LOGS_CONNECT, payload.encode()), text=True)
        body = b""
        while True:
            message, raw = await recv_message(ws)
            assert message.connect_id == 7
            if message.kind == MessageType.REMOVE_CONNECT:
                break
            assert message.kind == MessageType.DATA  # no STATUS: the Go cloud announced no features
            body += bytes(message.data)
        assert body.count(b"\n") == 2 and b"default/demo/app line" in body

        # An error is sent as body text (a Go cloud already answered 200), then REMOVE.
        bad = case["json"].replace("/containerLogs/default/nginx/nginx", "/containerLogs/default/nosuch/app")
        await ws.send(encode(8, MessageType.LOGS_CONNECT, bad.encode()), text=True)
        message, _ = await recv_message(ws)
        assert message.kind == MessageType.DATA and b"nosuch" in bytes(message.data)
        message, _ = await recv_message(ws)
        assert message.kind == MessageType.REMOVE_CONNECT

        # Type 7 (which kills released Go edges) and garbage are ignored; the tunnel stays up.
        await ws.send(bytes.fromhex("05077b7d"), text=True)
        await ws.send(b"\x80", text=True)
        await ws.send(b"\x63\x04", text=True)  # REMOVE for an unknown id: ignored, never echoed
        await ws.send(encode(9, MessageType.METRIC_CONNECT, case["json"].replace("/containerLogs/default/nginx/nginx", "/stats/summary").encode()), text=True)
        message, raw = await recv_message(ws)
        assert message.connect_id == 9 and message.kind == MessageType.DATA
        assert raw[:2] == b"\x09\x03"  # DATA travels as a TEXT frame with a binary header

        # Registration failure: CLOSE_CONNECT id 0 ends the tunnel; the edge redials.
        await ws.send(bytes.fromhex(GOLDEN["fixed_messages"]["CLOSE_CONNECT_update_failed"]), text=True)
        again = await asyncio.wait_for(cloud.connections.get(), 10)
        assert again is not ws
        await ws.wait_closed()


async def test_edge_echoes_remove_once_for_a_go_cloud_remove_storm(go_cloud, lab_pki, no_leaks) -> None:
    """A Go cloud that closes an exec first re-sends REMOVE_CONNECT in a loop: the edge must
    stop the stream, answer once, and ignore the rest."""
    cloud, port = go_cloud
    async with running_edge(lab_pki, "edge-1", port) as sessions:
        ws = await asyncio.wait_for(cloud.connections.get(), 10)
        connect = {"MessID": 11, "url": {"Scheme": "http", "Host": "127.0.0.1:10350",
                   "Path": "/containerLogs/default/demo/app", "RawQuery": "follow=true"}, "header": None}
        await ws.send(encode(11, MessageType.LOGS_CONNECT, json.dumps(connect).encode()), text=True)
        message, _ = await recv_message(ws)
        assert message.kind == MessageType.DATA
        for _ in range(160):
            await ws.send(encode(11, MessageType.REMOVE_CONNECT), text=True)
        removes = 0
        try:
            async with asyncio.timeout(1.0):
                while True:
                    message, _ = await recv_message(ws)
                    if message.kind == MessageType.REMOVE_CONNECT:
                        removes += 1
        except TimeoutError:
            pass
        assert removes == 1
        edge = sessions[-1]
        assert edge is not None and not edge.streams and not edge.mux.streams


# ----------------------------------------------------------------- REMOVE_CONNECT, as a Go cloud does it


async def go_remove_loop(ws: ServerConnection, cid: int, answered: asyncio.Event, limit: int = 1_000_000) -> int:
    """What a Go cloudcore (v1.14+) does once the API server's side of an exec hits EOF: send
    REMOVE_CONNECT, read EOF again, send it again ... until the edge's REMOVE_CONNECT for that id
    has arrived (spec kubeedge-tunnel-detail.md §3.4, step 6b). Returns how many it sent."""
    sent = 0
    remove = encode(cid, MessageType.REMOVE_CONNECT)
    while not answered.is_set() and sent < limit:
        await ws.send(remove, text=True)
        sent += 1
        await asyncio.sleep(0)  # the Go reader goroutine runs alongside
    return sent


class Watcher:
    """The Go cloud's tunnel reader: notes when the edge's REMOVE_CONNECT for ``cid`` arrives."""

    def __init__(self, ws: ServerConnection, cid: int, probe: Callable[[], object] = lambda: None) -> None:
        self.ws, self.cid, self.probe = ws, cid, probe
        self.answered = asyncio.Event()
        self.answered_at = 0.0
        self.removes = 0
        self.data = b""
        self.probed: object = None
        """``probe()`` at the moment the edge's answer arrived."""

    async def run(self) -> None:
        while True:
            try:
                message = decode(await self.ws.recv(decode=False))
            except ConnectionClosed:
                return
            if message.connect_id != self.cid:
                continue
            if message.kind == MessageType.REMOVE_CONNECT:
                self.removes += 1
                if not self.answered.is_set():
                    self.answered_at = time.perf_counter()
                    self.probed = self.probe()
                    self.answered.set()
            elif message.kind == MessageType.DATA:
                self.data += bytes(message.data)


class SlowToTearDown(BaseBackend):
    """An exec whose backend needs a while to close (a CRI call, a socket linger): the edge must
    answer the cloud's REMOVE_CONNECT before that, not after."""

    def __init__(self, teardown: float) -> None:
        self.teardown = teardown
        self.torn_down = asyncio.Event()

    async def exec(self, stream: EdgeStream, ns: str, pod: str, container: str, *, attach: bool) -> None:
        await stream.send(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        try:
            while await stream.read() is not None:
                pass
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(self.teardown)
            self.torn_down.set()


@asynccontextmanager
async def edge_with(layout: Layout, port: int, backend: BaseBackend):
    config = EdgeConfig(
        server=f"localhost:{port}", node_name="edge-1", node_ip="127.0.0.1", tls_tunnel_ca_file=layout.ca_cert,
        tls_tunnel_cert_file=layout.edge_cert("edge-1"), tls_tunnel_private_key_file=layout.edge_key("edge-1"),
        reconnect_initial=0.05, reconnect_max=0.2,
    )
    sessions: list[AgentSession | None] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_tunnel(config, backend, stop, sessions.append))
    try:
        yield sessions
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


EXEC = {"MessID": 21, "url": {"Scheme": "http", "Host": "127.0.0.1:10350", "Path": "/exec/default/demo/app",
                              "RawQuery": "command=sh&input=1&output=1"},
        "header": {"Connection": ["Upgrade"], "Upgrade": ["SPDY/3.1"]}, "method": "POST"}


async def test_the_edge_answers_a_go_remove_before_tearing_the_backend_down(go_cloud, lab_pki, no_leaks, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cloud, port = go_cloud
    backend = SlowToTearDown(teardown=1.0)
    async with edge_with(lab_pki, port, backend) as sessions:
        ws = await asyncio.wait_for(cloud.connections.get(), 10)
        watcher = Watcher(ws, 21, probe=backend.torn_down.is_set)
        reader = asyncio.create_task(watcher.run())
        await ws.send(encode(21, MessageType.EXEC_CONNECT, json.dumps(EXEC).encode()), text=True)
        async with asyncio.timeout(10):
            while b"101" not in watcher.data:
                await asyncio.sleep(0.01)
        await ws.send(encode(21, MessageType.DATA, b"typed"), text=True)
        first = time.perf_counter()
        sent = await asyncio.wait_for(go_remove_loop(ws, 21, watcher.answered), 10)
        assert watcher.probed is False, "the edge answered only after the backend was torn down"
        assert watcher.answered_at > first
        await asyncio.wait_for(backend.torn_down.wait(), 5)
        edge = sessions[-1]
        assert edge is not None
        async with asyncio.timeout(5):  # every repeat the edge read was counted ...
            while edge.removes_repeated < sent - 1 or edge.streams:
                await asyncio.sleep(0.01)
        assert edge.removes_repeated == sent - 1
        assert watcher.removes == 1  # ... and answered once, never echoed again
        assert not edge.mux.streams
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    # ... and none of them was logged on its own, even at DEBUG
    lines = [r.getMessage() for r in caplog.records if "REMOVE" in r.getMessage() or "stream 21" in r.getMessage()]
    assert len(lines) <= 3, lines


async def test_an_encoded_slash_never_reaches_pod_demo(go_cloud, lab_pki, no_leaks) -> None:
    """A Go cloud sends Path decoded and RawPath as the API server had it: the edge parses the
    raw path, so ``demo%2Fx`` is one (impossible) pod name, not pod ``demo`` with uid ``x``."""
    cloud, port = go_cloud
    async with running_edge(lab_pki, "edge-1", port):
        ws = await asyncio.wait_for(cloud.connections.get(), 10)
        connect = {"MessID": 31, "url": {"Scheme": "http", "Host": "127.0.0.1:10350",
                   "Path": "/containerLogs/default/demo/x/app", "RawPath": "/containerLogs/default/demo%2Fx/app",
                   "RawQuery": "tailLines=5"}, "header": None}
        await ws.send(encode(31, MessageType.LOGS_CONNECT, json.dumps(connect).encode()), text=True)
        body = b""
        while True:
            message, _ = await recv_message(ws)
            assert message.connect_id == 31
            if message.kind == MessageType.REMOVE_CONNECT:
                break
            body += bytes(message.data)
        assert b"pod name 'demo%2Fx' contains an encoded slash" in body, body
        assert b"line" not in body  # nothing of pod demo
