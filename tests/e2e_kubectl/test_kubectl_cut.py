"""kubectl exec whose node is lost mid-command: kubectl must fail with an error naming the node,
never exit 0 as if the command had ended. kubectl 1.27-1.29 speak SPDY to cloudstream (through
the front unchanged); 1.30+ speak WebSocket to the front, whose StreamTranslator (as kube-apiserver's)
opens SPDY to cloudstream and passes the kubelet's error-stream Status on to kubectl."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import MS
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontPod
from .conftest import make_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("version", ["1.27", "1.29", "1.30", "1.33"])
async def test_exec_cut_by_a_lost_node_fails_with_the_node_named(lab_pki, tmp_path, version: str) -> None:
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app")
    front = ApiServerFront(stream_port, apiserver_tls(lab_pki), [FrontPod("default", "demo", "edge-1", ("app",))])
    port = await front.start()
    try:
        await cloud.wait_for_line("tunnel up: node edge-1")
        kubectl = make_kubectl(version, tmp_path, port)
        proc = await kubectl.start("exec", "-i", "demo", "--", "cat", stdin=True)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(b"hello\n")
            await proc.stdin.drain()
            assert await asyncio.wait_for(proc.stdout.readline(), 20 * MS) == b"hello\n"
            edge.proc.kill()
            err = await asyncio.wait_for(proc.stderr.read(), 30 * MS)
            rc = await asyncio.wait_for(proc.wait(), 10 * MS)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        print(f"kubectl {version}: exit {rc}: {err.decode().strip()}")
        assert rc != 0, err.decode()
        assert b"edge-1" in err and b"tunnel closed" in err, err.decode()
    finally:
        await front.close()
        await edge.stop()
        await cloud.stop()
