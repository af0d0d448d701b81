"""Replacing a certificate and its key on disk without ever leaving a broken pair.

Each file is written to ``<name>.new`` beside it (the key created 0600), flushed to disk, then
renamed over the old one: a reader sees the old file or the new one, never half of either.
Two renames are not one atomic step, so the key goes first and the certificate second; a
crash between them leaves a new key, the old certificate and ``<cert>.new``, which
``finish_interrupted`` completes on the next start (the pair matches again). Until the
certificate's rename, the old pair stays usable: any failure before it keeps the old files.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._x509 import PrivateKey
from .errors import CertificateError
from .files import key_bytes

__all__ = ["finish_interrupted", "staging_path", "write_pair"]


def staging_path(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _write_new(path: Path, data: bytes, mode: int) -> Path:
    tmp = staging_path(path)
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an old, wider staging file is narrowed before the key lands in it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pair(cert_path: Path, key_path: Path, chain: list[x509.Certificate], key: PrivateKey) -> None:
    """Replace ``cert_path`` (the chain, PEM, 0644) and ``key_path`` (PKCS#8, 0600); on any
    failure the old pair is left (or put back) as it was."""
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key_bytes(key)
    try:
        old_key = key_path.read_bytes() if key_path.exists() else None
        staged_key = _write_new(key_path, key_pem, 0o600)
        staged_cert = _write_new(cert_path, cert_pem, 0o644)
    except OSError as exc:
        _unlink(staging_path(key_path), staging_path(cert_path))
        raise _write_error(exc, cert_path, key_path) from None
    try:
        os.replace(staged_key, key_path)
    except OSError as exc:
        _unlink(staged_key, staged_cert)
        raise _write_error(exc, cert_path, key_path) from None
    try:
        os.replace(staged_cert, cert_path)
    except OSError as exc:  # the key is already new: put the old one back
        _unlink(staged_cert)
        try:
            if old_key is not None:
                os.replace(_write_new(key_path, old_key, 0o600), key_path)
        except OSError:
            pass
        raise _write_error(exc, cert_path, key_path) from None
    for directory in {key_path.parent, cert_path.parent}:
        try:
            _fsync_dir(directory)
        except OSError:
            pass  # the renames are done; durability of the directory entry is best effort


def _write_error(exc: OSError, cert_path: Path, key_path: Path) -> CertificateError:
    where = exc.filename or cert_path
    return CertificateError(
        f"cannot write the renewed certificate ({where}: {exc.strerror or exc}); the old pair is kept: "
        f"let edgestream write {cert_path.parent}" + ("" if key_path.parent == cert_path.parent else f" and {key_path.parent}")
    )


def _unlink(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def finish_interrupted(cert_path: Path, key_path: Path) -> str | None:
    """Complete a renewal a crash cut between the two renames (see the module doc); return a
    line for the log when something was done, else None."""
    pending = staging_path(cert_path)
    if not pending.exists():
        return None
    try:
        chain = x509.load_pem_x509_certificates(pending.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return None  # a staging file from a renewal that failed before the key's rename
    try:
        os.replace(pending, cert_path)
    except OSError as exc:
        return f"cannot finish an interrupted certificate renewal ({pending} -> {cert_path}): {exc.strerror or exc}"
    return f"finished an interrupted certificate renewal: {pending} -> {cert_path}"
