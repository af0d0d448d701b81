"""The receive window over a long link, in a model: the real ``Mux`` (receiver side) and
``BdpEstimator`` driven as ``streamproto/aio/connection.py`` drives them, a sender that spends
every byte of credit, and one bottleneck (a FIFO at the link rate, then the one-way delay).

The bench (``python -m bench wan satellite``) measures the real processes through the userspace
link; this model reproduces its figures (the previous estimator: exec echo beside a bulk stream
at RTT + 23.7 ms on ``wan-50ms-100mbit``, the bench 23.8; satellite RTT + 133, the bench 149)
and checks in a second what the window must do: fill the link, and keep the queue in front of a
keystroke within a few milliseconds.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass

import pytest

from streamproto.tunnel.bdp import BdpEstimator, Pacer
from streamproto.tunnel.connect import ConnectRequest
from streamproto.tunnel.features import FLOW_WINDOW, Feature
from streamproto.tunnel.messages import MessageType, decode
from streamproto.tunnel.mux import Mux, Role
from streamproto.tunnel.varint import read_uvarint

MESSAGE = 60 * 1024
"""The sender's largest DATA payload (the emulator writes 60 KiB at a time)."""
BACKLOG = 0.5
"""Seconds of data the sender may have queued before the bottleneck (its socket buffers)."""


@dataclass
class Outcome:
    utilisation: float
    echo_p50_ms: float
    echo_p99_ms: float
    window: int
    """The streams' receive windows together, median over the second half."""
    grants: int


def run_link(
    rtt: float, rate: float, seconds: float, echo_every: float = 0.05, jitter: float = 0.0, streams: int = 1,
    stalled: int = 0,
) -> Outcome:
    """``streams`` bulk streams edge -> cloud for ``seconds`` (the sender takes them in turn); echo round trips (cloud -> edge -> cloud,
    the reply behind the bulk at the bottleneck) measured over the second half. ``jitter``: up
    to that many seconds added to each probe's round trip (event loops, the userspace link:
    1-5 ms measured on these machines). ``stalled``: more streams whose reader never reads (each
    sends its initial window, which then waits in the cloud for good)."""
    noise = random.Random(7)
    delay = rtt / 2
    ids = iter(range(1, 100))
    mux = Mux(Role.CLOUD, frozenset({Feature.FLOW}), next_id=lambda: next(ids), stream_window_max=1 << 20)
    cids = [mux.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c", "", {}, "GET"))[0]
            for _ in range(streams + stalled)]
    never_read = set(cids[streams:])
    est = BdpEstimator(FLOW_WINDOW, FLOW_WINDOW + mux.window_budget)
    events: list[tuple[float, int, str, float, int]] = []
    order = 0
    credit, bottleneck_free = dict.fromkeys(cids, FLOW_WINDOW), 0.0
    pacer = Pacer(MESSAGE)
    delivered: list[tuple[float, int]] = []
    echoes: list[tuple[float, float]] = []
    grants = 0
    windows: list[tuple[float, int]] = []

    def at(when: float, kind: str, value: float = 0.0, cid: int = 0) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (when, order, kind, value, cid))

    def through_bottleneck(now: float, kind: str, size: int, value: float, cid: int = 0) -> None:
        nonlocal bottleneck_free
        bottleneck_free = max(now, bottleneck_free) + size / rate
        at(bottleneck_free + delay, kind, value, cid)

    def send(now: float) -> None:
        piece = pacer.piece
        while bottleneck_free - now < BACKLOG:  # as send_data: whole pieces, the streams in turn
            ready = [c for c in cids if credit[c] >= piece]
            if not ready:
                return
            for c in ready:
                credit[c] -= piece
                through_bottleneck(now, "data", piece, piece, c)
        at(bottleneck_free - BACKLOG + 0.001, "send")

    send(0.0)
    at(0.5, "echo")
    for _ in range(10_000_000):  # bounded: the clock passes ``seconds`` long before
        now, _, kind, value, cid = heapq.heappop(events)
        if now > seconds:
            break
        if kind == "data":
            n = int(value)
            mux.streams[cid].bytes_in += n
            delivered.append((now, n))
            if est.received(n, now, cid):
                at(now + delay, "ping")
            if cid in never_read:
                continue
            message = mux.consumed(cid, n)  # a reader that keeps up
            if message is not None:
                grants += 1
                at(now + delay, "grant", read_uvarint(decode(message).data, 0)[0], cid)
        elif kind == "grant":
            credit[cid] += int(value)
            pacer.granted(int(value), now)
            send(now)
        elif kind == "send":
            send(now)
        elif kind == "ping":  # the edge's pong goes behind the data it already sent
            through_bottleneck(now, "pong-late", 16, 0.0)
        elif kind == "pong-late":
            at(now + noise.uniform(0.0, jitter), "pong")
        elif kind == "pong":
            est.acknowledged(now, mux.waiting(est.carrying))
            mux.window_target = est.stream_target
            mux.grant_step = est.grant_step
            windows.append((now, sum(mux.streams[c].recv_window for c in cids)))
        elif kind == "echo":
            at(now + delay, "echo-edge", now)
            at(now + echo_every, "echo")
        elif kind == "echo-edge":
            through_bottleneck(now, "echo-back", 8, value)
        elif kind == "echo-back":
            echoes.append((now, now - value))
    half = seconds / 2
    got = sum(n for t, n in delivered if t >= half)  # (the stalled streams' windows came at the start)
    rtts = sorted(1000 * e for t, e in echoes if t >= half)
    return Outcome(got / (seconds - half) / rate, statistics.median(rtts), rtts[int(0.99 * (len(rtts) - 1))],
                   int(statistics.median(w for t, w in windows if t >= half)), grants)


