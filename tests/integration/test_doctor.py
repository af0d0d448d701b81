"""``cloudstream doctor`` and ``edgestream doctor`` against a real cloudstream and a real emulated
edge with lab certificates: all pass on a healthy site; then each thing doctor checks is broken,
one at a time, and exactly that check fails, with its fix. The doctors run as real processes
(``python -m ... doctor --json``); every test ends with cloudstream holding no connection,
stream, task or descriptor more than before the doctors probed it (``SIGUSR1`` state line).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import Layout, create_ca, init_lab, issue_client_cert, load_cert, load_key, write_pem
from tests.conftest import MS, ROOT, free_port

from testkit import netns

from .framework import READY, Process, start_cloud, start_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NODE = "edge-1"
STATE = re.compile(r"state (.*)$")


# ---------------------------------------------------------------------- helpers


async def doctor(side: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``python -m <side> doctor ARGS --json`` as a process: (exit code, the JSON)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", side, "doctor", *args, "--json", cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60 * MS)
    assert proc.returncode in (0, 1), f"doctor exited {proc.returncode}: {err.decode()}"
    return proc.returncode, json.loads(out)


def by_status(report: dict[str, Any], status: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"] if c["status"] == status}


def failed(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return by_status(report, "FAIL")


def assert_only_fails(rc: int, report: dict[str, Any], *names: str) -> dict[str, dict[str, str]]:
    """Exactly ``names`` failed (one thing broken, one thing named), each with a fix."""
    fails = failed(report)
    assert set(fails) == set(names), json.dumps(report, indent=1)
    assert rc == 1 and report["ok"] is False
    for check in fails.values():
        assert check["fix"], check
    return fails


def craft_leaf(ca: tuple[x509.Certificate, Any], cn: str, *, days_ago: int, lasted: int,
               key: Any = None, dns: str = "localhost") -> tuple[x509.Certificate, Any]:
    """A client/server certificate valid from ``days_ago`` for ``lasted`` days (made directly with
    cryptography: our issuing code refuses to write an expired one)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca[0].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=days_ago)).not_valid_after(now - dt.timedelta(days=days_ago - lasted))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A lab PKI for edge-1 and edge-2, plus the broken material the tests swap in."""
    layout = init_lab(tmp_path_factory.mktemp("doctor-pki"), [NODE, "edge-2"], node_ips={NODE: ["127.0.0.1"]})
    root = layout.root
    tunnel_ca = load_cert(layout.ca_cert), load_key(layout.ca_key)
    foreign = create_ca("KubeEdge")  # same name, another key: "unknown ca"
    write_pem(root / "bad/foreign-ca.crt", foreign[0])
    write_pem(root / "bad/foreign-edge.crt", *issue_client_cert(*foreign, NODE))
    write_pem(root / "bad/expired-edge.crt", *craft_leaf(tunnel_ca, NODE, days_ago=30, lasted=10))
    write_pem(root / "bad/ip-edge.crt", *issue_client_cert(*tunnel_ca, NODE, ips=["10.9.9.9"]))
    stream_ca = create_ca("kubernetes")
    write_pem(root / "bad/stranger-client.crt",
              *issue_client_cert(*stream_ca, "kube-apiserver-kubelet-client", ["system:masters"]))
    return layout


@dataclass
class Site:
    layout: Layout
    cloud: Process
    stream_port: int
    tunnel_port: int
    edge: Process | None

    def cloud_flags(self) -> list[str]:
        return ["--pki-dir", str(self.layout.root), "--stream-address", "127.0.0.1", "--stream-port",
                str(self.stream_port), "--tunnel-address", "127.0.0.1", "--tunnel-port", str(self.tunnel_port)]

    def edge_flags(self, **over: str) -> list[str]:
        flags = {"--pki-dir": str(self.layout.root), "--node-name": NODE, "--server": f"localhost:{self.tunnel_port}",
                 "--node-ip": "127.0.0.1", "--backend": "emulator"}
        flags.update(over)
        return [w for k, v in flags.items() for w in (k, v)]

    async def state(self) -> dict[str, int]:
        since = len(self.cloud.lines)
        self.cloud.proc.send_signal(signal.SIGUSR1)
        m = await self.cloud.wait_for_line(STATE, since=since, timeout=10)
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    async def settled(self, baseline: dict[str, int]) -> dict[str, int]:
        """cloudstream's state once the doctors' probe connections are gone (they close at once;
        cloudstream notices within a moment)."""
        deadline = time.monotonic() + 10 * MS
        while True:
            now = await self.state()
            if (now["api_connections"] == 0 and now["api_pending"] == 0 and now["tunnel_pending"] == 0
                    and now["streams"] == 0 and now["fds"] <= baseline["fds"] and now["tasks"] <= baseline["tasks"]):
                return now
            if time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.2)


@pytest.fixture
async def running(site: Layout) -> AsyncIterator[Site]:
    """A real cloudstream and edge-1's emulated edge; at the end, nothing the doctors did is left in cloudstream."""
    cloud, stream_port, tunnel_port = await start_cloud(site)
    s = Site(site, cloud, stream_port, tunnel_port, None)
    try:
        since = len(cloud.lines)
        s.edge = await start_edge(site, NODE, tunnel_port)
        await cloud.wait_for_line(rf"tunnel up: node {NODE} ", since=since)
        baseline = await s.state()
        yield s
        after = await s.settled(baseline)
        assert after["api_connections"] == 0 and after["api_pending"] == 0, f"10003 connections left: {after}"
        assert after["tunnel_pending"] == 0 and after["streams"] == 0, f"left in cloudstream: {after}"
        assert after["tasks"] <= baseline["tasks"], f"tasks leaked: {baseline} -> {after}"
        assert after["fds"] <= baseline["fds"], f"descriptors leaked: {baseline} -> {after}"
    finally:
        if s.edge is not None:
            await s.edge.stop()
        await cloud.stop()


