"""TLS refusals that the peer understands and the operator can read.

asyncio's and uvloop's TLS layers drop the fatal alert OpenSSL writes when a handshake fails
(CPython gh-98078; uvloop even drains it in ``connection_lost``): a caller whose certificate
is signed by the wrong CA sees a bare EOF. ``AlertingContext`` ties the TLS object of each of
our handshakes to an ``Alert`` (a duplicate of the socket's descriptor, set in the handshake
task's context) and sends the alert from there the moment the handshake fails.
``describe`` turns the handshake's ``SSLError`` into a log reason.
"""

from __future__ import annotations

import contextvars
import os
import ssl
from typing import Any

__all__ = ["ALERT", "Alert", "AlertingContext", "describe"]


class Alert:
    """Where the alert of one failing handshake goes: a duplicate of the socket's descriptor."""

    __slots__ = ("fd", "outgoing")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.outgoing: ssl.MemoryBIO | None = None

    def send(self) -> None:
        """Send what OpenSSL left for the peer (the fatal alert): the loop's TLS layer drops
        it (CPython gh-98078; uvloop drains the BIO in connection_lost)."""
        if self.fd < 0 or self.outgoing is None:
            return
        data = self.outgoing.read()
        if data:
            try:
                os.write(self.fd, data)
            except OSError:
                pass


ALERT: contextvars.ContextVar[Alert] = contextvars.ContextVar("kes_handshake_alert")


class _AlertingSSLObject(ssl.SSLObject):
    _kes_alert: Alert | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            if self._kes_alert is not None:
                self._kes_alert.send()
            raise


class AlertingContext(ssl.SSLContext):
    """Ties each TLS object made for a handshake of ours to its alert descriptor (the loop
    calls ``wrap_bio`` in a copy of the handshake task's context)."""

    sslobject_class = _AlertingSSLObject

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, *args, **kwargs)
        alert = ALERT.get(None)
        if alert is not None and isinstance(obj, _AlertingSSLObject):
            alert.outgoing = outgoing
            obj._kes_alert = alert
        return obj


def describe(exc: ssl.SSLError, ca: str = "this port's CA") -> tuple[str, str]:
    """(kind, reason) of a failed handshake; ``ca`` names the CA client certificates need."""
    reason = (exc.reason or "").upper()
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(exc, "verify_message", "") or reason.lower()
        return "bad-cert", f"client certificate rejected: {detail} (it must be signed by {ca})"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        return "no-cert", f"no client certificate (this port requires one signed by {ca})"
    if "ALERT" in reason:
        return "client-alert", f"the client aborted the TLS handshake ({reason.lower()}): does it trust our certificate?"
    if reason == "HTTP_REQUEST":
        return "not-tls", "plain HTTP sent to a TLS port"
    return "tls-error", f"TLS handshake failed: {(exc.reason or str(exc)).lower()}"
