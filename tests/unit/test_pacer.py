"""The bulk pacer's arithmetic (proto/tunnel/pacer.py): bandwidth from grant arrivals, the
start-up plateau, the gain cycle and the token spacing of bulk messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.tunnel.pacer import GAINS, PLATEAU, Pacer
from proto.tunnel.sched import SendQueue


def steady(pacer: Pacer, rate: float, seconds: float, grant: int = 65536, start: float = 0.0) -> float:
    """Grants of ``grant`` bytes arriving at ``rate`` bytes/s; returns the end time."""
    step = grant / rate
    t = start
    while t < start + seconds:
        pacer.delivered(grant, t)
        t += step
    return t


def test_no_pacing_without_samples_or_on_a_short_path() -> None:
    pacer = Pacer()
    assert not pacer.active() and pacer.delay(1.0) == 0.0
    pacer.rtt_min = 0.0002  # loopback
    steady(pacer, 300e6, 1.0)
    assert pacer.filled and pacer.bandwidth == pytest.approx(300e6, rel=0.05)
    assert not pacer.active()
    pacer.sent(1 << 20, 1.0)
    assert pacer.delay(1.0) == 0.0


def test_bandwidth_is_the_delivery_rate_of_grants() -> None:
    pacer = Pacer(rtt_min=0.05)
    steady(pacer, 12.5e6, 2.0)
    assert pacer.bandwidth == pytest.approx(12.5e6, rel=0.05)
    assert pacer.active()


def test_start_up_lasts_while_the_rate_grows() -> None:
    pacer = Pacer(rtt_min=0.05)
    t = 0.0
    rate = 1e6
    for _ in range(8):  # the receiver's window doubles each round: still starting up
        t = steady(pacer, rate, 0.1, start=t)
        rate *= 2
        assert not pacer.filled
    for _ in range(PLATEAU + 1):
        t = steady(pacer, rate, 0.1, start=t)
    assert pacer.filled


def test_gain_cycle_probes_drains_and_cruises_below_one() -> None:
    pacer = Pacer(rtt_min=0.05, cruise=0.95)
    gains = [pacer.gain(i * 0.05 + 0.001) for i in range(1, 2 * len(GAINS) + 1)]
    assert 1.25 in gains and 0.75 in gains and 0.95 in gains
    assert max(gains) == 1.25 and all(g != 1.0 for g in gains)
    mean = sum(gains[: len(GAINS)]) / len(GAINS)
    assert 0.9 <= mean < 1.0  # on average the bottleneck queue drains


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(1e5, 1e9),
    sizes=st.lists(st.integers(1, 1 << 16), min_size=1, max_size=200),
)
def test_back_to_back_sends_are_spaced_by_size_over_rate(rate: float, sizes: list[int]) -> None:
    """A sender that goes whenever ``delay`` allows sends at most slack x rate + what the
    gain cycle allows: over any run, bytes <= (elapsed + slack) x 1.25 x rate + one message."""
    pacer = Pacer(rtt_min=0.05)
    steady(pacer, rate, 1.0, grant=max(1, int(rate / 100)))
    assert pacer.active()
    bw = pacer.bandwidth
    now = 10.0
    start = now
    sent = 0
    for size in sizes:
        wait = pacer.delay(now)
        if wait > 0:
            now += wait
        pacer.sent(size, now)
        sent += size
        assert pacer.delay(now) >= -pacer.slack - 1e-9
    assert sent <= (now - start + pacer.slack) * 1.25 * bw + max(sizes) + 1


def test_idle_sender_gets_only_slack_of_burst() -> None:
    pacer = Pacer(rtt_min=0.05)
    steady(pacer, 10e6, 2.0)
    pacer.sent(1000, 100.0)
    # after a long idle spell only ``slack`` seconds of sending may catch up
    now = 200.0
    burst = 0
    while pacer.delay(now) <= 0:
        pacer.sent(1000, now)
        burst += 1000
    assert burst <= pacer.slack * 1.25 * pacer.bandwidth + 1000


def test_send_queue_reports_urgent_first() -> None:
    queue: SendQueue[str] = SendQueue(quantum=10)
    queue.push_bulk(1, "bulk", 5)
    assert not queue.urgent_waiting()
    queue.push_urgent("key")
    assert queue.urgent_waiting()
    assert queue.pop() == "key"
    assert not queue.urgent_waiting()
    assert queue.pop() == "bulk"


def test_frame_limit_only_while_paced() -> None:
    pacer = Pacer(rtt_min=0.6)
    assert pacer.frame_limit() is None  # nothing learned yet: frames as they come
    steady(pacer, 1.25e6, 30.0)  # satellite: 10 Mbit/s
    assert pacer.active()
    assert pacer.frame_limit() == pacer.min_frame  # 2 ms at 1.25 MB/s is 2.5 kB: the floor
    fast = Pacer(rtt_min=0.05)
    steady(fast, 12.5e6, 2.0)
    assert fast.frame_limit() == pytest.approx(12.5e6 * fast.frame_time, rel=0.05)
    loop = Pacer(rtt_min=0.0002)
    steady(loop, 300e6, 1.0)
    assert loop.frame_limit() is None


def test_a_slow_reader_does_not_lower_the_estimate() -> None:
    """After start-up, samples below the estimate taken while nothing was held back (the
    reader returned credit slowly) are ignored; held-back ones (the link slowed) count."""
    pacer = Pacer(rtt_min=0.05)
    t = steady(pacer, 12.5e6, 2.0)
    assert pacer.filled
    t = steady(pacer, 1e6, 2.0, grant=16384, start=t)  # one slow kubectl, sender never held
    assert pacer.bandwidth == pytest.approx(12.5e6, rel=0.05)
    step = 16384 / 5e6
    end = t + 2.0
    while t < end:  # the link really slowed: bulk waits for the pacer/transport
        pacer.held = True
        pacer.delivered(16384, t)
        t += step
    assert pacer.bandwidth == pytest.approx(5e6, rel=0.1)
