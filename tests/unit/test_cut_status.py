"""CutStatus: frames the websockets library wrote are followed to their boundaries, and the
ending it writes parses (with the websockets library) as a Status on channel 3 and a close."""

from __future__ import annotations

import base64
import json
import random

import pytest
from websockets.frames import Close, Frame, Opcode
from testkit.k8s_ws import parse_frames

from cloudstream.kubelet_api.cut_status import CutStatus

HEAD = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: %s\r\n\r\n")


def server_frames(sizes: list[int]) -> bytes:
    return b"".join(Frame(Opcode.BINARY, b"\x01" + b"o" * (n - 1)).serialize(mask=False) for n in sizes)


def parse(data: bytes) -> list[Frame]:
    return parse_frames(data, mask=False)[0]


def feed_split(cut: CutStatus, data: bytes, rng: random.Random) -> None:
    i = 0
    while i < len(data):
        j = min(len(data), i + rng.choice([1, 2, 3, 7, 100, 4096, 70000]))
        cut.feed(data[i:j])
        i = j


@pytest.mark.parametrize("seed", range(20))
def test_follows_frames_of_every_length_in_any_split(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([1, 125, 126, 127, 65535, 65536, 70000, rng.randint(1, 300)]) for _ in range(12)]
    cut = CutStatus()
    feed_split(cut, HEAD % b"v5.channel.k8s.io" + server_frames(sizes), rng)
    frames = parse(cut.ending("cloudstream: node n1: the tunnel closed"))
    assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.CLOSE]
    assert frames[0].data[:1] == b"\x03"
    status = json.loads(frames[0].data[1:])
    assert status["kind"] == "Status" and status["status"] == "Failure" and status["code"] == 500
    assert "n1" in status["message"]
    assert Close.parse(frames[1].data).code == 1000


def test_nothing_inside_a_frame_after_a_close_or_for_other_protocols() -> None:
    data = HEAD % b"v4.channel.k8s.io" + server_frames([300])
    mid = CutStatus()
    mid.feed(data[:-5])
    assert mid.ending("x") == b""
    mid.feed(data[-5:])
    assert mid.ending("x") != b""
    closed = CutStatus()
    closed.feed(data + Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=False))
    assert closed.ending("x") == b""
    spdy = CutStatus()
    spdy.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
    assert spdy.ending("x") == b""
    refused = CutStatus()
    refused.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
    assert refused.ending("x") == b""


def test_base64_protocol_gets_a_text_frame() -> None:
    cut = CutStatus()
    cut.feed(HEAD % b"v4.base64.channel.k8s.io")
    text, close = parse(cut.ending("boom"))
    assert text.opcode is Opcode.TEXT and text.data[:1] == b"3"
    assert json.loads(base64.b64decode(text.data[1:]))["message"] == "boom"
    assert close.opcode is Opcode.CLOSE
