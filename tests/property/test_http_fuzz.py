"""Fuzzing 10003's head parsing with h11's verdict as the reference, plus our rules on top.

Our parser is never its own reference: a fresh h11 server connection judges every generated
head; where h11 refuses, we must refuse; where h11 accepts, we accept exactly when the
kubelet rules (one Host, origin-form target, HTTP/1.0 or 1.1, no control bytes in values, no
Transfer-Encoding, header and body limits) hold, which are re-stated here independently.
The same bytes fed whole, byte by byte and in random splits give the same verdict.
"""

from __future__ import annotations

import re

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudstream.kubelet_api.http1 import HeadLimits, HttpError, RequestReader

LIMITS = HeadLimits(max_head=4096, max_headers=12, max_body=1000)

def _mostly(good: list[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """About one draw in ten is odd: heads stay close enough to valid to reach every rule."""
    return st.sampled_from(good * (9 * max(1, len(odd)) // len(good) + 1) + odd)


_METHODS = _mostly([b"GET", b"POST"], [b"PUT", b"G T", b"", b"GET\x00", b"get"])
_TARGET_CHARS = _mostly(
    [b"/", b"a", b"%2F", b"%", b"?", b"=", b"&", b".."],
    [b" ", b"\x00", b"\x01", b"\x7f", b"\xc3\xa9", b"\t", b"*", b"http://x"],
)
_TARGETS = st.one_of(
    st.just(b"/containerLogs/default/demo/app"),
    st.lists(_TARGET_CHARS, min_size=0, max_size=8).map(lambda parts: b"/" + b"".join(parts)),
    st.lists(_TARGET_CHARS, min_size=0, max_size=8).map(b"".join),
)
_VERSIONS = _mostly([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1", b"http/1.1", b"HTTP/1.1 "])
_NAMES = _mostly(
    [b"Content-Length", b"Connection", b"Upgrade", b"X-A", b"User-Agent", b"Accept"],
    [b"Host", b"host", b"Transfer-Encoding", b"X A", b"X:", b"", b"\x00", b"X-\xc3\xa9"],
)
_LENGTHS = _mostly([b"0", b"5", b"1001", b"5, 5", b" 7"], [b"-1", b"+5", b"99999999999999999999999", b"5, 6", b"\xc2\xb2", b"a"])
_VALUE_PARTS = _mostly(
    [b"a", b"5", b"0", b"1001", b"5, 5", b"upgrade", b"close", b" ", b"\t", b",", b"\xe9"],
    [b"-1", b"99999999999999999999999", b"5, 6", b"chunked", b"noupgrade", b"\x00", b"\r", b"\x01", b"\x7f",
     b"\xb2", b"\xc2\xb2"],
)
_VALUES = st.lists(_VALUE_PARTS, min_size=0, max_size=3).map(b"".join)
_EOLS = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    eol = draw(_EOLS)
    line = draw(_METHODS) + b" " + draw(_TARGETS) + b" " + draw(_VERSIONS)
    lines = [line]
    for _ in range(draw(st.integers(0, 14))):
        name = draw(_NAMES)
        value = draw(_LENGTHS) if name == b"Content-Length" else draw(_VALUES)
        lines.append(name + b":" + draw(st.sampled_from([b" ", b""])) + value)
    if draw(st.integers(0, 9)):
        lines.insert(1, b"Host: bystander")
    return eol.join(lines) + eol + eol + draw(st.binary(max_size=20))


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def reference(data: bytes) -> int | str:
    """h11's verdict, then the kubelet rules: a status to answer, "incomplete", or "ok"."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_head)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return exc.error_status_hint
    if event is h11.NEED_DATA:
        return "incomplete"
    assert isinstance(event, h11.Request)
    if len(data) - len(conn.trailing_data[0]) > LIMITS.max_head:
        return 431
    raw = event.headers.raw_items()
    names = [n.lower() for n, _ in raw]
    if len(raw) > LIMITS.max_headers:
        return 431
    if event.http_version not in (b"1.0", b"1.1"):
        return 505
    if not event.target.startswith(b"/"):
        return 400
    for name, value in raw:
        if _CONTROL.search(value):
            return 400
        if name.lower() == b"transfer-encoding":
            return 400 if b"content-length" in names else 501
    if names.count(b"host") != 1:
        return 400
    lengths = [v for n, v in raw if n.lower() == b"content-length"]
    if lengths and int(lengths[0].split(b",")[0]) > LIMITS.max_body:
        return 413
    return "ok"


def ours(chunks: list[bytes]) -> tuple[int | str, object]:
    reader = RequestReader(LIMITS)
    try:
        head = None
        for chunk in chunks:  # after the head, feeding only collects the leftover
            head = reader.feed(chunk)
    except HttpError as exc:
        return exc.status, None
    if head is None:
        return "incomplete", None
    return "ok", (head, reader.leftover)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if data[a:b]] or [b""]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads(), st.lists(st.integers(0, 10_000), max_size=6))
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\nGET /x HTTP/1.1\r\n", [])
@example(b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", [])
@example(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: noupgrade\r\nContent-Length: \xc2\xb2\r\n\r\n", [3])
@example(b"GET / HTTP/1.1\nHost: a\n\n", [1, 2, 3])
@example(b"GET / HTTP/1.0\r\n\r\n", [])
def test_verdict_matches_h11_and_our_rules(data: bytes, cuts: list[int]) -> None:
    expected = reference(data)
    whole = ours([data])
    assert whole[0] == expected, (data, whole[0], expected)
    split = ours(_splits(data, cuts))
    assert split == whole, (data, cuts)
    if expected == "ok":
        head, _ = whole[1]  # type: ignore[misc]
        # Nothing we accept carries a control byte or a non-ASCII byte in its target, or a
        # control byte in a header value: nothing like that is forwarded to an edge.
        assert head.target.isascii() and head.target.isprintable() and " " not in head.target
        assert all(not _CONTROL.search(v.encode("latin-1")) for _, v in head.headers)
        assert len([1 for k, _ in head.headers if k.lower() == "host"]) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_head_none_or_an_http_error(data: bytes) -> None:
    reader = RequestReader(LIMITS)
    try:
        head = reader.feed(data)
        if head is None:
            reader.feed(b"")  # EOF: the client left inside the head
    except HttpError as exc:
        assert 400 <= exc.status < 600
    except EOFError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(0, 200), max_size=4))
def test_bytes_after_an_upgrade_head_are_handed_back_whole(tail: bytes, cuts: list[int]) -> None:
    data = b"POST /exec/ns/p/c?command=sh HTTP/1.1\r\nHost: n\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n" + tail
    verdict, result = ours(_splits(data, cuts))
    assert verdict == "ok"
    head, leftover = result  # type: ignore[misc]
    assert head.is_upgrade and leftover == tail
