"""The tunnel's life: keepalive finds dead peers, the edge redials with backoff and says why."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.conftest import MS, free_port

from .framework import Process, apiserver_tls, kubelet_request, start_cloud, start_edge
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_frozen_edge_is_detected_by_keepalive(lab_pki) -> None:
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki, "--ping-interval", "0.5", "--ping-timeout", "1")
    edge = await start_edge(lab_pki, "edge-1", tunnel_port)
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-1")
        edge.proc.send_signal(signal.SIGSTOP)  # alive but silent: TCP stays open, nothing answers
        began = time.monotonic()
        await cloud.wait_for_line("tunnel down: node edge-1", timeout=15)
        assert time.monotonic() - began < 5 * MS
        async with kubelet_request(stream_port, "/containerLogs/default/demo/app", host="edge-1", tls=apiserver_tls(lab_pki)) as resp:
            assert resp.status == 503
            body = await resp.body()
        # the fix names the port edges really dial (bound as --tunnel-port 0), not the flag's 0
        assert f"reaches tunnel port {tunnel_port} ".encode() in body, body
    finally:
        edge.proc.send_signal(signal.SIGCONT)
        await edge.stop()
        await cloud.stop()


async def test_edge_waits_for_the_cloud_and_redials_with_backoff(lab_pki) -> None:
    tunnel_port = free_port()
    edge = await start_edge(lab_pki, "edge-2", tunnel_port)
    cloud: Process | None = None
    try:
        m = await edge.wait_for_line(r"failed \(attempt 1\): (.*); retrying in ([\d.]+) s")
        assert "nothing listens on" in m.group(1)
        m2 = await edge.wait_for_line(r"failed \(attempt 3\).*retrying in ([\d.]+) s")
        # spread first retry, then decorrelated jitter: every delay within [0.05 s, the 6 s cap]
        assert 0.05 <= float(m.group(2)) <= 2.0 and 0.5 <= float(m2.group(1)) <= 6.0
        cloud, stream_port, _ = await start_cloud_on(lab_pki, tunnel_port)
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-2")
        # the cloud restarts: the edge comes back by itself
        await cloud.stop()
        lost = await edge.wait_for_line("tunnel to .* ended")
        assert " WARNING " in lost.string, lost.string  # lost: the operator should look
        cloud, stream_port, _ = await start_cloud_on(lab_pki, tunnel_port)
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-2")
    finally:
        await edge.stop()
        if cloud is not None:
            await cloud.stop()
    ended = [line for line in edge.lines if "tunnel to" in line and " ended: " in line]
    assert " INFO " in ended[-1], ended[-1]  # the edge's own shutdown is news, not trouble


async def test_edge_refuses_a_cloud_with_an_untrusted_certificate(lab_pki, tmp_path) -> None:
    """Unlike a Go edge, ours verifies the cloud: a cloud whose certificate another CA signed
    (a man in the middle) gets no tunnel, and the edge says so."""
    from streamcerts import init_lab

    other = init_lab(tmp_path / "other", ["edge-1"])
    cloud, _, tunnel_port = await start_cloud(other)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port)
    try:
        m = await edge.wait_for_line(r"failed \(attempt 1\): (.*);")
        assert "certificate" in m.group(1) and "failed verification" in m.group(1)
    finally:
        await edge.stop()
        await cloud.stop()


async def start_cloud_on(layout, tunnel_port: int):  # type: ignore[no-untyped-def]
    """start_cloud binds port 0; here the edge already knows the port, so pass it last (argparse: last wins)."""
    return await start_cloud(layout, "--tunnel-port", str(tunnel_port))


async def test_first_sigterm_drains_the_edge(lab_pki) -> None:
    """Two-stage stop: running streams finish, new ones get a 503 naming the node; then exit 0."""
    from .k8s_ws import open_ws, run_exec

    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-3", tunnel_port, "--drain-timeout", "20")
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-3")
        tls = apiserver_tls(lab_pki)
        ws = await open_ws(stream_port, "/exec/default/demo/app?command=sh&command=-c&command=sleep+1.5%3B+echo+finished&output=1",
                           node="edge-3", tls=tls)
        running = asyncio.create_task(run_exec(ws))
        await asyncio.sleep(0.3)
        edge.proc.send_signal(signal.SIGTERM)
        await edge.wait_for_line("draining")
        async with kubelet_request(stream_port, "/containerLogs/default/demo/app", host="edge-3", tls=tls) as resp:
            assert resp.status == 503
            assert b"edge-3 is draining" in await resp.body()
        result = await running
        assert result.stdout == b"finished\n" and result.exit_code == 0
        assert await asyncio.wait_for(edge.proc.wait(), 15 * MS) == 0
    finally:
        await edge.stop()
        await cloud.stop()
