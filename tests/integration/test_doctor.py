"""``cloudstream doctor`` and ``edgestream doctor`` against a real cloudstream and a real emulated
edge with lab certificates: all pass on a healthy site; then each thing doctor checks is broken,
one at a time, and exactly that check fails, with its fix. The doctors run as real processes
(``python -m ... doctor --json``); every test on the running site ends with cloudstream holding no
connection, stream, task or descriptor more than before the doctors probed it (``SIGUSR1``).
The wiring (DNAT, egress front, admin ports, containerd, bounds): ``test_doctor_wiring.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import MS, ROOT, free_port

from .doctor_kit import (  # noqa: F401  (fixtures)
    NODE, Site, assert_only_fails, by_status, doctor, failed, running_fixture, site_fixture, yaml_file,
)
from .framework import Process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


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
