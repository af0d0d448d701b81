"""The API server reaches an edge node as ``nodeIP:10250``; an iptables DNAT rule sends that to
cloudstream's 10003, and cloudstream finds the node from the connection's original
destination (SO_ORIGINAL_DST) — not from the Host header, which for exec passthrough names
the API server. Real iptables in network namespaces this test creates; root only."""

from __future__ import annotations

import asyncio
import sys

import pytest

from testkit.netns import ensure_iptables, netns_pair, run, skip_reason
from tests.conftest import ROOT

from .framework import READY, Process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
with socket.create_connection((sys.argv[1], 10250), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
    tls.sendall(b"GET /containerLogs/default/demo/app?tailLines=2 HTTP/1.1\r\nHost: apiserver.example:6443\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
print(data.decode(errors="replace"))
"""


@pytest.fixture
def netns():
    reason = skip_reason() or ensure_iptables()
    if reason:
        pytest.skip(reason)
    with netns_pair() as pair:
        yield pair.cloud, pair.node_ip


async def test_node_found_from_the_dnat_original_destination(netns, lab_pki) -> None:
    ns, node_ip = netns
    exec_in = ["ip", "netns", "exec", ns]
    cloud = await Process.start(
        "cloudstream",
        [*exec_in, sys.executable, "-m", "cloudstream", "--pki-dir", str(lab_pki.root), "--stream-address", "127.0.0.1",
         "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"],
        raw=True,
    )
    edge = None
    try:
        m = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = m.group(1), m.group(2)
        # What KubeEdge's seed does by hand: nodeIP:10250 -> cloudstream:10003, locally generated traffic.
        run(*exec_in, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", f"{node_ip}/32", "-p", "tcp", "--dport", "10250",
             "-j", "DNAT", "--to-destination", f"127.0.0.1:{stream_port}")
        edge = await Process.start(
            "edgestream",
            [*exec_in, sys.executable, "-m", "edgestream", "--pki-dir", str(lab_pki.root), "--node-name", "edge-1",
             "--server", f"localhost:{tunnel_port}", "--node-ip", node_ip, "--backend", "emulator"],
            raw=True,
        )
        await cloud.wait_for_line("tunnel up: node edge-1")
        client = await asyncio.create_subprocess_exec(
            *exec_in, sys.executable, "-c", CLIENT, node_ip, str(lab_pki.stream_ca), str(lab_pki.apiserver_client_cert),
            str(lab_pki.apiserver_client_key), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        out, err = await asyncio.wait_for(client.communicate(), 30)
        text = out.decode()
        assert text.startswith("HTTP/1.1 200"), (text, err.decode(), cloud.output)
        assert text.count("default/demo/app line") == 2
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()
