"""Reconnect delays: bounded, spread, never zero, and drifting apart (decorrelated)."""

from __future__ import annotations

import itertools
import random

import pytest

from streamproto.tunnel import backoff


def test_first_delay_is_spread_over_the_window() -> None:
    firsts = [next(backoff(0.5, 6.0, 2.0, rand=random.Random(seed).random)) for seed in range(2000)]
    assert min(firsts) >= 0.05 and max(firsts) <= 2.0
    # uniform over the window: each half holds about half of the fleet
    low = sum(1 for f in firsts if f < 1.0)
    assert 800 < low < 1200


def test_delays_stay_between_initial_and_the_cap() -> None:
    rng = random.Random(7)
    delays = list(itertools.islice(backoff(0.5, 6.0, 2.0, rand=rng.random), 500))
    assert all(0.5 <= d <= 6.0 for d in delays[1:])
    assert max(delays) == pytest.approx(6.0, abs=0.5)  # the cap is reached


def test_extremes_of_the_random_source() -> None:
    assert list(itertools.islice(backoff(0.5, 6.0, 2.0, rand=lambda: 0.0), 3)) == [0.05, 0.5, 0.5]
    assert list(itertools.islice(backoff(0.5, 6.0, 2.0, rand=lambda: 1.0), 4)) == [2.0, 6.0, 6.0, 6.0]


def test_edges_that_start_together_drift_apart() -> None:
    """Two edges with different random draws do not redial in lockstep after a few steps."""
    a = list(itertools.islice(backoff(0.5, 6.0, 2.0, rand=random.Random(1).random), 20))
    b = list(itertools.islice(backoff(0.5, 6.0, 2.0, rand=random.Random(2).random), 20))
    ta, tb = list(itertools.accumulate(a)), list(itertools.accumulate(b))
    assert sum(1 for x, y in zip(ta, tb, strict=True) if abs(x - y) < 0.1) < 3


@pytest.mark.parametrize("args", [(0, 6, 1), (2, 1, 1), (0.5, 6, 0)])
def test_bad_arguments_are_refused(args) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        next(backoff(*args))
