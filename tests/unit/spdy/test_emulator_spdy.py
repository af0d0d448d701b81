"""The emulator's SPDY server driven byte by byte: handshake refusals (metav1.Status), exec
results per protocol version, port-forward pairing and its refusals, restarts, no leftovers.
(Real kubectl against the same code: tests/e2e_kubectl/test_kubectl_emulator.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest

from edgestream.backends import spdy_portforward
from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EmulatorConfig
from streamproto.spdy import DataReceived, Role, Session, StreamEnded, StreamReplied, StreamReset
from streamproto.tunnel import MessageType
from tests.unit.edgestream.fakes import FakeStream

SPDY = (("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"))


class Peer:
    """Our SPDY client on the other side of a FakeStream (the cloud's relay, here in memory)."""

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.session = Session(Role.CLIENT)
        self.seen = 0
        self.head = b""
        self.events: list = []

    def send(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.stream.inbound.feed(data)

    async def until(self, check, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.005)
                body = self.stream.body
                fresh, self.seen = body[self.seen:], len(body)
                if not self.head and b"\r\n\r\n" in fresh:
                    head, _, fresh = fresh.partition(b"\r\n\r\n")
                    self.head = head + b"\r\n\r\n"
                if self.head and fresh:
                    self.session.receive_data(fresh)
                    self.events += self.session.events_received()
                    self.send()

    def data(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, DataReceived) and e.stream_id == sid)


@pytest.fixture
def backend() -> EmulatorBackend:
    return EmulatorBackend(EmulatorConfig(pods=(("ns", "pod", "c"),), log_rate=50, history=5))


async def _exec(backend: EmulatorBackend, query: str, protocols: list[str], attach: bool = False):
    headers = SPDY + tuple(("X-Stream-Protocol-Version", p) for p in protocols)
    kind = MessageType.ATTACH_CONNECT if attach else MessageType.EXEC_CONNECT
    stream = FakeStream(f"/{'attach' if attach else 'exec'}/ns/pod/c", query, kind=kind, headers=headers, method="POST")
    task = asyncio.create_task(backend.exec(stream, "ns", "pod", "c", attach=attach))
    return stream, task, Peer(stream)


@pytest.mark.parametrize("headers, code, text", [
    (SPDY, 400, "X-Stream-Protocol-Version is required"),
    (SPDY + (("X-Stream-Protocol-Version", "v9.channel.k8s.io"),), 403, "unable to negotiate protocol"),
    ((("Upgrade", "h2c"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")), 400, "missing upgrade headers"),
])
async def test_handshake_refusals_are_statuses(backend, headers, code, text) -> None:
    stream = FakeStream("/exec/ns/pod/c", "command=true&output=1", kind=MessageType.EXEC_CONNECT, headers=headers)
    await asyncio.wait_for(backend.exec(stream, "ns", "pod", "c", attach=False), 5)
    head, _, body = stream.body.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {code} ".encode()) and b"Content-Type: application/json" in head
    status = json.loads(body)
    assert status["kind"] == "Status" and status["code"] == code and text in status["message"]
    if code == 403:
        assert b"X-Accepted-Stream-Protocol-Versions: v5.channel.k8s.io" in head


async def test_missing_pod_is_a_404_status(backend) -> None:
    stream = FakeStream("/exec/ns/nope/c", "command=true&output=1", kind=MessageType.EXEC_CONNECT, headers=SPDY)
    await backend.exec(stream, "ns", "nope", "c", attach=False)
    assert json.loads(stream.body.partition(b"\r\n\r\n")[2])["reason"] == "NotFound"


@pytest.mark.parametrize("protocol, expected", [
    ("v5.channel.k8s.io", {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode"}),
    ("v4.channel.k8s.io", {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode"}),
    ("v2.channel.k8s.io", None),
])
async def test_exec_over_spdy_per_version(backend, protocol, expected) -> None:
    stream, task, peer = await _exec(backend, "command=sh&command=-c&command=echo+out%3B+echo+err+%3E%262%3B+exit+5"
                                     "&output=1&error=1", [protocol, "channel.k8s.io"])
    await peer.until(lambda: bool(peer.head))
    assert f"X-Stream-Protocol-Version: {protocol}".encode() in peer.head
    error, out, err = (peer.session.open_stream([("streamtype", t)]) for t in ("error", "stdout", "stderr"))
    peer.send()
    await peer.until(lambda: StreamEnded(error) in peer.events)
    assert [type(e) for e in peer.events[:3]] == [StreamReplied] * 3
    assert (peer.data(out), peer.data(err)) == (b"out\n", b"err\n")
    if expected is None:  # v1-v3: only the failure's text
        assert peer.data(error).startswith(b"command terminated with non-zero exit code")
    else:
        status = json.loads(peer.data(error))
        assert {k: status[k] for k in expected} == expected
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    for sid in (error, out, err):
        peer.session.reset(sid)
    peer.session.goaway()
    peer.send()
    stream.inbound.feed_eof()  # the client's connection ends
    await asyncio.wait_for(task, 5)


async def test_attach_without_stdin_runs_until_the_client_leaves(backend) -> None:
    stream, task, peer = await _exec(backend, "output=1&error=1", ["v4.channel.k8s.io"], attach=True)
    await peer.until(lambda: bool(peer.head))
    error, out, err = (peer.session.open_stream([("streamtype", t)]) for t in ("error", "stdout", "stderr"))
    peer.send()
    await peer.until(lambda: peer.data(out).count(b"\n") >= 3)
    assert not task.done()
    stream.inbound.feed_eof()  # kubectl killed: the connection goes away
    await asyncio.wait_for(task, 5)


async def test_kill_1_restarts_the_container(backend) -> None:
    stream, task, peer = await _exec(backend, "command=kill&command=1&output=1&error=1", ["v4.channel.k8s.io"])
    await peer.until(lambda: bool(peer.head))
    error = peer.session.open_stream([("streamtype", "error")])
    for t in ("stdout", "stderr"):
        peer.session.open_stream([("streamtype", t)])
    peer.send()
    await peer.until(lambda: StreamEnded(error) in peer.events)
    stream.inbound.feed_eof()
    await asyncio.wait_for(task, 5)
    pods = FakeStream("/pods", kind=MessageType.METRIC_CONNECT)
    await backend.metrics(pods, "/pods")
    statuses = json.loads(pods.body)["items"][0]["status"]["containerStatuses"]
    assert statuses[0]["restartCount"] == 1
    previous = FakeStream("/containerLogs/ns/pod/c", "previous=true", kind=MessageType.LOGS_CONNECT)
    await backend.serve(previous)
    assert previous.body.startswith(b"ns/pod/c line 0\n") and previous.body.count(b"\n") >= 5


async def _port_forward(backend):
    headers = SPDY + (("X-Stream-Protocol-Version", "portforward.k8s.io"),)
    stream = FakeStream("/portForward/ns/pod", kind=MessageType.PORTFORWARD_CONNECT, headers=headers, method="POST")
    task = asyncio.create_task(backend.port_forward(stream, "ns", "pod"))
    peer = Peer(stream)
    await peer.until(lambda: bool(peer.head))
    assert b"X-Stream-Protocol-Version: portforward.k8s.io" in peer.head
    return stream, task, peer


async def test_port_forward_pairs_and_refusals(backend) -> None:
    stream, task, peer = await _port_forward(backend)
    s = peer.session
    bad = [s.open_stream([("streamtype", "data")]), s.open_stream([("streamtype", "data"), ("port", "0")]),
           s.open_stream([("streamtype", "bogus"), ("port", "80")])]
    pairs = {}
    for request in ("a", "b"):
        err = s.open_stream([("streamtype", "error"), ("port", "80"), ("requestid", request)], fin=True)
        data = s.open_stream([("streamtype", "data"), ("port", "80"), ("requestid", request)])
        pairs[request] = (err, data)
    for request, (_, data) in pairs.items():
        s.send_data(data, f"hello {request}".encode(), fin=True)
    peer.send()
    await peer.until(lambda: all(StreamEnded(d) in peer.events and StreamEnded(e) in peer.events
                                 for e, d in pairs.values()))
    assert {r: peer.data(d) for r, (_, d) in pairs.items()} == {"a": b"hello a", "b": b"hello b"}
    resets = {e.stream_id for e in peer.events if isinstance(e, StreamReset)}
    assert set(bad) <= resets
    stream.inbound.feed_eof()
    await asyncio.wait_for(task, 5)


async def test_port_forward_incomplete_pair_times_out(backend, monkeypatch) -> None:
    monkeypatch.setattr(spdy_portforward, "STREAM_CREATION_TIMEOUT", 0.2)
    stream, task, peer = await _port_forward(backend)
    err = peer.session.open_stream([("streamtype", "error"), ("port", "80"), ("requestid", "7")], fin=True)
    peer.send()
    await peer.until(lambda: b"timed out" in peer.data(err))
    stream.inbound.feed_eof()
    await asyncio.wait_for(task, 5)
