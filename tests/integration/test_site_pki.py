"""Certificates on site, end to end with real processes:

- from nothing: only ``streamcerts`` commands into an empty directory, then a real cloudstream and
  an emulated edge serve a ``logs`` request through 10003 -> tunnel -> edge with those files;
- from an existing KubeEdge installation: an /etc/kubeedge made the way KubeEdge's certgen.sh makes
  it (the real openssl binary, EC keys in SEC1 form, the cluster CA copied to streamCA.crt, the API
  server's kubelet-client from the cluster PKI), ``streamcerts import`` reports it and writes
  nothing, then cloudstream/edgestream run on KubeEdge's own config files and those very files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamcerts import Layout

from .framework import READY, ROOT, Process, apiserver_tls, kubelet_request, start_cloud, start_edge
from .test_logs_chain import LINE, wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def streamcerts(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: a separate process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "streamcerts", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def _logs(port: int, tls: object, node: str) -> list[bytes]:
    await wait_node_ready(port, tls, node)  # type: ignore[arg-type]
    async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=5", host=node, tls=tls) as resp:  # type: ignore[arg-type]
        assert resp.status == 200
        lines = (await resp.body()).splitlines()
    assert len(lines) == 5 and all(LINE.match(line) for line in lines)
    return lines


async def test_from_nothing_to_a_running_chain(tmp_path: Path) -> None:
    d = tmp_path / "kubeedge"
    for step in (
        ["init", "--dir", d],
        ["issue", "server", "--dir", d, "--san", "cloud.example", "--days", "20"],  # soon due: cloudstream says so
        ["issue", "stream", "--dir", d],
        ["issue", "edge", "edge-1", "--dir", d, "--ip", "127.0.0.1", "--days", "5"],  # and edgestream says so
        ["issue", "apiserver-client", "--dir", d, "--key-type", "rsa:2048"],
    ):
        done = streamcerts(*step)
        assert done.returncode == 0, (step, done.stderr)
    verified = streamcerts("verify", "--dir", d, "--node", "edge-1", "--node-ip", "127.0.0.1", "--advertise", "localhost")
    assert verified.returncode == 0, verified.stdout
    assert [line.split(":")[0] for line in verified.stdout.splitlines() if line.startswith("WARN")] == [
        "WARN  tunnel server (10004)", "WARN  edge edge-1"]  # due within 30 days: warnings, not failures
    layout = Layout(d)
    cloud, stream_port, tunnel_port = await start_cloud(layout)
    edge = await start_edge(layout, "edge-1", tunnel_port)
    try:
        await _logs(stream_port, apiserver_tls(layout), "edge-1")
        await cloud.wait_for_line(rf"tunnel server certificate {layout.server_cert} \(CN=cloudstream\) expires in (19\.9|20\.0) days"
                                  rf".*fix: streamcerts issue server --dir {d} --force --san cloud.example$")
        await edge.wait_for_line(rf"WARNING streamcerts.expiry ! edge edge-1 certificate {layout.edge_cert('edge-1')} "
                                 r"\(CN=edge-1\) expires in (4\.9|5\.0) days.*fix: streamcerts issue edge edge-1 "
                                 r"--ip 127\.0\.0\.1 --force")
        assert not [line for line in edge.lines + cloud.lines if "CA certificate" in line]  # the CAs are fine
    finally:
        await edge.stop()
        await cloud.stop()


def _kubeedge_as_certgen_makes_it(tmp: Path) -> tuple[Path, Path, Path]:
    """Cluster PKI (kubeadm's names), cloudcore's /etc/kubeedge and an edge node's /etc/kubeedge."""
    kube, cloud, node = tmp / "kubernetes/pki", tmp / "cloud/etc/kubeedge", tmp / "edge-1/etc/kubeedge"
    for path in (kube, cloud / "ca", cloud / "certs", node / "ca", node / "certs"):
        path.mkdir(parents=True)

    def ec_key(path: Path) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path)

    def ca(key: Path, crt: Path, subject: str) -> None:
        ec_key(key)
        openssl("req", "-x509", "-new", "-key", key, "-sha256", "-days", "3650", "-subj", subject, "-out", crt)

    def leaf(key: Path, crt: Path, subject: str, ca_crt: Path, ca_key: Path, ext: str) -> None:
        ec_key(key)
        csr, extfile = crt.with_suffix(".csr"), tmp / "ext.cnf"
        openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
        extfile.write_text(ext + "\n")
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
                "-days", "365", "-sha256", "-extfile", extfile)
        csr.unlink()

    ca(kube / "ca.key", kube / "ca.crt", "/CN=kubernetes")
    leaf(kube / "apiserver-kubelet-client.key", kube / "apiserver-kubelet-client.crt",
         "/O=system:masters/CN=kube-apiserver-kubelet-client", kube / "ca.crt", kube / "ca.key",
         "extendedKeyUsage = clientAuth")
    ca(cloud / "ca/rootCA.key", cloud / "ca/rootCA.crt", "/C=CN/ST=Zhejiang/L=Hangzhou/O=KubeEdge/CN=kubeedge.io")
    leaf(cloud / "certs/server.key", cloud / "certs/server.crt", "/C=CN/ST=Zhejiang/L=Hangzhou/O=KubeEdge/CN=kubeedge.io",
         cloud / "ca/rootCA.crt", cloud / "ca/rootCA.key", "subjectAltName = IP.1:127.0.0.1")
    # certgen.sh stream: the cluster CA becomes streamCA.crt and signs stream.crt.
    (cloud / "ca/streamCA.crt").write_bytes((kube / "ca.crt").read_bytes())
    leaf(cloud / "certs/stream.key", cloud / "certs/stream.crt", "/C=CN/ST=Zhejiang/L=Hangzhou/O=KubeEdge",
         kube / "ca.crt", kube / "ca.key", "subjectAltName = IP.1:127.0.0.1")
    # The edge node: the tunnel CA and its own pair under edgecore's default names.
    (node / "ca/rootCA.crt").write_bytes((cloud / "ca/rootCA.crt").read_bytes())
    leaf(node / "certs/server.key", node / "certs/server.crt", "/CN=edge-1", cloud / "ca/rootCA.crt",
         cloud / "ca/rootCA.key", "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = clientAuth")
    return kube, cloud, node