@pytest.mark.parametrize("jitter", [0.0, 0.005])
@pytest.mark.parametrize(("rtt", "rate", "seconds"), [
    (0.05, 12.5e6, 12.0),  # wan-50ms-100mbit
    (0.6, 1.25e6, 40.0),  # satellite-600ms-10mbit
    (0.02, 25e6, 10.0),  # a 200 Mbit/s regional link
])
def test_the_window_fills_a_long_link_and_queues_little_in_front_of_a_keystroke(
    rtt: float, rate: float, seconds: float, jitter: float
) -> None:
    r = run_link(rtt, rate, seconds, jitter=jitter)
    assert r.utilisation >= 0.95, r
    assert r.echo_p50_ms <= 1000 * rtt + 5, r  # the target: RTT + 5 ms
    assert r.window <= rate * (rtt + 0.01) + 64 * 1024, r  # about the path (+ 10 ms), not the 1 MiB limit


def test_grants_follow_the_delivery_rate_not_the_window() -> None:
    """At 100 Mbit/s a grant is about a millisecond of data, not a quarter window (162 KB, one
    13 ms burst at the bottleneck); that costs about one WINDOW message per millisecond."""
    r = run_link(0.05, 12.5e6, 6.0)
    assert 6.0 * 12.5e6 / 20_000 < r.grants < 6.0 * 12.5e6 / 8_000, r


@pytest.mark.parametrize(("rtt", "rate", "seconds"), [(0.05, 12.5e6, 12.0), (0.6, 1.25e6, 40.0)])
def test_two_streams_share_the_path_without_building_a_queue(rtt: float, rate: float, seconds: float) -> None:
    """The estimate is one per tunnel and each stream may grow to it: the queue the estimator
    sees is the streams' together, so they must not each fill the path."""
    r = run_link(rtt, rate, seconds, streams=2, jitter=0.003)
    assert r.utilisation >= 0.95, r
    assert r.echo_p50_ms <= 1000 * rtt + 5, r


@pytest.mark.parametrize(("rtt", "rate", "seconds"), [(0.05, 12.5e6, 12.0), (0.6, 1.25e6, 40.0)])
def test_a_stalled_stream_costs_the_others_nothing(rtt: float, rate: float, seconds: float) -> None:
    """A third stream that is never read holds its whole window in the cloud: it must not read
    as "the consumers are the limit" for the two that are read (it did: after the start's burst
    shrank the window, the estimate could not grow back, and the two ran at 0.76 of the link)."""
    r = run_link(rtt, rate, seconds, streams=2, stalled=1, jitter=0.003)
    assert r.utilisation >= 0.9, r
    assert r.echo_p50_ms <= 1000 * rtt + 5, r


@pytest.mark.parametrize("streams", [1, 2])
def test_jitter_does_not_walk_the_window_below_the_path(streams: int) -> None:
    """Up to 30 ms added to each probe's round trip (a radio link; the userspace link's 4 ms
    pacing did it with less): the lowest of four round trips still reads as a queue now and then,
    and each reading shrank the window, down to the floor (one stream at 0.55 of the link). Below
    the path's bandwidth-delay product a window queues nothing of its own: it stops there."""
    r = run_link(0.05, 12.5e6, 20.0, jitter=0.03, streams=streams)
    assert r.utilisation >= 0.95, r
    assert r.echo_p50_ms <= 50 + 5, r
