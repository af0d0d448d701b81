"""Signing renewed edge certificates for the tunnels' nodes (the ``renew`` feature).

Off unless cloudstream is given the tunnel CA's key (``--tunnel-ca-key-file``); then an edge
asks over its authenticated tunnel and gets a certificate for the same node, same subject,
no new IPs (the policy is ``streamcerts.renewal.vet_csr``). Requests are limited per node (all of
them, refused ones too: each costs a signature check) over a sliding hour. Every refusal is
logged with node and reason, once per (node, reason) per interval (``RateLimitedLog``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from streamcerts import load_key
from streamcerts._x509 import PrivateKey
from streamcerts.errors import CertificateError
from streamcerts.renewal import CsrRefused, serial_hex, sign_csr, vet_csr
from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel import RenewalAnswer, RenewalStatus
from streamproto.tunnel.errors import ConfigError

from .config import CloudConfig

__all__ = ["CertSigner", "describe_certificate"]

logger = logging.getLogger(__name__)

_WINDOW = 3600.0
"""Seconds of the per-node request limit's sliding window."""
_MAX_TRACKED = 100_000
"""Nodes whose recent requests are remembered (oldest forgotten first): bounded memory."""


class CertSigner:
    def __init__(
        self, ca_cert: x509.Certificate, ca_key: PrivateKey, *, max_validity: dt.timedelta, max_per_window: int,
        window: float = _WINDOW,
    ) -> None:
        self.ca_cert = ca_cert
        self.ca_key = ca_key
        self.max_validity = max_validity
        self.max_per_window = max_per_window
        self.window = window
        self.refusals = RateLimitedLog(logger)
        self.signed = 0
        self.refused = 0
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._chain_tail = ca_cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_config(cls, config: CloudConfig) -> CertSigner | None:
        """None when no CA key is configured (renewal off: ``renew`` is not offered)."""
        if config.tunnel_ca_key_file is None:
            return None
        try:
            key = load_key(config.tunnel_ca_key_file)
            bundle = x509.load_pem_x509_certificates(Path(config.tls_tunnel_ca_file).read_bytes())
        except (CertificateError, OSError, ValueError) as exc:
            raise ConfigError(f"--tunnel-ca-key-file: {exc}") from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        mine = key.public_key().public_bytes(*spki)
        ca = next((c for c in bundle if c.public_key().public_bytes(*spki) == mine), None)
        if ca is None:
            raise ConfigError(
                f"the key {config.tunnel_ca_key_file} belongs to no CA in {config.tls_tunnel_ca_file} "
                f"(--tls-tunnel-ca-file): give cloudstream the key of the CA that signs the edges' certificates"
            )
        logger.info(
            "edge certificate renewal on: signing as %s (at most %g days, %d requests per node per hour)",
            ca.subject.rfc4514_string(), config.renew_max_days, config.renew_max_per_hour,
        )
        return cls(ca, key, max_validity=dt.timedelta(days=config.renew_max_days),
                   max_per_window=config.renew_max_per_hour)

    def answer(self, node: str, current_der: bytes | None, csr_der: bytes, now: float | None = None) -> RenewalAnswer:
        """Decide on one request from ``node``'s tunnel (authenticated with ``current_der``)."""
        wait = self._admit(node, time.monotonic() if now is None else now)
        if wait is not None:
            return self._refuse(
                node, "rate", RenewalStatus.RATE_LIMITED,
                f"more than {self.max_per_window} renewal requests within an hour: ask again in {wait} s",
                retry_after=wait,
            )
        if current_der is None:
            return self._refuse(node, "no cert", RenewalStatus.UNAVAILABLE,
                                "the tunnel presented no certificate to renew")
        try:
            current = x509.load_der_x509_certificate(current_der)
            csr = vet_csr(csr_der, node, current)
            cert = sign_csr(self.ca_cert, self.ca_key, csr, current, self.max_validity)
        except CsrRefused as exc:
            status = RenewalStatus.BAD_REQUEST if exc.bad_request else RenewalStatus.REFUSED
            return self._refuse(node, exc.kind, status, str(exc))
        except (CertificateError, ValueError, TypeError) as exc:
            return self._refuse(node, "signing", RenewalStatus.UNAVAILABLE, f"signing failed: {exc}")
        self.signed += 1
        logger.info(
            "= signed a renewed certificate for node %s: serial %s, valid until %s (replaces serial %s)",
            node, serial_hex(cert), cert.not_valid_after_utc.isoformat(timespec="seconds"), serial_hex(current),
        )
        return RenewalAnswer(RenewalStatus.OK, chain_pem=cert.public_bytes(serialization.Encoding.PEM) + self._chain_tail)

    def _refuse(self, node: str, kind: str, status: RenewalStatus, reason: str, retry_after: int = 0) -> RenewalAnswer:
        self.refused += 1
        reason = f"node {node}: {reason}"
        self.refusals.event((node, kind), "! refused to renew a certificate: %s", reason)
        return RenewalAnswer(status, reason=reason, retry_after=retry_after)

    def _admit(self, node: str, now: float) -> int | None:
        """Count one request; None when it may proceed, else the seconds until it may."""
        recent = self._recent.get(node)
        if recent is None:
            if len(self._recent) >= _MAX_TRACKED:
                self._recent.popitem(last=False)
            recent = self._recent[node] = deque(maxlen=self.max_per_window)
        else:
            self._recent.move_to_end(node)
        while recent and now - recent[0] >= self.window:
            recent.popleft()
        if len(recent) >= self.max_per_window:
            return max(1, int(self.window - (now - recent[0])) + 1)
        recent.append(now)
        return None


def describe_certificate(der: bytes | None) -> str:
    """``, certificate serial S valid until T`` for the tunnel-up line (which certificate a
    node dialled with: after a renewal the serial changes), or empty."""
    if not der:
        return ""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return ""
    return f", certificate serial {serial_hex(cert)} valid until {cert.not_valid_after_utc.isoformat(timespec='seconds')}"