def _snapshot(*roots: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for r in roots for p in r.rglob("*") if p.is_file()}


async def test_import_an_existing_kubeedge_layout_and_run_on_it(tmp_path: Path) -> None:
    kube, cloud_dir, node_dir = _kubeedge_as_certgen_makes_it(tmp_path)
    before = _snapshot(kube, cloud_dir, node_dir)
    report = streamcerts("import", "--from", cloud_dir, "--kube-pki", kube)
    assert report.returncode == 0, report.stdout + report.stderr
    for role in ("tunnel CA", "tunnel server (10004)", "stream CA", "stream server (10003)", "tunnel CA key",
                 "stream CA key", "API-server client"):
        assert f"ok    {role}: " in report.stdout, (role, report.stdout)
    assert f"cloudstream --pki-dir {cloud_dir}" in report.stdout
    edge_report = streamcerts("import", "--from", node_dir, "--side", "edge", "--node", "edge-1", "--node-ip", "127.0.0.1")
    assert edge_report.returncode == 0 and "ok    edge edge-1: " in edge_report.stdout, edge_report.stdout
    # What is missing is named with the way to get it (here: cloudcore >= 1.3 keeps the CA key in a Secret).
    (cloud_dir / "ca/rootCA.key").rename(tmp_path / "rootCA.key.aside")
    missing = streamcerts("import", "--from", cloud_dir, "--kube-pki", kube)
    assert missing.returncode == 0 and "WARN  tunnel CA key" in missing.stdout and "casecret" in missing.stdout
    (tmp_path / "rootCA.key.aside").rename(cloud_dir / "ca/rootCA.key")

    cloudcore, edgecore = tmp_path / "cloudcore.yaml", tmp_path / "edgecore.yaml"
    cloudcore.write_text(f"""
modules:
  cloudHub: {{advertiseAddress: [127.0.0.1]}}
  cloudStream:
    enable: true
    tlsTunnelCAFile: {cloud_dir}/ca/rootCA.crt
    tlsTunnelCertFile: {cloud_dir}/certs/server.crt
    tlsTunnelPrivateKeyFile: {cloud_dir}/certs/server.key
    tlsStreamCAFile: {cloud_dir}/ca/streamCA.crt
    tlsStreamCertFile: {cloud_dir}/certs/stream.crt
    tlsStreamPrivateKeyFile: {cloud_dir}/certs/stream.key
""")
    assert streamcerts("verify", "--config", cloudcore).returncode == 0
    cloud = await Process.start("cloudstream", [
        "cloudstream", "--config", str(cloudcore), "--stream-address", "127.0.0.1", "--stream-port", "0",
        "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"])
    edge = None
    try:
        m = await cloud.wait_for_line(READY)
        stream_port, tunnel_port = int(m.group(1)), int(m.group(2))
        edgecore.write_text(f"""
modules:
  edged: {{hostnameOverride: edge-1, nodeIP: 127.0.0.1}}
  edgeStream:
    enable: true
    server: 127.0.0.1:{tunnel_port}
    tlsTunnelCAFile: {node_dir}/ca/rootCA.crt
    tlsTunnelCertFile: {node_dir}/certs/server.crt
    tlsTunnelPrivateKeyFile: {node_dir}/certs/server.key
""")
        checked = streamcerts("verify", "--config", edgecore)
        assert checked.returncode == 0, checked.stdout
        edge = await Process.start("edgestream", ["edgestream", "--config", str(edgecore), "--backend", "emulator"])
        tls = apiserver_tls(Layout(cloud_dir), kube / "apiserver-kubelet-client.crt", kube / "apiserver-kubelet-client.key")
        await _logs(stream_port, tls, "edge-1")
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()
    assert _snapshot(kube, cloud_dir, node_dir) == before  # not one certificate written or touched
