"""Issue 15, findings 3, 6 and the 10003 parts of 7 and 8, against a real cloudstream process.

Each test sends what an attacker (or a confused client) would, reads the answer with h11 in
the client role (never with our own parser), and checks that nothing reached an edge that
should not have; the ``fleet`` fixture then checks the bystander still flows and nothing leaked.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import time
from dataclasses import dataclass

import h11
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

from streamcerts import client_context
from streamproto.kube_status import reason_for_code
from tests.conftest import MS
from tests.integration.framework import apiserver_tls, kubelet_request, start_cloud, start_edge
from tests.integration.k8s_ws import open_ws, run_exec

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(90)]

LOGS = "/containerLogs/default/demo/app"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes
    """Whatever followed the first response before the server closed (a smuggled answer would be here)."""
    closed: bool
    elapsed: float

    @property
    def status_object(self) -> dict:
        """The error as a Status: the JSON body of an upgrade's refusal, or the plain text of a
        logs/stats error (what the kubelet writes there) in the same shape."""
        if self.headers.get("content-type", "").startswith("text/plain"):
            text = self.body.decode()
            assert text.startswith("cloudstream: ") and text.endswith("\n"), text
            return {"message": text.strip(), "code": self.status, "reason": reason_for_code(self.status)}
        assert self.headers.get("content-type") == "application/json", self.headers
        obj = json.loads(self.body)
        assert obj["kind"] == "Status" and obj["apiVersion"] == "v1" and obj["status"] == "Failure", obj
        assert obj["code"] == self.status, obj
        return obj


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """One response, parsed by h11 as a client would (the request we pretend to have sent is a GET)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")
    status, headers, body = 0, {}, b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise AssertionError(f"incomplete response: {data[:300]!r}")
    return status, headers, body, bytes(client.trailing_data[0])


