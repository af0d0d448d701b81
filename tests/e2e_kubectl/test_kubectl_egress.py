"""Real kubectl through an API-server front that routes its kubelet traffic as kube-apiserver
does with ``--egress-selector-config-file`` (egress ``cluster``, HTTPConnect over mutual TLS):
every kubelet dial is a CONNECT to cloudstream's egress front (``testkit.egress``, the
``tunnelHTTPConnect`` bytes), then TLS inside. Two emulated nodes, each at its own IP with
``kubeletEndpoint.Port`` 10250 and no DNAT, no local address trick: logs, exec (SPDY passthrough
for kubectl <= 1.29, WebSocket translated to SPDY for >= 1.30), port-forward (>= 1.31 tunnelled),
and a pod on a node that is not connected, whose error names the reason.
"""

from __future__ import annotations

import re

import pytest
import pytest_asyncio

from streamcerts import client_context
from tests.conftest import MS
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontNode, FrontPod
from .conftest import make_kubectl
from .front_http import EgressVia
from .test_kubectl_emulator import _echo_through

pytestmark = [pytest.mark.kubectl, pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.asyncio(loop_scope="module")]

VERSIONS = ["1.27", "1.29", "1.30", "1.31", "1.33"]
"""SPDY passthrough, its last version, WebSocket translation, port-forward over WebSocket, the newest."""
NODES = {"edge-2": "127.0.4.1", "edge-3": "127.0.4.2", "edge-gone": "127.0.4.9"}
"""lab_pki has certificates for edge-2 and edge-3; edge-gone never connects."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front(lab_pki, tmp_path_factory):
    cloud, _stream_port, tunnel_port = await start_cloud(lab_pki, "--egress-port", "0")
    egress_port = int((await cloud.wait_for_line(r"egress front on 127\.0\.0\.1:(\d+)")).group(1))
    edges = [await start_edge(lab_pki, node, tunnel_port, "--node-ip", NODES[node], "--emulate",
                              f"default/{node}-pod/app", "--emulate-log-rate", "20") for node in ("edge-2", "edge-3")]
    # tlsConfig of the egress selection: caBundle = the front's CA, the API server's client certificate
    proxy_tls = client_context(lab_pki.stream_ca, lab_pki.apiserver_client_cert, lab_pki.apiserver_client_key)
    front = ApiServerFront(
        0, apiserver_tls(lab_pki),
        [FrontPod("default", f"{node}-pod", node, ("app",)) for node in NODES],
        nodes=[FrontNode(node, ip, 10250) for node, ip in NODES.items()],
        egress=EgressVia(tls=proxy_tls, tcp=("127.0.0.1", egress_port)),
    )
    port = await front.start()
    try:
        for node in ("edge-2", "edge-3"):
            await cloud.wait_for_line(f"tunnel up: node {node}")
        yield port, tmp_path_factory.mktemp("kubectl-egress"), front, cloud
    finally:
        await front.close()
        for edge in edges:
            await edge.stop()
        await cloud.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs_and_exec_on_two_nodes(front, version: str) -> None:
    port, tmp, _, _ = front
    kubectl = make_kubectl(version, tmp, port)
    for node in ("edge-2", "edge-3"):
        rc, out, err = await kubectl.run("logs", f"{node}-pod", "--tail=2")
        assert rc == 0, err.decode()
        assert re.fullmatch(rf"(default/{node}-pod/app line \d+\n){{2}}", out.decode()), out
        rc, out, err = await kubectl.run("exec", "-i", f"{node}-pod", "--", "cat", input=f"via {node}\n".encode())
        assert (rc, out) == (0, f"via {node}\n".encode()), err.decode()
    rc, out, err = await kubectl.run("exec", "edge-3-pod", "--", "sh", "-c", "exit 3")
    assert rc == 3, err.decode()


@pytest.mark.parametrize("version", ["1.29", "1.33"])
async def test_port_forward(front, version: str) -> None:
    import asyncio

    port, tmp, _, _ = front
    kubectl = make_kubectl(version, tmp, port)
    proc = await kubectl.start("port-forward", "pod/edge-3-pod", ":8080")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30 * MS):
            line = (await proc.stdout.readline()).decode()
            local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
            assert await _echo_through(local, b"through the egress front\n") == b"through the egress front\n"
    finally:
        proc.kill()
        await proc.wait()


async def test_a_node_that_is_not_connected_says_why(front) -> None:
    port, tmp, _, cloud = front
    kubectl = make_kubectl("1.33", tmp, port)
    rc, _, err = await kubectl.run("logs", "edge-gone-pod")
    text = err.decode()
    assert rc != 0 and "proxy error from 127.0.0.1:" in text and "code 503: 503 no edge node 127.0.4.9 connected" in text, text
    rc, _, err = await kubectl.run("exec", "edge-gone-pod", "--", "true")
    assert rc != 0 and "503 no edge node 127.0.4.9 connected" in err.decode(), err.decode()
    await cloud.wait_for_line(r"egress front .* refused 503: CONNECT 127\.0\.4\.9:10250")
