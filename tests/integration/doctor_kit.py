"""Shared by the doctor tests: run a doctor as a process and read its JSON, the lab PKI with the
broken material the tests swap in, and a running site (a real cloudstream and edge-1's emulated
edge) that ends with cloudstream holding nothing the doctors' probes left."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamcerts import Layout, create_ca, init_lab, issue_client_cert, load_cert, load_key, write_pem
from tests.conftest import MS, ROOT

from .framework import Process, start_cloud, start_edge

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


@pytest.fixture(scope="module", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Layout:
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


@pytest.fixture(name="running")
async def running_fixture(site: Layout) -> AsyncIterator[Site]:
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
