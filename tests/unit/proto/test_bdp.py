"""BdpEstimator: gRPC-Go's growth rule (bdp_estimator.go), one sample per round trip, then a
window that follows the path's queue; Pacer: message size from the grant rate."""

from __future__ import annotations

import pytest

from streamproto.tunnel.bdp import _DRAIN, QUEUE, BdpEstimator, Pacer


def _round_trip(est: BdpEstimator, now: float, rtt: float, nbytes: int) -> tuple[float, int | None]:
    assert est.received(1, now)  # data arrives, a probe goes out
    est.received(nbytes - 1, now + rtt / 2)
    return now + rtt, est.acknowledged(now + rtt)


def test_a_window_limited_path_doubles_the_estimate_up_to_the_limit() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, grown = _round_trip(est, 0.0, 0.05, 256 * 1024)  # a full window per round trip
    assert grown == 512 * 1024
    now, grown = _round_trip(est, now + 0.02, 0.05, 512 * 1024)
    assert grown == 1 << 20  # capped
    assert est.received(1000, now + 1)  # at the limit it still probes: a window too big must be seen


def test_a_path_that_carries_less_than_the_window_keeps_it() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now = 0.0
    for _ in range(5):
        now, grown = _round_trip(est, now + 0.02, 0.001, 20_000)
        assert grown is None
    assert est.estimate == 256 * 1024 and est.samples == 5


def test_probes_are_spaced_and_one_at_a_time() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20, min_interval=0.01)
    assert est.received(100, 0.0)
    assert not est.received(100, 0.0001)  # one outstanding
    est.acknowledged(0.001)
    assert not est.received(100, 0.005)  # within min_interval of the last ack
    assert est.received(100, 0.02)
    est.abandon()
    assert est.acknowledged(0.03) is None


def test_a_backlog_read_at_memory_speed_on_a_short_path_does_not_grow_the_window() -> None:
    """Loopback: each probe sees a window's worth arrive at once (a backlog in the socket
    buffer), enough for gRPC's rule, but over time only about 370 MB/s get through: 256 KiB
    already covers twice that rate times the 0.3 ms round trip, so the estimate stays put."""
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, probe_at, acks = 0.0, 0.0, 0
    for _ in range(2000):  # 0.2 s in steps of 100 us
        now += 0.0001
        if est.received(37_000, now):
            probe_at = now
            est.received(256 * 1024, now)  # the backlog, read at memory speed
        elif est.probing and now - probe_at >= 0.0003:
            assert est.acknowledged(now) is None
            acks += 1
    assert acks > 10 and est.estimate == 256 * 1024
    assert est.rtt_min > 0 and 300e6 < est.rate_max < 500e6


def test_data_waiting_for_its_consumer_stops_growth() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    assert est.received(1, 0.0)
    est.received(256 * 1024, 0.025)
    assert est.acknowledged(0.05, waiting=200 * 1024) is None  # the reader is the limit
    assert est.received(1, 0.07)
    est.received(256 * 1024, 0.095)
    assert (est.acknowledged(0.12, waiting=0) or 0) >= 512 * 1024


def _steady(est: BdpEstimator, now: float, rtt: float, rate: float, rounds: int) -> tuple[float, list[int | None]]:
    """``rounds`` probes, one per round trip, on a path delivering ``rate`` bytes/s."""
    changes = []
    for _ in range(rounds):
        assert est.received(1, now)
        est.received(int(rate * rtt) - 1, now + rtt / 2)
        now += rtt
        changes.append(est.acknowledged(now))
        now += 0.011
    return now, changes


def test_a_queue_in_front_of_the_window_shrinks_it_to_the_path_once_per_round_trip() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, _ = _steady(est, 0.0, 0.05, 5.2e6, 2)  # 256 KiB per 50 ms: window-limited, grows
    est.estimate = 1 << 20  # (grown past the path)
    assert not est.full
    now, changes = _steady(est, now, 0.07, 12.5e6, 4)  # 20 ms of queue at 100 Mbit/s
    assert changes[:3] == [None] * 3  # one late pong is not a queue: it must last four round trips
    assert est.full and changes[3] is not None
    # first a drain (half the fit, two round trips) that empties the queue the start built ...
    assert est.estimate == max(256 * 1024, int(est.fit * _DRAIN))
    now, changes = _steady(est, now, 0.05, 12.5e6, 3)
    assert changes[:2] == [None, None]
    # ... then the fit: rate x (rtt_min + QUEUE) + a grant, about the path's 625 KB
    assert changes[2] is not None and est.estimate == est.fit
    assert 0.85 * 12.5e6 * 0.05 < est.estimate < 12.5e6 * (0.05 + QUEUE) + 16 * 1024
    fitted = est.estimate
    # the next probe left before the new window could show: it does not change it again
    assert est.received(1, now) and est.acknowledged(now + 0.08) is None
    assert est.estimate == fitted