def yaml_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- healthy


async def test_healthy_site_passes_on_both_sides(running: Site) -> None:
    s = running
    rc, cloud = await doctor("cloudstream", *s.cloud_flags(), "--node", NODE, "--pod", "default/demo/app",
                             "--advertise", "localhost")
    assert rc == 0 and cloud["ok"], json.dumps(cloud, indent=1)
    passed = by_status(cloud, "PASS")
    for name in (f"port kubelet API {s.stream_port}", f"port tunnel {s.tunnel_port}", "reach tunnel localhost",
                 "cert tunnel server (10004)", "cert stream server (10003)", "cert API-server client",
                 "chain healthz", "chain logs"):
        assert name in passed, (name, json.dumps(cloud, indent=1))
    assert "200 'ok'" in passed["chain healthz"]["finding"]
    assert "default/demo/app line" in passed["chain logs"]["finding"]  # the emulator's log line, through the chain
    assert not by_status(cloud, "WARN")

    rc, edge = await doctor("edgestream", *s.edge_flags())
    assert rc == 0 and edge["ok"], json.dumps(edge, indent=1)
    passed = by_status(edge, "PASS")
    for name in ("resolve server", "reach server", "tls", "cert tunnel CA", f"cert edge {NODE}", "backend"):
        assert name in passed, (name, json.dumps(edge, indent=1))
    assert "ours accepted" in passed["tls"]["finding"]


