"""Hot reload (streamcerts/watch.py): real files, real OpenSSL handshakes over memory BIOs.

A swap happens only when the new files load; a half-written or mismatched pair keeps the old
context and warns once (after the files stopped changing), naming the file and the fix."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509

from streamcerts import client_context, create_ca, issue_server_cert, server_context, write_pem
from streamcerts.watch import FileWatch, ReloadingContext


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None = "localhost") -> x509.Certificate:
    """A whole TLS handshake in memory; returns the certificate the server presented."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def replace(path: Path, data: bytes) -> None:
    """Atomic, as an operator (or streamcerts) should write: temp file, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = create_ca("reload-test")
    write_pem(tmp_path / "ca.crt", ca[0])
    cert, key = issue_server_cert(*ca, "server", ["localhost"])
    write_pem(tmp_path / "server.crt", cert, key, tmp_path / "server.key")
    return {"ca": ca, "dir": tmp_path, "serial": cert.serial_number}


def reloading(pki: dict[str, object]) -> ReloadingContext:
    d = pki["dir"]
    assert isinstance(d, Path)
    return ReloadingContext("test server", [d / "server.crt", d / "server.key"],
                            partial(server_context, d / "server.crt", d / "server.key", None))


def new_pair(pki: dict[str, object], cn: str = "server2") -> tuple[bytes, bytes, int]:
    from cryptography.hazmat.primitives import serialization

    ca = pki["ca"]
    cert, key = issue_server_cert(*ca, cn, ["localhost"])  # type: ignore[misc]
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.serial_number


def test_swap_on_change_keeps_old_context_intact(pki: dict[str, object]) -> None:
    d = pki["dir"]
    assert isinstance(d, Path)
    client = client_context(d / "ca.crt")
    ctx = reloading(pki)
    old = ctx.current
    assert not ctx.check()  # nothing changed: no rebuild
    assert handshake(ctx.current, client).serial_number == pki["serial"]
    cert_pem, key_pem, serial = new_pair(pki)
    replace(d / "server.key", key_pem)
    replace(d / "server.crt", cert_pem)
    assert ctx.check() and ctx.generation == 1
    assert handshake(ctx.current, client).serial_number == serial
    assert handshake(old, client).serial_number == pki["serial"]  # what open connections hold is untouched


def test_half_written_file_keeps_old_and_warns_once(pki: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    d = pki["dir"]
    assert isinstance(d, Path)
    client = client_context(d / "ca.crt")
    ctx = reloading(pki)
    cert_pem, key_pem, serial = new_pair(pki)
    caplog.set_level(logging.INFO, "streamcerts.watch")
    (d / "server.crt").write_bytes(cert_pem[: len(cert_pem) // 2])  # the writer is not done yet
    assert not ctx.check()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "warned while the file may still change"
    assert not ctx.check()  # same stamps on the next poll: settled, and broken
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(d / "server.crt") in warnings[0] and "Fix:" in warnings[0]
    for _ in range(3):
        assert not ctx.check()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1, "warned more than once"
    assert handshake(ctx.current, client).serial_number == pki["serial"]
    replace(d / "server.key", key_pem)
    replace(d / "server.crt", cert_pem)
    assert ctx.check()
    assert handshake(ctx.current, client).serial_number == serial


def test_mismatched_pair_keeps_old(pki: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    d = pki["dir"]
    assert isinstance(d, Path)
    ctx = reloading(pki)
    cert_pem, _, _ = new_pair(pki)
    replace(d / "server.crt", cert_pem)  # the key was not replaced: it belongs to the old certificate
    assert not ctx.check(force=True)  # SIGHUP: warned at once
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "server.crt" in warning and "server.key" in warning and "KEY_VALUES_MISMATCH" in warning.upper()
    assert handshake(ctx.current, client_context(d / "ca.crt")).serial_number == pki["serial"]


def test_broken_first_load_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "x.crt").write_text("not a certificate")
    with pytest.raises(Exception, match="x.crt"):
        ReloadingContext("x", [tmp_path / "x.crt"], partial(server_context, tmp_path / "x.crt", tmp_path / "x.crt", None))


async def test_one_watch_timer_reloads_a_ca_bundle(pki: dict[str, object]) -> None:
    """A client context pinning a CA file: a new bundle (old + new CA) is taken on the next poll;
    two contexts share the file and one timer (no task); the last one out cancels it."""
    d = pki["dir"]
    assert isinstance(d, Path)
    ctxs = [ReloadingContext(f"edge {i}", [d / "ca.crt"], partial(client_context, d / "ca.crt")) for i in range(2)]
    watch = FileWatch(asyncio.get_running_loop(), interval=0.05)
    before = len(asyncio.all_tasks())
    for c in ctxs:
        watch.add(c)
    assert len(asyncio.all_tasks()) == before and watch._timer is not None
    new_ca = create_ca("reload-test-2")
    from cryptography.hazmat.primitives import serialization

    bundle = (d / "ca.crt").read_bytes() + new_ca[0].public_bytes(serialization.Encoding.PEM)
    replace(d / "ca.crt", bundle)
    for _ in range(100):
        if all(c.generation for c in ctxs):
            break
        await asyncio.sleep(0.02)
    assert all(c.generation == 1 for c in ctxs)
    cert, key = issue_server_cert(*new_ca, "new-server", ["localhost"])
    write_pem(d / "new.crt", cert, key, d / "new.key")
    served = handshake(server_context(d / "new.crt", d / "new.key", None), ctxs[0].current)
    assert served.serial_number == cert.serial_number  # verified against the new CA in the bundle
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_context(d / "new.crt", d / "new.key", None), client_context(d / "server.crt"))
    for c in ctxs:
        watch.discard(c)
    assert watch._timer is None


async def test_rebuilds_per_poll_are_bounded(pki: dict[str, object]) -> None:
    """A CA shared by many edges changes: each poll rebuilds at most ``max_rebuilds`` contexts
    and says more are left (the timer then fires again at once, after other loop work)."""
    d = pki["dir"]
    assert isinstance(d, Path)
    watch = FileWatch(asyncio.get_running_loop(), interval=3600)  # polled by hand here
    watch.max_rebuilds = 4
    ctxs = [ReloadingContext(f"edge {i}", [d / "ca.crt"], partial(client_context, d / "ca.crt")) for i in range(10)]
    for c in ctxs:
        watch.add(c)
    replace(d / "ca.crt", (d / "ca.crt").read_bytes())  # a new inode: changed
    assert watch.poll() and sum(c.generation for c in ctxs) == 4
    assert watch.poll() and sum(c.generation for c in ctxs) == 8
    assert not watch.poll() and all(c.generation == 1 for c in ctxs)
    assert not watch.poll()
    for c in ctxs:
        watch.discard(c)
