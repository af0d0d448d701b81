"""Every kubectl from 1.27 to 1.33 against the emulator backend.

The emulator speaks Kubernetes' WebSocket stream protocols only (v5/v4.channel.k8s.io), so
exec works for kubectl >= 1.30, which offers WebSocket v5 first; kubectl <= 1.29 offers SPDY,
which the emulator refuses with a 403 whose text kubectl shows (SPDY is served by the real
containerd: test_kubectl_containerd.py). Port-forward from kubectl >= 1.31 tunnels SPDY inside
WebSocket (``SPDY/3.1+portforward.k8s.io``), which the emulator does not speak either, so
port-forward is proved against containerd only.
"""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_asyncio

from tests.conftest import MS
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontPod
from .conftest import VERSIONS, make_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front(lab_pki, tmp_path_factory):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app", "--emulate-log-rate", "20")
    front = ApiServerFront(stream_port, apiserver_tls(lab_pki), [FrontPod("default", "demo", "edge-1", ("app",))])
    port = await front.start()
    try:
        await cloud.wait_for_line("tunnel up: node edge-1")
        yield port, tmp_path_factory.mktemp("kubectl"), front
    finally:
        await front.close()
        await edge.stop()
        await cloud.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("logs", "demo", "--tail=3")
    assert rc == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"default/demo/app line \d+", line) for line in lines)
    rc, out, err = await kubectl.run("logs", "demo", "--limit-bytes=10")
    assert rc == 0 and out == b"default/de", err.decode()
    rc, out, err = await kubectl.run("logs", "nosuch")
    assert rc != 0 and b"not found" in err


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs_follow(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    proc = await kubectl.start("logs", "-f", "demo", "--tail=1")
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20 * MS):
            while len(lines) < 6:
                lines.append((await proc.stdout.readline()).decode().strip())
    finally:
        proc.kill()
        await proc.wait()
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 6))


@pytest.mark.parametrize("version", VERSIONS)
async def test_exec(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    if kubectl.version < (1, 30):
        rc, out, err = await kubectl.run("exec", "demo", "--", "echo", "hi")
        assert rc != 0 and b"WebSocket" in err, err.decode()  # the emulator's refusal, relayed
        return
    rc, out, err = await kubectl.run("exec", "demo", "--", "echo", "hi")
    assert (rc, out) == (0, b"hi\n"), err.decode()
    rc, out, err = await kubectl.run("exec", "-i", "demo", "--", "cat", input=b"line one\nline two\n")
    assert (rc, out) == (0, b"line one\nline two\n"), err.decode()
    rc, out, err = await kubectl.run("exec", "demo", "--", "sh", "-c", "echo to-stderr >&2; exit 3")
    assert rc == 3 and b"to-stderr" in err, err.decode()