async def test_human_output_is_aligned_with_a_summary_and_exit_code(running: Site) -> None:
    s = running
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloudstream", "doctor", *s.cloud_flags(), "--node", "nowhere", cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60 * MS)
    text = out.decode()
    assert proc.returncode == 1, text
    lines = text.splitlines()
    checks = [ln for ln in lines if ln[:4] in ("PASS", "WARN", "FAIL", "SKIP")]
    width = max(len(ln[6:].split("  ")[0]) for ln in checks)
    column = 6 + width + 2  # STATUS, two spaces, the names padded to the longest, two spaces
    for ln in checks:
        assert ln[column - 2:column] == "  " and ln[column] != " ", (ln, text)
    fix_lines = [ln for ln in lines if ln.lstrip().startswith("fix: ")]
    assert fix_lines and all(ln.index("fix: ") == column for ln in fix_lines), text
    assert re.search(r"^cloudstream doctor: FAIL: \d+ checks, \d+ pass, \d+ warn, 1 fail, \d+ skip$", lines[-1]), text
    chain = next(ln for ln in checks if ln.startswith("FAIL  chain healthz"))
    assert "503" in chain and "nowhere" in chain, text


# ---------------------------------------------------------------------- cloud side, one break at a time


async def test_cloud_module_disabled_in_cloudcore_yaml(running: Site, tmp_path: Path) -> None:
    s, lay = running, running.layout
    conf = yaml_file(tmp_path / "cloudcore.yaml", f"""
modules:
  cloudHub:
    advertiseAddress: [127.0.0.1]
  cloudStream:
    enable: false
    streamPort: {s.stream_port}
    tunnelPort: {s.tunnel_port}
    tlsTunnelCAFile: {lay.ca_cert}
    tlsTunnelCertFile: {lay.server_cert}
    tlsTunnelPrivateKeyFile: {lay.server_key}
    tlsStreamCAFile: {lay.stream_ca}
    tlsStreamCertFile: {lay.stream_cert}
    tlsStreamPrivateKeyFile: {lay.stream_key}
""")
    flags = ["--config", str(conf), "--stream-address", "127.0.0.1", "--tunnel-address", "127.0.0.1"]
    rc, report = await doctor("cloudstream", *flags)
    fails = assert_only_fails(rc, report, "config")
    assert "modules.cloudStream.enable is false" in fails["config"]["finding"]
    assert fails["config"]["fix"] == f"set `modules: cloudStream: enable: true` in {conf}"
    assert "reach tunnel 127.0.0.1" in by_status(report, "PASS")  # the advertised address, read from cloudHub

    conf.write_text(conf.read_text().replace("enable: false", "enable: true"))
    rc, report = await doctor("cloudstream", *flags)
    assert rc == 0 and "config" in by_status(report, "PASS"), json.dumps(report, indent=1)


async def test_cloud_tunnel_files_missing_but_cloudhub_has_them(running: Site, tmp_path: Path) -> None:
    """cloudcore falls back to cloudHub's CA and certificate (spec §7.1); cloudstream does not:
    the missing files are named, and the warning gives the flags that use cloudHub's."""
    s, lay = running, running.layout
    gone = tmp_path / "nowhere"
    conf = yaml_file(tmp_path / "cloudcore.yaml", f"""
modules:
  cloudHub:
    advertiseAddress: [127.0.0.1]
    tlsCAFile: {lay.ca_cert}
    tlsCertFile: {lay.server_cert}
    tlsPrivateKeyFile: {lay.server_key}
  cloudStream:
    enable: true
    streamPort: {s.stream_port}
    tunnelPort: {s.tunnel_port}
    tlsTunnelCAFile: {gone}/rootCA.crt
    tlsTunnelCertFile: {gone}/server.crt
    tlsTunnelPrivateKeyFile: {gone}/server.key
    tlsStreamCAFile: {lay.stream_ca}
    tlsStreamCertFile: {lay.stream_cert}
    tlsStreamPrivateKeyFile: {lay.stream_key}
""")
    rc, report = await doctor("cloudstream", "--config", str(conf), "--stream-address", "127.0.0.1",
                              "--tunnel-address", "127.0.0.1")
    assert_only_fails(rc, report, "cert tunnel CA", "cert tunnel server (10004)")
    warn = by_status(report, "WARN")["config cloudHub tls"]
    assert warn["fix"] == (f"run cloudstream (and doctor) with --tls-tunnel-ca-file {lay.ca_cert} --tls-tunnel-cert-file "
                           f"{lay.server_cert} --tls-tunnel-private-key-file {lay.server_key}")
    flags = warn["fix"].removeprefix("run cloudstream (and doctor) with ").split()
    rc, report = await doctor("cloudstream", "--config", str(conf), "--stream-address", "127.0.0.1",
                              "--tunnel-address", "127.0.0.1", *flags)
    assert rc == 0, json.dumps(report, indent=1)


