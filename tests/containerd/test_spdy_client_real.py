"""Our SPDY client role against a real SPDY server: containerd's CRI streaming server
(Go's moby/spdystream, the same code as the kubelet's). Proves the frame layout, the zlib
dictionary and shared contexts (several header blocks per direction), half-close, the
error stream's metav1.Status, and port-forward's stream pairs, byte for byte against Go.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from streamproto.aio.spdy import SpdyConnection, SpdyStream, upgrade
from streamproto.spdy import RstStatus
from tests.realstack.cri import RealStack

pytestmark = pytest.mark.containerd

NS = "kes-spdy"


@pytest.fixture
def box(realstack: RealStack) -> Iterator[tuple[str, str]]:
    """(pod sandbox id, container id) of a host-network busybox that sleeps."""
    name = "spdy-" + uuid.uuid4().hex[:8]
    pod_id = realstack.run_pod(name, namespace=NS, uid="uid-" + name)
    try:
        cid = realstack.run_container(pod_id, "box", ["sh", "-c", "sleep 3600"])
        realstack.wait_running(cid)
        yield pod_id, cid
    finally:
        realstack.remove_pod(pod_id)


async def dial(url: str, protocols: list[str]) -> tuple[SpdyConnection, str, asyncio.Task[None], asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    answer = await asyncio.wait_for(upgrade(reader, writer, target, host=parts.netloc, protocols=protocols), 10)
    assert answer.status == 101 and answer.conn is not None, (answer.status, answer.body)
    chosen = answer.header("X-Stream-Protocol-Version") or ""
    return answer.conn, chosen, asyncio.create_task(answer.conn.run()), writer


async def read_all(stream: SpdyStream) -> bytes:
    out = []
    while (chunk := await stream.read()) is not None:
        out.append(chunk)
    return b"".join(out)


@pytest.fixture
async def closer() -> AsyncIterator[list]:
    held: list = []
    yield held
    for conn, task, writer in held:
        try:
            await conn.goaway()  # as kubectl ends: GOAWAY, then close
        except ConnectionError:
            pass  # containerd may have closed first
        writer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.done()


async def exec_session(realstack: RealStack, cid: str, cmd: list[str], stdin: bytes | None, closer: list):
    url = realstack.exec_url(cid, cmd, stdin=stdin is not None)
    conn, chosen, task, writer = await dial(url, ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                                                  "channel.k8s.io"])
    closer.append((conn, task, writer))
    assert chosen == "v4.channel.k8s.io"
    kinds = ["error"] + (["stdin"] if stdin is not None else []) + ["stdout", "stderr"]
    streams = {k: await conn.open_stream([("streamtype", k)]) for k in kinds}
    for s in streams.values():
        await asyncio.wait_for(s.wait_reply(), 10)
    if stdin is not None:
        await streams["stdin"].write(stdin)
        await streams["stdin"].close()  # half-close: the process sees EOF
    async with asyncio.timeout(20):
        out, err, status = await asyncio.gather(read_all(streams["stdout"]), read_all(streams["stderr"]),
                                                read_all(streams["error"]))
    for s in streams.values():
        await s.reset(RstStatus.CANCEL)
    return out, err, json.loads(status)


async def test_exec_output_and_status(realstack: RealStack, box, closer) -> None:
    out, err, status = await exec_session(realstack, box[1], ["sh", "-c", "echo hi; echo oops >&2"], None, closer)
    assert (out, err, status) == (b"hi\n", b"oops\n", {"metadata": {}, "status": "Success"})


async def test_exec_exit_code_in_the_error_stream(realstack: RealStack, box, closer) -> None:
    _, _, status = await exec_session(realstack, box[1], ["sh", "-c", "exit 7"], None, closer)
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_exec_stdin_to_eof_in_bulk(realstack: RealStack, box, closer) -> None:
    payload = bytes(range(256)) * 2000  # 512 KB: far past 64 KiB windows Go never updates
    out, _, status = await exec_session(realstack, box[1], ["md5sum"], payload, closer)
    import hashlib

    assert out.split()[0].decode() == hashlib.md5(payload).hexdigest() and status["status"] == "Success"


async def test_port_forward_pairs_on_one_session(realstack: RealStack, box, closer) -> None:
    """Two connections (requestid 0 and 1) to a port nobody listens on: containerd answers on
    each error stream; the session carries both."""
    url = realstack.port_forward_url(box[0])
    conn, chosen, task, writer = await dial(url, ["portforward.k8s.io"])
    closer.append((conn, task, writer))
    assert chosen == "portforward.k8s.io"
    for request in ("0", "1"):
        headers = [("streamtype", "error"), ("port", "1"), ("requestid", request)]
        error = await conn.open_stream(headers)
        await error.close()  # kubectl FINs the error stream at once
        data = await conn.open_stream([("streamtype", "data"), ("port", "1"), ("requestid", request)])
        await asyncio.wait_for(asyncio.gather(error.wait_reply(), data.wait_reply()), 10)
        message = await asyncio.wait_for(read_all(error), 20)
        assert b"port 1" in message or b"connection refused" in message, message
        await data.reset()


async def test_refusal_comes_back_with_its_text(realstack: RealStack, box) -> None:
    """A Go server's refusal of the negotiation (403 and its reason), read by ``upgrade``."""
    parts = urlsplit(realstack.exec_url(box[1], ["true"]))
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        answer = await asyncio.wait_for(upgrade(reader, writer, parts.path, host=parts.netloc,
                                                protocols=["v9.channel.k8s.io"]), 10)
    finally:
        writer.close()
    assert answer.status == 403 and answer.conn is None
    assert b"unable to negotiate protocol" in answer.body, answer.body
    assert answer.header("X-Accepted-Stream-Protocol-Versions")
