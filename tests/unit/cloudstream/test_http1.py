"""10003's sans-I/O pieces: h11-backed request reader, routes with names decoded once, Status bodies."""

from __future__ import annotations

import json

import pytest

from cloudstream.kubelet_api.http1 import HeadLimits, HttpError, RequestReader, comma_tokens, parse_request_head
from cloudstream.kubelet_api.routes import RouteKind, match_route
from cloudstream.kubelet_api.status import edge_message, error_response, reason_for_code, status_json


def test_connection_is_a_token_list() -> None:
    assert comma_tokens(["keep-alive, Upgrade", " close "]) == ["keep-alive", "upgrade", "close"]
    base = b"GET /exec/a/b/c HTTP/1.1\r\nHost: n\r\nUpgrade: SPDY/3.1\r\n"
    assert not parse_request_head(base + b"Connection: noupgrade\r\n\r\n").is_upgrade
    assert not parse_request_head(base + b"Connection: upgraded\r\n\r\n").is_upgrade
    assert parse_request_head(base + b"Connection: keep-alive\r\nConnection: UPGRADE\r\n\r\n").is_upgrade
    assert not parse_request_head(b"GET / HTTP/1.1\r\nHost: n\r\nConnection: upgrade\r\n\r\n").is_upgrade  # no Upgrade
    assert not parse_request_head(b"GET / HTTP/1.0\r\nHost: n\r\n\r\n").keep_alive
    assert parse_request_head(b"GET / HTTP/1.0\r\nHost: n\r\nConnection: Keep-Alive\r\n\r\n").keep_alive
    assert not parse_request_head(b"GET / HTTP/1.1\r\nHost: n\r\nConnection: foo, close\r\n\r\n").keep_alive


def test_reader_discards_the_body_and_keeps_the_next_request() -> None:
    reader = RequestReader(HeadLimits())
    head = reader.feed(b"POST /stats/summary HTTP/1.1\r\nHost: n\r\nContent-Length: 5\r\n\r\nab")
    assert head is not None and head.content_length == 5 and reader.body_left == 5
    assert not reader.discard_body()
    assert reader.discard_body(b"cdeGET / HT")
    assert reader.leftover == b"GET / HT"
    following = RequestReader(HeadLimits(), reader.leftover)
    assert following.started and following.next_head() is None
    assert following.feed(b"TP/1.1\r\nHost: n\r\n\r\n") is not None


def test_reader_limits() -> None:
    with pytest.raises(HttpError) as info:
        RequestReader(HeadLimits(max_head=100)).feed(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: n\r\n\r\n")
    assert info.value.status == 431
    with pytest.raises(HttpError) as info:
        RequestReader(HeadLimits(max_headers=2)).feed(b"GET / HTTP/1.1\r\nHost: n\r\nA: 1\r\nB: 2\r\n\r\n")
    assert info.value.status == 431
    with pytest.raises(HttpError) as info:
        RequestReader(HeadLimits(max_body=10)).feed(b"GET / HTTP/1.1\r\nHost: n\r\nContent-Length: 11\r\n\r\n")
    assert info.value.status == 413
    with pytest.raises(EOFError):
        RequestReader().feed(b"")  # closed before a byte
    reader = RequestReader()
    assert reader.feed(b"GET / HT") is None
    with pytest.raises(EOFError):
        reader.feed(b"")


def test_names_decoded_once() -> None:
    route = match_route("/containerLogs/default/de%6Do/app")
    assert route is not None and route.pod == "demo" and route.path == "/containerLogs/default/demo/app"
    route = match_route("/exec/default/p%3Ax/uid-1/c")
    assert route is not None and route.kind is RouteKind.EXEC and route.pod == "p:x" and route.container == "c"
    assert route.path == "/exec/default/p:x/uid-1/c"


def test_canonical_forwarded_path_keeps_a_decoded_percent_encoded() -> None:
    route = match_route("/containerLogs/ns/a%2525b/c")  # "%25" decodes once to "%": forwarded as "%25"
    assert route is not None and route.pod == "a%25b" and route.path == "/containerLogs/ns/a%2525b/c"
    route = match_route("/portForward/ns/web/uid-1")
    assert route is not None and route.kind is RouteKind.PORTFORWARD and route.path == "/portForward/ns/web/uid-1"
    route = match_route("/stats/summary/")
    assert route is not None and route.kind is RouteKind.METRICS and route.path == "/stats/summary/"
    route = match_route("/stats/ns/p%2Dx/uid/c")
    assert route is not None and route.kind is RouteKind.METRICS and route.path == "/stats/ns/p-x/uid/c"
    assert match_route("/stats/a//c/d") is None


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("/containerLogs/ns/a%2Fb/c", "pod"),
        ("/containerLogs/ns/a%2fb/c", "pod"),
        ("/containerLogs/../p/c", "namespace"),
        ("/containerLogs/ns/%2e/c", "pod"),
        ("/containerLogs/ns/p/", "container"),
        ("/containerLogs/ns/p/c%0A", "container"),
        ("/containerLogs/ns/p/c%", "container"),
        ("/containerLogs/ns/p/%ff", "container"),
        ("/attach/ns/p/c%09", "container"),
        ("/exec/ns/p/u%2F/c", "uid"),
        ("/stats/ns/p%2F/u/c", "pod"),
    ],
)
def test_odd_names_are_refused_naming_the_segment(path: str, segment: str) -> None:
    with pytest.raises(HttpError) as info:
        match_route(path)
    assert info.value.status == 400 and f"{segment} name" in str(info.value), str(info.value)


def test_status_bodies_are_kubelet_json() -> None:
    body = json.loads(status_json(404, 'container "x" not found'))
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'container "x" not found', "reason": "NotFound", "code": 404}
    assert [reason_for_code(c) for c in (400, 401, 403, 405, 413, 429, 500, 503, 504)] == [
        "BadRequest", "Unauthorized", "Forbidden", "MethodNotAllowed", "RequestEntityTooLarge", "TooManyRequests",
        "InternalError", "ServiceUnavailable", "Timeout",
    ]
    assert "reason" not in json.loads(status_json(505, "x"))  # apimachinery has none: left out
    response = error_response(503, "node x: gone", close=True)
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"Content-Type: application/json" in head
    assert b"Connection: close" in head and f"Content-Length: {len(payload)}".encode() in head
    assert json.loads(payload)["message"] == "cloudstream: node x: gone"
    keep = error_response(405, "no", [("Allow", "GET")])
    assert b"Connection: close" not in keep and b"\r\nAllow: GET\r\n" in keep


def test_edge_status_messages() -> None:
    assert edge_message('container "c" not found\n') == 'container "c" not found'
    wrapped = json.dumps({"kind": "Status", "message": "pod p gone", "reason": "NotFound", "code": 404})
    assert edge_message(wrapped) == "pod p gone"
    assert edge_message("{not json") == "{not json"