async def exchange(port: int, data: bytes, tls: ssl.SSLContext, *, timeout: float = 15.0, linger: float = 2.0) -> Answer:
    """Send ``data`` raw over TLS, read until the server closes (or ``linger`` after a first answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    started = time.monotonic()
    received = b""
    closed = False
    try:
        if data:
            writer.write(data)
        async with asyncio.timeout(timeout * MS):
            while True:
                try:
                    if b"\r\n\r\n" in received:  # a first answer: wait a little for anything behind it
                        chunk = await asyncio.wait_for(reader.read(65536), linger)
                    else:
                        chunk = await reader.read(65536)
                except TimeoutError:
                    break
                except (ConnectionError, ssl.SSLError):
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                received += chunk
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
    elapsed = time.monotonic() - started
    assert received, "no answer at all (a silent close)"
    status, headers, body, rest = _parse(received)
    return Answer(status, headers, body, rest, closed, elapsed)


def head(target: str, *lines: str, host: str | None = "bystander", version: str = "HTTP/1.1") -> bytes:
    all_lines = [f"GET {target} {version}"] + ([f"Host: {host}"] if host is not None else []) + list(lines)
    return ("\r\n".join(all_lines) + "\r\n\r\n").encode("latin-1")


def served(fleet: Fleet, since: int) -> list[str]:
    """Requests cloudstream carried to an edge since line ``since`` (its per-stream log lines)."""
    return fleet.log_lines(r"stream \d+ (GET|POST) ", since)


async def test_conflicting_content_length_is_refused_not_smuggled(fleet: Fleet) -> None:
    tls = apiserver_tls(fleet.layout)
    smuggled = head(LOGS + "?tailLines=1", "Connection: close")
    data = head(LOGS + "?tailLines=1", "Content-Length: 0", f"Content-Length: {len(smuggled)}") + smuggled
    since = len(fleet.cloud.lines)
    answer = await exchange(fleet.stream_port, data, tls)
    assert answer.status == 400 and "Content-Length" in answer.status_object["message"]
    assert answer.status_object["reason"] == "BadRequest"
    assert answer.rest == b"" and answer.closed, "a second answer: the body ran as a request"
    assert served(fleet, since) == []
    # The same with one header holding both values.
    answer = await exchange(fleet.stream_port, head(LOGS, f"Content-Length: 0, {len(smuggled)}") + smuggled, tls)
    assert answer.status == 400 and answer.rest == b"" and answer.closed
    # Transfer-Encoding beside Content-Length is the classic smuggling pair.
    answer = await exchange(fleet.stream_port, head(LOGS, "Transfer-Encoding: chunked", "Content-Length: 5") + b"0\r\n\r\n", tls)
    assert answer.status == 400 and "smuggling" in answer.status_object["message"] and answer.closed
    assert served(fleet, since) == []


@pytest.mark.parametrize(
    "value", [b"a\x00b", b"a\rb", b"a\x01b", b"a\x7fb", b"a\x1bb"], ids=["NUL", "CR", "SOH", "DEL", "ESC"]
)
async def test_control_bytes_in_header_values_are_refused(fleet: Fleet, value: bytes) -> None:
    since = len(fleet.cloud.lines)
    data = f"GET {LOGS} HTTP/1.1\r\nHost: bystander\r\nX-Note: ".encode() + value + b"\r\n\r\n"
    answer = await exchange(fleet.stream_port, data, apiserver_tls(fleet.layout))
    assert answer.status == 400 and answer.status_object["reason"] == "BadRequest" and answer.closed
    assert served(fleet, since) == []


@pytest.mark.parametrize(
    "target",
    [b"/containerLogs/default/demo/app\x01", b"/containerLogs/default/demo/app\x00?x", "/containerLogs/default/démo/app".encode(),
     b"/containerLogs/default/demo/app x", b"http://bystander/containerLogs/default/demo/app", b"*"],
    ids=["SOH", "NUL", "non-ASCII", "space", "absolute-form", "asterisk"],
)
async def test_odd_targets_are_refused_and_never_forwarded(fleet: Fleet, target: bytes) -> None:
    since = len(fleet.cloud.lines)
    answer = await exchange(fleet.stream_port, b"GET " + target + b" HTTP/1.1\r\nHost: bystander\r\n\r\n", apiserver_tls(fleet.layout))
    assert answer.status == 400 and answer.closed, answer
    assert answer.status_object["reason"] == "BadRequest"
    assert served(fleet, since) == []


@pytest.mark.parametrize(
    ("lines", "version"),
    [((), "HTTP/1.1"), ((), "HTTP/1.0"), (("Host: victim",), "HTTP/1.1"), (("Host: bystander",), "HTTP/1.0")],
    ids=["none-1.1", "none-1.0", "two", "two-1.0"],
)
async def test_exactly_one_host(fleet: Fleet, lines: tuple[str, ...], version: str) -> None:
    since = len(fleet.cloud.lines)
    host = None if not lines else "bystander"
    answer = await exchange(fleet.stream_port, head(LOGS, *lines, host=host, version=version), apiserver_tls(fleet.layout))
    assert answer.status == 400 and "Host" in answer.status_object["message"] and answer.closed
    assert served(fleet, since) == []


async def test_connection_header_is_parsed_as_tokens(fleet: Fleet) -> None:
    tls = apiserver_tls(fleet.layout)
    since = len(fleet.cloud.lines)
    upgrade = ("Upgrade: SPDY/3.1", "X-Stream-Protocol-Version: v4.channel.k8s.io")
    answer = await exchange(fleet.stream_port, head("/exec/default/demo/app?command=ls&output=1", "Connection: noupgrade", *upgrade), tls)
    assert answer.status == 400 and "needs an HTTP upgrade" in answer.status_object["message"]
    assert fleet.log_lines(r"cloudstream\.audit open", since) == []
    # A real token list still upgrades: the request reaches the edge, whose own answer (101, or a
    # refusal from an edge without SPDY) comes back unchanged.
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.stream_port, ssl=tls, server_hostname="localhost")
    try:
        writer.write(head("/exec/default/demo/app?command=ls&output=1", "Connection: keep-alive, Upgrade", *upgrade))
        async with asyncio.timeout(10 * MS):
            status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.split()[1] in (b"101", b"403"), status_line
    await fleet.cloud.wait_for_line(r"cloudstream\.audit open exec node=bystander", since=since)


@pytest.mark.parametrize(
    ("value", "status"),
    [("²", 400), ("abc", 400), ("-1", 400), ("1" * 30, 400), ("+5", 400), ("2000000", 413), ("99999999999", 413)],
)
async def test_bad_content_length_gets_a_status_line(fleet: Fleet, value: str, status: int) -> None:
    since = len(fleet.cloud.lines)
    data = f"GET {LOGS} HTTP/1.1\r\nHost: bystander\r\nContent-Length: {value}\r\n\r\n".encode()
    answer = await exchange(fleet.stream_port, data, apiserver_tls(fleet.layout))
    assert answer.status == status and answer.closed
    assert answer.status_object["reason"] == {400: "BadRequest", 413: "RequestEntityTooLarge"}[status]
    assert served(fleet, since) == []
    assert not fleet.log_lines(r"Traceback|Error\b.*kubelet API connection", since), fleet.cloud.output


async def test_bare_lf_request_is_answered_at_once(fleet: Fleet) -> None:
    data = f"GET {LOGS}?tailLines=2 HTTP/1.1\nHost: bystander\nConnection: close\n\n".encode()
    answer = await exchange(fleet.stream_port, data, apiserver_tls(fleet.layout), timeout=8)
    # h11 (like Go's net/http) reads bare-LF lines: served, at once, not after a timeout.
    assert answer.status == 200 and answer.body.count(b"\n") == 2 and answer.closed


async def test_oversized_heads_get_431(fleet: Fleet) -> None:
    tls = apiserver_tls(fleet.layout)
    many = [f"X-H{i}: v" for i in range(150)]
    answer = await exchange(fleet.stream_port, head(LOGS, *many), tls)
    assert answer.status == 431 and answer.closed and "header fields" in answer.status_object["message"]
    answer = await exchange(fleet.stream_port, head(LOGS, "X-Big: " + "a" * 70_000), tls)
    assert answer.status == 431 and answer.closed


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("/containerLogs/default/demo%2Fx/app", "pod"),
        ("/containerLogs/default/demo%2fx/app", "pod"),
        ("/containerLogs/%2E%2E/demo/app", "namespace"),
        ("/containerLogs/default/./app", "pod"),
        ("/containerLogs//demo/app", "namespace"),
        ("/containerLogs/default/demo/%00app", "container"),
        ("/exec/default/demo%2F..%2Fother/app?command=ls", "pod"),
        ("/containerLogs/default/demo/ap%zz", "container"),
    ],
)
async def test_names_are_decoded_once_and_refused_when_odd(fleet: Fleet, path: str, segment: str) -> None:
    since = len(fleet.cloud.lines)
    answer = await exchange(fleet.stream_port, head(path), apiserver_tls(fleet.layout))
    assert answer.status == 400, answer
    message = answer.status_object["message"]
    assert f"{segment} name" in message and answer.status_object["reason"] == "BadRequest", message
    assert served(fleet, since) == []
    assert fleet.log_lines(r"refused 400", since), "the refusal was not logged"


async def test_encoded_names_are_served_and_logged_decoded(fleet: Fleet) -> None:
    since = len(fleet.cloud.lines)
    async with kubelet_request(
        fleet.stream_port, "/containerLogs/default/de%6Do/app?tailLines=1", host="bystander", tls=apiserver_tls(fleet.layout)
    ) as response:
        assert response.status == 200
        assert (await response.body()).startswith(b"default/demo/app line")
    await fleet.cloud.wait_for_line(r"stream \d+ GET /containerLogs/default/demo/app node=bystander", since=since)


async def test_no_client_certificate_gets_401_at_once(fleet: Fleet) -> None:
    anonymous = client_context(fleet.layout.stream_ca)
    anonymous.check_hostname = False
    since = len(fleet.cloud.lines)
    answer = await exchange(fleet.stream_port, b"", anonymous, timeout=8)  # sends no head at all
    assert answer.status == 401 and answer.closed
    obj = answer.status_object
    assert obj["reason"] == "Unauthorized" and "client certificate" in obj["message"]
    assert fleet.log_lines(r"refused 401", since)


async def test_slow_first_head_is_closed_after_the_head_timeout(fleet: Fleet) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", fleet.stream_port, ssl=apiserver_tls(fleet.layout), server_hostname="localhost"
    )
    since = len(fleet.cloud.lines)
    try:
        writer.write(b"GET /containerLogs/def")
        async with asyncio.timeout(30 * MS):  # request_head_timeout is 10 s, the idle timeout 120 s
            assert await reader.read() == b""
    finally:
        writer.close()
    await fleet.cloud.wait_for_line(r"no complete request head within 10 s", since=since)


async def test_errors_are_status_json_with_reasons(fleet: Fleet) -> None:
    tls = apiserver_tls(fleet.layout)
    cases = [
        (head("/configz"), 404, "NotFound", "no kubelet API route"),
        (head(LOGS, host="absent"), 503, "ServiceUnavailable", "absent"),
        (b"DELETE " + LOGS.encode() + b" HTTP/1.1\r\nHost: bystander\r\n\r\n", 405, "MethodNotAllowed", "DELETE"),
        (head("/containerLogs/default/demo/nosuch"), 404, "NotFound", "nosuch"),  # the edge's STATUS, rendered here
        (b"GET / HTTP/2.0\r\nHost: bystander\r\n\r\n", 505, None, "HTTP/2.0"),  # no apimachinery reason
    ]
    for data, status, reason, words in cases:
        answer = await exchange(fleet.stream_port, data, tls)
        obj = answer.status_object
        assert (answer.status, obj.get("reason")) == (status, reason), obj
        assert words in obj["message"] and obj["message"].startswith("cloudstream: "), obj


async def test_keep_alive_still_serves_several_requests(fleet: Fleet) -> None:
    tls = apiserver_tls(fleet.layout)
    pipelined = head(LOGS + "?tailLines=1") + head("/configz") + head(LOGS + "?tailLines=2", "Connection: close")
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.stream_port, ssl=tls, server_hostname="localhost")
    try:
        writer.write(pipelined)
        async with asyncio.timeout(15 * MS):
            data = await reader.read()  # all three answers, then the close
    finally:
        writer.close()
    statuses = [int(m.group(1)) for m in re.finditer(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses == [200, 404, 200]


async def test_exec_audit_counts_what_the_client_sent(fleet: Fleet) -> None:
    since = len(fleet.cloud.lines)
    ws = await open_ws(fleet.stream_port, "/exec/default/demo/app?command=cat&input=1&output=1", node="bystander",
                       tls=apiserver_tls(fleet.layout))
    payload = b"x" * 5000
    result = await run_exec(ws, stdin=[payload])
    assert result.stdout == payload
    m = await fleet.cloud.wait_for_line(r"cloudstream\.audit close exec node=bystander .*bytes_in=(\d+) bytes_out=(\d+)", since=since)
    assert int(m.group(1)) >= len(payload), m.group(0)  # stdin frames and their WebSocket framing
    assert int(m.group(2)) >= len(payload)


async def test_sigterm_during_logs_follow_logs_no_traceback(fleet: Fleet) -> None:
    """A second cloudstream (the fleet's must live on) stopped while it streams a ``logs -f``."""
    cloud, stream_port, tunnel_port = await start_cloud(fleet.layout)
    edge = await start_edge(fleet.layout, "victim", tunnel_port)
    try:
        await cloud.wait_for_line("tunnel up: node victim")
        tls = apiserver_tls(fleet.layout)
        async with kubelet_request(stream_port, LOGS + "?follow=true", host="victim", tls=tls) as response:
            assert response.status == 200
            chunks = response.chunks()
            await anext(chunks)
            assert await cloud.stop(signal.SIGTERM) == 0
    finally:
        await edge.stop()
        await cloud.stop()
    output = "\n".join(cloud.lines)
    assert "Traceback" not in output and "CancelledError" not in output, output[-3000:]


def _masked_binary_frame(payload: bytes) -> bytes:
    mask = b"\x11\x22\x33\x44"
    assert len(payload) < 126
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_bytes_right_behind_an_upgrade_head_reach_the_container(fleet: Fleet) -> None:
    """The client's first WebSocket frames in the same write as the head: h11's trailing data
    goes to the edge first, then the zero-copy handoff carries the rest."""
    client = ClientProtocol(
        parse_uri("wss://bystander/exec/default/demo/app?command=cat&input=1&output=1"),
        subprotocols=["v5.channel.k8s.io"],  # type: ignore[list-item]
    )
    client.send_request(client.connect())
    request = b"".join(client.data_to_send())
    early = _masked_binary_frame(b"\x00early-bird\n")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", fleet.stream_port, ssl=apiserver_tls(fleet.layout), server_hostname="localhost"
    )
    stdout = b""
    try:
        writer.write(request + early)  # one write: the frame rides right behind the head
        await writer.drain()
        async with asyncio.timeout(15 * MS):
            while b"early-bird" not in stdout:
                data = await reader.read(65536)
                assert data, f"closed early; got {stdout!r}"
                client.receive_data(data)
                for event in client.events_received():
                    if getattr(event, "opcode", None) is Opcode.BINARY and event.data[:1] == b"\x01":
                        stdout += event.data[1:]
            writer.write(_masked_binary_frame(b"\xff\x00"))  # v5: close stdin, cat exits
            await writer.drain()
            while await reader.read(65536):
                pass
    finally:
        writer.close()
    assert stdout == b"early-bird\n"