def test_a_start_that_overshoots_by_far_stops_at_the_first_round_trip_that_shows_it() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=4 << 20)
    now, _ = _steady(est, 0.0, 0.6, 1.2e6, 2)  # a satellite link, window-limited
    est.estimate = 2 << 20  # a doubling past the path (750 KB)
    now, changes = _steady(est, now, 0.85, 1.2e6, 1)  # 250 ms of queue: no event loop is that late
    assert est.full and changes == [est.estimate] and est.estimate < 750_000
    assert est.rtt_min == pytest.approx(0.6)


def test_an_interactive_stream_beside_a_bulk_one_takes_no_share_of_the_window() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=4 << 20)
    est.estimate = 2 << 20  # (grown)
    assert est.received(100, 0.0, stream=1)
    est.received(600_000, 0.02, stream=1)  # a `logs -f`
    est.received(3, 0.03, stream=2)  # a keystroke echoed
    est.acknowledged(0.05)
    assert est.active == 1 and est.stream_target == est.estimate
    assert est.received(300_000, 0.1, stream=1)
    est.received(250_000, 0.12, stream=3)  # two bulk streams: halves
    est.acknowledged(0.15)
    assert est.active == 2 and est.stream_target == est.estimate // 2


def test_the_lowest_round_trip_does_not_creep_with_the_window_own_queue() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, _ = _steady(est, 0.0, 0.05, 5e6, 1)
    now, _ = _steady(est, now, 0.0515, 5e6, 400)  # 1.5 ms of queue, for 25 s
    assert est.rtt_min == pytest.approx(0.05)


def test_a_longer_path_is_accepted_after_a_while_at_the_floor() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, _ = _steady(est, 0.0, 0.05, 5e6, 1)
    now, _ = _steady(est, now, 0.2, 1.2e6, 80)  # the route changed: 200 ms, 16 s
    assert est.rtt_min == pytest.approx(0.2)


def _fluid_link(est: BdpEstimator, seconds: float, path: float, rate: float, rate_read: float = 1.0,
                longer_at: float = -1.0, longer_by: float = 0.0, start: float = 0.0) -> tuple[float, float]:
    """A bottleneck as fluid: the window's excess over rate x path waits there. Every third
    round trip's bytes read ``rate_read`` times what the link carried (a paced link's bursts:
    ``rate_max`` is a maximum). From ``start`` for ``seconds``; returns the queue (s) at the end,
    and the time."""
    now, queue = start, 0.0
    for i in range(100_000):  # bounded: the clock passes ``seconds`` long before
        if now > start + seconds:
            break
        delay = path + (longer_by if 0 <= longer_at <= now else 0.0)
        queue = max(0.0, est.estimate - rate * delay) / rate
        rtt = delay + queue
        assert est.received(16384, now, 1)
        carried = min(est.estimate, rate * rtt) * (rate_read if i % 3 == 0 else 1.0)
        est.received(int(carried) - 16384, now + 0.99 * rtt, 1)
        now += rtt
        est.acknowledged(now)
    return queue, now


def test_a_window_held_up_by_a_rate_read_high_does_not_take_its_own_queue_for_a_longer_path() -> None:
    """A rate read 8 % high holds the least window 4 ms over the path. Taken for a longer path,
    that queue moved the lowest round trip up every 10 s (51.5 -> 120 ms in two minutes, 78 ms
    of queue); now the window drains first and the path reads as it is."""
    est = BdpEstimator(estimate=256 * 1024, limit=16 << 20, min_interval=0.0)
    queue, _ = _fluid_link(est, 120.0, 0.0515, 12.5e6, rate_read=1.08)
    assert est.rtt_min == pytest.approx(0.0515)
    assert queue < 0.08 * 0.0515 + 0.001  # what the rate's error holds at the least window, no more


