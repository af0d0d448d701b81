"""``cloudstream doctor`` / ``edgestream doctor`` on the wiring around the tunnel, with real
processes: the cloud's server certificate judged from both sides, the DNAT rule in a network
namespace (by hand, and a real ``--manage-iptables`` cloudstream), the egress-selector front
instead, tunnels through both admin ports, a real containerd, and the timeout bound."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamcerts import Layout, init_lab, load_cert, load_key, write_pem
from testkit import netns
from tests.conftest import MS, ROOT, free_port

from .doctor_kit import (  # noqa: F401  (fixtures)
    NODE, assert_only_fails, by_status, craft_leaf, doctor, failed, site_fixture,
)
from .framework import READY, Process, start_cloud, start_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


# ---------------------------------------------------------------------- an expired cloud certificate


@pytest.mark.parametrize("broken", ["expired", "hostname"])
async def test_cloud_server_certificate_named_from_both_sides(site: Layout, tmp_path: Path, broken: str) -> None:
    """cloudstream runs with an expired server certificate, or one that does not name the address
    the edge dials: the edge's doctor says it is the cloud's certificate, the cloud's doctor names the file."""
    root = tmp_path / "pki"
    shutil.copytree(site.root, root)
    lay = Layout(root)
    tunnel_ca = load_cert(lay.ca_cert), load_key(lay.ca_key)
    if broken == "expired":
        pair = craft_leaf(tunnel_ca, "cloudstream", days_ago=20, lasted=10)
    else:
        pair = craft_leaf(tunnel_ca, "cloudstream", days_ago=1, lasted=30, dns="cloud.example")
    write_pem(lay.server_cert, *pair, lay.server_key)
    cloud, stream_port, tunnel_port = await start_cloud(lay)
    try:
        edge_flags = ["--pki-dir", str(root), "--node-name", NODE, "--server", f"localhost:{tunnel_port}",
                      "--node-ip", "127.0.0.1", "--backend", "emulator"]
        rc, report = await doctor("edgestream", *edge_flags)
        fails = assert_only_fails(rc, report, "tls")
        if broken == "expired":
            assert "the cloud's certificate" in fails["tls"]["finding"] and "has expired" in fails["tls"]["finding"]
        else:
            assert "the cloud's certificate does not name 'localhost'" in fails["tls"]["finding"]
            assert "--san localhost" in fails["tls"]["fix"]
        assert fails["tls"]["fix"].startswith("on the cloud: streamcerts issue server")

        rc, report = await doctor("cloudstream", "--pki-dir", str(root), "--stream-address", "127.0.0.1",
                                  "--stream-port", str(stream_port), "--tunnel-address", "127.0.0.1",
                                  "--tunnel-port", str(tunnel_port), "--advertise", "localhost")
        fails = assert_only_fails(rc, report, "cert tunnel server (10004)")
        expected = "expired on" if broken == "expired" else "do not cover 'localhost'"
        assert expected in fails["cert tunnel server (10004)"]["finding"]
    finally:
        await cloud.stop()


# ---------------------------------------------------------------------- DNAT (root, network namespace)


@pytest.fixture
def ns() -> Iterator[str]:
    why = netns.skip_reason() or netns.ensure_iptables()
    if why:
        pytest.skip(why)
    with netns.netns("kesdoc") as name:
        yield name


