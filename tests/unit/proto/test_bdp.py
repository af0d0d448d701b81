"""BdpEstimator: gRPC-Go's rule (bdp_estimator.go), one sample per round trip."""

from __future__ import annotations

from streamproto.tunnel.bdp import BdpEstimator


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
    assert not est.received(1000, now + 1)  # at the limit: no more probes


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
