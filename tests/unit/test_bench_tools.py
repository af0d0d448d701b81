"""The bench suite's own arithmetic: the reader's body count (against h11's encoder), Jain's
index, the summary of rounds, README's generated region, the progress bar, idle round trips
taken together."""

from __future__ import annotations

import asyncio
import io
import random
import time
from contextlib import asynccontextmanager

import h11
import pytest

from bench.core import Context, Progress, Variant, run_variants, summarize
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


class _Session:
    """A fake interactive session on a machine that changes pace: every ping takes the
    machine's current pace times the variant's own cost."""

    def __init__(self, name: str, cost: float, log: list[str], closed: list[str]) -> None:
        self.name, self.cost, self.log, self.closed = name, cost, log, closed

    async def ping(self, byte: bytes) -> None:
        self.log.append(self.name)
        slow = 1.0 if int(time.monotonic() * 20) % 2 else 3.0  # the machine's pace flips every 50 ms
        await asyncio.sleep(0.0001 * self.cost * slow)

    async def close(self) -> None:
        self.closed.append(self.name)


async def test_idle_round_trips_are_taken_together_pings_alternating() -> None:
    log: list[str] = []
    closed: list[str] = []

    @asynccontextmanager
    async def setup():  # type: ignore[no-untyped-def]
        yield None

    async def measure(handle: object) -> dict[str, float]:
        return {"bulk_p50_ms": 1.0}

    def variant(name: str, cost: float) -> Variant:
        async def echo(handle: object) -> _Session:
            return _Session(name, cost, log, closed)
        return Variant(name, setup, measure, echo, echoes=40)

    result = await run_variants("exec", [variant("a", 1.0), variant("b", 1.0), Variant("c", setup, measure)],
                                Context(layout=None, rounds=2))  # type: ignore[arg-type]
    samples = {name: v["samples"] for name, v in result["variants"].items()}
    assert all("idle_p50_ms" in s and s["bulk_p50_ms"] == 1.0 for s in samples["a"] + samples["b"])
    assert all("idle_p50_ms" not in s for s in samples["c"])  # no echo: not paired
    assert sorted(closed) == ["a", "a", "b", "b"]
    assert all(log[i] != log[i + 1] or i % 2 == 1 for i in range(len(log) - 1))  # a, b, then b, a: in turn
    assert log.count("a") == log.count("b")
    for sa, sb in zip(samples["a"], samples["b"], strict=True):  # the same moments: the same pace
        assert 0.6 < sa["idle_p50_ms"] / sb["idle_p50_ms"] < 1.6


def test_pin_moves_every_thread_of_a_process_and_back() -> None:
    """``exec-placement`` pins real processes (all their threads) and puts them back."""
    import os
    import subprocess
    import sys

    from bench.measure import PLACEMENTS, _pin

    everywhere = os.sched_getaffinity(0)
    one = {min(everywhere)}
    child = subprocess.Popen([sys.executable, "-c", "import threading, time\n"
                              "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
                              "print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"  # (both threads started)
        threads = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert len(threads) == 2
        _pin(child.pid, one)
        assert all(os.sched_getaffinity(t) == one for t in threads)
        _pin(child.pid, everywhere)
        assert all(os.sched_getaffinity(t) == everywhere for t in threads)
    finally:
        child.kill()
        child.wait()
    _pin(child.pid, one)  # a process that ended is skipped, not an error
    pinned = [p for p in PLACEMENTS.values() if p is not None]
    # every pinned placement puts two of the four busy processes on each CPU, and the cloud
    # (first) beside a different one each time
    assert all(sorted(p) == [0, 0, 1, 1] for p in pinned)
    assert len({p.index(p[0], 1) for p in pinned}) == 3