async def ns_doctor(ns: str, *args: str) -> dict[str, dict[str, str]]:
    """``cloudstream doctor`` inside ``ns``: its checks by name."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "cloudstream", "doctor", *args, "--json", "--timeout", "1",
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60 * MS)
    return {c["name"]: c for c in json.loads(out)["checks"]}


async def test_missing_dnat_rule_named_and_its_fix_works(ns: str, site: Layout) -> None:
    """In a fresh namespace (empty nat table) a node IP that is not this host's has no DNAT rule:
    named, with the iptables command; running that very command makes the check pass."""
    node_ip = "10.200.0.7"
    flags = ["--pki-dir", str(site.root), "--stream-address", "127.0.0.1", "--node", "far-node", "--node-ip", node_ip]
    dnat = (await ns_doctor(ns, *flags))["dnat far-node"]
    assert dnat["status"] == "FAIL", dnat
    assert f"no nat rule sends {node_ip}:10250 to cloudstream's :10003" in dnat["finding"]
    command = dnat["fix"].split(" (or")[0]
    assert command == f"iptables -t nat -A OUTPUT -d {node_ip}/32 -p tcp --dport 10250 -j DNAT --to-destination 127.0.0.1:10003"
    assert "--manage-iptables" in dnat["fix"]
    netns.run("ip", "netns", "exec", ns, *command.split())
    dnat = (await ns_doctor(ns, *flags))["dnat far-node"]
    assert dnat["status"] == "PASS", dnat
    assert re.search(rf"{node_ip}:10250 -> 127\.0\.0\.1:10003 \(iptables-\w+, chain OUTPUT\)", dnat["finding"]), dnat


async def test_dnat_rule_of_the_iptables_manager_follows_the_tunnel(ns: str, site: Layout) -> None:
    """A real cloudstream with --manage-iptables in the namespace and an edge announcing a node IP
    that is not the host's: doctor finds the manager's rule while the tunnel is up (and the whole
    chain answers), and names the missing rule with the manager's causes once the edge is gone."""
    node_ip, exec_in = "10.200.0.9", ["ip", "netns", "exec", ns]
    cloud = await Process.start("cloudstream", [
        *exec_in, sys.executable, "-m", "cloudstream", "--pki-dir", str(site.root), "--stream-address", "127.0.0.1",
        "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables"], raw=True)
    edge = None
    try:
        m = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = m.group(1), m.group(2)
        flags = ["--pki-dir", str(site.root), "--stream-address", "127.0.0.1", "--stream-port", stream_port,
                 "--tunnel-address", "127.0.0.1", "--tunnel-port", tunnel_port, "--manage-iptables",
                 "--node", "edge-2", "--node-ip", node_ip]
        edge = await Process.start("edgestream", [
            *exec_in, sys.executable, "-m", "edgestream", "--pki-dir", str(site.root), "--node-name", "edge-2",
            "--server", f"localhost:{tunnel_port}", "--node-ip", node_ip, "--backend", "emulator"], raw=True)
        await cloud.wait_for_line(r"tunnel up: node edge-2 ")
        deadline = time.monotonic() + 15 * MS
        while (checks := await ns_doctor(ns, *flags))["dnat edge-2"]["status"] != "PASS":
            assert time.monotonic() < deadline, checks["dnat edge-2"]
            await asyncio.sleep(0.3)
        assert "chain KUBEEDGE-STREAM" in checks["dnat edge-2"]["finding"]
        assert checks["chain healthz"]["status"] == "PASS", checks["chain healthz"]
        await edge.stop()
        edge = None
        deadline = time.monotonic() + 15 * MS
        while (checks := await ns_doctor(ns, *flags))["dnat edge-2"]["status"] != "FAIL":
            assert time.monotonic() < deadline, checks["dnat edge-2"]
            await asyncio.sleep(0.3)
        assert "cloudstream manages the nat rules (--manage-iptables) but holds none" in checks["dnat edge-2"]["finding"]
        assert "cloudstream iptables show" in checks["dnat edge-2"]["fix"]
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()


async def test_egress_front_instead_of_dnat(site: Layout, tmp_path: Path) -> None:
    """With the egress-selector front configured no DNAT rule is needed: doctor checks the front
    listens instead, and names it when it does not."""
    sock = tmp_path / "egress.sock"
    cloud, stream_port, tunnel_port = await start_cloud(site, "--egress-uds", str(sock))
    try:
        flags = ["--pki-dir", str(site.root), "--stream-address", "127.0.0.1", "--stream-port", str(stream_port),
                 "--tunnel-address", "127.0.0.1", "--tunnel-port", str(tunnel_port),
                 "--node", "far-node", "--node-ip", "10.200.0.7"]
        rc, report = await doctor("cloudstream", *flags, "--egress-uds", str(sock))
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["egress front"]["status"] == "PASS", json.dumps(report, indent=1)
        assert str(sock) in checks["egress front"]["finding"]
        assert not any(name.startswith("dnat") for name in checks)
        # far-node has no tunnel: that is the one failure
        assert_only_fails(rc, report, "chain healthz")

        rc, report = await doctor("cloudstream", *flags, "--egress-uds", str(tmp_path / "elsewhere.sock"))
        fails = assert_only_fails(rc, report, "egress front", "chain healthz")
        assert "no such socket" in fails["egress front"]["finding"]
    finally:
        await cloud.stop()


async def test_edge_backend_real_containerd(realstack: Any, tmp_path: Path) -> None:  # noqa: F811
    """Against a real containerd the backend check passes, naming its version (CRI Version)."""
    lay = init_lab(tmp_path / "pki", [NODE], node_ips={NODE: ["127.0.0.1"]})
    rc, report = await doctor("edgestream", "--pki-dir", str(lay.root), "--node-name", NODE, "--node-ip", "127.0.0.1",
                              "--server", f"localhost:{free_port()}", "--backend", "cri",
                              "--cri-endpoint", realstack.endpoint)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["backend"]["status"] == "PASS", json.dumps(report, indent=1)
    assert checks["backend"]["finding"].startswith("containerd ") and realstack.endpoint in checks["backend"]["finding"]
    assert_only_fails(rc, report, "reach server")  # no cloud at that port: the one failure


