"""Finding 1: a certified edge announcing another node's internal IP must not get its requests.

The attacker holds a valid certificate for node ``attacker`` and dials with the victim's
``SessionInternalIP``. Requests the API server sends for the victim's IP (by ``Host``, as it
does for metrics, or by the DNAT original destination) must keep reaching the victim, proven
by what the victim's emulator serves; the attacker's failed attempts and its departure must
not make the victim unreachable by IP. Certificates with IP SANs pin the node's IPs.

The DNAT original-destination path (what a real API server's connection carries) is tried in
network namespaces with real iptables, as ``tests/integration/test_dnat.py`` does (root only).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from streamcerts import issue_client_cert, load_cert, load_key, write_pem
from testkit.netns import run as _run
from tests.conftest import ROOT
from tests.integration.framework import READY, Process, apiserver_tls, kubelet_request
from tests.integration.k8s_ws import open_ws, run_exec
from tests.integration.test_dnat import netns  # noqa: F401 - the fixture

from .conftest import NODE_IPS, Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(90)]

VICTIM_IP = NODE_IPS["victim"]
POD = "default/victim-db/app"
VICTIM = ("--emulate", POD, "--emulate-history", "42", "--emulate-log-rate", "0.001")
IMPOSTOR = ("--emulate", POD, "--emulate-history", "3", "--emulate-log-rate", "0.001")
"""Both serve the same pod; only the victim has 42 lines of history."""


async def _logs_by_ip(fleet: Fleet, ip: str = VICTIM_IP) -> tuple[int, bytes]:
    async with kubelet_request(fleet.stream_port, f"/containerLogs/{POD}", host=f"{ip}:10250",
                               tls=apiserver_tls(fleet.layout)) as response:
        return response.status, await response.body()


def _served_by_victim(body: bytes) -> bool:
    lines = body.decode().splitlines()
    return len(lines) == 42 and lines[-1].endswith(f"{POD} line 41")


async def _exec_cat_by_ip(fleet: Fleet) -> bytes:
    query = urlencode([("command", "cat"), ("input", "1"), ("output", "1")])
    ws = await open_ws(fleet.stream_port, f"/exec/{POD}?{query}", node=VICTIM_IP, tls=apiserver_tls(fleet.layout))
    result = await run_exec(ws, stdin=[b"typed password\n"])
    return result.stdout


async def test_an_edge_announcing_the_victims_ip_is_refused_and_the_victim_keeps_its_requests(fleet: Fleet) -> None:
    await fleet.edge("victim", *VICTIM)
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and _served_by_victim(body), body[:200]

    since = len(fleet.cloud.lines)
    attacker = await fleet.edge("attacker", *IMPOSTOR, "--node-ip", VICTIM_IP, wait=False)
    refused = await fleet.cloud.wait_for_line(r"refused a tunnel dial from \S+ with 403: (.*)", since=since)
    assert "node 'attacker' announces internal IP 127.0.1.1, which node 'victim' already holds" in refused.group(1)
    seen = await attacker.wait_for_line(r"refused the tunnel with HTTP 403: (.*)")
    assert "'victim'" in seen.group(1) and "--node-ip" in seen.group(1)  # the edge's operator learns the fix
    await attacker.wait_for_line(r"failed \(attempt 3\)")  # it keeps trying; the cloud keeps refusing
    assert not fleet.log_lines(r"tunnel up: node attacker", since=since)
    assert len(fleet.log_lines(r"refused a tunnel dial", since=since)) == 1  # rate-limited: one line, the rest counted

    # Requests for the victim's IP still reach the victim: logs by content, exec input echoed by it.
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and _served_by_victim(body), body[:200]
    audit_since = len(fleet.cloud.lines)
    assert await _exec_cat_by_ip(fleet) == b"typed password\n"
    assert fleet.log_lines(r"audit open exec node=victim ", since=audit_since), fleet.cloud.output

    # The attacker leaves; the victim is still reachable by IP.
    await attacker.stop()
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and _served_by_victim(body)


async def test_another_nodes_departure_leaves_the_victims_ip_alone(fleet: Fleet) -> None:
    await fleet.edge("victim", *VICTIM)
    attacker = await fleet.edge("attacker", *IMPOSTOR)  # its own IP this time: accepted
    status, _ = await _logs_by_ip(fleet, NODE_IPS["attacker"])
    assert status == 200
    since = len(fleet.cloud.lines)
    await attacker.stop()
    await fleet.cloud.wait_for_line(r"tunnel down: node attacker", since=since)
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and _served_by_victim(body)
    status, body = await _logs_by_ip(fleet, NODE_IPS["attacker"])
    assert status == 503 and b"attacker" not in body.split(b"Connected nodes:")[0]


def _cert_with_ips(fleet: Fleet, tmp: Path, node: str, ips: list[str]) -> tuple[str, ...]:
    layout = fleet.layout
    cert, key = issue_client_cert(load_cert(layout.ca_cert), load_key(layout.ca_key), node, ips=ips)
    write_pem(tmp / f"{node}.crt", cert, key, tmp / f"{node}.key")
    return ("--tls-tunnel-cert-file", str(tmp / f"{node}.crt"), "--tls-tunnel-private-key-file", str(tmp / f"{node}.key"))


async def test_an_ip_outside_the_certificates_ip_sans_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    pinned = _cert_with_ips(fleet, tmp_path, "attacker", [NODE_IPS["attacker"]])
    since = len(fleet.cloud.lines)
    attacker = await fleet.edge("attacker", *IMPOSTOR, *pinned, "--node-ip", VICTIM_IP, wait=False)
    refused = await fleet.cloud.wait_for_line(r"refused a tunnel dial from \S+ with 403: (.*)", since=since)
    assert re.search(r"node 'attacker' announces internal IP 127\.0\.1\.1 but its certificate lists only 127\.0\.1\.2",
                     refused.group(1)), refused.group(1)
    assert "streamcerts client --cn attacker --ip 127.0.1.1" in refused.group(1)
    await attacker.wait_for_line(r"refused the tunnel with HTTP 403: .*certificate lists only 127\.0\.1\.2")
    await attacker.stop()
    # The same certificate with its own IP is accepted.
    await fleet.edge("attacker", *IMPOSTOR, *pinned)
    status, _ = await _logs_by_ip(fleet, NODE_IPS["attacker"])
    assert status == 200


async def test_a_certified_owner_takes_its_ip_back_from_an_unproven_squatter(fleet: Fleet, tmp_path: Path) -> None:
    # The attacker dials first with the victim's IP, before the victim is up: the first claim wins...
    await fleet.edge("attacker", *IMPOSTOR, "--node-ip", VICTIM_IP)
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and not _served_by_victim(body)
    # ...unless the owner proves the IP with its certificate.
    since = len(fleet.cloud.lines)
    await fleet.edge("victim", *VICTIM, *_cert_with_ips(fleet, tmp_path, "victim", [VICTIM_IP]))
    assert fleet.log_lines(r"node victim proves internal IP 127\.0\.1\.1 with its certificate; node attacker", since)
    status, body = await _logs_by_ip(fleet)
    assert status == 200 and _served_by_victim(body)


DNAT_CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
with socket.create_connection((sys.argv[1], 10250), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
    tls.sendall(b"GET /containerLogs/default/victim-db/app HTTP/1.1\r\nHost: apiserver.example:6443\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
sys.stdout.write(data.decode(errors="replace"))
"""


