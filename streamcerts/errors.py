"""The PKI's one error type."""

from __future__ import annotations

from streamproto.tunnel.errors import TunnelError

__all__ = ["CertificateError"]


class CertificateError(TunnelError):
    """Certificate material is missing, unreadable or invalid (never includes key bytes)."""
