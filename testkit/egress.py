"""A client that dials through an egress-selector front exactly as kube-apiserver does.

k8s.io/apiserver's ``egressselector.tunnelHTTPConnect``: after the transport (TLS with the
``tlsConfig`` client certificate, or a unix socket) it writes
``CONNECT <addr> HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n``, reads the answer with
``http.ReadResponse`` through a reader limited to ``http.DefaultMaxHeaderBytes`` (1 MiB),
fails unless the status is 200, and fails if the proxy sent even one byte beyond the head.
Then the kubelet client's TLS runs inside. h11 (client role) reads the answer here, not our
own parser.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import h11

from streamproto.aio.tls_in_tls import fix_outer

__all__ = ["EgressRefused", "connect_request", "egress_dial"]

MAX_HEADER_BYTES = 1 << 20
"""Go's http.DefaultMaxHeaderBytes, the limit kube-apiserver puts on the proxy's answer."""


def connect_request(addr: str) -> bytes:
    return f"CONNECT {addr} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


@dataclass
class EgressRefused(Exception):
    status: int
    status_text: str
    """What Go's ``res.Status`` holds (``503 no edge node ...``): the API server's error quotes it."""
    body: bytes

    def __str__(self) -> str:
        return f"proxy error while dialing, code {self.status}: {self.status_text}"


async def egress_dial(
    addr: str, *, inner_tls: ssl.SSLContext, tcp: tuple[str, int] | None = None, outer_tls: ssl.SSLContext | None = None,
    uds: Path | str | None = None, server_hostname: str | None = "localhost", inner_hostname: str | None = None,
    timeout: float = 10.0,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """CONNECT to ``addr`` through the front, then TLS inside (the kubelet client's)."""
    async with asyncio.timeout(timeout):
        if uds is not None:
            reader, writer = await asyncio.open_unix_connection(str(uds))
        else:
            assert tcp is not None and outer_tls is not None
            reader, writer = await asyncio.open_connection(*tcp, ssl=outer_tls, server_hostname=server_hostname)
        try:
            await _tunnel(reader, writer, addr)
            fix_outer(writer.transport)
            await writer.start_tls(inner_tls, server_hostname=inner_hostname)
        except BaseException:
            writer.close()
            raise
    return reader, writer


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str) -> None:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    conn.send(h11.Request(method="CONNECT", target=addr, headers=[("Host", "127.0.0.1")]))  # state only
    writer.write(connect_request(addr))  # Go's exact bytes
    await writer.drain()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(f"the proxy closed the connection before answering CONNECT {addr}")
            conn.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        break
    assert isinstance(event, h11.Response)
    status_text = f"{event.status_code} {event.reason.decode('latin-1')}"
    if event.status_code != 200:
        body = b""
        while len(body) < MAX_HEADER_BYTES:
            part = conn.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            elif part is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    break
            else:
                break
        writer.close()
        raise EgressRefused(event.status_code, status_text, body)
    leftover, _ = conn.trailing_data
    if leftover:
        writer.close()
        raise ConnectionError(f"unexpected {len(leftover)} bytes of buffered data from CONNECT proxy")
