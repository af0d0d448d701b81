"""TLS inside TLS on asyncio (the egress front's tunnels): a fatal error of the inner layer
closes the connection instead of raising TypeError in a loop callback (CPython 3.11)."""

from __future__ import annotations

import asyncio
import os

from streamcerts import Layout, client_context, server_context
from streamproto.aio.tls_in_tls import fix_outer


async def test_inner_fatal_error_closes_cleanly(lab_pki: Layout, no_leaks: None) -> None:
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    outer_server = server_context(lab_pki.stream_cert, lab_pki.stream_key, None, alpn=None)
    inner_server = server_context(lab_pki.stream_cert, lab_pki.stream_key, None, alpn=None)
    client_tls = client_context(lab_pki.stream_ca)
    client_tls.check_hostname = False
    ended = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fix_outer(writer.transport)
        await writer.start_tls(inner_server)
        try:
            await reader.read(100)  # the corrupt record below ends the inner layer
        except Exception as exc:  # noqa: BLE001 - what matters is that it ends, and how
            ended.set_result(exc)
        else:
            ended.set_result(None)
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=outer_server)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls, server_hostname="localhost")
    await writer.start_tls(client_tls, server_hostname="localhost")
    inner = writer.transport
    inner._ssl_protocol._transport.write(b"\x17\x03\x03\x00\x20" + os.urandom(32))  # type: ignore[attr-defined]
    await asyncio.wait_for(ended, 5)
    inner.abort()
    server.close()
    await server.wait_closed()
    assert not errors, errors
