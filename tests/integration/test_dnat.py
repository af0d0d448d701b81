"""The API server reaches an edge node as ``nodeIP:10250``; an iptables DNAT rule sends that to
cloudstream's 10003, and cloudstream finds the node from the connection's original
destination (SO_ORIGINAL_DST) — not from the Host header, which for exec passthrough names
the API server. Real iptables in network namespaces this test creates; root only."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.realstack.conftest_plugin import install_allowed

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


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces and iptables need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    if shutil.which("iptables") is None:
        if not install_allowed():
            pytest.skip("iptables is not installed (apt-get install iptables; `make test` as root installs it: KES_INSTALL=1)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "iptables"]
        if subprocess.run(install, capture_output=True, timeout=300, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, env=env)  # a fresh machine
            subprocess.run(install, check=True, capture_output=True, timeout=300, env=env)
    tag = secrets.token_hex(3)
    cloud, node = f"kes-c-{tag}", f"kes-n-{tag}"
    octet = 100 + secrets.randbelow(100)
    cloud_ip, node_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    try:
        _run("ip", "netns", "add", cloud)
        _run("ip", "netns", "add", node)
        _run("ip", "link", "add", f"kv{tag}c", "type", "veth", "peer", "name", f"kv{tag}n")
        _run("ip", "link", "set", f"kv{tag}c", "netns", cloud)
        _run("ip", "link", "set", f"kv{tag}n", "netns", node)
        _run("ip", "-n", cloud, "addr", "add", f"{cloud_ip}/24", "dev", f"kv{tag}c")
        _run("ip", "-n", node, "addr", "add", f"{node_ip}/24", "dev", f"kv{tag}n")
        for ns, dev in ((cloud, f"kv{tag}c"), (node, f"kv{tag}n")):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", dev, "up")
        yield cloud, node_ip
    finally:
        subprocess.run(["ip", "netns", "del", cloud], capture_output=True)
        subprocess.run(["ip", "netns", "del", node], capture_output=True)


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
        _run(*exec_in, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", f"{node_ip}/32", "-p", "tcp", "--dport", "10250",
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
