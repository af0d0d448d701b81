"""The bench suite's own arithmetic: the reader's body count (against h11's encoder), Jain's
index, the summary of rounds, README's generated region, the progress bar."""

from __future__ import annotations

import io
import random

import h11
import pytest

from bench.core import Progress, summarize
from bench.measure import jain
from bench.reader import Body
from bench.report import BEGIN, END, rewrite


def chunked_response(payloads: list[bytes]) -> bytes:
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET /containerLogs/a/b/c HTTP/1.1\r\nHost: n\r\n\r\n")
    server.next_event()
    out = server.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
    for p in payloads:
        out += server.send(h11.Data(data=p))
    return out + server.send(h11.EndOfMessage())


@pytest.mark.parametrize("seed", range(20))
def test_body_counts_what_h11_framed(seed: int) -> None:
    rng = random.Random(seed)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 256, 1000, 20000]))) for _ in range(30)]
    wire = chunked_response(payloads)
    body, pos, counted = Body(), 0, 0
    while pos < len(wire):  # arbitrary splits: inside sizes, CRLFs and the head
        step = rng.choice([1, 2, 3, 50, 4096, 70000])
        counted += body.feed(wire[pos:pos + step])
        pos += step
    assert counted == sum(len(p) for p in payloads)


def test_body_counts_a_raw_body_and_refuses_an_error() -> None:
    assert Body().feed(b"HTTP/1.1 200 OK\r\n\r\nabcdef") == 6
    with pytest.raises(ConnectionError, match="500"):
        Body().feed(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")


def test_jain() -> None:
    assert jain([5.0] * 64) == pytest.approx(1.0)
    assert jain([1.0] + [0.0] * 63) == pytest.approx(1 / 64)
    assert jain([1.0, 3.0]) == pytest.approx(16 / 20)


def test_summarize_median_and_range() -> None:
    s = summarize([{"MBps": 3.0, "x": 1.0}, {"MBps": 1.0}, {"MBps": 2.0}])
    assert s["MBps"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["x"]["n"] == 1


def test_rewrite_replaces_only_the_region() -> None:
    text = f"# T\nintro\n{BEGIN}\nold table\n{END}\nafter\n"
    assert rewrite(text, "new\n") == f"# T\nintro\n{BEGIN}\nnew\n{END}\nafter\n"
    with pytest.raises(SystemExit):
        rewrite("no markers", "x")


def test_progress_without_a_terminal_writes_one_line_per_step() -> None:
    out = io.StringIO()
    p = Progress(4, out)
    p.step("a")
    p.step("b")
    p.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "2/4" in lines[1] and lines[1].endswith("b")


def test_raw_relay_accepts_a_websocket_as_websockets_computes_it() -> None:
    from websockets.utils import accept_key, generate_key

    from bench.baselines.raw_relay import ws_accept

    key = generate_key()
    answer = ws_accept(f"GET /exec/a/b/c HTTP/1.1\r\nHost: n\r\nSec-WebSocket-Key: {key}\r\n"
                       "Sec-WebSocket-Protocol: v4.channel.k8s.io, v5.channel.k8s.io".encode())
    assert f"Sec-WebSocket-Accept: {accept_key(key)}\r\n".encode() in answer
    assert b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n" in answer
