"""The soak's flatness check: a steady leak is its slope; wobble fits flat; a step tilts the line
by at most 1.5 times its height (mid-window), less near the ends, where first-vs-last would
count it whole."""

from __future__ import annotations

import random

import pytest

from tests.gauntlet.flatness import fit, second_half


def test_a_steady_leak_is_its_slope() -> None:
    samples = [(float(t), 100_000 + 50.0 * t) for t in range(300)]
    line = fit(samples)
    assert line.slope == pytest.approx(50.0) and line.growth == pytest.approx(50.0 * 299)


@pytest.mark.parametrize("at", [10, 75, 150, 225, 290])
def test_a_step_tilts_the_line_by_at_most_one_and_a_half_its_height(at: int) -> None:
    step = [(float(t), 100_000 + (8_000 if t >= at else 0)) for t in range(300)]
    assert 0 < fit(step).growth <= 1.5 * 8_000 * 1.01
    if at in (10, 290):  # near either end: much less than first-vs-last (8,000)
        assert fit(step).growth < 0.4 * 8_000


def test_noise_around_a_flat_line_fits_flat() -> None:
    rng = random.Random(1)
    samples = [(float(t), 100_000 + rng.uniform(-2_000, 2_000)) for t in range(300)]
    assert abs(fit(samples).growth) < 1_500


def test_second_half_and_bad_input() -> None:
    samples = [(float(t), 0.0) for t in range(10)]
    assert second_half(samples)[0][0] == 4.5 or second_half(samples)[0][0] == 5.0
    with pytest.raises(ValueError):
        fit(samples[:1])
    with pytest.raises(ValueError):
        fit([(1.0, 0.0), (1.0, 1.0)])
