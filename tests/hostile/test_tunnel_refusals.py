"""Finding 7 (the part on 10004 after TLS): every refused dial is logged with the peer's address
and the reason, once per interval however often the peer tries; the peer reads the reason."""

from __future__ import annotations

import asyncio

import pytest

from bench.flood_client import attacker_tls

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(60)]

GOOD = (
    "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nUser-Agent: Go-http-client/1.1\r\n"
)


async def _dial(fleet: Fleet, head: str) -> bytes:
    layout = fleet.layout
    tls = attacker_tls(layout.ca_cert, layout.edge_cert("attacker"), layout.edge_key("attacker"))
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.tunnel_port, ssl=tls, server_hostname="localhost")
    try:
        writer.write(head.encode() + b"\r\n")
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        ("GET /admin HTTP/1.1\r\n" + GOOD + "SessionHostNameOverride: attacker\r\n", 404, "no tunnel endpoint at '/admin'"),
        ("GET /v1/kubeedge/connect HTTP/1.1\r\n" + GOOD, 400, "no SessionHostNameOverride header"),
        ("GET /v1/kubeedge/connect HTTP/1.1\r\n" + GOOD + "SessionHostNameOverride: victim\r\n", 403,
         "certificate CN='attacker' may not register node 'victim'"),
        ("GET /v1/kubeedge/connect HTTP/1.1\r\n" + GOOD.replace("Version: 13", "Version: 8")
         + "SessionHostNameOverride: attacker\r\n", 400,
         "invalid WebSocket handshake: invalid Sec-WebSocket-Version header: 8"),
    ],
)
async def test_each_refusal_is_logged_once_with_peer_and_reason(fleet: Fleet, head: str, status: int, reason: str) -> None:
    since = len(fleet.cloud.lines)
    for _ in range(30):
        answer = await _dial(fleet, head)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    if "handshake" not in reason:
        assert reason.encode() in answer  # the peer reads why
    await asyncio.sleep(0.2)
    lines = fleet.log_lines(r"refused a tunnel dial", since)
    assert len(lines) == 1, lines  # 30 refusals, one line; the others are counted in the next summary
    assert f"refused a tunnel dial from 127.0.0.1 with {status}: " in lines[0] and reason in lines[0], lines[0]
    assert not fleet.log_lines(r"websockets\.server", since)  # no unexplained line per connection
