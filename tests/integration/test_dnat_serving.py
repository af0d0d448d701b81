"""Per-node serving certificates behind KubeEdge's DNAT rule (nodeIP:10250 -> cloudstream:10003):
cloudstream listens on 127.0.0.1 only, so the node IP is known from SO_ORIGINAL_DST alone, before
the handshake. A client verifying as kube-apiserver does with --kubelet-certificate-authority
(the serving CA pinned, the node IP checked) succeeds. Real iptables in network namespaces
(``test_dnat.netns``); root only."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from streamcerts import create_ca, write_pem
from tests.conftest import ROOT

from .framework import READY, Process
from .test_dnat import netns  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])   # check_hostname on: the node IP must be in the SANs
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
with socket.create_connection((sys.argv[1], 10250), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=sys.argv[1]) as tls:
    print("CN", dict(x[0] for x in tls.getpeercert()["subject"])["commonName"])
    tls.sendall(b"GET /containerLogs/default/demo/app?tailLines=2 HTTP/1.1\r\nHost: apiserver.example:6443\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
print(data.decode(errors="replace"))
"""


async def test_serving_certificate_for_the_dnat_original_destination(netns, lab_pki, tmp_path) -> None:  # noqa: F811
    ns, node_ip = netns
    ca, key = create_ca("kubelet-serving-ca")
    write_pem(tmp_path / "serving-ca.crt", ca, key, tmp_path / "serving-ca.key")
    exec_in = ["ip", "netns", "exec", ns]
    cloud = await Process.start(
        "cloudstream",
        [*exec_in, sys.executable, "-m", "cloudstream", "--pki-dir", str(lab_pki.root), "--stream-address", "127.0.0.1",
         "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0",
         "--serving-ca-cert-file", str(tmp_path / "serving-ca.crt"), "--serving-ca-key-file", str(tmp_path / "serving-ca.key")],
        raw=True,
    )
    edge = None
    try:
        m = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = m.group(1), m.group(2)
        subprocess.run([*exec_in, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", f"{node_ip}/32", "-p", "tcp", "--dport", "10250",
             "-j", "DNAT", "--to-destination", f"127.0.0.1:{stream_port}"], check=True, capture_output=True, timeout=30)
        edge = await Process.start(
            "edgestream",
            [*exec_in, sys.executable, "-m", "edgestream", "--pki-dir", str(lab_pki.root), "--node-name", "edge-1",
             "--server", f"localhost:{tunnel_port}", "--node-ip", node_ip, "--backend", "emulator"],
            raw=True,
        )
        await cloud.wait_for_line("tunnel up: node edge-1")  # joined after cloudstream started
        client = await asyncio.create_subprocess_exec(
            *exec_in, sys.executable, "-c", CLIENT, node_ip, str(tmp_path / "serving-ca.crt"),
            str(lab_pki.apiserver_client_cert), str(lab_pki.apiserver_client_key),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        out, err = await asyncio.wait_for(client.communicate(), 30)
        text = out.decode()
        assert text.startswith("CN system:node:edge-1\nHTTP/1.1 200"), (text, err.decode(), cloud.output)
        assert text.count("default/demo/app line") == 2
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()
