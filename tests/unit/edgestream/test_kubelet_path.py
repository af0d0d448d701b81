"""Pod routes decoded once, one way (``streamproto.kubelet_path``), and the edge's dispatch using it:
``p1%2Fx`` is a pod name with a slash in it (400), never pod ``p1``."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgestream.backends.base import BaseBackend
from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EmulatorConfig
from streamproto.kubelet_path import BadPath, PodPath, decode_segment, parse_pod_path
from streamproto.tunnel import MessageType, NotFound
from tests.unit.edgestream.fakes import FakeStream

# RFC 1123 labels: what Kubernetes namespaces, pods and containers are named.
label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/containerLogs/ns/p1/c", PodPath("containerLogs", "ns", "p1", None, "c")),
        ("/exec/ns/p1/uid-1/c", PodPath("exec", "ns", "p1", "uid-1", "c")),
        ("/attach/ns/p1/c", PodPath("attach", "ns", "p1", None, "c")),
        ("/portForward/ns/p1", PodPath("portForward", "ns", "p1")),
        ("/portForward/ns/p1/uid-1", PodPath("portForward", "ns", "p1", "uid-1")),
        ("/containerLogs/ns/p%31/c", PodPath("containerLogs", "ns", "p1", None, "c")),  # decoded once
        ("/containerLogs/ns/p%252F/c", PodPath("containerLogs", "ns", "p%2F", None, "c")),  # ... and only once
    ],
)
def test_pod_routes_parse(path: str, expected: PodPath) -> None:
    assert parse_pod_path(path) == expected


@pytest.mark.parametrize(
    "path", ["/stats/summary", "/containerLogs/ns/p1", "/containerLogs", "/exec/ns/a/b/c/d", "/portForward/ns", "x"]
)
def test_not_a_pod_route_is_none(path: str) -> None:
    assert parse_pod_path(path) is None


@pytest.mark.parametrize(
    ("path", "segment", "says"),
    [
        ("/containerLogs/ns/p1%2Fx/c", "pod", "encoded slash"),
        ("/containerLogs/ns/p1%2fx/c", "pod", "encoded slash"),
        ("/exec/ns/p1/%2E%2E", "container", "dot segment"),
        ("/exec/ns/p1/..", "container", "dot segment"),
        ("/attach/./p1/c", "namespace", "dot segment"),
        ("/containerLogs//p1/c", "namespace", "empty namespace"),
        ("/containerLogs/ns/p1/c/", "container", "empty container"),  # the trailing slash: an empty name
        ("/containerLogs/ns/p%00/c", "pod", "control character"),
        ("/containerLogs/ns/p%0D%0A/c", "pod", "control character"),
        ("/containerLogs/ns/p\x01/c", "pod", "control character"),
        ("/portForward/ns/p%zz", "pod", "percent escape"),
        ("/portForward/ns/p%C3", "pod", "not UTF-8"),
        ("/exec/ns/p1/u%2Fid/c", "uid", "encoded slash"),
    ],
)
def test_bad_names_are_refused_naming_the_segment(path: str, segment: str, says: str) -> None:
    with pytest.raises(BadPath) as info:
        parse_pod_path(path)
    assert info.value.error_status_hint == 400
    assert info.value.segment == segment
    assert says in str(info.value) and segment in str(info.value)
    assert "\x00" not in str(info.value) and "\r" not in str(info.value)  # logged safely


@given(st.tuples(label, label, label))
def test_any_kubernetes_names_round_trip(names: tuple[str, str, str]) -> None:
    ns, pod, ctr = names
    assert parse_pod_path(f"/containerLogs/{quote(ns)}/{quote(pod)}/{quote(ctr)}") == PodPath(
        "containerLogs", ns, pod, None, ctr
    )


@given(st.text(max_size=10), st.text(max_size=10), label)
def test_a_slash_in_a_name_is_never_a_route_separator(head: str, tail: str, other: str) -> None:
    """Whatever the name, once quoted as one segment it never parses as another pod."""
    path = f"/containerLogs/{other}/{quote(head + '/' + tail, safe='')}/{other}"
    with pytest.raises(BadPath):
        parse_pod_path(path)


def test_decode_segment_is_urllib_unquote_for_valid_names() -> None:
    assert decode_segment("caf%C3%A9", "pod") == "café"


# ------------------------------------------------------------------ the edge's dispatch


class Recorder(BaseBackend):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def logs(self, stream, ns, pod, container, options):  # type: ignore[no-untyped-def,override]
        self.calls.append(("logs", ns, pod, container))

    async def exec(self, stream, ns, pod, container, *, attach):  # type: ignore[no-untyped-def,override]
        self.calls.append(("attach" if attach else "exec", ns, pod, container))

    async def port_forward(self, stream, ns, pod):  # type: ignore[no-untyped-def,override]
        self.calls.append(("portforward", ns, pod))


@pytest.mark.parametrize(
    ("path", "kind", "call"),
    [
        ("/containerLogs/ns/p1/c", MessageType.LOGS_CONNECT, ("logs", "ns", "p1", "c")),
        ("/exec/ns/p1/uid/c", MessageType.EXEC_CONNECT, ("exec", "ns", "p1", "c")),
        ("/attach/ns/p1/c", MessageType.ATTACH_CONNECT, ("attach", "ns", "p1", "c")),
        ("/portForward/ns/p1", MessageType.PORTFORWARD_CONNECT, ("portforward", "ns", "p1")),
    ],
)
async def test_dispatch(path: str, kind: MessageType, call: tuple[str, ...]) -> None:
    backend = Recorder()
    await backend.serve(FakeStream(path, kind=kind))  # type: ignore[arg-type]
    assert backend.calls == [call]


async def test_dispatch_refuses_an_encoded_slash_and_a_wrong_route() -> None:
    backend = Recorder()
    with pytest.raises(BadPath, match="pod name 'p1%2Fx' contains an encoded slash"):
        await backend.serve(FakeStream("/containerLogs/ns/p1%2Fx/c"))  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await backend.serve(FakeStream("/exec/ns/p1/c", kind=MessageType.LOGS_CONNECT))  # type: ignore[arg-type]
    assert backend.calls == []


async def test_emulator_never_serves_p1_for_p1_2fx() -> None:
    """The emulator has pod ``p1``: ``p1%2Fx`` must not reach it (it did: the edge decoded
    the whole path and split it again)."""
    backend = EmulatorBackend(EmulatorConfig(pods=(("ns", "p1", "x"), ("ns", "p1", "c"))))
    for path in ("/containerLogs/ns/p1%2Fx/c", "/containerLogs/ns%2Fp1/x/c"):
        stream = FakeStream(path, "tailLines=1")
        with pytest.raises(BadPath):
            await backend.serve(stream)  # type: ignore[arg-type]
        assert stream.body == b""
    stream = FakeStream("/containerLogs/ns/p1%2Fc", "tailLines=1")  # two segments: no such route
    with pytest.raises(NotFound):
        await backend.serve(stream)  # type: ignore[arg-type]
    assert stream.body == b""
    stream = FakeStream(
        "/exec/ns/p1%2Fx/c", "command=ls&output=1", kind=MessageType.EXEC_CONNECT, method="POST"
    )
    with pytest.raises(BadPath) as info:
        await backend.serve(stream)  # type: ignore[arg-type]
    # what the session then writes on an upgrade stream: a metav1.Status, as the kubelet does
    await stream.answer(info.value.error_status_hint, str(info.value))
    head, _, body = stream.body.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    status = json.loads(body)
    assert status["reason"] == "BadRequest" and status["code"] == 400 and "p1%2Fx" in status["message"]