async def test_dnat_requests_for_the_victims_ip_reach_the_victim(netns, hostile_pki) -> None:  # noqa: F811
    """The API server's connection to victimIP:10250, DNAT'd to 10003: the original destination
    names the victim's IP, which the impostor cannot take."""
    ns, node_ip = netns
    exec_in = ["ip", "netns", "exec", ns]
    pki = str(hostile_pki.root)
    cloud = await Process.start("cloudstream", [
        *exec_in, sys.executable, "-m", "cloudstream", "--pki-dir", pki, "--stream-address", "127.0.0.1",
        "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"], raw=True)
    edges: list[Process] = []
    try:
        m = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = m.group(1), m.group(2)
        _run(*exec_in, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", f"{node_ip}/32", "-p", "tcp", "--dport", "10250",
             "-j", "DNAT", "--to-destination", f"127.0.0.1:{stream_port}")

        async def edge(node: str, *extra: str) -> Process:
            proc = await Process.start("edgestream", [
                *exec_in, sys.executable, "-m", "edgestream", "--pki-dir", pki, "--node-name", node,
                "--server", f"localhost:{tunnel_port}", "--node-ip", node_ip, "--backend", "emulator", *extra], raw=True)
            edges.append(proc)
            return proc

        async def fetch() -> str:
            client = await asyncio.create_subprocess_exec(
                *exec_in, sys.executable, "-c", DNAT_CLIENT, node_ip, str(hostile_pki.stream_ca),
                str(hostile_pki.apiserver_client_cert), str(hostile_pki.apiserver_client_key),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
            out, err = await asyncio.wait_for(client.communicate(), 30)
            assert out.startswith(b"HTTP/1.1 200"), (out[:300], err.decode(), cloud.output)
            return out.decode()

        await edge("victim", *VICTIM)
        await cloud.wait_for_line("tunnel up: node victim")
        attacker = await edge("attacker", *IMPOSTOR)
        refused = await cloud.wait_for_line(r"refused a tunnel dial from \S+ with 403: (.*)")
        assert f"node 'attacker' announces internal IP {node_ip}, which node 'victim' already holds" in refused.group(1)
        assert f"{POD} line 41" in await fetch()  # the victim's 42-line history, not the impostor's 3
        await attacker.stop()
        assert f"{POD} line 41" in await fetch()
        since = len(cloud.lines)
        cloud.proc.send_signal(signal.SIGUSR1)
        state = await cloud.wait_for_line(r"state (.*)$", since=since)
        assert re.search(r"(^| )streams=0( |$)", state.group(1)) and "api_connections=0" in state.group(1), state.group(1)
    finally:
        for proc in edges:
            await proc.stop()
        await cloud.stop()