async def test_cloud_port_not_listening(running: Site) -> None:
    s = running
    closed = free_port()
    flags = s.cloud_flags()
    flags[flags.index("--stream-port") + 1] = str(closed)
    rc, report = await doctor("cloudstream", *flags)
    fails = assert_only_fails(rc, report, f"port kubelet API {closed}")
    check = fails[f"port kubelet API {closed}"]
    assert "connection refused" in check["finding"] and "start cloudstream" in check["fix"]
    assert f"--stream-port {closed}" in check["fix"]  # the command to start it, with the flags given


async def test_cloud_certificate_key_mismatch(running: Site) -> None:
    s = running
    rc, report = await doctor("cloudstream", *s.cloud_flags(),
                              "--tls-stream-private-key-file", str(s.layout.server_key))
    fails = assert_only_fails(rc, report, "cert stream server (10003)")
    assert "does not match the certificate" in fails["cert stream server (10003)"]["finding"]
    assert fails["cert stream server (10003)"]["fix"].startswith("streamcerts issue stream")


async def test_cloud_server_certificate_does_not_cover_the_advertised_address(running: Site) -> None:
    s = running
    rc, report = await doctor("cloudstream", *s.cloud_flags(), "--advertise", "127.0.0.2")
    # Two findings, one cause: cloudstream listens on 127.0.0.1 only, and its certificate lacks 127.0.0.2.
    fails = assert_only_fails(rc, report, "reach tunnel 127.0.0.2", "cert tunnel server (10004)")
    assert "do not cover '127.0.0.2'" in fails["cert tunnel server (10004)"]["finding"]
    assert "--san 127.0.0.2" in fails["cert tunnel server (10004)"]["fix"]
    assert "--tunnel-address 0.0.0.0" in fails["reach tunnel 127.0.0.2"]["fix"]


async def test_cloud_tunnel_down_fails_the_chain(running: Site) -> None:
    s = running
    assert s.edge is not None
    since = len(s.cloud.lines)
    await s.edge.stop()
    s.edge = None
    await s.cloud.wait_for_line(rf"tunnel down: node {NODE}|{NODE}.*(closed|gone|down)", since=since)
    rc, report = await doctor("cloudstream", *s.cloud_flags(), "--node", NODE)
    fails = assert_only_fails(rc, report, "chain healthz")
    assert ": 503 " in fails["chain healthz"]["finding"] and NODE in fails["chain healthz"]["finding"]
    assert f"node {NODE}'s tunnel is down" in fails["chain healthz"]["fix"]
    assert "edgestream doctor" in fails["chain healthz"]["fix"]


async def test_cloud_chain_request_failing(running: Site) -> None:
    s = running
    rc, report = await doctor("cloudstream", *s.cloud_flags(), "--node", NODE, "--pod", "default/nope/app")
    fails = assert_only_fails(rc, report, "chain logs")
    assert ": 404 " in fails["chain logs"]["finding"]
    assert "chain healthz" in by_status(report, "PASS")

    # The API server's client certificate from a CA cloudstream does not trust: named twice (file, request).
    bad = s.layout.root / "bad/stranger-client.crt"
    rc, report = await doctor("cloudstream", *s.cloud_flags(), "--node", NODE, "--apiserver-cert", str(bad))
    fails = assert_only_fails(rc, report, "cert API-server client", "chain healthz")
    assert "not signed by the CA" in fails["cert API-server client"]["finding"]
    assert "refused the API-server client certificate (unknown ca" in fails["chain healthz"]["finding"]
    assert fails["chain healthz"]["fix"].startswith("streamcerts issue apiserver-client")


