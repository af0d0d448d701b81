"""Our edge facing a Go cloudcore: a WebSocket server that behaves as KubeEdge's does (no
feature header, Go's JSON, TEXT frames, CLOSE_CONNECT on registration failure) and checks
what our edge sends back, byte for byte where it matters."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import ServerConnection, serve

from certs import server_context
from proto.tunnel import MessageType, decode, encode
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
