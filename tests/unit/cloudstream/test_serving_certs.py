"""The per-node serving certificate cache (cloudstream/serving_certs.py) on real accepted
loopback sockets: which address gets a leaf, one issue per IP, the LRU bound, renewal before
expiry, and a new CA dropping every leaf. The registry is the real one."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import pytest
from cryptography import x509

from streamcerts import client_context, init_lab
from streamcerts.serving import ServingCA
from streamcerts.watch import Reloading
from cloudstream.edge_session import IPClaim
from cloudstream.registry import SessionRegistry
from cloudstream.serving_certs import ServingCertificates
from tests.unit.certs.test_watch import handshake


@dataclass
class _Node:
    node: str
    internal_ip: str
    closed_reason: str | None = None

    @property
    def ip_claim(self) -> IPClaim:
        return IPClaim(self.internal_ip, announced=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    return init_lab(tmp_path_factory.mktemp("serving-cache"), [])


@contextmanager
def accepted(ip: str) -> Iterator[socket.socket]:
    """A connection to ``ip`` (a loopback address) as the listener holds it before the handshake."""
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen(1)
        with socket.create_connection((ip, server.getsockname()[1])):
            sock, _ = server.accept()
            with sock:
                yield sock


def make(lab, *nodes: tuple[str, str], **kwargs: object) -> tuple[ServingCertificates, SessionRegistry]:
    registry = SessionRegistry()
    for name, ip in nodes:
        registry.register(_Node(name, ip))  # type: ignore[arg-type]
    ca = Reloading("serving CA", [lab.stream_ca, lab.stream_ca_key], partial(ServingCA.load, lab.stream_ca, lab.stream_ca_key))
    return ServingCertificates(ca, registry, lab.stream_ca, **kwargs), registry  # type: ignore[arg-type]


async def leaf_cert(certs: ServingCertificates, ip: str, lab) -> x509.Certificate | None:
    with accepted(ip) as sock:
        ctx = await certs.context_for(sock)
    if ctx is None:
        return None
    return handshake(ctx, client_context(lab.stream_ca), hostname=ip)


async def test_only_a_connected_nodes_ip_gets_a_leaf(lab) -> None:
    certs, _ = make(lab, ("edge-a", "127.0.1.21"))
    assert await leaf_cert(certs, "127.0.1.99", lab) is None  # no node has it: the default certificate
    assert await leaf_cert(certs, "127.0.0.1", lab) is None
    first = await leaf_cert(certs, "127.0.1.21", lab)
    assert first is not None
    again = await leaf_cert(certs, "127.0.1.21", lab)
    assert again is not None and again.serial_number == first.serial_number
    assert certs.counts == {"issued": 1, "cached": 1, "default": 2, "failed": 0}


async def test_a_burst_of_connections_issues_once(lab) -> None:
    certs, _ = make(lab, ("edge-a", "127.0.1.22"))
    with accepted("127.0.1.22") as sock:
        contexts = await asyncio.gather(*(certs.context_for(sock) for _ in range(20)))
    assert len({id(c) for c in contexts}) == 1 and certs.counts["issued"] == 1


async def test_lru_bound_and_a_new_owner_gets_a_new_leaf(lab) -> None:
    nodes = [(f"edge-{i}", f"127.0.1.{30 + i}") for i in range(4)]
    certs, registry = make(lab, *nodes, max_cached=2)
    for _, ip in nodes:
        await leaf_cert(certs, ip, lab)
    assert len(certs) == 2 and certs.counts["issued"] == 4
    # the IP changes hands: the leaf must name the new node
    registry.unregister(registry.get("edge-3"))  # type: ignore[arg-type]
    registry.register(_Node("edge-new", "127.0.1.33"))  # type: ignore[arg-type]
    cert = await leaf_cert(certs, "127.0.1.33", lab)
    assert cert is not None and "system:node:edge-new" in cert.subject.rfc4514_string()


async def test_renewed_before_expiry_and_dropped_on_a_new_ca(lab) -> None:
    now = [dt.datetime.now(dt.UTC)]
    certs, _ = make(lab, ("edge-a", "127.0.1.40"), validity=dt.timedelta(hours=3), renew_before=dt.timedelta(hours=1),
                    clock=lambda: now[0])
    first = await leaf_cert(certs, "127.0.1.40", lab)
    now[0] += dt.timedelta(hours=2, minutes=30)  # inside the renewal window, still valid
    during = await leaf_cert(certs, "127.0.1.40", lab)
    assert first is not None and during is not None
    assert during.serial_number == first.serial_number  # served at once; the renewal runs beside
    for _ in range(100):
        if certs.counts["issued"] == 2 and not certs._inflight:
            break
        await asyncio.sleep(0.01)
    now[0] = dt.datetime.now(dt.UTC)
    after = await leaf_cert(certs, "127.0.1.40", lab)
    assert after is not None and after.serial_number != first.serial_number
    certs.ca.check(force=True)  # the CA files were reloaded: every leaf goes
    assert len(certs) == 0
    reissued = await leaf_cert(certs, "127.0.1.40", lab)
    assert reissued is not None and reissued.serial_number != after.serial_number


async def test_a_ca_that_cannot_sign_falls_back_once_not_per_connection(lab, tmp_path) -> None:
    from tests.unit.certs.test_serving import expired_ca

    expired_ca(tmp_path)
    registry = SessionRegistry()
    registry.register(_Node("edge-a", "127.0.1.50"))  # type: ignore[arg-type]
    ca = Reloading("serving CA", [tmp_path / "ca.crt"], partial(ServingCA.load, tmp_path / "ca.crt", tmp_path / "ca.key"))
    certs = ServingCertificates(ca, registry, lab.stream_ca)
    for _ in range(3):
        assert await leaf_cert(certs, "127.0.1.50", lab) is None  # the stream certificate instead
    assert certs.counts["failed"] == 1 and certs.counts["default"] == 2
    certs.errors.close()


def test_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudstream.__main__ import main as cloud_main
    from edgestream.__main__ import main as edge_main

    assert cloud_main(["--serving-ca-cert-file", "/x/ca.crt"]) == 2  # half a CA
    assert "--serving-ca-key-file" in capsys.readouterr().err
    assert cloud_main(["--cert-watch-interval", "0"]) == 2
    assert edge_main(["--cert-watch-interval", "0"]) == 2