# ---------------------------------------------------------------------- edge side, one break at a time


async def test_edge_stream_disabled_in_edgecore_yaml(running: Site, tmp_path: Path) -> None:
    s, lay = running, running.layout
    conf = yaml_file(tmp_path / "edgecore.yaml", f"""
modules:
  edged:
    hostnameOverride: {NODE}
    nodeIP: 127.0.0.1
  edgeStream:
    enable: false
    server: localhost:{s.tunnel_port}
    tlsTunnelCAFile: {lay.ca_cert}
    tlsTunnelCertFile: {lay.edge_cert(NODE)}
    tlsTunnelPrivateKeyFile: {lay.edge_key(NODE)}
""")
    rc, report = await doctor("edgestream", "--config", str(conf), "--backend", "emulator")
    fails = assert_only_fails(rc, report, "config")
    assert "keadm join leaves it off" in fails["config"]["finding"]
    assert fails["config"]["fix"].startswith(f"set `modules: edgeStream: enable: true` in {conf}")


async def test_edge_wrong_tunnel_server_address(running: Site) -> None:
    s = running
    closed = free_port()
    rc, report = await doctor("edgestream", *s.edge_flags(**{"--server": f"localhost:{closed}"}))
    fails = assert_only_fails(rc, report, "reach server")
    assert "connection refused" in fails["reach server"]["finding"]
    assert "edgeStream: server:" in fails["reach server"]["fix"] and "cloudstream doctor" in fails["reach server"]["fix"]

    rc, report = await doctor("edgestream", *s.edge_flags(**{"--server": "cloud.doctor-test.invalid:10004"}))
    fails = assert_only_fails(rc, report, "resolve server")
    assert "does not resolve" in fails["resolve server"]["finding"]



async def test_edge_expired_certificate(running: Site) -> None:
    s = running
    bad = s.layout.root / "bad/expired-edge.crt"
    rc, report = await doctor("edgestream", *s.edge_flags(), "--tls-tunnel-cert-file", str(bad),
                              "--tls-tunnel-private-key-file", str(bad.with_suffix(".key")))
    fails = assert_only_fails(rc, report, "tls", f"cert edge {NODE}")
    assert "expired" in fails[f"cert edge {NODE}"]["finding"]
    assert "this node's certificate" in fails["tls"]["finding"] and "expired" in fails["tls"]["finding"]
    assert fails["tls"]["fix"].startswith("where the cloud's tunnel CA key is: streamcerts issue edge edge-1")


async def test_edge_wrong_ca(running: Site) -> None:
    s = running
    foreign = s.layout.root / "bad/foreign-ca.crt"
    rc, report = await doctor("edgestream", *s.edge_flags(), "--tls-tunnel-ca-file", str(foreign))
    fails = assert_only_fails(rc, report, "tls", f"cert edge {NODE}")
    assert "not signed by this node's tunnel CA" in fails["tls"]["finding"]  # the cloud's certificate, judged here
    assert fails["tls"]["fix"].startswith("copy the cloud's tunnel CA")

    # The other side: this node's certificate from a CA the cloud does not trust.
    bad = s.layout.root / "bad/foreign-edge.crt"
    rc, report = await doctor("edgestream", *s.edge_flags(), "--tls-tunnel-cert-file", str(bad),
                              "--tls-tunnel-private-key-file", str(bad.with_suffix(".key")))
    fails = assert_only_fails(rc, report, "tls", f"cert edge {NODE}")
    assert "the cloud does not trust this node's certificate" in fails["tls"]["finding"]
    assert "unknown ca" in fails["tls"]["finding"]
    assert "not signed by the CA" in fails[f"cert edge {NODE}"]["finding"]


