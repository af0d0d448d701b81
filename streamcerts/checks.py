"""Checks of one certificate a process will load: every problem becomes a :class:`Finding` that
names the file, what is wrong and the command that fixes it.

Sync and pure apart from reading the files; ``verify`` builds the list of what to check from a
config, ``kubeedge_layout`` from an existing /etc/kubeedge.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .errors import CertificateError
from .files import load_certs
from .inspect import is_ca, issued_by, key_info, sans

__all__ = ["WARN_DAYS", "Expect", "Finding", "check", "covers", "exit_code", "key_matches", "render_finding"]

WARN_DAYS = 30
"""A certificate with fewer days left is reported (a warning, not a failure)."""

API_CN = "kube-apiserver-kubelet-client"
API_GROUP = "system:masters"


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    """``error`` (the process will fail or refuse peers), ``warning`` or ``ok``."""
    role: str
    file: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Expect:
    """One certificate (and its key) a process loads, and what it must satisfy."""

    role: str
    """``tunnel CA``, ``tunnel server``, ``stream CA``, ``stream server``, ``edge NODE``, ``API-server client``."""
    cert: Path
    fix: str
    """The command that (re)makes this file."""
    key: Path | None = None
    ca: Path | None = None
    """The CA file the certificate must be signed by (None for a CA itself)."""
    names: tuple[str, ...] = ()
    """Addresses a client dials this server at: each must be among the SANs."""
    common_name: str | None = None
    """The CN the peer checks (an edge: its node name)."""
    node_ip: str = ""
    """An edge's announced internal IP: must be one of its IP SANs when it has any."""
    api_client: bool = False
    """The API server's kubelet-client: cloudstream's default access rules must let it in."""
    optional: bool = False
    """Missing is a warning (another component may hold its own copy), not an error."""


def render_finding(f: Finding) -> str:
    head = {"error": "ERROR", "warning": "WARN ", "ok": "ok   "}[f.level]
    return f"{head} {f.role}: {f.file}: {f.message}" + (f"; fix: {f.fix}" if f.fix else "")


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.level == "error" for f in findings) else 0


def covers(cert: x509.Certificate, address: str) -> bool:
    """Would a TLS client that dialled ``address`` accept ``cert`` (IP SANs for IPs, DNS names
    with one-label wildcards otherwise; the CN is not used, as Go and Python do)?"""
    names = sans(cert)
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        host = address.lower().rstrip(".")
        for entry in names:
            if not entry.startswith("DNS:"):
                continue
            pattern = entry[4:].lower().rstrip(".")
            if pattern == host:
                return True
            if pattern.startswith("*.") and host.partition(".")[2] == pattern[2:] and "." in pattern[2:]:
                return True
        return False
    return f"IP:{ip}" in names


def _days(delta: dt.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} days" if abs(days) >= 2 else f"{delta.total_seconds() / 3600:.1f} hours"


def _time(e: Expect, cert: x509.Certificate, now: dt.datetime, warn_days: float) -> list[Finding]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return [Finding("error", e.role, str(e.cert),
                        f"not yet valid: valid from {start.isoformat()} (in {_days(start - now)}); "
                        "check this host's clock, or reissue", e.fix)]
    if now >= end:
        return [Finding("error", e.role, str(e.cert), f"expired on {end.isoformat()} ({_days(now - end)} ago)", e.fix)]
    if end - now < dt.timedelta(days=warn_days):
        return [Finding("warning", e.role, str(e.cert),
                        f"expires on {end.isoformat()} (in {_days(end - now)})", e.fix)]
    return []


def key_matches(e: Expect, cert: x509.Certificate) -> list[Finding]:
    if e.key is None:
        return []
    try:
        key = serialization.load_pem_private_key(e.key.read_bytes(), password=None)
    except FileNotFoundError:
        return [Finding("error", e.role, str(e.key), "private key missing", e.fix)]
    except OSError as exc:
        return [Finding("error", e.role, str(e.key), f"private key unreadable: {exc.strerror or exc}",
                        f"check its owner and mode (0600, readable by the process's user), or {e.fix}")]
    except (ValueError, TypeError):
        return [Finding("error", e.role, str(e.key), "not an unencrypted PEM private key", e.fix)]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, pub)
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER, pub)
    if mine != theirs:
        return [Finding("error", e.role, str(e.key),
                        f"does not match the certificate {e.cert} (key {key_info(key.public_key())}, "
                        f"certificate {key_info(cert.public_key())}); the pair was mixed up", e.fix)]
    return []


