"""PEM files, in KubeEdge's layout (``ca/rootCA.crt``, ``certs/server.crt``, ...)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._x509 import PrivateKey
from .errors import CertificateError

__all__ = ["Layout", "load_cert", "load_key", "write_pem"]


def write_pem(path: Path, cert: x509.Certificate, key: PrivateKey | None = None, key_path: Path | None = None) -> None:
    """Write ``cert`` to ``path`` (0644) and ``key`` to ``key_path`` (default: ``.key`` beside it, 0600)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(path, 0o644)
    except OSError as exc:
        raise CertificateError(f"cannot write certificate {path}: {exc.strerror or exc}") from None
    if key is None:
        return
    key_path = Path(key_path) if key_path is not None else path.with_suffix(".key")
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600; fchmod before writing narrows an existing, wider file before the key lands in it.
        fd = os.open(key_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
    except OSError as exc:
        raise CertificateError(f"cannot write private key {key_path}: {exc.strerror or exc}") from None


def load_cert(path: Path) -> x509.Certificate:
    """Load a PEM certificate (the first one, for a bundle)."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise CertificateError(f"cannot load certificate {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CertificateError(f"cannot load certificate {path}: {exc}") from None


def load_key(path: Path) -> PrivateKey:
    """Load an unencrypted PEM private key; errors name the file, never its contents."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise CertificateError(f"cannot load private key {path}: {exc.strerror or type(exc).__name__}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message may quote the file: say only that it is not a usable key.
        raise CertificateError(f"cannot load private key {path}: not an unencrypted PEM private key") from None
    return key  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each file lives under ``root`` (KubeEdge's defaults under /etc/kubeedge)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca/rootCA.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca/rootCA.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "certs/server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "certs/server.key"

    @property
    def stream_ca(self) -> Path:
        return self.root / "ca/streamCA.crt"

    @property
    def stream_ca_key(self) -> Path:
        return self.root / "ca/streamCA.key"

    @property
    def stream_cert(self) -> Path:
        return self.root / "certs/stream.crt"

    @property
    def stream_key(self) -> Path:
        return self.root / "certs/stream.key"

    def edge_cert(self, node: str) -> Path:
        return self.root / f"edge/{node}/server.crt"

    def edge_key(self, node: str) -> Path:
        return self.root / f"edge/{node}/server.key"

    @property
    def apiserver_client_cert(self) -> Path:
        return self.root / "apiserver/kubelet-client.crt"

    @property
    def apiserver_client_key(self) -> Path:
        return self.root / "apiserver/kubelet-client.key"