async def test_edge_key_mismatch(running: Site) -> None:
    s = running
    rc, report = await doctor("edgestream", *s.edge_flags(), "--tls-tunnel-private-key-file",
                              str(s.layout.edge_key("edge-2")))
    fails = assert_only_fails(rc, report, "tls", f"cert edge {NODE}")
    assert "does not match the certificate" in fails[f"cert edge {NODE}"]["finding"]
    assert "cannot load this node's TLS files" in fails["tls"]["finding"]


async def test_edge_san_not_matching_node_ip(running: Site) -> None:
    s = running
    bad = s.layout.root / "bad/ip-edge.crt"
    flags = [*s.edge_flags(), "--tls-tunnel-cert-file", str(bad), "--tls-tunnel-private-key-file", str(bad.with_suffix(".key"))]
    rc, report = await doctor("edgestream", *flags)
    fails = assert_only_fails(rc, report, f"cert edge {NODE}")
    assert "announces 127.0.0.1, which is not among its IP SANs ['10.9.9.9']" in fails[f"cert edge {NODE}"]["finding"]
    assert "--ip 127.0.0.1" in fails[f"cert edge {NODE}"]["fix"]
    # The cloud agrees: a real edgestream with that certificate is refused for exactly that.
    since = len(s.cloud.lines)
    edge = await Process.start("edgestream", ["edgestream", *flags])
    try:
        await s.cloud.wait_for_line(r"announces internal IP 127\.0\.0\.1 but its certificate lists only 10\.9\.9\.9",
                                    since=since)
    finally:
        await edge.stop()


async def test_edge_backend_unreachable(running: Site, tmp_path: Path) -> None:
    s = running
    sock = tmp_path / "containerd.sock"
    rc, report = await doctor("edgestream", *s.edge_flags(**{"--backend": "cri"}), "--cri-endpoint", f"unix://{sock}")
    fails = assert_only_fails(rc, report, "backend")
    assert str(sock) in fails["backend"]["finding"] and "--cri-endpoint" in fails["backend"]["fix"]
    closed = free_port()
    rc, report = await doctor("edgestream", *s.edge_flags(**{"--backend": "kubelet"}),
                              "--kubelet-address", f"127.0.0.1:{closed}")
    fails = assert_only_fails(rc, report, "backend")
    assert "unreachable" in fails["backend"]["finding"] and "10350" in fails["backend"]["fix"]


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


async def test_edge_kubelet_backend_on_another_read_only_port(running: Site, tmp_path: Path) -> None:
    """edged's read-only port moved in edgecore.yaml (KubeEdge issue #4952) while edgestream dials
    10350: the backend check names the port and the flag that follows it."""
    s, lay = running, running.layout
    moved = free_port()
    conf = yaml_file(tmp_path / "edgecore.yaml", f"""
modules:
  edged:
    hostnameOverride: {NODE}
    nodeIP: 127.0.0.1
    tailoredKubeletConfig:
      readOnlyPort: {moved}
  edgeStream:
    enable: true
    server: localhost:{s.tunnel_port}
    tlsTunnelCAFile: {lay.ca_cert}
    tlsTunnelCertFile: {lay.edge_cert(NODE)}
    tlsTunnelPrivateKeyFile: {lay.edge_key(NODE)}
""")
    rc, report = await doctor("edgestream", "--config", str(conf), "--backend", "kubelet",
                              "--kubelet-address", f"127.0.0.1:{free_port()}")
    fails = assert_only_fails(rc, report, "backend")
    assert f"edged's read-only port is {moved}" in fails["backend"]["finding"]
    assert fails["backend"]["fix"].startswith(f"edgestream --kubelet-address 127.0.0.1:{moved}")


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
