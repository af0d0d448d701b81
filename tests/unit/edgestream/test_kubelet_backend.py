"""The kubelet backend's HTTP client (h11) against a real TCP server playing a broken or hostile
kubelet: every malformed answer is a 502 naming the kubelet, the head is bounded in size and
time, bodies stream without buffering, and nothing is left open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edgestream.backends.kubelet import MAX_HEAD, KubeletBackend, KubeletBadAnswer, KubeletTimeout
from edgestream.config import EdgeConfig
from streamproto.kubelet_path import BadPath
from streamproto.tunnel import MessageType
from tests.unit.edgestream.fakes import FakeStream

pytestmark = pytest.mark.timeout(30)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Kubelet:
    """A TCP server that answers each request with ``script`` and records what it got."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.open = 0
        self.sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.open -= 1


@contextlib.asynccontextmanager
async def kubelet(script: Script, timeout: float = 0.5) -> AsyncIterator[tuple[Kubelet, KubeletBackend]]:
    fake = Kubelet(script)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield fake, KubeletBackend(EdgeConfig(kubelet_address=f"127.0.0.1:{port}", cri_timeout=timeout))
        for _ in range(100):  # the edge closed its side: the fake's handler ends
            if not fake.open:
                break
            await asyncio.sleep(0.01)
        assert fake.open == 0, "the edge left a kubelet connection open"
    finally:
        server.close()
        await server.wait_closed()


def answer(raw: bytes, then_wait: bool = True) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        if then_wait:  # hold the connection: the edge must decide from the bytes, not from EOF
            await reader.read()

    return script


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nabc", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n", "illegal chunk header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n", "illegal chunk header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nhello\r\n", "illegal chunk header"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n", "status 999"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", "malformed HTTP"),
    ],
)
async def test_malformed_answers_are_a_502_naming_the_kubelet(raw: bytes, says: str, no_leaks) -> None:
    async with kubelet(answer(raw)) as (fake, backend):
        stream = FakeStream("/containerLogs/default/web/app", "follow=true")
        with pytest.raises(KubeletBadAnswer) as info:
            await backend.serve(stream)  # type: ignore[arg-type]
        assert info.value.error_status_hint == 502
        assert f"the kubelet (edged) at {backend.host}:{backend.port}" in str(info.value)
        assert says in str(info.value)
        assert not stream.answered and stream.body == b""  # the session answers the 502


async def test_an_endless_head_is_cut_at_the_limit(no_leaks) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(10_000):  # 10 MB at most; the edge must stop reading long before
            writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            await writer.drain()

    async with kubelet(endless) as (_, backend):
        with pytest.raises(KubeletBadAnswer, match=f"a response head over {MAX_HEAD // 1024} KiB"):
            await backend.serve(FakeStream("/containerLogs/default/web/app"))  # type: ignore[arg-type]


async def test_a_trickling_head_times_out(no_leaks) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(600):
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with kubelet(trickle, timeout=0.5) as (_, backend):
        with pytest.raises(KubeletTimeout, match=r"no complete answer head within 0.5 s") as info:
            await backend.serve(FakeStream("/containerLogs/default/web/app"))  # type: ignore[arg-type]
        assert info.value.error_status_hint == 504


