"""The operator's commands on site: new CAs (``init``) and each certificate (``issue``), written into
KubeEdge's layout with KubeEdge's file names, atomically, never over an existing file without ``force``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._x509 import PrivateKey, parse_key_type
from .ca import create_ca
from .errors import CertificateError
from .files import Layout, load_cert, load_key, write_pem
from .inspect import is_ca
from .issue import issue_client_cert, issue_server_cert

__all__ = ["KINDS", "LOOPBACK_SANS", "Issued", "init_cas", "issue"]

KINDS = ("server", "stream", "edge", "apiserver-client")
LOOPBACK_SANS = ("localhost", "127.0.0.1")
"""Always in a server certificate (KubeEdge's certgen.sh puts 127.0.0.1 in every one)."""
API_CLIENT = ("kube-apiserver-kubelet-client", ("system:masters",))
"""The API server's kubelet-client identity, as kubeadm issues it and cloudstream's default rules admit."""


@dataclass(frozen=True, slots=True)
class Issued:
    label: str
    cert: Path
    key: Path
    note: str = ""


def init_cas(
    root: Path, key_type: str = "ecdsa", days: float = 3650, force: bool = False, only: str | None = None
) -> list[Issued]:
    """The tunnel CA (``ca/rootCA.crt|key``, CN KubeEdge) and the stream CA (``ca/streamCA.crt|key``,
    standing in for the cluster CA that signs the API server's kubelet-client certificate)."""
    parse_key_type(key_type)
    lay = Layout(Path(root))
    wanted = [("tunnel CA", lay.ca_cert, lay.ca_key, "KubeEdge"), ("stream CA", lay.stream_ca, lay.stream_ca_key, "kubernetes")]
    if only is not None:
        wanted = [w for w in wanted if w[0].startswith(only)]
        if not wanted:
            raise CertificateError(f"--only {only!r}: use tunnel or stream")
    if not force:  # all or nothing: never half a new PKI beside half an old one
        for _, cert, key, _ in wanted:
            for path in (cert, key):
                if path.exists():
                    raise CertificateError(f"{path} exists; --force replaces it (and every certificate it signed)")
    out = []
    for label, cert_path, key_path, cn in wanted:
        write_pem(cert_path, *create_ca(cn, days, key_type), key_path)
        out.append(Issued(label, cert_path, key_path))
    return out


def _ca(cert: Path, key: Path) -> tuple[x509.Certificate, PrivateKey]:
    ca_cert = load_cert(cert)
    if not is_ca(ca_cert):
        raise CertificateError(f"{cert} is not a CA certificate (basicConstraints CA:FALSE)")
    ca_key = load_key(key)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca_key.public_key().public_bytes(serialization.Encoding.DER, spki) != ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise CertificateError(f"the key {key} does not belong to the CA {cert}")
    return ca_cert, ca_key


def issue(
    kind: str,
    root: Path,
    *,
    node: str | None = None,
    sans: tuple[str, ...] | list[str] = (),
    ips: tuple[str, ...] | list[str] = (),
    key_type: str = "ecdsa",
    days: float = 365,
    force: bool = False,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
    out_cert: Path | None = None,
    out_key: Path | None = None,
    common_name: str | None = None,
) -> Issued:
    """One certificate of ``kind`` (see :data:`KINDS`), signed by the CA of its trust domain:
    ``server`` and ``edge`` by the tunnel CA, ``stream`` and ``apiserver-client`` by the stream CA."""
    lay = Layout(Path(root))
    tunnel = kind in ("server", "edge")
    default_ca = (lay.ca_cert, lay.ca_key) if tunnel else (lay.stream_ca, lay.stream_ca_key)
    if kind == "server":
        label, cert_path, key_path = "tunnel server (10004)", lay.server_cert, lay.server_key
    elif kind == "stream":
        label, cert_path, key_path = "stream server (10003)", lay.stream_cert, lay.stream_key
    elif kind == "edge":
        if not node:
            raise CertificateError("issue edge: name the node (streamcerts issue edge NODE --ip IP)")
        label, cert_path, key_path = f"edge {node}", lay.edge_cert(node), lay.edge_key(node)
    elif kind == "apiserver-client":
        label, cert_path, key_path = "API-server client", lay.apiserver_client_cert, lay.apiserver_client_key
    else:
        raise CertificateError(f"issue {kind!r}: one of {', '.join(KINDS)}")
    cert_path = Path(out_cert) if out_cert is not None else cert_path
    key_path = Path(out_key) if out_key is not None else cert_path.with_suffix(".key")
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise CertificateError(f"{path} exists; --force replaces it")
    ca = _ca(Path(ca_cert or default_ca[0]), Path(ca_key or default_ca[1]))
    # A leaf never outlives its CA: peers would refuse it from that day on anyway.
    ca_days = (ca[0].not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    note = ""
    if ca_days <= 0:
        raise CertificateError(f"the CA {ca_cert or default_ca[0]} has expired: renew it first")
    if days > ca_days:
        note = f"validity cut to {ca_days:.1f} days: the CA expires then"
        days = ca_days - 1 / 86400
    if kind in ("server", "stream"):
        names = list(dict.fromkeys([*LOOPBACK_SANS, *sans]))
        pair = issue_server_cert(*ca, common_name or ("cloudstream" if tunnel else "cloudstream-stream"), names,
                                 days, key_type)
    elif kind == "edge":
        pair = issue_client_cert(*ca, common_name or str(node), (), days, tuple(ips), key_type)
    else:
        cn, orgs = API_CLIENT
        pair = issue_client_cert(*ca, common_name or cn, orgs, days, (), key_type)
    write_pem(cert_path, *pair, key_path, overwrite=force)
    return Issued(label, cert_path, key_path, note)
