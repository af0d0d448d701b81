"""BdpEstimator: gRPC-Go's rule (bdp_estimator.go), one sample per round trip."""

from __future__ import annotations

from proto.tunnel.bdp import BdpEstimator


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
