"""Real processes configured by the environment alone (as a systemd EnvironmentFile or a
Kubernetes Deployment configures them), a flag winning over its variable, and a bad variable
refused at start with its name."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import MS

from .framework import READY, Process, apiserver_tls
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_cloud_and_edge_configured_by_environment_only(lab_pki, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CLOUDSTREAM_PKI_DIR": str(lab_pki.root),
        "CLOUDSTREAM_STREAM_ADDRESS": "127.0.0.1",
        "CLOUDSTREAM_STREAM_PORT": "0",
        "CLOUDSTREAM_TUNNEL_ADDRESS": "127.0.0.9",  # the flag below wins over this one
        "CLOUDSTREAM_TUNNEL_PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    cloud = await Process.start("cloudstream", ["cloudstream", "--tunnel-address", "127.0.0.1"])
    edge = None
    try:
        ready = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = int(ready.group(1)), int(ready.group(2))
        assert f"kubelet API on 127.0.0.1:{stream_port}, tunnel on 127.0.0.1:{tunnel_port}" in ready.string
        for name, value in {
            "EDGESTREAM_PKI_DIR": str(lab_pki.root),
            "EDGESTREAM_NODE_NAME": "edge-2",
            "EDGESTREAM_NODE_IP": "127.0.0.1",
            "EDGESTREAM_SERVER": f"localhost:{tunnel_port}",
            "EDGESTREAM_BACKEND": "emulator",
            "EDGESTREAM_EMULATE": "ns1/envpod/app",
        }.items():
            monkeypatch.setenv(name, value)
        edge = await Process.start("edgestream", ["edgestream"])
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-2", "/containerLogs/ns1/envpod/app?tailLines=1")
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()


async def test_a_bad_variable_stops_the_start_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESTREAM_PING_INTERVAL", "5s")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgestream", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30 * MS)
    assert proc.returncode == 2 and not out
    assert "environment EDGESTREAM_PING_INTERVAL='5s': could not convert string to float: '5s'" in err.decode()
