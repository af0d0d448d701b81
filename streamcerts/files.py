"""PEM files, in KubeEdge's layout (``ca/rootCA.crt``, ``certs/server.crt``, ...)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._x509 import PrivateKey
from .errors import CertificateError

__all__ = ["Layout", "key_bytes", "load_cert", "load_certs", "load_key", "write_atomic", "write_pem"]


def write_atomic(path: Path, data: bytes, mode: int, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees half a file, and never a key with
    wider permissions: a temp file beside it (created ``mode``), fsync, rename over ``path``."""
    path = Path(path)
    if not overwrite and path.exists():
        raise CertificateError(f"{path} exists; --force replaces it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0600; certificates are world-readable
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable (best effort)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def key_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_pem(
    path: Path, cert: x509.Certificate, key: PrivateKey | None = None, key_path: Path | None = None,
    overwrite: bool = True,
) -> None:
    """Write ``cert`` to ``path`` (0644) and ``key`` to ``key_path`` (default: ``.key`` beside it,
    0600), each atomically. ``overwrite=False`` refuses when either file exists (nothing written)."""
    path = Path(path)
    key_path = Path(key_path) if key_path is not None else path.with_suffix(".key")
    if not overwrite:
        for existing in (path, key_path) if key is not None else (path,):
            if existing.exists():
                raise CertificateError(f"{existing} exists; --force replaces it")
    try:
        write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise CertificateError(f"cannot write certificate {path}: {exc.strerror or exc}") from None
    if key is not None:
        try:
            write_atomic(key_path, key_bytes(key), 0o600)
        except OSError as exc:
            raise CertificateError(f"cannot write private key {key_path}: {exc.strerror or exc}") from None


def load_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle may hold several)."""
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise CertificateError(f"cannot load certificate {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CertificateError(f"cannot load certificate {path}: {exc}") from None
    return certs


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
