"""Bounded network probes for the doctors: TCP connect, name resolution, a TLS handshake whose
failure says which side's certificate is the problem, and one HTTP/1.1 GET read with h11.

Every probe takes a timeout and returns a result (never raises for network trouble), so a check
turns it into one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from dataclasses import dataclass

import h11

__all__ = ["HttpResult", "TlsResult", "http_get", "resolve", "tcp_connect", "tls_handshake", "unix_connect"]

MAX_BODY = 64 * 1024
"""Bytes of a response body kept (a doctor reads answers, not streams)."""

# OpenSSL's X509_V_ERR_* codes that name the server certificate's problem.
_VERIFY_KINDS = {
    10: "expired",            # X509_V_ERR_CERT_HAS_EXPIRED
    9: "not yet valid",       # X509_V_ERR_CERT_NOT_YET_VALID
    2: "unknown ca",          # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: "unknown ca",         # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown ca",         # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown ca",         # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown ca",         # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    7: "bad signature",       # X509_V_ERR_CERT_SIGNATURE_FAILURE
    62: "hostname",           # X509_V_ERR_HOSTNAME_MISMATCH
    64: "hostname",           # X509_V_ERR_IP_ADDRESS_MISMATCH
}
# TLS alerts the peer sends when it refuses *our* certificate (OpenSSL reason names).
_PEER_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "unknown ca",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate unknown",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate required",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt error",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake failure",
}


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route: {exc.strerror}"
    return exc.strerror or str(exc) or type(exc).__name__


async def resolve(host: str, port: int, timeout: float) -> tuple[list[str], str | None]:
    """(addresses, None) or ([], why not)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return [], f"no answer from the resolver within {timeout:g} s"
    except socket.gaierror as exc:
        return [], exc.strerror or str(exc)
    return sorted({str(info[4][0]) for info in infos}), None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        async with asyncio.timeout(1):
            await writer.wait_closed()


async def tcp_connect(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens within ``timeout``, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {timeout:g} s (a firewall drops it, or the host is down)"
    except OSError as exc:
        return _os_reason(exc)
    await _close(writer)
    return None


async def unix_connect(path: str, timeout: float) -> str | None:
    """None when the unix socket at ``path`` accepts a connection within ``timeout``, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_unix_connection(path)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return _os_reason(exc) if not isinstance(exc, FileNotFoundError) else "no such socket"
    await _close(writer)
    return None


@dataclass(frozen=True, slots=True)
class TlsResult:
    ok: bool
    stage: str = ""
    """Where it failed: ``tcp``, ``server certificate`` (we refused the peer's), ``client certificate``
    (the peer refused ours), ``tls`` (anything else)."""
    kind: str = ""
    """``expired``, ``unknown ca``, ``hostname``, ``refused``... (see the tables above)."""
    detail: str = ""
    peer_der: bytes | None = None


def _classify(exc: BaseException) -> TlsResult:
    if isinstance(exc, ssl.SSLCertVerificationError):
        kind = _VERIFY_KINDS.get(exc.verify_code, "invalid")
        return TlsResult(False, "server certificate", kind, exc.verify_message or str(exc))
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _PEER_ALERTS:
            return TlsResult(False, "client certificate", _PEER_ALERTS[reason], reason)
        return TlsResult(False, "tls", reason.lower() or "error", str(exc))
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return TlsResult(False, "tls", "closed", "the peer closed the connection during the handshake")
    if isinstance(exc, OSError):
        return TlsResult(False, "tcp", "refused" if isinstance(exc, ConnectionRefusedError) else "error", _os_reason(exc))
    return TlsResult(False, "tls", "error", f"{type(exc).__name__}: {exc}")


async def tls_handshake(
    host: str, port: int, context: ssl.SSLContext, server_hostname: str | None, timeout: float, linger: float = 0.5
) -> TlsResult:
    """Connect and handshake. With TLS 1.3 a server refuses a client certificate *after* the
    client's handshake ended, with an alert: so wait up to ``linger`` seconds for one (a server
    that accepted us sends nothing until we speak). Nothing is sent."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_hostname, ssl_handshake_timeout=timeout,
            )
    except TimeoutError:
        return TlsResult(False, "tcp", "timeout", f"no answer within {timeout:g} s")
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return _classify(exc)
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    try:
        async with asyncio.timeout(linger):
            await reader.read(1)
    except TimeoutError:
        pass
    except (OSError, ssl.SSLError) as exc:
        result = _classify(exc)
        if result.stage != "tcp":
            await _close(writer)
            return TlsResult(False, result.stage, result.kind, result.detail, der)
    await _close(writer)
    return TlsResult(True, peer_der=der)


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    """0 when no response came (``error`` says why)."""
    body: bytes = b""
    error: str = ""
    tls: TlsResult | None = None


async def http_get(
    host: str, port: int, path: str, timeout: float, *, headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None, server_hostname: str | None = None, host_header: str | None = None,
) -> HttpResult:
    """One GET, ``Connection: close``; the body up to :data:`MAX_BODY` (a streaming body is cut there)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_hostname if context else None,
                ssl_handshake_timeout=timeout if context else None,
            )
    except TimeoutError:
        return HttpResult(0, error=f"no connection within {timeout:g} s")
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        tls = _classify(exc)
        return HttpResult(0, error=tls.detail, tls=tls)
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_BODY)
    hdrs = [("Host", host_header or f"{host}:{port}"), ("User-Agent", "kubeedge-stream-doctor"),
            ("Connection", "close"), *(headers or {}).items()]
    status, body = 0, bytearray()
    try:
        async with asyncio.timeout(timeout):
            writer.write(conn.send(h11.Request(method="GET", target=path, headers=hdrs)))
            writer.write(conn.send(h11.EndOfMessage()))
            while len(body) < MAX_BODY:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    except TimeoutError:
        if status:  # a streaming answer (logs -f): what came is enough
            return HttpResult(status, bytes(body[:MAX_BODY]))
        return HttpResult(0, error=f"no answer within {timeout:g} s")
    except h11.RemoteProtocolError as exc:
        return HttpResult(status, bytes(body), error=f"not HTTP: {exc}")
    except (OSError, ssl.SSLError) as exc:
        tls = _classify(exc)
        return HttpResult(status, bytes(body), error=tls.detail, tls=tls)
    finally:
        await _close(writer)
    return HttpResult(status, bytes(body[:MAX_BODY]))