async def test_error_bodies_are_what_the_kubelet_writes_for_each_kind_of_request(fleet: Fleet) -> None:
    """logs/stats errors are plain text (the kubelet's go-restful handlers; the API server quotes
    the text in its own Status), upgrade refusals a Status JSON (the kubelet's streaming server;
    client-go decodes that body, and text with ': ' decoded as YAML printed nothing)."""
    tls = apiserver_tls(fleet.layout)
    logs = await exchange(fleet.stream_port, head("/containerLogs/default/nope/app"), tls)
    assert logs.status == 404 and logs.headers["content-type"].startswith("text/plain"), logs
    assert logs.body.decode().startswith("cloudstream: node bystander: ") and "nope" in logs.body.decode()
    absent = await exchange(fleet.stream_port, head("/stats/summary", host="absent"), tls)
    assert absent.status == 503 and absent.headers["content-type"].startswith("text/plain"), absent
    upgrade = head("/exec/default/nope/app?command=true&output=1", "Connection: Upgrade", "Upgrade: SPDY/3.1",
                   "X-Stream-Protocol-Version: v4.channel.k8s.io", host="absent").replace(b"GET ", b"POST ", 1)
    refused = await exchange(fleet.stream_port, upgrade, tls)
    assert refused.status == 503 and refused.headers["content-type"] == "application/json", refused
    obj = json.loads(refused.body)
    assert (obj["kind"], obj["reason"], obj["code"]) == ("Status", "ServiceUnavailable", 503)
    assert obj["message"].startswith("cloudstream: no edge node with node absent"), obj
