"""Our edge, due for certificate renewal, facing a Go cloudcore: ``renew`` is offered in the
dial header (which a Go cloud ignores), never negotiated, so the Go cloud never receives a
renewal message (type >= 7); the edge says once that renewal needs our cloudstream and keeps
its certificate."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from streamcerts import load_cert, load_key, write_pem
from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EdgeConfig
from edgestream.session import AgentSession
from edgestream.tunnel_client import run_tunnel
from streamproto.tunnel import decode
from testkit.short_certs import issue_edge_cert

from .test_go_cloud_interop import go_cloud  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_go_cloud_never_sees_a_renewal(go_cloud, lab_pki, tmp_path: Path, no_leaks, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, "edgestream")
    cloud, port = go_cloud
    cert, key = issue_edge_cert(load_cert(lab_pki.ca_cert), load_key(lab_pki.ca_key), "edge-1", ("127.0.0.1",), lifetime=120)
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    write_pem(cert_path, cert, key, key_path)
    before = cert_path.read_bytes(), key_path.read_bytes()
    config = EdgeConfig(
        server=f"localhost:{port}", node_name="edge-1", node_ip="127.0.0.1", tls_tunnel_ca_file=lab_pki.ca_cert,
        tls_tunnel_cert_file=cert_path, tls_tunnel_private_key_file=key_path, backend="emulator",
        renew_fraction=0.01, renew_min_left=0,  # due 1.2 s after issue
        reconnect_initial=0.05, reconnect_max=0.2,
    )
    sessions: list[AgentSession | None] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_tunnel(config, EmulatorBackend(config.emulator), stop, sessions.append))
    try:
        ws = await asyncio.wait_for(cloud.connections.get(), 10)
        assert "renew" in cloud.dial_headers[-1].get("x-kubeedge-stream-features", "")
        received: list[bytes] = []

        async def read() -> None:
            async for data in ws:
                received.append(data if isinstance(data, bytes) else data.encode())

        reader = asyncio.create_task(read())
        for _ in range(100):
            if any("renewal over the tunnel needs kubeedge-stream's cloudstream" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything the edge would send after its notice
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        assert all(decode(m).kind < 7 for m in received), [decode(m) for m in received]
        notices = [r.getMessage() for r in caplog.records if "needs kubeedge-stream's cloudstream" in r.getMessage()]
        assert len(notices) == 1 and "this cloud is a Go cloudcore" in notices[0] and str(cert_path) in notices[0]
        assert (cert_path.read_bytes(), key_path.read_bytes()) == before
        assert sessions[-1] is not None and not sessions[-1].features
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