def _chain(e: Expect, cert: x509.Certificate) -> list[Finding]:
    if e.ca is None:
        return []
    try:
        bundle = load_certs(e.ca)
    except CertificateError:
        return []  # the CA's own entry reports it missing or unreadable
    if any(issued_by(cert, ca) for ca in bundle):
        return []
    return [Finding("error", e.role, str(e.cert),
                    f"not signed by the CA in {e.ca} (issuer {cert.issuer.rfc4514_string()}; that CA is "
                    f"{', '.join(c.subject.rfc4514_string() for c in bundle)}): peers will refuse it", e.fix)]


def _identity(e: Expect, cert: x509.Certificate) -> list[Finding]:
    out: list[Finding] = []
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if e.common_name is not None and e.common_name not in cns:
        out.append(Finding("error", e.role, str(e.cert),
                           f"CN is {cns[0] if cns else '(none)'!r}, not the node name {e.common_name!r}: cloudstream "
                           "refuses the tunnel (or run it with --no-verify-node-identity)", e.fix))
    if e.api_client and API_CN not in cns and API_GROUP not in orgs:
        out.append(Finding("warning", e.role, str(e.cert),
                           f"CN {cns[0] if cns else '(none)'!r}, O {orgs}: cloudstream's default access rules "
                           f"(cn:{API_CN}, group:{API_GROUP}) refuse it; add --allow cn:NAME to cloudstream", e.fix))
    ips = {ip.split(":", 1)[1] for ip in sans(cert) if ip.startswith("IP:")}
    if e.node_ip:
        try:
            node_ip = str(ipaddress.ip_address(e.node_ip))
        except ValueError:
            node_ip = e.node_ip
        if ips and node_ip not in ips:
            out.append(Finding("error", e.role, str(e.cert),
                               f"the node announces {node_ip}, which is not among its IP SANs {sorted(ips)}: "
                               "cloudstream refuses the tunnel", e.fix))
        elif not ips:
            out.append(Finding("warning", e.role, str(e.cert),
                               f"carries no IP SAN, so cloudstream cannot bind {node_ip} to this node "
                               "(another node may announce it)", e.fix))
    return out


def check(e: Expect, now: dt.datetime | None = None, warn_days: float = WARN_DAYS) -> list[Finding]:
    """Every problem of ``e``; one ``ok`` finding when there is none."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        bundle = load_certs(e.cert)
    except CertificateError as exc:
        missing = isinstance(exc.__context__, FileNotFoundError) or not e.cert.exists()
        if missing:
            return [Finding("warning" if e.optional else "error", e.role, str(e.cert), "missing", e.fix)]
        return [Finding("error", e.role, str(e.cert), f"unreadable: {str(exc).split(': ', 1)[-1]}", e.fix)]
    cert = bundle[0]
    found = _time(e, cert, now, warn_days)
    if e.ca is None and not is_ca(cert):
        found.append(Finding("error", e.role, str(e.cert),
                             "is not a CA (no basicConstraints CA:TRUE): it cannot sign peers' certificates", e.fix))
    found += key_matches(e, cert) + _chain(e, cert) + _identity(e, cert)
    for address in e.names:
        if not covers(cert, address):
            found.append(Finding("error", e.role, str(e.cert),
                                 f"SANs {sans(cert) or '(none)'} do not cover {address!r}, the address peers dial: "
                                 "they refuse the handshake", e.fix))
    if found:
        return found
    left = (cert.not_valid_after_utc - now).days
    return [Finding("ok", e.role, str(e.cert), f"{cert.subject.rfc4514_string()}, {left} days left")]