def test_a_longer_path_is_still_found_after_a_check_that_found_none() -> None:
    est = BdpEstimator(estimate=256 * 1024, limit=16 << 20, min_interval=0.0)
    queue, _ = _fluid_link(est, 150.0, 0.0515, 12.5e6, rate_read=1.08, longer_at=40.0, longer_by=0.03)
    assert est.rtt_min == pytest.approx(0.0815)
    assert queue < 0.08 * 0.0815 + 0.001


def test_the_pacer_sizes_messages_to_a_millisecond_of_the_grant_rate() -> None:
    def piece(rate: float) -> int:
        pacer = Pacer(64 * 1024)
        now = 0.0
        for _ in range(100):  # 0.5 s of grants every 5 ms
            pacer.granted(int(rate * 0.005), now)
            now += 0.005
        return pacer.piece

    assert piece(600e6) == 64 * 1024  # loopback: whole messages
    assert abs(piece(12.5e6) - 12_500) < 200  # 100 Mbit/s
    assert piece(1.25e6) == 4096  # 10 Mbit/s: the floor
    assert Pacer(64 * 1024).piece == 64 * 1024  # before any grant


def test_a_window_near_the_fit_moves_by_the_queue_not_up_to_the_fit() -> None:
    """The fit's rate is a maximum, a little high: a window just under it that sees a short
    queue grows by steps; only one well under it (an undershoot) goes back at once."""
    est = BdpEstimator(estimate=256 * 1024, limit=4 << 20)
    now, _ = _steady(est, 0.0, 0.6, 1.2e6, 2)
    est.full, est._reprobe_at = True, now + 100  # (no re-probe meanwhile)
    est.estimate = near = int(0.98 * est.fit)
    now, changes = _steady(est, now, 0.6, 1.2e6, 4)
    assert near < est.estimate < est.fit and est.estimate - near <= 1.2e6 * QUEUE
    est.estimate = int(0.7 * est.fit)
    now, changes = _steady(est, now, 0.6, 1.2e6, 4)
    assert est.estimate == est.fit


def test_on_a_short_path_late_pongs_are_no_queue_and_every_stream_shares() -> None:
    """Loopback: a loaded machine's late pongs never make the path "full" (whose fit is
    rate x 2.5 ms: megabytes in front of a keystroke at 650 MB/s), and a shell beside a
    `logs -f` halves its window there (the floor already fills such a path)."""
    est = BdpEstimator(estimate=256 * 1024, limit=1 << 20)
    now, _ = _steady(est, 0.0, 0.0002, 650e6, 2)
    now, changes = _steady(est, now, 0.035, 650e6, 6)  # pongs 35 ms late, six times running
    assert not est.full and est.estimate <= 512 * 1024
    est.estimate = 1 << 20
    assert est.received(100, now, stream=1)
    est.received(200_000, now + 0.0001, stream=1)
    est.received(3, now + 0.0001, stream=2)
    est.acknowledged(now + 0.0002)
    assert est.active == 2 and est.stream_target == 512 * 1024


def test_a_path_check_whose_one_late_round_trip_is_a_new_lowest_keeps_it() -> None:
    """The tunnel went quiet during the drain; the one round trip after it reads under the
    lowest (the route got shorter): the lowest follows it, and no unmeasured path is taken."""
    est = BdpEstimator(estimate=256 * 1024, limit=16 << 20, min_interval=0.0)
    _, now = _fluid_link(est, 30.0, 0.0515, 12.5e6, rate_read=1.08)  # past one check, quiet now
    est._path_quiet_until = 0.0
    for _ in range(1000):  # bounded: held at the least again, a check starts within 10 s
        if est._path_check:
            break
        _, now = _fluid_link(est, 0.0, 0.0515, 12.5e6, rate_read=1.08, start=now)
    assert est._path_check
    now = est._drain_until - 0.001  # nothing sent since: the next data comes just before its end
    assert est.received(16384, now, 1)
    est.acknowledged(now + 0.0415)
    assert not est._path_check
    assert est.rtt_min == pytest.approx(0.0415)
    assert est.estimate < 2 * 12.5e6 * 0.0515