async def test_tiny_chunks_are_sent_on_together_and_huge_ones_are_not_buffered(no_leaks) -> None:
    tiny = b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(20_000)) + b"0\r\n\r\n"
    async with kubelet(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + tiny, then_wait=False)) as (
        _,
        backend,
    ):
        stream = FakeStream("/containerLogs/default/web/app")
        await backend.serve(stream)  # type: ignore[arg-type]
        assert stream.status == (200, "")
        assert stream.body == bytes(97 + i % 26 for i in range(20_000))
        assert len(stream.frames) < 20  # one message per socket read, not one per 1-byte chunk

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n" + b"x" * 1000)
        await writer.drain()
        await reader.read()  # the chunk never ends

    async with kubelet(huge) as (_, backend):
        stream = FakeStream("/containerLogs/default/web/app", "follow=true")
        task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
        await stream.wait_for(b"x" * 1000)  # the bytes came through while the 281 TB chunk is open
        assert stream.body == b"x" * 1000
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_body_forms_stream_and_a_cut_body_is_an_error(no_leaks) -> None:
    forms = {
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nline a\nline b": b"line a\nline b"[:12],
        b"HTTP/1.1 200 OK\r\n\r\nuntil eof\n": b"until eof\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n": b"abc",
    }
    for raw, body in forms.items():
        async with kubelet(answer(raw, then_wait=False)) as (_, backend):
            stream = FakeStream("/stats/summary", kind=MessageType.METRIC_CONNECT)
            await backend.serve(stream)  # type: ignore[arg-type]
            assert (stream.status, stream.body) == ((200, ""), body)
    async with kubelet(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", then_wait=False)) as (_, backend):
        stream = FakeStream("/containerLogs/default/web/app")
        with pytest.raises(KubeletBadAnswer, match="without sending complete message body"):
            await backend.serve(stream)  # type: ignore[arg-type]
        assert stream.body == b"short"  # what came went on


async def test_a_kubelet_error_keeps_its_status_and_message(no_leaks) -> None:
    status = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": 'pods "nosuch" not found', "reason": "NotFound", "code": 404}).encode()
    raw = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(status)
    async with kubelet(answer(raw + status)) as (_, backend):
        stream = FakeStream("/containerLogs/default/nosuch/app")
        await backend.serve(stream)  # type: ignore[arg-type]
        assert stream.status == (404, f'the kubelet (edged) at 127.0.0.1:{backend.port}: pods "nosuch" not found')

    async def trickled_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1000\r\n\r\nbroken ")
        for _ in range(600):
            await writer.drain()
            writer.write(b".")
            await asyncio.sleep(0.05)

    async with kubelet(trickled_error, timeout=0.3) as (_, backend):
        stream = FakeStream("/containerLogs/default/web/app")
        await backend.serve(stream)  # type: ignore[arg-type]
        assert stream.status is not None and stream.status[0] == 500 and "broken" in stream.status[1]


async def test_what_reaches_the_kubelet(no_leaks) -> None:
    headers = [("Authorization", "Bearer secret"), ("X-Evil", "a\r\nInjected: 1"), ("Accept-Encoding", "gzip"),
               ("Bad Name", "x"), ("X-Ok", "  padded  ")]
    async with kubelet(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", then_wait=False)) as (fake, backend):
        await backend.serve(FakeStream("/containerLogs/default/web/app", "tailLines=2", headers=headers))  # type: ignore[arg-type]
    head = fake.heads[-1].decode()
    assert head.startswith("GET /containerLogs/default/web/app?tailLines=2 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "secret" not in head and "Injected" not in head and "X-Evil" not in head and "Bad Name" not in head
    assert "Accept-Encoding: identity\r\n" in head and "gzip" not in head and "X-Ok: padded\r\n" in head


async def test_bad_paths_and_targets_never_reach_the_kubelet(no_leaks) -> None:
    async with kubelet(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", then_wait=False)) as (fake, backend):
        with pytest.raises(BadPath, match="encoded slash"):
            await backend.serve(FakeStream("/containerLogs/default/web%2Fx/app"))  # type: ignore[arg-type]
        exec_stream = FakeStream("/exec/default/web/..", "command=ls", kind=MessageType.EXEC_CONNECT, method="POST")
        with pytest.raises(BadPath, match="dot segment"):
            await backend.serve(exec_stream)  # type: ignore[arg-type]
        smuggle = FakeStream("/exec/default/web/app", "command=ls HTTP/1.1\r\nX: y", kind=MessageType.EXEC_CONNECT,
                             method="POST")
        with pytest.raises(Exception, match="cannot forward the request") as info:
            await backend.serve(smuggle)  # type: ignore[arg-type]
        assert getattr(info.value, "error_status_hint", None) == 400
    assert fake.heads == []
