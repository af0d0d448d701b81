"""streamproto.aio.spdy over a real socket pair: both roles, strict windows that bind and are handed
back, pings, the end of the session waking every waiter, no task left behind."""

from __future__ import annotations

import asyncio
import os
import socket

from streamproto.aio.spdy import SpdyConnection
from streamproto.spdy import Role, SendFlow, SessionConfig


async def _pair(client_config: SessionConfig | None = None):
    a, b = socket.socketpair()
    ends = []
    for sock in (a, b):
        reader, writer = await asyncio.open_connection(sock=sock)

        async def read(reader=reader):
            return await reader.read(65536) or None

        async def write(data, writer=writer):
            writer.write(data)
            await writer.drain()

        ends.append((read, write, writer))
    client = SpdyConnection(Role.CLIENT, ends[0][0], ends[0][1], client_config)
    server = SpdyConnection(Role.SERVER, ends[1][0], ends[1][1], buffer=64 * 1024)
    return client, server, ends[0][2], ends[1][2]


async def _echo_server(server: SpdyConnection) -> None:
    async with asyncio.TaskGroup() as tg:
        while (stream := await server.accept()) is not None:
            await stream.reply([("echo", "yes")])

            async def echo(s=stream):
                while (chunk := await s.read()) is not None:
                    await s.write(chunk)
                await s.close()

            tg.create_task(echo())


async def test_echo_with_strict_windows_and_pings() -> None:
    client, server, cw, sw = await _pair(SessionConfig(send_flow=SendFlow.STRICT))
    tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run()),
             asyncio.create_task(_echo_server(server))]
    payload = os.urandom(1 << 20)  # 16 windows: binds, and comes back as the server consumes
    streams = [await client.open_stream([("streamtype", "data"), ("requestid", str(i))]) for i in range(3)]
    assert await streams[0].wait_reply() == (("echo", "yes"),)

    async def roundtrip(stream):
        async def send():
            await stream.write(payload)
            await stream.close()

        sender = asyncio.create_task(send())
        out = []
        while (chunk := await stream.read()) is not None:
            out.append(chunk)
        await sender
        return b"".join(out)

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(roundtrip(s) for s in streams))
        await client.ping()
    assert results == [payload] * 3
    assert not client.streams and not server.streams and not client.session.streams
    cw.close()  # the client goes away: the server's reader ends, accept() returns None
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks[1:])
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    sw.close()


async def test_session_end_wakes_waiters() -> None:
    client, server, cw, sw = await _pair()
    tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
    stream = await client.open_stream([("streamtype", "error")])
    ping = asyncio.create_task(client.ping())
    reply = asyncio.create_task(stream.wait_reply())
    await asyncio.sleep(0.05)  # the server never accepts: no reply comes
    sw.close()
    async with asyncio.timeout(5):
        results = await asyncio.gather(reply, stream.read(), return_exceptions=True)
    assert isinstance(results[0], Exception) and results[1] is None
    await asyncio.gather(ping, return_exceptions=True)
    assert ping.done()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cw.close()
