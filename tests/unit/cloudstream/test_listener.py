"""The accept layer's pure parts: caps fitted to the descriptor limit, config and flags,
refusal reasons from real OpenSSL errors."""

from __future__ import annotations

import argparse
import ssl

import pytest

from streamcerts import Layout, server_context
from cloudstream.config import CloudConfig, add_arguments
from cloudstream.listener import Limits
from cloudstream.tls_alert import describe
from streamproto.tunnel import ConfigError

LIMITS = Limits(handshake_timeout=5, max_connections=10_000, max_pending=1_000, max_pending_per_ip=100)


def test_caps_fit_the_descriptor_limit() -> None:
    assert LIMITS.fitted(1 << 20) == LIMITS  # plenty of descriptors: as configured
    small = LIMITS.fitted(1024)
    # Both ports' pending connections take at most half of what is left after a reserve,
    # so authenticated peers always find descriptors; open ones share the rest (descriptors.py).
    assert 2 * small.max_pending <= (1024 - 128) // 2
    assert small.max_connections <= 1024 - 128
    assert small.max_pending_per_ip <= small.max_pending < small.max_connections
    tiny = LIMITS.fitted(64)
    assert 0 < tiny.max_pending_per_ip <= tiny.max_pending < tiny.max_connections


def test_config_fields_and_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        ["--tls-handshake-timeout", "2.5", "--max-connections", "500", "--max-pending-handshakes", "50",
         "--max-pending-per-ip", "5"]
    )
    config = CloudConfig.from_args(ns)
    assert Limits.from_config(config) == Limits(
        handshake_timeout=2.5, max_connections=500, max_pending=50, max_pending_per_ip=5
    )
    assert CloudConfig.from_args(parser.parse_args([])).tls_handshake_timeout == 5.0
    for bad in ({"tls_handshake_timeout": 0}, {"max_pending_per_ip": 0}, {"max_pending_handshakes": 20_000},
                {"max_pending_per_ip": 2_000}):
        with pytest.raises(ConfigError):
            CloudConfig(**bad)  # type: ignore[arg-type]


def _handshake_error(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLError:
    """Run a handshake in memory; return the server's error."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            c.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        c_in.write(s_out.read())
    raise AssertionError("the handshake did not fail")


def test_refusal_reasons_from_openssl(lab_pki: Layout) -> None:
    server = server_context(lab_pki.server_cert, lab_pki.server_key, lab_pki.ca_cert, require_client_cert=True)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(lab_pki.ca_cert)
    client.check_hostname = False
    kind, reason = describe(_handshake_error(server, client), "the tunnel CA")
    assert kind == "no-cert" and "the tunnel CA" in reason
    stranger = lab_pki.root / "stranger/client.crt"  # signed by a CA cloudstream does not trust
    client.load_cert_chain(stranger, stranger.with_suffix(".key"))
    kind, reason = describe(_handshake_error(server, client), "the tunnel CA")
    assert kind == "bad-cert" and "unable to get local issuer certificate" in reason, reason