async def test_an_unanswering_server_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    """A tunnel server address where nothing answers (TEST-NET-1, dropped or unroutable) fails
    within --timeout, not the kernel's minutes-long SYN retries."""
    lay = init_lab(tmp_path / "pki", [NODE])
    began = time.monotonic()
    rc, report = await doctor("edgestream", "--pki-dir", str(lay.root), "--node-name", NODE, "--server",
                              "192.0.2.1:10004", "--backend", "emulator", "--timeout", "1")
    took = time.monotonic() - began
    fails = assert_only_fails(rc, report, "reach server")
    assert "192.0.2.1:10004" in fails["reach server"]["finding"]
    assert took < 20 * MS, f"doctor took {took:.1f} s with --timeout 1"


# ---------------------------------------------------------------------- tunnels through the admin port


def _has_admin() -> bool:
    from cloudstream.config import CloudConfig
    from edgestream.config import EdgeConfig

    return "admin" in CloudConfig.__dataclass_fields__ and "admin" in EdgeConfig.__dataclass_fields__


needs_admin = pytest.mark.skipif(not _has_admin(), reason="this build has no admin port (the admin server's branch)")


@needs_admin
async def test_tunnel_up_and_down_seen_on_both_admin_ports(site: Layout) -> None:
    """cloudstream's /debug/nodes and edgestream's /readyz say whether the tunnel is up: doctor
    passes while it is, and names it (with the fix) on both sides once the edge is gone."""
    cloud_admin, edge_admin = free_port(), free_port()
    cloud, stream_port, tunnel_port = await start_cloud(site, "--admin-port", str(cloud_admin))
    edge = None
    try:
        cloud_flags = ["--pki-dir", str(site.root), "--stream-address", "127.0.0.1", "--stream-port", str(stream_port),
                       "--tunnel-address", "127.0.0.1", "--tunnel-port", str(tunnel_port),
                       "--admin-port", str(cloud_admin)]
        since = len(cloud.lines)
        edge = await start_edge(site, NODE, tunnel_port, "--admin-port", str(edge_admin))
        await cloud.wait_for_line(rf"tunnel up: node {NODE} ", since=since)
        edge_flags = ["--pki-dir", str(site.root), "--node-name", NODE, "--server", f"localhost:{tunnel_port}",
                      "--node-ip", "127.0.0.1", "--backend", "emulator", "--admin-port", str(edge_admin)]
        rc, report = await doctor("cloudstream", *cloud_flags, "--node", NODE)
        assert rc == 0, json.dumps(report, indent=1)
        passed = by_status(report, "PASS")
        assert f"node {NODE} has a tunnel (127.0.0.1" in passed["tunnels"]["finding"]
        assert "no DNAT needed" in passed[f"dnat {NODE}"]["finding"]  # the node IP from /debug/nodes, local here
        rc, report = await doctor("edgestream", *edge_flags)
        assert rc == 0 and "tunnel" in by_status(report, "PASS"), json.dumps(report, indent=1)

        await cloud.stop()  # the edge's tunnel goes down with it
        deadline = time.monotonic() + 15 * MS
        while True:
            rc, report = await doctor("edgestream", *edge_flags)
            if "tunnel" in failed(report) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        fails = failed(report)
        assert "tunnel" in fails and "503" in fails["tunnel"]["finding"], json.dumps(report, indent=1)
        assert "no tunnel to cloudstream" in fails["tunnel"]["finding"]
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()


@needs_admin
async def test_a_node_without_tunnel_named_by_the_cloud_admin_port(site: Layout) -> None:
    cloud_admin = free_port()
    cloud, stream_port, tunnel_port = await start_cloud(site, "--admin-port", str(cloud_admin))
    try:
        flags = ["--pki-dir", str(site.root), "--stream-address", "127.0.0.1", "--stream-port", str(stream_port),
                 "--tunnel-address", "127.0.0.1", "--tunnel-port", str(tunnel_port), "--admin-port", str(cloud_admin)]
        rc, report = await doctor("cloudstream", *flags, "--node", NODE)
        fails = assert_only_fails(rc, report, "tunnels", "chain healthz")
        assert f"node {NODE} has no tunnel; connected: none" in fails["tunnels"]["finding"]
        assert fails["tunnels"]["fix"].startswith(f"on {NODE}: `edgestream doctor")
        rc, report = await doctor("cloudstream", *flags)
        assert by_status(report, "WARN")["tunnels"]["finding"] == "no edge node is connected"
    finally:
        await cloud.stop()
